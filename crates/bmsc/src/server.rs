//! The BM-SC service: the HTTP router (Ua, admin API, `/metrics`,
//! `/healthz`), the MIKEY UDP socket, the engine driver and the session
//! tasks, started by [`start`] and stopped by [`RunningBmsc::shutdown`]
//! (graceful) or [`RunningBmsc::kill`] (a crash, for tests).
//!
//! Tasks:
//!
//! * **HTTP** (axum on [`mbms_service::serve_http`], within the `[http]`
//!   limits): Ua handlers ([`crate::ua`]), admin ([`crate::admin`]).
//! * **Engine driver**: sleeps until the engine's next deadline, the next
//!   scheduled rotation, or a wake-up (a registration, an MSK request, an
//!   acknowledgement that scheduled the 4-way activation, an admin action);
//!   then rotates what is due, polls the engine and sends the MSK messages
//!   in batches ([`crate::udp`]).
//! * **MIKEY receiver**: reads acknowledgements in batches and hands them to
//!   the core, which verifies and records them.
//! * **Sessions** ([`crate::session`]).
//! * **Group committer**: a thread of its own (`crate::committer`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::{any, get};
use axum::Router;
use rand::RngCore as _;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use gba::digest::{DigestServer, ServerConfig};
use mbms::engine::EngineConfig;

use crate::config::{BmscConfig, ConfigError, Token, MAX_UA_BODY};
use crate::core::{now_ts, Core, CoreError, CoreHandle, CoreSettings, Datagrams};
use crate::metrics::{Exposition, Metrics};
use crate::session::{SessionCtx, Sessions};
use crate::store::Store;
use crate::tap::{Tap, TapDatagram, TapDirection, TapKind};
use crate::zn::{ZnClient, ZnError};
use crate::{admin, session, ua, udp};

/// Starting the server failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Loading the state failed.
    #[error("loading the BM-SC state")]
    Core(#[from] CoreError),
    /// The Zn client could not be built.
    #[error(transparent)]
    Zn(#[from] ZnError),
    /// The committer thread could not be started.
    #[error("starting the group committer thread")]
    Thread {
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A socket could not be bound.
    #[error("cannot bind {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Everything the handlers share.
pub struct App {
    pub(crate) realm: String,
    pub(crate) core: CoreHandle,
    digest: Mutex<DigestServer>,
    pub(crate) zn: ZnClient,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) admin_token: Token,
    pub(crate) mikey: Arc<UdpSocket>,
    rotations: watch::Sender<u64>,
    /// The group committer's thread (`crate::committer`).
    committer: crate::committer::Committer,
    pub(crate) sessions: Sessions,
    multicast_ttl: u32,
    tap: Option<Tap>,
    /// Datagrams read from the MIKEY socket so far (acknowledgements).
    mikey_received: std::sync::atomic::AtomicU64,
    /// Wakes the engine driver: datagrams were read from the MIKEY socket.
    mikey_read: tokio::sync::Notify,
    /// MIKEY messages a rotation may have sent beyond the datagrams read
    /// back ([`ack_window`]).
    ack_window: u64,
    /// Several instances on one database ([`crate::cluster`]).
    pub(crate) cluster: Option<Arc<crate::cluster::ClusterState>>,
}

/// What one small datagram (an acknowledgement, about 60 bytes) takes of a
/// socket's receive buffer in the kernel's accounting (its `skb`'s
/// truesize, measured about 1 KiB on Linux for a 160-byte datagram).
const DATAGRAM_BUFFER_COST: usize = 1024;

/// The receive buffer Linux grants by default (`net.core.rmem_default`),
/// assumed when the granted size cannot be read.
const DEFAULT_RECEIVE_BUFFER: usize = 212_992;

/// Flow control of a rotation's pushes: at most this many MIKEY messages
/// sent beyond the datagrams read back from the socket, half of what its
/// receive buffer holds, so that the acknowledgements of a large rotation
/// (one per UE, seed 000 6.3.2.3.1: V bit) wait in the buffer instead of
/// being dropped by the kernel and costing a retransmission each. At least
/// one [`POLL_BATCH`](crate::core::POLL_BATCH).
fn ack_window(receive_buffer: usize) -> u64 {
    ((receive_buffer / DATAGRAM_BUFFER_COST / 2).max(crate::core::POLL_BATCH)) as u64
}

/// How long the engine driver waits for the acknowledgements of a rotation
/// to be read when its window is full: past it without a datagram read
/// (messages lost, or pushes without the V bit, which are never
/// acknowledged) it sends on.
const ACK_STALL: Duration = Duration::from_millis(5);

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("realm", &self.realm)
            .finish_non_exhaustive()
    }
}

impl App {
    /// Waits until at most [`ack_window`] of the `sent` MIKEY messages are
    /// ahead of the datagrams read back, or until [`ACK_STALL`] passes
    /// without one read.
    async fn wait_for_acks(&self, sent: u64) {
        use std::sync::atomic::Ordering;
        loop {
            let read = self.mikey_received.load(Ordering::Acquire);
            if sent.saturating_sub(read) <= self.ack_window {
                return;
            }
            let progress = self.mikey_read.notified();
            if self.mikey_received.load(Ordering::Acquire) != read {
                continue;
            }
            if tokio::time::timeout(ACK_STALL, progress).await.is_err() {
                return;
            }
        }
    }

    /// Wait until the writes up to `ticket` are durable (group commit:
    /// the committer writes everything queued in one transaction). `false`
    /// when their commit failed.
    pub(crate) async fn committed(&self, ticket: u64) -> bool {
        self.committer.committed(ticket).await
    }

    /// [`committed`](Self::committed) for a Ua request that may have made
    /// MIKEY pushes due: the engine driver sends them while the commit
    /// runs. The committer wakes it when a commit begins, one wake for all
    /// the requests of that commit (`crate::committer`), so only a
    /// request that `queued` no write (no commit of its own will begin
    /// after its pushes became due) or whose writes are committed already
    /// wakes it here.
    pub(crate) async fn committed_then_pushed(&self, ticket: u64, queued: bool) -> bool {
        if !queued || self.committer.is_committed(ticket) {
            self.core.wake();
        }
        self.committer.committed(ticket).await
    }

    pub(crate) fn digest(&self) -> MutexGuard<'_, DigestServer> {
        self.digest.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends MIKEY datagrams from the MIKEY socket; returns how many left.
    pub(crate) async fn send_mikey(&self, d: &Datagrams) -> usize {
        if d.is_empty() {
            return 0;
        }
        if let Some(st) = &self.cluster {
            // Only while the leases are known to be ours: another instance
            // may have taken this one's UE shards (`ClusterState::may_send`).
            // Withheld messages count as lost: retransmitted if the leases
            // are renewed, rebuilt by the next holder if not.
            if !st.may_send(std::time::Instant::now()) {
                self.metrics.cluster.mikey_withheld.inc_by(d.len() as u64);
                return 0;
            }
        }
        if let Some(t) = &self.tap {
            if let Ok(src) = self.mikey.local_addr() {
                t.sent(TapKind::Mikey, src, d);
            }
        }
        let r = udp::send_batch(&self.mikey, d).await;
        self.metrics.udp_send_errors.inc_by(r.failed as u64);
        r.sent
    }

    /// Tells the sessions that a key group rotated.
    pub(crate) fn rotated(&self) {
        self.rotations.send_modify(|g| *g = g.wrapping_add(1));
    }

    pub(crate) fn session_ctx(&self) -> SessionCtx {
        SessionCtx {
            core: self.core.clone(),
            metrics: self.metrics.clone(),
            rotations: self.rotations.subscribe(),
            multicast_ttl: self.multicast_ttl,
            tap: self.tap.clone(),
        }
    }
}

/// A running BM-SC.
#[derive(Debug)]
pub struct RunningBmsc {
    http_addr: SocketAddr,
    mikey_addr: SocketAddr,
    stop: watch::Sender<bool>,
    http: JoinHandle<std::io::Result<()>>,
    tasks: Vec<JoinHandle<()>>,
    app: Arc<App>,
}

impl RunningBmsc {
    /// The HTTP address (Ua, admin, metrics).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// The MIKEY UDP address (MSK messages from, acknowledgements to).
    pub fn mikey_addr(&self) -> SocketAddr {
        self.mikey_addr
    }

    /// The metrics (OpenMetrics exposition).
    pub fn metrics(&self) -> String {
        self.app.metrics.render()
    }

    /// Stops accepting, lets running requests finish (at most
    /// `http.shutdown_timeout`), stops the tasks.
    pub async fn shutdown(self) -> std::io::Result<()> {
        let _ = self.stop.send(true);
        let r = match self.http.await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e)),
        };
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        r
    }

    /// Stops everything at once, as a crash would: nothing is flushed
    /// (everything that matters was committed when it happened). For tests.
    pub fn kill(self) {
        // No commit after the crash, though connections the runtime has not
        // dropped yet may still hold the service.
        self.app.committer.abandon();
        self.http.abort();
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn digest_server(cfg: &BmscConfig, shared: Option<&[u8]>) -> Result<DigestServer, ConfigError> {
    let mut sc = ServerConfig::new(format!("3GPP-bootstrapping@{}", cfg.fqdn));
    sc.algorithms = cfg.algorithms()?;
    sc.nonce_lifetime = cfg.nonce_lifetime;
    let mut secret = [0u8; 32];
    match shared {
        // Several instances: one nonce secret for all (a nonce from one
        // instance verifies at another, behind a load balancer).
        Some(s) if s.len() == 32 => secret.copy_from_slice(s),
        _ => rand::rngs::OsRng.fill_bytes(&mut secret),
    }
    let d = DigestServer::new(sc, secret);
    zeroize::Zeroize::zeroize(&mut secret);
    Ok(d)
}

/// The name of the Digest nonce secret in table `cluster_secrets`.
const NONCE_SECRET: &str = "digest_nonce";

/// Starts a BM-SC over `store` with `cfg` (its `db` is not used here: the
/// caller opened the store).
pub async fn start(cfg: &BmscConfig, store: Arc<dyn Store>) -> Result<RunningBmsc, ServerError> {
    start_with_tap(cfg, store, None).await
}

/// [`start`] with a datagram [`Tap`] that sees every MIKEY, MTK and SRTP
/// datagram sent and every MIKEY datagram received (`mbms demo --pcap`).
pub async fn start_with_tap(
    cfg: &BmscConfig,
    store: Arc<dyn Store>,
    tap: Option<Tap>,
) -> Result<RunningBmsc, ServerError> {
    cfg.validate()?;
    let metrics = Arc::new(if store.cluster().is_some() {
        Metrics::with_cluster()
    } else {
        Metrics::new()
    });
    for s in &cfg.sessions {
        metrics.add_session(&s.name, s.kind);
    }
    let settings = CoreSettings {
        fqdn: cfg.fqdn.clone(),
        key_domain: cfg.key_domain_id()?,
        engine: EngineConfig {
            counter_block: cfg.counter_block,
            retransmit: cfg.retransmit.policy(),
        },
        key_groups: cfg.key_groups.iter().map(|k| k.def()).collect(),
        services: cfg.services.iter().map(|s| s.def()).collect(),
    };
    let instance_id = store.cluster().map(|_| cfg.cluster.instance_id());
    if let (Some(c), Some(id)) = (store.cluster(), &instance_id) {
        // Several instances: from the first write on, a key group's state
        // is created by whoever comes first and replaced only by its
        // anchor (the others adopt it at the first lease renewal).
        for k in &cfg.key_groups {
            c.set_fence(id, k.id, None);
        }
    }
    let m2 = metrics.clone();
    let core = tokio::task::spawn_blocking(move || Core::open(&settings, store, m2, now_ts()))
        .await
        .map_err(|e| CoreError::Invalid(format!("loading: {e}")))??;
    let core = CoreHandle::new(core);
    let zn = ZnClient::new(
        &cfg.bsf.url,
        cfg.bsf.zn_token.clone(),
        &cfg.fqdn,
        Duration::from_secs(cfg.bsf.timeout.max(1)),
    )?;
    let mikey = UdpSocket::bind(cfg.mikey_listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: cfg.mikey_listen,
            source,
        })?;
    let granted = udp::set_buffers(&mikey, cfg.mikey_socket_buffer);
    let ack_window = ack_window(granted.map_or(DEFAULT_RECEIVE_BUFFER, |(r, _)| r));
    match granted {
        Some((r, w)) if r < cfg.mikey_socket_buffer || w < cfg.mikey_socket_buffer => {
            tracing::warn!(
                requested = cfg.mikey_socket_buffer,
                receive = r,
                send = w,
                "MIKEY socket buffers capped by the kernel (raise net.core.rmem_max / wmem_max): \
                 acknowledgement bursts of large rotations may be dropped and retransmitted"
            );
        }
        Some((r, w)) => tracing::debug!(receive = r, send = w, "MIKEY socket buffers"),
        None => {}
    }
    let mikey_addr = mikey.local_addr().map_err(|source| ServerError::Bind {
        addr: cfg.mikey_listen,
        source,
    })?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: cfg.listen,
            source,
        })?;
    let http_addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: cfg.listen,
        source,
    })?;
    let (rotations, _) = watch::channel(0u64);
    let cluster = instance_id.and_then(|id| store_cluster(&core, cfg, id, http_addr));
    let shared_nonce = match &cluster {
        Some(_) => {
            let store = core.with(|c| c.store().clone());
            let mut fresh = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut fresh);
            let r = tokio::task::spawn_blocking(move || {
                let r = store
                    .cluster()
                    .map(|c| c.shared_secret(NONCE_SECRET, &fresh))
                    .transpose();
                zeroize::Zeroize::zeroize(&mut fresh);
                r
            })
            .await
            .map_err(|e| CoreError::Invalid(format!("shared nonce secret: {e}")))?;
            r.map_err(CoreError::Store)?
        }
        None => None,
    };
    let app = Arc::new(App {
        realm: format!("3GPP-bootstrapping@{}", cfg.fqdn),
        core: core.clone(),
        digest: Mutex::new(digest_server(cfg, shared_nonce.as_ref().map(|s| &s[..]))?),
        zn,
        metrics,
        admin_token: cfg.admin_token.clone(),
        mikey: Arc::new(mikey),
        rotations,
        committer: crate::committer::Committer::start(
            core.clone(),
            core.with(|c| c.store().clone()),
            Duration::from_micros(cfg.commit_gather_us),
        )
        .map_err(|source| ServerError::Thread { source })?,
        sessions: Sessions::new(&cfg.sessions),
        multicast_ttl: cfg.multicast_ttl,
        mikey_received: std::sync::atomic::AtomicU64::new(0),
        mikey_read: tokio::sync::Notify::new(),
        ack_window,
        tap,
        cluster: cluster.clone(),
    });
    // Several instances: the first leases before serving (alone, this
    // instance owns every UE and key group at once).
    let renewal = match &cluster {
        Some(st) => Some(crate::cluster::first_claim(&app, st).await),
        None => None,
    };
    let (stop, stop_rx) = watch::channel(false);

    let router = Router::new()
        .route(
            ua::PATH,
            any(ua::keymanagement).layer(DefaultBodyLimit::max(MAX_UA_BODY)),
        )
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(
                |axum::extract::State(app): axum::extract::State<Arc<App>>,
                 headers: axum::http::HeaderMap| async move {
                    let accept = headers
                        .get(axum::http::header::ACCEPT)
                        .and_then(|v| v.to_str().ok());
                    let (content_type, body) =
                        app.metrics.exposition(Exposition::negotiate(accept));
                    // The body depends on Accept (RFC 9110 section 12.5.5).
                    (
                        [
                            (CONTENT_TYPE, content_type),
                            (axum::http::header::VARY, "accept"),
                        ],
                        body,
                    )
                        .into_response()
                },
            ),
        )
        .merge(admin::router())
        // After every route: unknown paths and methods answer the
        // documented error object (docs/bmsc-openapi.yaml).
        .fallback(admin::not_found)
        .method_not_allowed_fallback(admin::method_not_allowed)
        .with_state(app.clone());
    let mut http_stop = stop_rx.clone();
    let http = tokio::spawn(mbms_service::serve_http(
        listener,
        router,
        cfg.http.clone(),
        async move {
            let _ = http_stop.wait_for(|s| *s).await;
        },
    ));

    let mut tasks = vec![
        tokio::spawn(engine_driver(app.clone(), stop_rx.clone())),
        tokio::spawn(mikey_receiver(app.clone(), stop_rx.clone())),
        tokio::spawn(committer(app.clone(), stop_rx.clone())),
    ];
    if let (Some(st), Some(renewal)) = (cluster, renewal) {
        tasks.push(tokio::spawn(crate::cluster::run(
            app.clone(),
            st,
            renewal,
            stop_rx.clone(),
        )));
    }
    for s in app.sessions.all() {
        tasks.push(tokio::spawn(session::run(
            app.session_ctx(),
            s.clone(),
            stop_rx.clone(),
        )));
    }
    tracing::info!(
        fqdn = %cfg.fqdn,
        http = %http_addr,
        mikey = %mikey_addr,
        key_domain = %cfg.key_domain,
        "BM-SC running (Ua on POST /keymanagement, admin on /admin/v1, /metrics, /healthz)"
    );
    Ok(RunningBmsc {
        http_addr,
        mikey_addr,
        stop,
        http,
        tasks,
        app,
    })
}

/// The cluster state of a store shared by several instances.
fn store_cluster(
    core: &CoreHandle,
    cfg: &BmscConfig,
    instance_id: String,
    http_addr: SocketAddr,
) -> Option<Arc<crate::cluster::ClusterState>> {
    let store = core.with(|c| c.store().clone());
    store.cluster()?;
    let st = crate::cluster::ClusterState::new(
        instance_id,
        cfg.cluster
            .advertise_url
            .clone()
            .unwrap_or_else(|| format!("http://{http_addr}")),
        cfg.cluster.lease_ms(),
        store,
    );
    tracing::info!(instance = %st.instance_id, url = %st.url, lease_ms = st.lease_ms, "BM-SC instance on a shared PostgreSQL database");
    Some(Arc::new(st))
}

/// Runs `f` on the core; also says whether it queued writes for the next
/// group commit (its [write ticket](Core::write_ticket) moved).
fn queued<T>(c: &mut Core, f: impl FnOnce(&mut Core) -> T) -> (T, bool) {
    let ticket = c.write_ticket();
    let r = f(c);
    (r, c.write_ticket() != ticket)
}

/// How often the engine driver looks again at leases not known to be
/// renewed in time.
const LEASE_WAIT: Duration = Duration::from_millis(20);

async fn engine_driver(app: Arc<App>, mut stop: watch::Receiver<bool>) {
    // MIKEY messages sent so far (compared with the datagrams read back).
    let mut sent: u64 = 0;
    loop {
        let (deadline, rotation, hold) = app
            .core
            .run_short(|c| (c.next_deadline(), c.next_rotation(), c.poll_hold()))
            .await;
        if let Some(ticket) = hold {
            // Activations wait for the charging records of their step-1
            // acknowledgements to be on disk (`Core::poll_hold`): one group
            // commit, then poll.
            let ok = tokio::select! {
                r = stop.wait_for(|s| *s) => { let _ = r; return; }
                ok = app.committed(ticket) => ok,
            };
            if !ok {
                // That commit failed; the committer retries it.
                tokio::select! {
                    r = stop.wait_for(|s| *s) => { let _ = r; return; }
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
            continue;
        }
        let now = now_ts();
        let next = [deadline, rotation].into_iter().flatten().min();
        let sleep = next.map_or(Duration::from_secs(3600), |t| t.saturating_since(now));
        if !sleep.is_zero() {
            tokio::select! {
                r = stop.wait_for(|s| *s) => { let _ = r; return; }
                () = app.core.woken() => {}
                () = tokio::time::sleep(sleep) => {}
            }
        }
        if *stop.borrow() {
            return;
        }
        if app
            .cluster
            .as_ref()
            .is_some_and(|st| !st.may_send(std::time::Instant::now()))
        {
            // The leases are not known to be renewed in time: nothing is
            // built (what is due stays due) until they are, or until the
            // cluster task drops the UEs and key groups
            // (`ClusterState::may_send`).
            tokio::select! {
                r = stop.wait_for(|s| *s) => { let _ = r; return; }
                () = tokio::time::sleep(LEASE_WAIT) => {}
            }
            continue;
        }
        if rotation.is_some_and(|t| t <= now_ts()) {
            if let Some(st) = &app.cluster {
                // The notices committed so far first (deregistrations
                // answered by other instances: `ClusterState::sync_notices`).
                st.sync_notices().await;
            }
            // A rotation writes the key group's state: on a blocking thread.
            let rotated = app.core.run(|c| c.rotate_due(now_ts())).await;
            if !rotated.is_empty() {
                app.rotated();
            }
        }
        // The few pushes of the request path on this thread; a rotation's
        // bulk on a blocking thread (`SHORT_POLL`).
        // Each poll says whether it queued writes (give-ups).
        let short = app
            .core
            .run_short(|c| queued(c, |c| c.poll_short(now_ts(), crate::core::SHORT_POLL)))
            .await;
        let mut wrote = short.1;
        let polled = match short.0 {
            Ok(Some(d)) if d.len() >= crate::core::SHORT_POLL => {
                app.send_mikey(&d).await;
                sent += d.len() as u64;
                let (r, w) = app.core.run(|c| queued(c, |c| c.poll(now_ts()))).await;
                wrote |= w;
                r
            }
            // New counters are needed: reserved on a blocking thread.
            Ok(None) => {
                let (r, w) = app.core.run(|c| queued(c, |c| c.poll(now_ts()))).await;
                wrote |= w;
                r
            }
            Ok(Some(d)) => Ok(d),
            Err(e) => Err(e),
        };
        if wrote {
            // Give-ups are recorded with the next group commit (a poll
            // that only sent wakes no one: the committer is woken by the
            // requests that wait for it).
            app.committer.wake();
        }
        match polled {
            Ok(d) => {
                app.send_mikey(&d).await;
                sent += d.len() as u64;
                if d.len() >= crate::core::POLL_BATCH {
                    // More is due: let the acknowledgements in first, and
                    // no more than the window ahead of them.
                    tokio::task::yield_now().await;
                    app.wait_for_acks(sent).await;
                } else {
                    // The burst is over: the next one counts from what was
                    // read by now (messages lost or never acknowledged do
                    // not narrow the window for good).
                    sent = app
                        .mikey_received
                        .load(std::sync::atomic::Ordering::Acquire);
                }
            }
            Err(e) => {
                tracing::error!(error = %crate::ErrorChain(&e), "engine poll failed; retrying in 1 s");
                tokio::select! {
                    r = stop.wait_for(|s| *s) => { let _ = r; return; }
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

/// Stops the group committer (`crate::committer`) at the service's
/// stop, after it wrote everything queued.
async fn committer(app: Arc<App>, mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
    app.committer.stopped().await;
}

/// Whether the engine's next deadline moved from `before` to an earlier
/// `after` (or appeared): the engine driver, asleep until `before`, must
/// be woken.
fn deadline_moved_earlier(
    before: Option<mbms::engine::Timestamp>,
    after: Option<mbms::engine::Timestamp>,
) -> bool {
    match (before, after) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(b), Some(a)) => a < b,
    }
}

async fn mikey_receiver(app: Arc<App>, mut stop: watch::Receiver<bool>) {
    // Buffers kept from batch to batch: nothing allocated per datagram.
    let mut rx = udp::Receiver::new();
    let mut batch = udp::RecvBatch::with_capacity(udp::ACK_BATCH_MAX);
    loop {
        let r = tokio::select! {
            r = stop.wait_for(|s| *s) => { let _ = r; return; }
            r = rx.recv(&app.mikey, &mut batch) => r,
        };
        match r {
            Ok(_) => {
                // Group commit: everything queued now is processed and
                // committed together.
                rx.try_recv_more(&app.mikey, &mut batch, udp::ACK_BATCH_MAX);
            }
            Err(e) => {
                tracing::warn!(error = %e, "MIKEY socket");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        }
        // (The local address only with a tap: a system call per batch.)
        if let Some((t, Ok(dst))) = app.tap.as_ref().map(|t| (t, app.mikey.local_addr())) {
            for (b, src) in batch.iter() {
                (t.0)(&TapDatagram {
                    direction: TapDirection::Received,
                    kind: TapKind::Mikey,
                    src,
                    dst,
                    bytes: b,
                });
            }
        }
        // Verified here, written by the next group commit; the batch
        // comes back for reuse. The engine driver is woken only when an
        // acknowledgement brought the engine's next deadline forward (the
        // 4-way activation it scheduled, seed 000 6.3.2.3.1): most only
        // end a delivery, and a wake-up per batch cost the driver a poll
        // with nothing due and the committer a wake-up.
        let (b, earlier) = app
            .core
            .run_short(move |c| {
                let before = c.next_deadline();
                c.on_acks(batch.iter(), now_ts());
                let after = c.next_deadline();
                (batch, deadline_moved_earlier(before, after))
            })
            .await;
        batch = b;
        app.mikey_received
            .fetch_add(batch.len() as u64, std::sync::atomic::Ordering::Release);
        app.mikey_read.notify_waiters();
        app.committer.wake();
        if earlier {
            app.core.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ack_window_is_half_the_receive_buffer_and_at_least_one_poll_batch() {
        // 64 MiB (the `mikey_socket_buffer` default, granted): 32k
        // acknowledgements may wait in the buffer.
        assert_eq!(ack_window(64 << 20), 32 * 1024);
        // Linux's default buffer holds fewer than a poll batch's
        // acknowledgements: one batch at a time.
        assert_eq!(
            ack_window(DEFAULT_RECEIVE_BUFFER),
            crate::core::POLL_BATCH as u64
        );
    }
}
