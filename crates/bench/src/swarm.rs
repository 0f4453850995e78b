//! The UE swarm: N simulated UEs in one process, each with its own USIM
//! keys (K, OPc), its own GBA bootstrapping (Ub, Digest AKA with
//! Milenage, [`ue::BootstrapClient`]), its own Ua client
//! ([`ue::ua::UaClient`], Digest with the MRK) and its own MGV-F
//! ([`mbms::mgvf::MgvF`] over an in-memory MGV-S), which opens, verifies
//! and acknowledges every MIKEY MSK message it gets.
//!
//! The UEs share a few UDP sockets (shards, one task each): a UE names its
//! shard's port with `mikey-port=N` at registration (`PROFILE.md` section
//! 3), and a shard tells the messages of its UEs apart by IDr (the B-TID).
//! A shard owns its UEs' state, so a message is processed without any lock
//! shared between shards.
//!
//! ```no_run
//! # async fn demo() -> Result<(), mbms_bench::swarm::SwarmError> {
//! use mbms_bench::swarm::{Swarm, SwarmConfig};
//! let cfg = SwarmConfig::new(1000, "http://127.0.0.1:8080", "http://127.0.0.1:8081/keymanagement");
//! // The BSF must hold the subscribers: write_subscribers_csv + `mbms bsf subscriber import`.
//! let swarm = Swarm::start(cfg).await?;
//! swarm.bootstrap_all().await?;
//! swarm.register_all().await?;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use gba::{Mrk, Opc, Sqn48, SubscriberKey, Usim};
use mbms::messages::MskEnvelope;
use mbms::mgvf::store::MemoryStore;
use mbms::mgvf::{MgvError, MgvF, MskOutcome};
use mbms::{MskId, MskName, MukId};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use sha2::{Digest as _, Sha256};
use tokio::net::UdpSocket;
use ue::ua::UaClient;
use ue::BootstrapClient;

use crate::timeline::Timeline;
use crate::udp;

/// How the swarm is built and where it connects.
#[derive(Clone, Debug)]
pub struct SwarmConfig {
    /// Number of UEs.
    pub ues: usize,
    /// Seed of the subscriber keys and of the loss RNG.
    pub seed: u64,
    /// Home domain of the IMPIs (`ue<i>@<domain>`).
    pub domain: String,
    /// Ub URL of the BSF.
    pub bsf_url: String,
    /// BSF FQDN (the Ub Digest realm).
    pub bsf_fqdn: String,
    /// BM-SC FQDN (NAF identity, IDi).
    pub bmsc_fqdn: String,
    /// Key management URI of the BM-SC (`http://HOST:PORT/keymanagement`).
    pub key_management_uri: String,
    /// Key management URIs of several BM-SC instances (issue 13): UE `i`
    /// registers and asks at entry `i mod len`; empty: every UE uses
    /// [`Self::key_management_uri`].
    pub key_management_uris: Vec<String>,
    /// Services every UE registers to.
    pub services: Vec<String>,
    /// UDP sockets (shards) the UEs share.
    pub sockets: usize,
    /// Concurrent HTTP requests (keep-alive connections) during the setup.
    pub concurrency: usize,
    /// Fraction of datagrams dropped in each direction (0 to 1).
    pub loss: f64,
    /// At most this many acknowledgements per second (all shards), or none.
    pub pace: Option<u64>,
    /// `SO_RCVBUF` / `SO_SNDBUF` asked for each socket.
    pub socket_buffer: usize,
}

/// `SO_RCVBUF` / `SO_SNDBUF` asked for each of the swarm's sockets: 32 MiB
/// (Linux doubles it in its accounting; granted past `net.core.rmem_max`
/// where the process may force it). A few sockets stand for the buffers of
/// N UEs, each of which has its own on a real network: with 4 MiB, a
/// 100,000-UE rotation overflowed them whenever the swarm's MGV-Fs fell
/// behind the BM-SC's sending, and every message lost there cost the BM-SC
/// a retransmission (2 s later) that a real UE would not have caused.
pub const SWARM_SOCKET_BUFFER: usize = 32 << 20;

impl SwarmConfig {
    /// Defaults for `ues` UEs: seed 1, domain `swarm.bench`, BSF FQDN
    /// `bsf.swarm.bench`, BM-SC `bmsc.swarm.bench`, service
    /// `urn:mbms:service:bench`, one socket per core, 128 concurrent
    /// requests, no loss, no pacing, [`SWARM_SOCKET_BUFFER`] socket buffers.
    pub fn new(ues: usize, bsf_url: &str, key_management_uri: &str) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        SwarmConfig {
            ues,
            seed: 1,
            domain: "swarm.bench".into(),
            bsf_url: bsf_url.into(),
            bsf_fqdn: "bsf.swarm.bench".into(),
            bmsc_fqdn: "bmsc.swarm.bench".into(),
            key_management_uri: key_management_uri.into(),
            key_management_uris: Vec::new(),
            services: vec!["urn:mbms:service:bench".into()],
            sockets: cores.max(1),
            concurrency: 128,
            loss: 0.0,
            pace: None,
            socket_buffer: SWARM_SOCKET_BUFFER,
        }
    }
}

/// A swarm subscriber: IMPI, K and OPc (derived from the seed and the
/// index, so the BSF's import file and the swarm agree without a copy).
pub struct SwarmSubscriber {
    /// `ue<index>@<domain>`.
    pub impi: String,
    /// K.
    pub k: [u8; 16],
    /// OPc.
    pub opc: [u8; 16],
}

/// The subscriber of UE `index`: K || OPc = SHA-256("mbms-bench" || seed
/// || index).
pub fn subscriber(seed: u64, domain: &str, index: usize) -> SwarmSubscriber {
    let h = Sha256::new()
        .chain_update(b"mbms-bench")
        .chain_update(seed.to_be_bytes())
        .chain_update((index as u64).to_be_bytes())
        .finalize();
    let mut k = [0u8; 16];
    let mut opc = [0u8; 16];
    k.copy_from_slice(&h[..16]);
    opc.copy_from_slice(&h[16..]);
    SwarmSubscriber {
        impi: format!("ue{index}@{domain}"),
        k,
        opc,
    }
}

/// Writes the import file of `mbms bsf subscriber import` for the first
/// `n` UEs (header `impi,k,opc,sqn,amf`), mode 0600.
pub fn write_subscribers_csv(path: &Path, seed: u64, domain: &str, n: usize) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    let mut w = io::BufWriter::with_capacity(1 << 20, f);
    writeln!(w, "impi,k,opc,sqn,amf")?;
    for i in 0..n {
        let s = subscriber(seed, domain, i);
        writeln!(
            w,
            "{},{},{},0,8000",
            s.impi,
            hex::encode(s.k),
            hex::encode(s.opc)
        )?;
    }
    w.into_inner().map_err(|e| e.into_error())?.sync_all()
}

/// Errors of the swarm.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SwarmError {
    /// A socket could not be bound or used.
    #[error("swarm socket: {0}")]
    Io(#[from] io::Error),
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
    /// A UE could not bootstrap (after retries).
    #[error("UE {index} ({impi}): bootstrapping failed: {error}")]
    Bootstrap {
        /// UE index.
        index: usize,
        /// Its IMPI.
        impi: String,
        /// The last error.
        error: String,
    },
    /// A UE could not register (after retries).
    #[error("UE {index}: registration failed: {error}")]
    Register {
        /// UE index.
        index: usize,
        /// The last error.
        error: String,
    },
}

/// Counters of the swarm (since it started).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SwarmStats {
    /// Datagrams received on the swarm's sockets.
    pub datagrams_received: u64,
    /// Received datagrams dropped by the simulated loss.
    pub dropped_in: u64,
    /// MSK messages the MGV-Fs accepted (stored, superseded or duplicate).
    pub msk_accepted: u64,
    /// Messages an MGV-F refused (replay, bad MAC, ...), or unparseable.
    pub refused: u64,
    /// Messages whose IDr names no UE of the shard.
    pub unknown_idr: u64,
    /// Acknowledgements the MGV-Fs produced.
    pub acks_made: u64,
    /// Acknowledgements dropped by the simulated loss.
    pub dropped_out: u64,
    /// Acknowledgements handed to the kernel.
    pub acks_sent: u64,
    /// Solicited pulls received.
    pub solicited_pulls: u64,
    /// MSK requests sent over Ua (a UE noticed it missed an MSK).
    pub msk_requests: u64,
    /// Nanoseconds the shard tasks spent processing received batches
    /// (MGV-F work, routing, sending the acknowledgements), all shards.
    pub busy_ns: u64,
    /// Bootstrap attempts that failed and were retried.
    pub bootstrap_retries: u64,
    /// Registration attempts that failed and were retried.
    pub register_retries: u64,
    /// MSK messages whose counter was not above the last counter the same
    /// UE's MGV-F saw (a (MUK, counter) pair seen twice or a counter gone
    /// backwards, whether the MGV-F refused it as a replay or took it as
    /// an identical resend): the BM-SC must never send one (issue 12,
    /// "What must not change"; seed 000 6.3.2.3.1, RFC 3830 6.6).
    pub counter_violations: u64,
}

#[derive(Default)]
struct Stats {
    datagrams_received: AtomicU64,
    dropped_in: AtomicU64,
    msk_accepted: AtomicU64,
    refused: AtomicU64,
    unknown_idr: AtomicU64,
    acks_made: AtomicU64,
    dropped_out: AtomicU64,
    acks_sent: AtomicU64,
    solicited_pulls: AtomicU64,
    msk_requests: AtomicU64,
    busy_ns: AtomicU64,
    bootstrap_retries: AtomicU64,
    register_retries: AtomicU64,
    counter_violations: AtomicU64,
    first_counter_violation: Mutex<Option<CounterViolation>>,
}

/// The first MSK message a UE's MGV-F saw with a counter not above the
/// last one it saw ([`SwarmStats::counter_violations`]): what `--kill-bmsc-at`
/// prints to tell a BM-SC's fault from a late copy.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CounterViolation {
    /// The UE's global index.
    pub ue: usize,
    /// Its B-TID (the IDr of the message).
    pub btid: String,
    /// The counter of the last message it saw.
    pub last_counter: u32,
    /// The UDP port that sent that message.
    pub last_from_port: u16,
    /// The counter of this message.
    pub counter: u32,
    /// The UDP port that sent it.
    pub from_port: u16,
    /// Its MSK ID.
    pub msk_id: String,
    /// What the MGV-F made of it (`accepted`, `duplicate`, `replay`).
    pub outcome: &'static str,
    /// Seconds since the swarm started.
    pub at_s: f64,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

struct SwarmUe {
    btid: Box<str>,
    mrk: Mrk,
    mgvf: MgvF<MemoryStore>,
    holds_target: bool,
    last_request: Option<Instant>,
    /// The counter of the last MSK message this UE's MGV-F opened (or
    /// refused as a replay): the counter check of `--kill-bmsc-at`.
    last_counter: Option<u32>,
    /// The UDP port that sent that message.
    last_from_port: u16,
    /// Counted by the armed [`KillGate`].
    gate_counted: bool,
}

impl SwarmUe {
    fn holds(&self, target: &[MskId]) -> bool {
        !target.is_empty()
            && target
                .iter()
                .all(|id| self.mgvf.state().msks.keys().any(|n| n.msk_id == *id))
    }
}

#[derive(Default)]
struct ShardState {
    /// By local index (global index / number of shards).
    ues: Vec<Option<SwarmUe>>,
    by_btid: HashMap<Box<str>, u32>,
    target: Vec<MskId>,
    /// The key of an armed [`KillGate`] (set under this lock for the
    /// shard's UEs at once).
    gate_key: Option<MskName>,
}

/// `--kill-bmsc-at`: the swarm stops reading MIKEY datagrams once a given
/// number of UEs hold a key active, until [`Swarm::resume`], so that the
/// kill lands mid-rotation whatever the machine's load. Polling alone let
/// a loaded machine (two test suites at once) finish a 2,000-UE rotation
/// before the kill. Each shard finishes the batch it is processing
/// first: the kill comes at most a batch per shard later.
struct KillGate {
    at: AtomicUsize,
    active: AtomicUsize,
    paused: tokio::sync::watch::Sender<bool>,
}

impl KillGate {
    fn new() -> Self {
        KillGate {
            at: AtomicUsize::new(usize::MAX),
            active: AtomicUsize::new(0),
            paused: tokio::sync::watch::Sender::new(false),
        }
    }

    /// One more UE holds the key active.
    fn counted(&self, n: usize) {
        let now = self.active.fetch_add(n, Ordering::SeqCst) + n;
        if now >= self.at.load(Ordering::SeqCst) {
            self.paused.send_replace(true);
        }
    }
}

struct Shard {
    sock: Arc<UdpSocket>,
    port: u16,
    state: Mutex<ShardState>,
    /// UEs of this shard holding the target (changed under `state`'s lock).
    holders: AtomicUsize,
}

impl Shard {
    fn lock(&self) -> MutexGuard<'_, ShardState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The first datagram the shards received after an instant
/// ([`Swarm::arm_first_datagram`]): the restart time of `--kill-bmsc-at`.
struct FirstDatagram {
    epoch: Instant,
    /// Nanoseconds since `epoch`; `u64::MAX`: not armed.
    armed_at: AtomicU64,
    /// Nanoseconds since `epoch` of the first datagram received at or
    /// after `armed_at`; `u64::MAX`: none yet.
    first: AtomicU64,
}

impl FirstDatagram {
    fn new() -> Self {
        FirstDatagram {
            epoch: Instant::now(),
            armed_at: AtomicU64::new(u64::MAX),
            first: AtomicU64::new(u64::MAX),
        }
    }

    fn received(&self) {
        let armed = self.armed_at.load(Ordering::Relaxed);
        if armed != u64::MAX {
            let t = self.epoch.elapsed().as_nanos() as u64;
            if t >= armed {
                self.first.fetch_min(t, Ordering::Relaxed);
            }
        }
    }
}

/// A running swarm (see the module documentation).
pub struct Swarm {
    cfg: Arc<SwarmConfig>,
    http: reqwest::Client,
    shards: Vec<Arc<Shard>>,
    stats: Arc<Stats>,
    progress: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    timeline: Arc<Timeline>,
    first_datagram: Arc<FirstDatagram>,
    gate: Arc<KillGate>,
    /// The receive buffer the kernel granted each socket.
    pub granted_buffer: usize,
}

impl Swarm {
    /// Binds the sockets (127.0.0.1, free ports) and starts the shard
    /// tasks. Call from a multi-threaded tokio runtime.
    pub async fn start(cfg: SwarmConfig) -> Result<Swarm, SwarmError> {
        let cfg = Arc::new(cfg);
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(cfg.concurrency)
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(120))
            .build()?;
        let stats = Arc::new(Stats::default());
        let nshards = cfg.sockets.max(1);
        let mut shards = Vec::new();
        let mut tasks = Vec::new();
        let mut granted_buffer = usize::MAX;
        let timeline = Arc::new(Timeline::new());
        let first_datagram = Arc::new(FirstDatagram::new());
        let gate = Arc::new(KillGate::new());
        for s in 0..nshards {
            let (sock, granted) =
                udp::bind(SocketAddr::from(([127, 0, 0, 1], 0)), cfg.socket_buffer)?;
            granted_buffer = granted_buffer.min(granted);
            let port = sock.local_addr()?.port();
            let per = cfg.ues.div_ceil(nshards);
            let shard = Arc::new(Shard {
                sock: Arc::new(sock),
                port,
                state: Mutex::new(ShardState {
                    ues: (0..per).map(|_| None).collect(),
                    ..ShardState::default()
                }),
                holders: AtomicUsize::new(0),
            });
            let rng = StdRng::seed_from_u64(
                cfg.seed ^ (0x9e37_79b9_7f4a_7c15u64.wrapping_mul(s as u64 + 1)),
            );
            tasks.push(tokio::spawn(shard_loop(
                shard.clone(),
                cfg.clone(),
                stats.clone(),
                rng,
                nshards,
                (s, timeline.clone(), first_datagram.clone(), gate.clone()),
            )));
            shards.push(shard);
        }
        Ok(Swarm {
            cfg,
            http,
            shards,
            stats,
            progress: Arc::new(AtomicU64::new(0)),
            tasks,
            timeline,
            first_datagram,
            gate,
            granted_buffer,
        })
    }

    /// From now on, notes when the shards receive their first datagram
    /// (read it with [`Self::first_datagram`]).
    pub fn arm_first_datagram(&self) {
        let f = &self.first_datagram;
        f.first.store(u64::MAX, Ordering::SeqCst);
        let t = f.epoch.elapsed().as_nanos() as u64;
        f.armed_at.store(t, Ordering::SeqCst);
    }

    /// When the shards received their first datagram since
    /// [`Self::arm_first_datagram`], if they did.
    pub fn first_datagram(&self) -> Option<Instant> {
        let f = &self.first_datagram;
        match f.first.load(Ordering::SeqCst) {
            u64::MAX => None,
            ns => Some(f.epoch + Duration::from_nanos(ns)),
        }
    }

    /// Arms the kill gate (`--kill-bmsc-at`): the shards stop reading MIKEY datagrams once
    /// `at` UEs hold `key` active (those holding it already count), until
    /// [`Self::resume`].
    pub fn pause_at_active(&self, key: MskName, at: usize) {
        let g = &self.gate;
        g.active.store(0, Ordering::SeqCst);
        g.at.store(at.max(1), Ordering::SeqCst);
        for shard in &self.shards {
            let mut st = shard.lock();
            st.gate_key = Some(key);
            let mut n = 0;
            for ue in st.ues.iter_mut().flatten() {
                ue.gate_counted = ue
                    .mgvf
                    .state()
                    .msks
                    .get(&key)
                    .is_some_and(|r| !r.is_inactive());
                n += usize::from(ue.gate_counted);
            }
            drop(st);
            g.counted(n);
        }
    }

    /// Whether the shards stopped reading ([`Self::pause_at_active`]).
    pub fn paused(&self) -> bool {
        *self.gate.paused.borrow()
    }

    /// Disarms the kill gate; the shards read again.
    pub fn resume(&self) {
        for shard in &self.shards {
            shard.lock().gate_key = None;
        }
        self.gate.at.store(usize::MAX, Ordering::SeqCst);
        self.gate.paused.send_replace(false);
    }

    /// How many UEs hold `key` active (an MSK of the 4-way procedure is
    /// stored inactive by its step 1 and activated by its step 3, seed 004
    /// 6.3.2.3.3), from their MGV-F states.
    pub fn count_active(&self, key: MskName) -> usize {
        self.count_ues(|_, u| {
            u.mgvf
                .state()
                .msks
                .get(&key)
                .is_some_and(|r| !r.is_inactive())
        })
    }

    /// How many UEs of every shard satisfy `pred` (given the UE's shard
    /// state too), each shard locked in turn.
    fn count_ues(&self, pred: impl Fn(&ShardState, &SwarmUe) -> bool) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let st = s.lock();
                st.ues.iter().flatten().filter(|u| pred(&st, u)).count()
            })
            .sum()
    }

    /// The recorder of `mbms bench rekey --plot` (off until started).
    pub fn timeline(&self) -> &Timeline {
        &self.timeline
    }

    /// The configuration.
    pub fn config(&self) -> &SwarmConfig {
        &self.cfg
    }

    /// The UDP ports of the shards.
    pub fn ports(&self) -> Vec<u16> {
        self.shards.iter().map(|s| s.port).collect()
    }

    /// Operations done in the running phase (for a progress bar).
    pub fn progress(&self) -> u64 {
        self.progress.load(Ordering::Relaxed)
    }

    /// The counters.
    pub fn stats(&self) -> SwarmStats {
        let s = &*self.stats;
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SwarmStats {
            datagrams_received: g(&s.datagrams_received),
            dropped_in: g(&s.dropped_in),
            msk_accepted: g(&s.msk_accepted),
            refused: g(&s.refused),
            unknown_idr: g(&s.unknown_idr),
            acks_made: g(&s.acks_made),
            dropped_out: g(&s.dropped_out),
            acks_sent: g(&s.acks_sent),
            solicited_pulls: g(&s.solicited_pulls),
            msk_requests: g(&s.msk_requests),
            busy_ns: g(&s.busy_ns),
            bootstrap_retries: g(&s.bootstrap_retries),
            register_retries: g(&s.register_retries),
            counter_violations: g(&s.counter_violations),
        }
    }

    /// The first counter violation ([`SwarmStats::counter_violations`]).
    pub fn first_counter_violation(&self) -> Option<CounterViolation> {
        self.stats
            .first_counter_violation
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Runs `op` for every UE index with [`SwarmConfig::concurrency`]
    /// workers; `progress` counts the completed ones.
    async fn for_all<F, Fut>(&self, op: F) -> Result<(), SwarmError>
    where
        F: Fn(usize) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<(), SwarmError>> + Send,
    {
        self.progress.store(0, Ordering::Relaxed);
        let next = Arc::new(AtomicUsize::new(0));
        let op = Arc::new(op);
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..self.cfg.concurrency.max(1) {
            let (next, op, progress, n) = (
                next.clone(),
                op.clone(),
                self.progress.clone(),
                self.cfg.ues,
            );
            workers.spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return Ok(());
                    }
                    op(i).await?;
                    progress.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        let mut result = Ok(());
        while let Some(r) = workers.join_next().await {
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    if result.is_ok() {
                        result = Err(e);
                    }
                    next.store(usize::MAX / 2, Ordering::Relaxed);
                }
                Err(e) => {
                    if result.is_ok() {
                        result = Err(SwarmError::Io(io::Error::other(e)));
                    }
                }
            }
        }
        result
    }

    /// Bootstraps every UE at the BSF (Ub, TS 24.109) and installs its MUK
    /// in its MGV-F. A failed bootstrap is retried twice.
    pub async fn bootstrap_all(&self) -> Result<(), SwarmError> {
        let client = BootstrapClient::with_http_client(self.http.clone(), &self.cfg.bsf_url)
            .map_err(|e| SwarmError::Io(io::Error::other(e.to_string())))?
            .with_bsf_fqdn(self.cfg.bsf_fqdn.clone());
        let cfg = self.cfg.clone();
        let shards = self.shards.clone();
        let stats = self.stats.clone();
        self.for_all(move |i| {
            let (client, cfg, shards, stats) =
                (client.clone(), cfg.clone(), shards.clone(), stats.clone());
            async move {
                let sub = subscriber(cfg.seed, &cfg.domain, i);
                let mut usim = Usim::new(
                    SubscriberKey::from_bytes(sub.k),
                    Opc::from_bytes(sub.opc),
                    Sqn48::ZERO,
                );
                let mut attempt = 0;
                let b = loop {
                    match client.bootstrap(&sub.impi, &mut usim).await {
                        Ok(b) => break b,
                        Err(e) if attempt < 2 => {
                            attempt += 1;
                            add(&stats.bootstrap_retries, 1);
                            tracing::debug!(index = i, error = %e, "bootstrap retried");
                        }
                        Err(e) => {
                            return Err(SwarmError::Bootstrap {
                                index: i,
                                impi: sub.impi,
                                error: e.to_string(),
                            })
                        }
                    }
                };
                let (_, keys) = b
                    .mbms_keys(&cfg.bmsc_fqdn)
                    .map_err(|e| SwarmError::Bootstrap {
                        index: i,
                        impi: sub.impi.clone(),
                        error: e.to_string(),
                    })?;
                let mut mgvf = MgvF::new(MemoryStore::new());
                mgvf.add_muk(
                    MukId::new(cfg.bmsc_fqdn.clone(), b.btid.as_str()),
                    keys.muk.clone(),
                )
                .map_err(|e| SwarmError::Bootstrap {
                    index: i,
                    impi: sub.impi.clone(),
                    error: e.to_string(),
                })?;
                let n = shards.len();
                let btid: Box<str> = b.btid.as_str().into();
                let mut st = shards[i % n].lock();
                let local = i / n;
                if let Some(old) = st.ues[local].take() {
                    st.by_btid.remove(&old.btid);
                }
                st.by_btid.insert(btid.clone(), local as u32);
                st.ues[local] = Some(SwarmUe {
                    btid,
                    mrk: keys.mrk.clone(),
                    mgvf,
                    holds_target: false,
                    last_request: None,
                    last_counter: None,
                    last_from_port: 0,
                    gate_counted: false,
                });
                Ok(())
            }
        })
        .await
    }

    /// A Ua client for UE `index` (its B-TID and MRK, its shard's MIKEY
    /// port), `None` before it bootstrapped.
    pub fn ua_client(&self, index: usize) -> Option<UaClient> {
        ua_client(&self.cfg, &self.http, &self.shards, index)
    }

    /// Registers every bootstrapped UE to [`SwarmConfig::services`] over
    /// Ua (Digest, `mikey-port` = its shard's port); every service must be
    /// answered 200. A failed registration is retried twice.
    pub async fn register_all(&self) -> Result<(), SwarmError> {
        let cfg = self.cfg.clone();
        let http = self.http.clone();
        let shards = self.shards.clone();
        let stats = self.stats.clone();
        self.for_all(move |i| {
            let (cfg, http, shards, stats) =
                (cfg.clone(), http.clone(), shards.clone(), stats.clone());
            async move {
                let mut c = ua_client(&cfg, &http, &shards, i).ok_or(SwarmError::Register {
                    index: i,
                    error: "not bootstrapped".into(),
                })?;
                let services: Vec<&str> = cfg.services.iter().map(String::as_str).collect();
                let mut attempt = 0;
                loop {
                    let r = c.register(&services).await;
                    let err = match r {
                        Ok(st) if st.iter().all(|(_, s)| *s == 200) => return Ok(()),
                        Ok(st) => format!("item statuses {st:?}"),
                        Err(e) => e.to_string(),
                    };
                    if attempt >= 2 {
                        return Err(SwarmError::Register {
                            index: i,
                            error: err,
                        });
                    }
                    attempt += 1;
                    add(&stats.register_retries, 1);
                }
            }
        })
        .await
    }

    /// Sets the MSKs every UE must hold and returns how many UEs hold them
    /// all now; the shards count the others as their messages arrive
    /// ([`Self::holders`]).
    pub fn set_target(&self, msks: &[MskId]) -> usize {
        let mut total = 0;
        for shard in &self.shards {
            let mut st = shard.lock();
            st.target = msks.to_vec();
            let st = &mut *st;
            let mut count = 0;
            for ue in st.ues.iter_mut().flatten() {
                ue.holds_target = ue.holds(&st.target);
                count += usize::from(ue.holds_target);
            }
            shard.holders.store(count, Ordering::SeqCst);
            total += count;
        }
        if let Some(m) = self.timeline.mark() {
            m.holders(total);
        }
        total
    }

    /// How many UEs hold every MSK of the target.
    pub fn holders(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.holders.load(Ordering::SeqCst))
            .sum()
    }

    /// Recounts the UEs holding the target from their MGV-F states (the
    /// authority; [`Self::holders`] is its running count).
    pub fn count_holders(&self) -> usize {
        self.count_ues(|st, u| u.holds(&st.target))
    }

    /// The missed-key-update path of the UE: every UE that lacks `key`
    /// and did not ask in the last `interval` sends an MSK request for it
    /// over Ua. Returns how many asked.
    pub async fn request_missing(&self, key: MskName, interval: Duration) -> usize {
        let now = Instant::now();
        let mut todo = Vec::new();
        for (s, shard) in self.shards.iter().enumerate() {
            let mut st = shard.lock();
            let st = &mut *st;
            for (local, ue) in st.ues.iter_mut().enumerate() {
                let Some(ue) = ue else { continue };
                let has = ue.mgvf.state().msks.contains_key(&key);
                let due = ue
                    .last_request
                    .is_none_or(|t| now.saturating_duration_since(t) >= interval);
                if !has && due {
                    ue.last_request = Some(now);
                    todo.push(local * self.shards.len() + s);
                }
            }
        }
        let asked = todo.len();
        self.timeline.requests(asked);
        let sem = Arc::new(tokio::sync::Semaphore::new(self.cfg.concurrency.max(1)));
        let mut set = tokio::task::JoinSet::new();
        for i in todo {
            let Some(mut c) = self.ua_client(i) else {
                continue;
            };
            let sem = sem.clone();
            let stats = self.stats.clone();
            set.spawn(async move {
                let _permit = sem.acquire_owned().await;
                add(&stats.msk_requests, 1);
                if let Err(e) = c.msk_request(&[key]).await {
                    tracing::debug!(index = i, error = %e, "MSK request failed");
                }
            });
        }
        while set.join_next().await.is_some() {}
        asked
    }

    /// Stops the shard tasks.
    pub fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn ua_client(
    cfg: &SwarmConfig,
    http: &reqwest::Client,
    shards: &[Arc<Shard>],
    index: usize,
) -> Option<UaClient> {
    let n = shards.len();
    let shard = &shards[index % n];
    let (btid, mrk) = {
        let st = shard.lock();
        let ue = st.ues.get(index / n)?.as_ref()?;
        (ue.btid.clone(), ue.mrk.clone())
    };
    let uri = match cfg.key_management_uris.len() {
        0 => &cfg.key_management_uri,
        k => &cfg.key_management_uris[index % k],
    };
    UaClient::new(http.clone(), uri, &cfg.bmsc_fqdn, shard.port, &btid, &mrk).ok()
}

/// One shard: receive a batch, let each UE's MGV-F process its message,
/// send the acknowledgements in one batch.
async fn shard_loop(
    shard: Arc<Shard>,
    cfg: Arc<SwarmConfig>,
    stats: Arc<Stats>,
    mut rng: StdRng,
    nshards: usize,
    (shard_ix, timeline, first_datagram, gate): (
        usize,
        Arc<Timeline>,
        Arc<FirstDatagram>,
        Arc<KillGate>,
    ),
) {
    let epoch = Instant::now();
    let mut rx = udp::Receiver::default();
    let mut acks: Vec<(SocketAddr, Vec<u8>)> = Vec::with_capacity(udp::BATCH);
    // Pacing: the earliest time the next acknowledgement may leave.
    let per_shard_rate = cfg.pace.map(|p| (p as f64 / nshards as f64).max(1.0));
    let mut next_send = Instant::now();
    let mut paused = gate.paused.subscribe();
    loop {
        // The kill gate: nothing is read while it is closed.
        let _ = paused.wait_for(|p| !p).await;
        let n = match rx.recv(&shard.sock).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "swarm socket failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        first_datagram.received();
        add(&stats.datagrams_received, n as u64);
        let busy = Instant::now();
        acks.clear();
        {
            let now = epoch.elapsed();
            let mark = timeline.mark();
            let mut st = shard.lock();
            let st = &mut *st;
            for (bytes, from) in rx.datagrams() {
                if cfg.loss > 0.0 && rng.gen::<f64>() < cfg.loss {
                    add(&stats.dropped_in, 1);
                    if let Some(m) = &mark {
                        let ix = |l: u32| l as usize * nshards + shard_ix;
                        m.msk_message_lost(bytes, |idr| st.by_btid.get(idr).copied().map(ix));
                    }
                    continue;
                }
                let (local, msk_id, counter) = match MskEnvelope::parse(bytes) {
                    Ok(env) => (
                        st.by_btid.get(env.muk_id.idr.as_str()).copied(),
                        env.msk.msk_id,
                        env.counter,
                    ),
                    Err(_) => {
                        add(&stats.refused, 1);
                        continue;
                    }
                };
                let Some(ue) = local
                    .and_then(|l| st.ues.get_mut(l as usize))
                    .and_then(Option::as_mut)
                else {
                    add(&stats.unknown_idr, 1);
                    continue;
                };
                if let (Some(m), Some(l)) = (&mark, local) {
                    m.msk_message(l as usize * nshards + shard_ix, msk_id);
                }
                let result = ue.mgvf.process_msk_message(bytes, now);
                // Opened (MAC verified) or refused as a replay: the counter
                // the BM-SC put in the message counts.
                let counter = match &result {
                    Ok(MskOutcome::Duplicate { .. } | MskOutcome::DuplicateSuppressed { .. }) => {
                        Some((counter, "duplicate"))
                    }
                    Ok(_) => Some((counter, "accepted")),
                    Err(MgvError::Replay { .. }) => Some((counter, "replay")),
                    Err(_) => None,
                };
                let ack = match result {
                    Ok(MskOutcome::Stored { ack, .. })
                    | Ok(MskOutcome::Superseded { ack, .. })
                    | Ok(MskOutcome::Duplicate { ack }) => {
                        add(&stats.msk_accepted, 1);
                        ack
                    }
                    Ok(MskOutcome::SolicitedPull { .. }) => {
                        add(&stats.solicited_pulls, 1);
                        None
                    }
                    Ok(MskOutcome::DuplicateSuppressed { .. }) => None,
                    Err(e) => {
                        tracing::debug!(error = %e, "swarm UE refused a MIKEY message");
                        add(&stats.refused, 1);
                        None
                    }
                };
                if let Some((c, outcome)) = counter {
                    if let Some(last) = ue.last_counter.filter(|last| c <= *last) {
                        add(&stats.counter_violations, 1);
                        let mut first = stats
                            .first_counter_violation
                            .lock()
                            .unwrap_or_else(|e| e.into_inner());
                        if first.is_none() {
                            *first = Some(CounterViolation {
                                ue: local.map_or(0, |l| l as usize * nshards + shard_ix),
                                btid: ue.btid.to_string(),
                                last_counter: last,
                                last_from_port: ue.last_from_port,
                                counter: c,
                                from_port: from.port(),
                                msk_id: msk_id.to_string(),
                                outcome,
                                at_s: epoch.elapsed().as_secs_f64(),
                            });
                        }
                    }
                    if ue.last_counter.is_none_or(|l| c > l) {
                        ue.last_counter = Some(c);
                        ue.last_from_port = from.port();
                    }
                }
                if let Some(key) = st.gate_key.filter(|_| !ue.gate_counted) {
                    if ue
                        .mgvf
                        .state()
                        .msks
                        .get(&key)
                        .is_some_and(|r| !r.is_inactive())
                    {
                        ue.gate_counted = true;
                        gate.counted(1);
                    }
                }
                if !ue.holds_target && ue.holds(&st.target) {
                    ue.holds_target = true;
                    shard.holders.fetch_add(1, Ordering::SeqCst);
                    if let Some(m) = &mark {
                        m.holders(1);
                    }
                }
                if let Some(a) = ack {
                    add(&stats.acks_made, 1);
                    if cfg.loss > 0.0 && rng.gen::<f64>() < cfg.loss {
                        add(&stats.dropped_out, 1);
                        if let Some(m) = &mark {
                            m.ack_lost();
                        }
                    } else {
                        acks.push((from, a));
                    }
                }
            }
        }
        if acks.is_empty() {
            add(&stats.busy_ns, busy.elapsed().as_nanos() as u64);
            continue;
        }
        let processed = busy.elapsed();
        if let Some(rate) = per_shard_rate {
            let now = Instant::now();
            if next_send > now {
                tokio::time::sleep_until(next_send.into()).await;
            }
            next_send = next_send.max(now) + Duration::from_secs_f64(acks.len() as f64 / rate);
        }
        let sending = Instant::now();
        let sent = udp::send_batch(&shard.sock, &acks).await;
        add(&stats.acks_sent, sent as u64);
        // Processing and the send itself, not the pacing wait.
        add(
            &stats.busy_ns,
            (processed + sending.elapsed()).as_nanos() as u64,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribers_are_deterministic_and_distinct() {
        let a = subscriber(1, "d", 0);
        assert_eq!(a.impi, "ue0@d");
        assert_eq!(subscriber(1, "d", 0).k, a.k);
        assert_ne!(subscriber(1, "d", 1).k, a.k);
        assert_ne!(subscriber(2, "d", 0).k, a.k);
        assert_ne!(a.k, a.opc);
    }

    #[test]
    fn csv_has_the_import_header() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.csv");
        write_subscribers_csv(&p, 7, "x.test", 3).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines[0], "impi,k,opc,sqn,amf");
        assert_eq!(lines.len(), 4);
        assert!(lines[3].starts_with("ue2@x.test,"));
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
}
