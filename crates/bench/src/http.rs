//! `mbms bench http`: the authenticated MSK request rate of the real BM-SC
//! against an axum "hello" server, both driven by the same load generator
//! in the same run (schema `mbms-bench-http/2`, docs/bench.md).
//!
//! The BM-SC side: `connections` swarm UEs (bootstrapped and registered
//! first), each sending `msk-request`s back to back over its own
//! keep-alive connection with HTTP Digest on every request, as the UE's
//! [`ue::ua::UaClient`] does (the `nextnonce` of the last answer, the
//! nonce count advancing; `Authentication-Info` checked). Every accepted
//! request makes the BM-SC push an MSK message, which the swarm
//! acknowledges. The hello side: the same number of connections posting
//! the same body to an axum server in this process (on its own runtime
//! with as many threads as the BM-SC's) that answers `hello`.
//!
//! Two more anchors give the protocol's floor (issue 12: how far the BM-SC
//! is from what its wire exchange costs at least). **hello+udp**: the same
//! hello server, whose handler also sends one 159-byte datagram (the size
//! of the MIKEY MSK message, [`FLOOR_MSK_MESSAGE_LEN`]) to a generator-side
//! UDP socket and answers at once (as the BM-SC answers without waiting for
//! the acknowledgement); a generator-side task answers each datagram with
//! a 60-byte one ([`FLOOR_ACK_LEN`], a MIKEY acknowledgement) and a
//! server-side task reads them, all through [`mbms_service::udp`]
//! (`sendmmsg` / `recvmmsg`, as the BM-SC and the swarm). No crypto, no
//! storage. **hello+udp+commit**: the same, and each request waits for a
//! group commit of one small SQLite row (WAL, `synchronous = FULL`, one
//! committer thread writing everything queued in one transaction, as the
//! BM-SC's committer): the durable-write floor.
//!
//! The four are measured alternately, `rounds` times each; the report
//! gives the medians.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mbms::{KeyDomainId, MskId, MskName};

use crate::services::{io_err, BenchError, ServiceOptions, Services};
use crate::swarm::Swarm;

/// The JSON schema name of [`HttpReport`].
pub const HTTP_SCHEMA: &str = "mbms-bench-http/2";

/// Bytes of the datagram the hello+udp anchors send per request: the
/// MIKEY MSK message of the MBMS shape with a 32-byte MUK (issue 12: 159
/// bytes).
pub const FLOOR_MSK_MESSAGE_LEN: usize = 159;

/// Bytes of the reply to each such datagram: a MIKEY acknowledgement of
/// the MBMS shape (about 60 bytes, issue 12).
pub const FLOOR_ACK_LEN: usize = 60;

/// Acknowledgements the server side of the hello+udp anchors reads per
/// batch at most: the BM-SC's `ACK_BATCH_MAX` (crates/bmsc/src/udp.rs).
const FLOOR_ACK_BATCH_MAX: usize = 16_384;

/// Socket buffers of the server side of the hello+udp anchors: the BM-SC's
/// `DEFAULT_SOCKET_BUFFER` of its MIKEY socket (crates/bmsc/src/udp.rs).
const FLOOR_SERVER_SOCKET_BUFFER: usize = 64 << 20;

/// The BM-SC's async worker threads in `mbms bench http` by default
/// (`mbms bmsc --worker-threads`; `--bmsc-worker-threads` changes it): 0,
/// the BM-SC's own default of one per CPU. One worker costs the BM-SC less
/// CPU per request (62-65 us against 75, and a third of the context
/// switches: its two workers woke each other for most tasks that changed
/// threads) but leaves the generator more to do, and on the quiet machine
/// its rate was lower (issue 12, 2026-11-28 20:25 UTC, 3 runs each,
/// alternated: ratio 0.279 / 0.292 / 0.325 with one worker against
/// 0.316 / 0.306 / 0.318 with one per CPU; docs/bench.md).
pub const BMSC_WORKER_THREADS: usize = 0;

/// Options of `mbms bench http`.
#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// The `mbms` binary that runs the services.
    pub mbms_bin: PathBuf,
    /// Concurrent keep-alive connections (one UE each on the BM-SC side).
    pub connections: usize,
    /// Seconds per measurement.
    pub seconds: f64,
    /// Measurements of each server (alternating).
    pub rounds: usize,
    /// The BM-SC's async worker threads (`mbms bmsc --worker-threads`);
    /// `None`: one per CPU.
    pub bmsc_worker_threads: Option<usize>,
}

impl HttpOptions {
    /// 64 connections, 3 s, 3 rounds, [`BMSC_WORKER_THREADS`].
    pub fn new(mbms_bin: PathBuf) -> Self {
        HttpOptions {
            mbms_bin,
            connections: 64,
            seconds: 3.0,
            rounds: 3,
            // `BMSC_WORKER_THREADS` (0): the BM-SC's own default.
            bmsc_worker_threads: None,
        }
    }
}

/// The rate of one server.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Rate {
    /// Requests per second of each round.
    pub rounds: Vec<f64>,
    /// Their median.
    pub median_per_s: f64,
    /// Requests that failed (all rounds).
    pub errors: u64,
}

/// The report of `mbms bench http` (schema [`HTTP_SCHEMA`]).
#[derive(Clone, Debug, serde::Serialize)]
pub struct HttpReport {
    /// [`HTTP_SCHEMA`].
    pub schema: &'static str,
    /// Concurrent connections.
    pub connections: usize,
    /// Seconds per round.
    pub seconds: f64,
    /// The BM-SC: authenticated `msk-request`s per second.
    pub bmsc: Rate,
    /// The axum hello server: requests per second.
    pub hello: Rate,
    /// The hello+udp anchor (the hello server sending a 159-byte datagram
    /// per request and reading a 60-byte reply to each): requests per
    /// second.
    pub hello_udp: Rate,
    /// The hello+udp+commit anchor (hello+udp, and each request waits for
    /// the group commit of one SQLite row): requests per second.
    pub hello_udp_commit: Rate,
    /// `bmsc.median_per_s / hello.median_per_s` (issue 12's figure).
    pub ratio: f64,
    /// `bmsc.median_per_s / hello_udp.median_per_s`: the BM-SC against the
    /// wire-level floor of an msk-request.
    pub ratio_to_floor: f64,
    /// `bmsc.median_per_s / hello_udp_commit.median_per_s`: against the
    /// floor with the durable write.
    pub ratio_to_commit_floor: f64,
    /// `hello_udp.median_per_s / hello.median_per_s`: the most `ratio` can
    /// reach while every request costs a MIKEY push and its
    /// acknowledgement.
    pub floor_to_hello: f64,
    /// What the two UDP anchors' sockets carried (all rounds).
    pub floor_counts: FloorCounts,
    /// CPU time per request (all rounds), where the machine's time goes.
    pub cpu_us_per_request: CpuPerRequest,
    /// Voluntary context switches per request (all rounds; threads'
    /// `voluntary_ctxt_switches`), the same three sides: how often a
    /// thread went to sleep waiting for another.
    pub voluntary_switches_per_request: SwitchesPerRequest,
    /// CPUs of the machine.
    pub cpus: usize,
}

/// Microseconds of CPU (user + system, `/proc/PID/stat`) per request,
/// over all rounds of each server.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct CpuPerRequest {
    /// The BM-SC process per accepted `msk-request`.
    pub bmsc: f64,
    /// The bench process (load generator and UE swarm: Digest, XML, MIKEY
    /// verification and acknowledgement) during the BM-SC rounds, per
    /// `msk-request`.
    pub generator: f64,
    /// The bench process (load generator and the hello server) during the
    /// hello rounds, per hello request.
    pub hello: f64,
    /// The bench process (load generator, server and both UDP tasks)
    /// during the hello+udp rounds, per request.
    pub hello_udp: f64,
    /// The bench process (as `hello_udp`, and the committer thread) during
    /// the hello+udp+commit rounds, per request.
    pub hello_udp_commit: f64,
}

/// Voluntary context switches per request (all threads of the process,
/// all rounds of each server).
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct SwitchesPerRequest {
    /// The BM-SC process per accepted `msk-request`.
    pub bmsc: f64,
    /// The bench process during the BM-SC rounds, per `msk-request`.
    pub generator: f64,
    /// The bench process during the hello rounds, per hello request.
    pub hello: f64,
    /// The bench process during the hello+udp rounds, per request.
    pub hello_udp: f64,
    /// The bench process during the hello+udp+commit rounds, per request.
    pub hello_udp_commit: f64,
}

/// What the UDP anchors' sockets and store did, all rounds.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct FloorCounts {
    /// hello+udp: datagrams the server sent.
    pub hello_udp_sent: u64,
    /// hello+udp: replies the server read.
    pub hello_udp_replies: u64,
    /// hello+udp+commit: datagrams the server sent.
    pub hello_udp_commit_sent: u64,
    /// hello+udp+commit: replies the server read.
    pub hello_udp_commit_replies: u64,
    /// hello+udp+commit: transactions committed (rows / transactions is
    /// the requests sharing a disk sync).
    pub transactions: u64,
    /// hello+udp+commit: rows committed.
    pub rows: u64,
}

/// CPU seconds of the BM-SC (`bmsc_pid`) and of this process, and their
/// voluntary context switches.
fn cpu_now(bmsc_pid: u32) -> (f64, f64, u64, u64) {
    (
        crate::procfs::cpu_seconds(bmsc_pid).unwrap_or(0.0),
        crate::procfs::self_cpu_seconds(),
        crate::procfs::voluntary_switches(&bmsc_pid.to_string()).unwrap_or(0),
        crate::procfs::voluntary_switches("self").unwrap_or(0),
    )
}

/// Microseconds per item, 0 without items.
fn us_per(seconds: f64, items: u64) -> f64 {
    if items == 0 {
        0.0
    } else {
        1e6 * seconds / items as f64
    }
}

/// `count` per item, 0 without items.
fn per(count: u64, items: u64) -> f64 {
    if items == 0 {
        0.0
    } else {
        count as f64 / items as f64
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        0.0
    } else {
        s[s.len() / 2]
    }
}

/// Starts the hello server on its own runtime; returns its address.
fn hello_server(threads: usize) -> Result<std::net::SocketAddr, BenchError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(io_err("binding hello"))?;
    listener
        .set_nonblocking(true)
        .map_err(io_err("hello listener"))?;
    let addr = listener.local_addr().map_err(io_err("hello listener"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name("hello")
        .enable_all()
        .build()
        .map_err(io_err("hello runtime"))?;
    std::thread::spawn(move || {
        rt.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                return;
            };
            let app = axum::Router::new().fallback(|| async { "hello\n" });
            let _ = axum::serve(listener, app).await;
        });
    });
    Ok(addr)
}

/// Counters of one UDP anchor server, read between rounds.
#[derive(Debug, Default)]
struct AnchorCounts {
    sent: AtomicU64,
    replies: AtomicU64,
    transactions: AtomicU64,
    rows: AtomicU64,
}

/// What the handler of a UDP anchor holds.
struct AnchorState {
    /// The server side's UDP socket (sends the pushes, reads the replies).
    sock: tokio::net::UdpSocket,
    /// The generator side's UDP socket.
    peer: std::net::SocketAddr,
    /// The 159-byte push.
    push: [u8; FLOOR_MSK_MESSAGE_LEN],
    /// The group committer's queue (hello+udp+commit only).
    commit: Option<std::sync::mpsc::Sender<tokio::sync::oneshot::Sender<bool>>>,
    counts: Arc<AnchorCounts>,
}

/// Starts a UDP anchor server (hello+udp, or hello+udp+commit with the
/// SQLite database `commit_db`) on its own runtime of `threads` threads,
/// the hello server's shape, pushing to `peer`; returns its HTTP address
/// and its counters.
fn udp_anchor_server(
    threads: usize,
    peer: std::net::SocketAddr,
    commit_db: Option<&std::path::Path>,
) -> Result<(std::net::SocketAddr, Arc<AnchorCounts>), BenchError> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(io_err("binding hello+udp"))?;
    listener
        .set_nonblocking(true)
        .map_err(io_err("hello+udp listener"))?;
    let addr = listener
        .local_addr()
        .map_err(io_err("hello+udp listener"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name("hello-udp")
        .enable_all()
        .build()
        .map_err(io_err("hello+udp runtime"))?;
    let counts = Arc::new(AnchorCounts::default());
    let commit = match commit_db {
        Some(path) => Some(committer(path, counts.clone())?),
        None => None,
    };
    let sock = {
        // Registered with this runtime's reactor.
        let _rt = rt.enter();
        mbms_service::udp::bind(
            std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            FLOOR_SERVER_SOCKET_BUFFER,
        )
        .map_err(io_err("hello+udp socket"))?
        .0
    };
    let state = Arc::new(AnchorState {
        sock,
        peer,
        push: [0x5a; FLOOR_MSK_MESSAGE_LEN],
        commit,
        counts: counts.clone(),
    });
    std::thread::spawn(move || {
        rt.block_on(async move {
            let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                return;
            };
            tokio::spawn(read_replies(state.clone()));
            let app = axum::Router::new().fallback(move || {
                let st = state.clone();
                async move {
                    // Sent before the answer, not waited for (as the
                    // BM-SC pushes the MSK while the request waits for its
                    // commit).
                    let sent =
                        mbms_service::udp::send_batch(&st.sock, &[(st.peer, &st.push[..])]).await;
                    st.counts
                        .sent
                        .fetch_add(sent.sent as u64, Ordering::Relaxed);
                    if let Some(q) = &st.commit {
                        let (tx, rx) = tokio::sync::oneshot::channel();
                        if q.send(tx).is_err() || rx.await != Ok(true) {
                            return Err(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
                        }
                    }
                    Ok("hello\n")
                }
            });
            let _ = axum::serve(listener, app).await;
        });
    });
    Ok((addr, counts))
}

/// The server side's reader of the replies, the shape of the BM-SC's
/// MIKEY receiver: waits for one, takes what is queued (up to
/// [`FLOOR_ACK_BATCH_MAX`]), counts them.
async fn read_replies(st: Arc<AnchorState>) {
    let mut rx = mbms_service::udp::Receiver::new();
    let mut batch = mbms_service::udp::RecvBatch::with_capacity(FLOOR_ACK_BATCH_MAX);
    loop {
        if rx.recv(&st.sock, &mut batch).await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        rx.try_recv_more(&st.sock, &mut batch, FLOOR_ACK_BATCH_MAX);
        st.counts
            .replies
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
    }
}

/// The generator side's UDP task, the shape of a swarm shard: receives the
/// pushes ([`mbms_service::udp::BATCH`] per `recvmmsg`) and answers each
/// with a [`FLOOR_ACK_LEN`]-byte datagram to its source (`sendmmsg`).
async fn answer_pushes(sock: tokio::net::UdpSocket) {
    let mut rx = mbms_service::udp::Receiver::new();
    let mut batch = mbms_service::udp::RecvBatch::with_capacity(mbms_service::udp::BATCH);
    let mut acks: Vec<(std::net::SocketAddr, [u8; FLOOR_ACK_LEN])> =
        Vec::with_capacity(mbms_service::udp::BATCH);
    loop {
        if rx.recv(&sock, &mut batch).await.is_err() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        acks.clear();
        acks.extend(batch.iter().map(|(_, from)| (from, [0xa5; FLOOR_ACK_LEN])));
        mbms_service::udp::send_batch(&sock, &acks).await;
    }
}

/// The hello+udp+commit anchor's group committer: one thread, the SQLite
/// database at `path` (created by [`mbms_service::db::open_sqlite`]: WAL,
/// `synchronous = FULL`, as the services' stores). It waits for a request,
/// writes one row for it and for every other request queued by then in
/// one transaction, commits, answers them, and starts again: the requests
/// that come during a commit share the next one. Returns the queue.
fn committer(
    path: &std::path::Path,
    counts: Arc<AnchorCounts>,
) -> Result<std::sync::mpsc::Sender<tokio::sync::oneshot::Sender<bool>>, BenchError> {
    let schema = mbms_service::db::Schema {
        base: "CREATE TABLE floor_write (id INTEGER PRIMARY KEY, at INTEGER NOT NULL, state BLOB NOT NULL);",
        migrations: &[],
    };
    let mut conn =
        mbms_service::db::open_sqlite(path, &schema, mbms_service::db::Create::Init, &|_| Ok(()))
            .map_err(|e| BenchError::Service(format!("hello+udp+commit store: {e}")))?;
    let (tx, rx) = std::sync::mpsc::channel::<tokio::sync::oneshot::Sender<bool>>();
    std::thread::Builder::new()
        .name("hello-commit".into())
        .spawn(move || {
            let mut waiting = Vec::new();
            let mut at = 0i64;
            while let Ok(first) = rx.recv() {
                waiting.push(first);
                waiting.extend(rx.try_iter());
                let ok = (|| -> rusqlite::Result<()> {
                    let t =
                        conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                    {
                        let mut ins = t.prepare_cached(
                            "INSERT INTO floor_write (at, state) VALUES (?1, ?2)",
                        )?;
                        for _ in &waiting {
                            at += 1;
                            ins.execute(rusqlite::params![at, &[7u8; 16][..]])?;
                        }
                    }
                    t.commit()
                })()
                .is_ok();
                if ok {
                    counts.transactions.fetch_add(1, Ordering::Relaxed);
                    counts
                        .rows
                        .fetch_add(waiting.len() as u64, Ordering::Relaxed);
                }
                for w in waiting.drain(..) {
                    let _ = w.send(ok);
                }
            }
        })
        .map_err(io_err("hello+udp+commit committer"))?;
    Ok(tx)
}

/// Posts `body` to `url`; true when answered 2xx with a body (the hello
/// side's request, for every anchor).
async fn post(http: reqwest::Client, url: String, body: Vec<u8>) -> bool {
    match http
        .post(url)
        .header("content-type", ue::xml::CT_MSK)
        .body(body)
        .send()
        .await
    {
        Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
        Err(_) => false,
    }
}

/// Runs `mbms bench http`.
pub async fn run(o: &HttpOptions) -> Result<HttpReport, BenchError> {
    let c = o.connections.max(1);
    let mut services = Services::start(&ServiceOptions {
        mbms_bin: o.mbms_bin.clone(),
        subscribers: c,
        seed: 1,
        retransmit_initial_ms: 2000,
        retransmit_max_attempts: 6,
        max_connections: (2 * c).max(512),
        charging: false,
        bmsc_worker_threads: o.bmsc_worker_threads,
    })?;
    let r = run_with(o, &mut services).await;
    services.stop();
    r
}

async fn run_with(o: &HttpOptions, services: &mut Services) -> Result<HttpReport, BenchError> {
    let c = o.connections.max(1);
    let mut cfg = services.swarm_config(c, 1);
    cfg.concurrency = c;
    let swarm = Swarm::start(cfg).await?;
    swarm.bootstrap_all().await?;
    swarm.register_all().await?;
    services.check_running()?;
    let key_domain: KeyDomainId = services
        .names
        .key_domain
        .parse()
        .map_err(|e| BenchError::Service(format!("key domain: {e}")))?;
    // Key Number 0: the current MSK of the key group (seed 002).
    let key = MskName {
        key_domain,
        msk_id: MskId::new(services.names.key_group, 0),
    };
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let hello = hello_server(cpus)?;
    let hello_url = format!("http://{hello}/keymanagement?requesttype=msk-request");
    // The generator side of the UDP anchors: one socket, like the swarm's
    // shared addresses, answered on this (the generator's) runtime.
    let (floor_sock, _) = crate::udp::bind(
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        crate::swarm::SWARM_SOCKET_BUFFER,
    )
    .map_err(io_err("generator UDP socket"))?;
    let floor_peer = floor_sock
        .local_addr()
        .map_err(io_err("generator UDP socket"))?;
    let answering = tokio::spawn(answer_pushes(floor_sock));
    let (udp_addr, udp_counts) = udp_anchor_server(cpus, floor_peer, None)?;
    let (commit_addr, commit_counts) = udp_anchor_server(
        cpus,
        floor_peer,
        Some(&services.dir().join("hello-udp-commit.db")),
    )?;
    let udp_url = format!("http://{udp_addr}/keymanagement?requesttype=msk-request");
    let commit_url = format!("http://{commit_addr}/keymanagement?requesttype=msk-request");
    let body = ue::xml::msk_request_body(&[key]);
    let hello_http = reqwest::Client::builder()
        .pool_max_idle_per_host(c)
        .tcp_nodelay(true)
        .build()?;
    let mut clients: Vec<_> = (0..c)
        .filter_map(|i| swarm.ua_client(i))
        .map(|cl| Arc::new(tokio::sync::Mutex::new(cl)))
        .collect();
    if clients.len() != c {
        return Err(BenchError::Service("a UE has no Ua client".into()));
    }
    // Warm up: the first request of each UE takes a challenge.
    for cl in &mut clients {
        let _ = cl.lock().await.msk_request(&[key]).await;
    }
    let dur = Duration::from_secs_f64(o.seconds.max(0.1));
    let mut bmsc_rates = Vec::new();
    let mut hello = Anchor::default();
    let mut hello_udp = Anchor::default();
    let mut hello_udp_commit = Anchor::default();
    let mut bmsc_errors = 0;
    let bmsc_pid = services.pids().1;
    // CPU seconds (BM-SC, bench process) and requests of the BM-SC rounds.
    let (mut bmsc_cpu, mut generator_cpu, mut bmsc_n) = (0.0, 0.0, 0u64);
    // Voluntary context switches: BM-SC, generator.
    let (mut bmsc_sw, mut generator_sw) = (0u64, 0u64);
    for _ in 0..o.rounds.max(1) {
        let before = cpu_now(bmsc_pid);
        let (n, e, t) = drive(c, dur, |i| {
            let cl = clients[i].clone();
            async move {
                cl.lock()
                    .await
                    .msk_request(&[key])
                    .await
                    .is_ok_and(|st| st.iter().all(|k| k.status == 200))
            }
        })
        .await;
        let after = cpu_now(bmsc_pid);
        bmsc_cpu += after.0 - before.0;
        generator_cpu += after.1 - before.1;
        bmsc_sw += after.2.saturating_sub(before.2);
        generator_sw += after.3.saturating_sub(before.3);
        bmsc_n += n;
        bmsc_rates.push(n as f64 / t);
        bmsc_errors += e;
        for (anchor, url) in [
            (&mut hello, &hello_url),
            (&mut hello_udp, &udp_url),
            (&mut hello_udp_commit, &commit_url),
        ] {
            anchor
                .measure(c, dur, |_| {
                    post(hello_http.clone(), url.clone(), body.clone())
                })
                .await;
        }
    }
    services.check_running()?;
    swarm.stop();
    answering.abort();
    let bmsc = Rate {
        median_per_s: median(&bmsc_rates),
        rounds: bmsc_rates,
        errors: bmsc_errors,
    };
    let floor_counts = FloorCounts {
        hello_udp_sent: udp_counts.sent.load(Ordering::Relaxed),
        hello_udp_replies: udp_counts.replies.load(Ordering::Relaxed),
        hello_udp_commit_sent: commit_counts.sent.load(Ordering::Relaxed),
        hello_udp_commit_replies: commit_counts.replies.load(Ordering::Relaxed),
        transactions: commit_counts.transactions.load(Ordering::Relaxed),
        rows: commit_counts.rows.load(Ordering::Relaxed),
    };
    let (hello, hello_udp, hello_udp_commit) =
        (hello.rate(), hello_udp.rate(), hello_udp_commit.rate());
    let ratio_of = |a: &Rate, b: &Rate| a.median_per_s / b.median_per_s.max(1e-9);
    Ok(HttpReport {
        schema: HTTP_SCHEMA,
        connections: c,
        seconds: dur.as_secs_f64(),
        ratio: ratio_of(&bmsc, &hello.0),
        ratio_to_floor: ratio_of(&bmsc, &hello_udp.0),
        ratio_to_commit_floor: ratio_of(&bmsc, &hello_udp_commit.0),
        floor_to_hello: ratio_of(&hello_udp.0, &hello.0),
        floor_counts,
        cpu_us_per_request: CpuPerRequest {
            bmsc: us_per(bmsc_cpu, bmsc_n),
            generator: us_per(generator_cpu, bmsc_n),
            hello: hello.1,
            hello_udp: hello_udp.1,
            hello_udp_commit: hello_udp_commit.1,
        },
        voluntary_switches_per_request: SwitchesPerRequest {
            bmsc: per(bmsc_sw, bmsc_n),
            generator: per(generator_sw, bmsc_n),
            hello: hello.2,
            hello_udp: hello_udp.2,
            hello_udp_commit: hello_udp_commit.2,
        },
        bmsc,
        hello: hello.0,
        hello_udp: hello_udp.0,
        hello_udp_commit: hello_udp_commit.0,
        cpus,
    })
}

/// The rounds of one anchor server (all of it in this process): rates,
/// failures, and this process's CPU and voluntary context switches.
#[derive(Debug, Default)]
struct Anchor {
    rates: Vec<f64>,
    errors: u64,
    requests: u64,
    cpu_s: f64,
    switches: u64,
}

impl Anchor {
    /// One round of `request` driven by [`drive`].
    async fn measure<F, Fut>(&mut self, c: usize, dur: Duration, request: F)
    where
        F: Fn(usize) -> Fut,
        Fut: std::future::Future<Output = bool> + Send + 'static,
    {
        let before = crate::procfs::self_cpu_seconds();
        let sw_before = crate::procfs::voluntary_switches("self").unwrap_or(0);
        let (n, e, t) = drive(c, dur, request).await;
        self.cpu_s += crate::procfs::self_cpu_seconds() - before;
        self.switches += crate::procfs::voluntary_switches("self")
            .unwrap_or(0)
            .saturating_sub(sw_before);
        self.requests += n;
        self.rates.push(n as f64 / t);
        self.errors += e;
    }

    /// The rate, CPU microseconds and voluntary switches per request.
    fn rate(self) -> (Rate, f64, f64) {
        (
            Rate {
                median_per_s: median(&self.rates),
                rounds: self.rates,
                errors: self.errors,
            },
            us_per(self.cpu_s, self.requests),
            per(self.switches, self.requests),
        )
    }
}

/// `c` workers send requests back to back for `dur`; returns (successes,
/// failures, seconds).
async fn drive<F, Fut>(c: usize, dur: Duration, request: F) -> (u64, u64, f64)
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let request = Arc::new(request);
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    // The futures are made here (the closure need not be Send) and run on
    // the runtime's workers.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<usize>(c);
    for i in 0..c {
        let _ = tx.send(i).await;
    }
    let deadline = start + dur;
    let mut running = 0usize;
    loop {
        while let Ok(i) = rx.try_recv() {
            if Instant::now() >= deadline {
                stop.store(true, Ordering::Relaxed);
                continue;
            }
            let fut = request(i);
            let (ok, failed, tx) = (ok.clone(), failed.clone(), tx.clone());
            running += 1;
            set.spawn(async move {
                if fut.await {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                let _ = tx.send(i).await;
            });
        }
        if running == 0 && stop.load(Ordering::Relaxed) {
            break;
        }
        match set.join_next().await {
            Some(_) => running -= 1,
            None => {
                if Instant::now() >= deadline {
                    break;
                }
            }
        }
    }
    let t = start.elapsed().as_secs_f64();
    (
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        t,
    )
}
