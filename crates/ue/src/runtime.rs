//! The running UE: a thin tokio shell around the sans-IO `core` module (MGV-F + ME)
//! and the key management task (the `km` module).
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! let cfg = ue::UeConfig::load(std::path::Path::new("ue.toml"))?;
//! let ue = ue::RunningUe::start(cfg).await?;      // bootstraps and registers
//! let mut events = ue.events();                    // MSKs, MTKs, pulls, downloads...
//! let mut rtp = ue.plain_packets();                // decrypted RTP, in process
//! # let _ = (&mut events, &mut rtp);
//! ue.shutdown(true).await?;                        // deregister and stop
//! # Ok(()) }
//! ```
//!
//! Tasks: one per UDP socket (MIKEY listener, and per session the MTK and
//! SRTP ports), one per download session (scans its input folder), one
//! status writer, and the key management task (bootstrapping,
//! registration, MSK requests with retries and back-off, re-bootstrapping,
//! leaving services). Time is read and random numbers are drawn here and in
//! the `km` module only.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use mbms::mgvf::MgvF;

use crate::config::{ConfigError, SessionKind, UeConfig};
use crate::core::{Core, Out};
use crate::events::UeEvent;
use crate::host::{Datagram, HostInner, UeHost};
use crate::km::{Km, KmMsg};
use crate::state::{self, files, StateError};
use crate::status::{self, RuntimeStatus, Status, STATUS_FORMAT};

/// Errors of the running UE.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UeError {
    /// The configuration is not usable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A state file could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),
    /// The MGV-S could not be opened.
    #[error("MGV-S: {0}")]
    Mgvs(#[from] mbms::mgvf::store::StoreError),
    /// The MGV-F refused an operation (storage).
    #[error("MGV-F: {0}")]
    Mgvf(#[from] mbms::mgvf::MgvError),
    /// A socket could not be bound.
    #[error("cannot bind UDP {addr} ({what})")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Which socket.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An I/O failure (SDP file, folders).
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// GBA bootstrapping failed.
    #[error("bootstrapping failed")]
    Bootstrap(#[from] crate::bootstrap::BootstrapError),
    /// Key derivation failed.
    #[error("key derivation failed")]
    Kdf(#[from] gba::KdfError),
    /// A Ua request failed.
    #[error("Ua request to the BM-SC failed")]
    Ua(#[from] crate::ua::UaError),
    /// HTTP client setup failed.
    #[error("HTTP client")]
    Http(#[from] reqwest::Error),
    /// The UE stopped.
    #[error("the UE is not running")]
    Stopped,
    /// Unknown service.
    #[error("unknown service {0}")]
    UnknownService(String),
}

/// A decrypted RTP or RTCP packet of a streaming session, for in-process
/// consumers ([`RunningUe::plain_packets`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlainPacket {
    /// Session name.
    pub session: String,
    /// RTCP (else RTP).
    pub rtcp: bool,
    /// The packet.
    pub bytes: Vec<u8>,
}

/// The local addresses of a session (useful with port 0 in tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionAddrs {
    /// MTK message port.
    pub mtk: Option<SocketAddr>,
    /// SRTP port.
    pub srtp: Option<SocketAddr>,
    /// Plain RTP output.
    pub rtp_output: Option<SocketAddr>,
}

/// What every task shares.
pub(crate) struct Shell {
    core: Mutex<Core>,
    pub mikey: Arc<UdpSocket>,
    /// Per streaming session: the plain RTP output socket (none for a
    /// hosted UE), its destination and the session's name.
    outputs: Vec<(Option<Arc<UdpSocket>>, SocketAddr, String)>,
    pub km: mpsc::UnboundedSender<KmMsg>,
    /// A hosted UE's host and its MIKEY inbox ([`crate::host`]).
    pub(crate) host: Option<(Arc<HostInner>, mpsc::UnboundedSender<Datagram>)>,
    pub events: broadcast::Sender<UeEvent>,
    rtp: broadcast::Sender<PlainPacket>,
    runtime_base: Mutex<RuntimeStatus>,
    pub state_dir: PathBuf,
}

/// Now as RFC 3339 (the shell's clock).
pub(crate) fn now_rfc3339() -> String {
    state::rfc3339(time::OffsetDateTime::now_utc())
}

impl Shell {
    /// The core, with its notion of "now" refreshed.
    pub fn core(&self) -> MutexGuard<'_, Core> {
        let mut g = self.core.lock().unwrap_or_else(|p| p.into_inner());
        g.now = now_rfc3339();
        g.clock = tokio::time::Instant::now().into_std();
        g
    }

    /// The core with its monotonic clock refreshed (not the RFC 3339 time).
    fn core_fast(&self) -> MutexGuard<'_, Core> {
        let mut g = self.core.lock().unwrap_or_else(|p| p.into_inner());
        g.clock = tokio::time::Instant::now().into_std();
        g
    }

    /// Reports an event.
    pub fn event(&self, e: UeEvent) {
        debug!(event = ?e, "event");
        let _ = self.events.send(e);
    }

    /// Carries out the core's outputs.
    pub async fn exec(&self, outs: Vec<Out>) {
        for o in outs {
            match o {
                Out::Mikey { to, bytes } => {
                    if let Err(e) = self.mikey.send_to(&bytes, to).await {
                        self.core()
                            .error(format!("sending a MIKEY acknowledgement to {to}: {e}"));
                    }
                }
                Out::Rtp {
                    stream,
                    bytes,
                    rtcp,
                } => {
                    let (sock, addr, name) = &self.outputs[stream];
                    let dest = if rtcp {
                        SocketAddr::new(addr.ip(), addr.port().wrapping_add(1))
                    } else {
                        *addr
                    };
                    if let Some(sock) = sock {
                        if let Err(e) = sock.send_to(&bytes, dest).await {
                            debug!(to = %dest, error = %e, "forwarding plain RTP failed");
                        }
                    }
                    if self.rtp.receiver_count() > 0 {
                        let _ = self.rtp.send(PlainPacket {
                            session: name.clone(),
                            rtcp,
                            bytes,
                        });
                    }
                }
                Out::Km(c) => {
                    let _ = self.km.send(KmMsg::Core(c));
                }
                Out::Event(e) => self.event(e),
            }
        }
    }

    /// A new B-TID of this UE: a hosted UE's MSK messages (IDr = B-TID)
    /// reach it from now on.
    pub(crate) fn route_btid(&self, btid: &str) {
        if let Some((host, inbox)) = &self.host {
            host.route(btid, inbox);
        }
    }

    /// The HTTP client of the UE's host, if hosted.
    pub(crate) fn host_http(&self) -> Option<(reqwest::Client, Arc<tokio::sync::Semaphore>)> {
        self.host
            .as_ref()
            .map(|(h, _)| (h.http.clone(), h.http_slots.clone()))
    }

    fn write_status(&self, running: bool) {
        let base = {
            let mut b = self.runtime_base.lock().unwrap_or_else(|p| p.into_inner());
            b.running = running;
            b.updated_at = now_rfc3339();
            b.clone()
        };
        let doc = {
            let mut c = self.core_fast();
            c.dirty = false;
            c.runtime_status(&base)
        };
        if let Err(e) = state::write_json_snapshot(&self.state_dir.join(files::STATUS), &doc) {
            warn!(error = %e, "writing status.json");
        }
    }

    fn runtime_status(&self) -> RuntimeStatus {
        let base = self
            .runtime_base
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut r = self.core_fast().runtime_status(&base);
        r.updated_at = now_rfc3339();
        r
    }
}

/// Binds a UDP socket; a multicast address binds the port on the wildcard
/// address and joins the group.
pub(crate) async fn bind_udp(addr: SocketAddr, what: &str) -> Result<UdpSocket, UeError> {
    let err = |source| UeError::Bind {
        addr,
        what: what.to_owned(),
        source,
    };
    match addr.ip() {
        IpAddr::V4(g) if g.is_multicast() => {
            let s = UdpSocket::bind(SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), addr.port()))
                .await
                .map_err(err)?;
            s.join_multicast_v4(g, Ipv4Addr::UNSPECIFIED).map_err(err)?;
            Ok(s)
        }
        IpAddr::V6(g) if g.is_multicast() => {
            let s = UdpSocket::bind(SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), addr.port()))
                .await
                .map_err(err)?;
            s.join_multicast_v6(&g, 0).map_err(err)?;
            Ok(s)
        }
        _ => UdpSocket::bind(addr).await.map_err(err),
    }
}

/// The largest datagram read.
pub(crate) const MAX_DATAGRAM: usize = 65_535;

/// Where a UE's task reads its datagrams: its own socket, or the inbox a
/// [`UeHost`] feeds from a shared one.
pub(crate) enum Inbox {
    /// A socket of the UE's own.
    Socket(Arc<UdpSocket>),
    /// Datagrams of a shared socket.
    Channel(mpsc::UnboundedReceiver<Datagram>),
}

/// A datagram an [`Inbox`] got: read into the task's buffer (own socket),
/// or handed over by the host as it is, without a copy (shared socket).
enum Received {
    /// The first `.0` bytes of the task's buffer, from `.1`.
    Read(usize, SocketAddr),
    /// A shared socket's datagram.
    Shared(Datagram),
}

impl Received {
    /// The datagram's bytes (`buf`: the buffer given to [`Inbox::recv`]).
    fn bytes<'a>(&'a self, buf: &'a [u8]) -> &'a [u8] {
        match self {
            Received::Read(n, _) => &buf[..*n],
            Received::Shared(d) => d.bytes(),
        }
    }

    /// Its sender.
    fn from(&self) -> SocketAddr {
        match self {
            Received::Read(_, from) => *from,
            Received::Shared(d) => d.from(),
        }
    }
}

impl Inbox {
    /// The next datagram; `None` once a shared socket's host is gone. An
    /// own socket reads into `buf`, grown to [`MAX_DATAGRAM`] on first use:
    /// a hosted UE's tasks keep no buffer (10,000 UEs, four tasks each).
    async fn recv(&mut self, buf: &mut Vec<u8>) -> Option<std::io::Result<Received>> {
        match self {
            Inbox::Socket(s) => {
                if buf.len() < MAX_DATAGRAM {
                    buf.resize(MAX_DATAGRAM, 0);
                }
                Some(
                    s.recv_from(buf)
                        .await
                        .map(|(n, from)| Received::Read(n, from)),
                )
            }
            Inbox::Channel(rx) => Some(Ok(Received::Shared(rx.recv().await?))),
        }
    }
}

/// A running UE.
pub struct RunningUe {
    shell: Arc<Shell>,
    tasks: Vec<JoinHandle<()>>,
    km_task: Option<JoinHandle<()>>,
    mikey_addr: SocketAddr,
    sessions: BTreeMap<String, SessionAddrs>,
    cfg: Arc<UeConfig>,
}

impl std::fmt::Debug for RunningUe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningUe")
            .field("mikey_addr", &self.mikey_addr)
            .field("sessions", &self.sessions)
            .finish_non_exhaustive()
    }
}

impl RunningUe {
    /// Starts a UE: opens its state directory, binds its sockets, writes the
    /// SDP files, bootstraps if it holds no valid B-TID, registers to the
    /// services (the MIKEY listener already runs, so pushed MSKs are
    /// received) and starts key management. Returns once registered.
    pub async fn start(cfg: UeConfig) -> Result<RunningUe, UeError> {
        Ok(Self::start_subscribed(cfg).await?.0)
    }

    /// [`RunningUe::start`], with a subscription to the events taken before
    /// bootstrapping and registration, so that none is missed.
    pub async fn start_subscribed(
        cfg: UeConfig,
    ) -> Result<(RunningUe, broadcast::Receiver<UeEvent>), UeError> {
        Self::start_inner(cfg, None).await
    }

    /// [`RunningUe::start_subscribed`] on a [`UeHost`]'s shared sockets and
    /// HTTP client ([`crate::host`]).
    pub(crate) async fn start_hosted(
        cfg: UeConfig,
        host: &UeHost,
    ) -> Result<(RunningUe, broadcast::Receiver<UeEvent>), UeError> {
        Self::start_inner(cfg, Some(host)).await
    }

    async fn start_inner(
        cfg: UeConfig,
        host: Option<&UeHost>,
    ) -> Result<(RunningUe, broadcast::Receiver<UeEvent>), UeError> {
        cfg.validate()?;
        let cfg = Arc::new(cfg);
        // A damaged or missing state is refused here, naming the file
        // (`PROFILE.md` section 7), unless told to start over.
        let store = state::open_state_dir(&cfg.state_dir, cfg.start_over)?;
        let core = Core::new(
            &cfg,
            MgvF::new(store),
            tokio::time::Instant::now().into_std(),
        )
        .map_err(StateError::with_hint)?;

        let (mikey, mikey_inbox, host_route) = match host {
            None => {
                let s = Arc::new(bind_udp(cfg.mikey_listen, "MIKEY listener").await?);
                (s.clone(), Inbox::Socket(s), None)
            }
            Some(h) => {
                let s = h.mikey_socket(cfg.mikey_listen).await?;
                let (tx, rx) = mpsc::unbounded_channel();
                (s, Inbox::Channel(rx), Some((h.inner().clone(), tx)))
            }
        };
        let mikey_addr = mikey.local_addr().map_err(|source| UeError::Io {
            what: "MIKEY socket address".into(),
            source,
        })?;

        // Session sockets, in the core's order: streams first, downloads.
        let mut sessions = BTreeMap::new();
        let mut stream_socks = Vec::new(); // (mtk, srtp)
        let mut outputs = Vec::new();
        let mut download_socks = Vec::new(); // (name, service protected, required, mtk, input, output)
        for svc in &cfg.service_list {
            for s in &svc.sessions {
                let what = format!("MTK messages of {}", s.name);
                let (mtk, mtk_addr) = match (s.mtk_listen, host) {
                    (Some(a), None) if svc.protected() => {
                        let m = bind_udp(a, &what).await?;
                        let local = m.local_addr().ok();
                        (Some(Inbox::Socket(Arc::new(m))), local)
                    }
                    (Some(a), Some(h)) if svc.protected() => {
                        let inbox = h.fanout_inbox(a, &what).await?;
                        (Some(inbox), h.socket_addr(a))
                    }
                    _ => (None, None),
                };
                match s.kind {
                    SessionKind::Streaming => {
                        let srtp_a = s.srtp_listen.unwrap_or(SocketAddr::from(([0; 4], 0)));
                        let what = format!("SRTP of {}", s.name);
                        let (srtp, srtp_addr) = match host {
                            None => {
                                let x = bind_udp(srtp_a, &what).await?;
                                let local = x.local_addr().ok();
                                (Inbox::Socket(Arc::new(x)), local)
                            }
                            Some(h) => {
                                (h.fanout_inbox(srtp_a, &what).await?, h.socket_addr(srtp_a))
                            }
                        };
                        let out = s
                            .rtp_output
                            .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 0)));
                        let local: SocketAddr = if out.is_ipv4() {
                            SocketAddr::from(([0; 4], 0))
                        } else {
                            SocketAddr::from(([0u16; 8], 0))
                        };
                        // A hosted UE forwards nothing (no socket per UE):
                        // `plain_packets` has every packet.
                        let osock = match host {
                            None => Some(Arc::new(
                                bind_udp(local, &format!("plain RTP output of {}", s.name)).await?,
                            )),
                            Some(_) => None,
                        };
                        let path = cfg.sdp_path(s);
                        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                            std::fs::create_dir_all(dir).map_err(|source| UeError::Io {
                                what: format!("creating {}", dir.display()),
                                source,
                            })?;
                        }
                        let text = crate::sdp::sdp(
                            &s.name,
                            &svc.id,
                            &s.media,
                            out,
                            s.payload_type,
                            &s.encoding,
                        );
                        std::fs::write(&path, text).map_err(|source| UeError::Io {
                            what: format!("writing the SDP file {}", path.display()),
                            source,
                        })?;
                        sessions.insert(
                            s.name.clone(),
                            SessionAddrs {
                                mtk: mtk_addr,
                                srtp: srtp_addr,
                                rtp_output: Some(out),
                            },
                        );
                        stream_socks.push((mtk, srtp));
                        outputs.push((osock, out, s.name.clone()));
                    }
                    SessionKind::Download => {
                        let (Some(input), Some(output)) = (&s.input_dir, &s.output_dir) else {
                            continue;
                        };
                        for d in [input, output] {
                            std::fs::create_dir_all(d).map_err(|source| UeError::Io {
                                what: format!("creating {}", d.display()),
                                source,
                            })?;
                        }
                        sessions.insert(
                            s.name.clone(),
                            SessionAddrs {
                                mtk: mtk_addr,
                                srtp: None,
                                rtp_output: None,
                            },
                        );
                        download_socks.push((
                            s.name.clone(),
                            svc.protected(),
                            svc.required_protection(),
                            mtk,
                            input.clone(),
                            output.clone(),
                            Duration::from_millis(s.scan_interval_ms),
                        ));
                    }
                }
            }
        }

        let (km_tx, km_rx) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(1024);
        let (rtp, _) = broadcast::channel(4096);
        let shell = Arc::new(Shell {
            core: Mutex::new(core),
            mikey: mikey.clone(),
            outputs,
            km: km_tx,
            host: host_route,
            events,
            rtp,
            runtime_base: Mutex::new(RuntimeStatus {
                format: STATUS_FORMAT.into(),
                pid: std::process::id(),
                running: true,
                started_at: now_rfc3339(),
                updated_at: String::new(),
                mikey_listen: mikey_addr.to_string(),
                ..Default::default()
            }),
            state_dir: cfg.state_dir.clone(),
        });

        let subscription = shell.events.subscribe();
        let mut tasks = Vec::new();
        tasks.push(tokio::spawn(mikey_task(shell.clone(), mikey_inbox)));
        for (i, (mtk, srtp)) in stream_socks.into_iter().enumerate() {
            if let Some(m) = mtk {
                tasks.push(tokio::spawn(mikey_task(shell.clone(), m)));
            }
            tasks.push(tokio::spawn(srtp_task(shell.clone(), i, srtp)));
        }
        let download_base = shell.core_fast().stream_stats.len();
        for (j, (name, protected, required, mtk, input, output, every)) in
            download_socks.into_iter().enumerate()
        {
            if let Some(m) = mtk {
                tasks.push(tokio::spawn(mikey_task(shell.clone(), m)));
            }
            tasks.push(tokio::spawn(crate::download::watch(
                shell.clone(),
                crate::download::Watch {
                    name,
                    stats: download_base + j,
                    protected,
                    required,
                    input,
                    output,
                    every,
                },
            )));
        }
        tasks.push(tokio::spawn(status_task(shell.clone())));

        let advertised = cfg.mikey_advertised_port.unwrap_or(mikey_addr.port());
        let mut km = match Km::new(cfg.clone(), shell.clone(), advertised) {
            Ok(k) => k,
            Err(e) => {
                tasks.iter().for_each(JoinHandle::abort);
                return Err(e);
            }
        };
        if let Err(e) = km.startup().await {
            tasks.iter().for_each(JoinHandle::abort);
            shell.write_status(false);
            return Err(e);
        }
        let km_task = tokio::spawn(km.run(km_rx));
        info!(mikey = %mikey_addr, "UE running");
        Ok((
            RunningUe {
                shell,
                tasks,
                km_task: Some(km_task),
                mikey_addr,
                sessions,
                cfg,
            },
            subscription,
        ))
    }

    /// The MIKEY listener's address (its port is sent as `mikey-port`).
    pub fn mikey_addr(&self) -> SocketAddr {
        self.mikey_addr
    }

    /// The local addresses of a session.
    pub fn session_addrs(&self, session: &str) -> Option<SessionAddrs> {
        self.sessions.get(session).copied()
    }

    /// The configuration.
    pub fn config(&self) -> &UeConfig {
        &self.cfg
    }

    /// Subscribes to the UE's events.
    pub fn events(&self) -> broadcast::Receiver<UeEvent> {
        self.shell.events.subscribe()
    }

    /// Subscribes to the decrypted RTP/RTCP packets of every streaming
    /// session (they are also forwarded to each session's `rtp_output`).
    pub fn plain_packets(&self) -> broadcast::Receiver<PlainPacket> {
        self.shell.rtp.subscribe()
    }

    /// The status (as `mbms ue status` shows it), with the live runtime
    /// part.
    pub fn status(&self) -> Result<Status, UeError> {
        let mut s = status::read(&self.cfg.state_dir)?;
        s.running = true;
        s.runtime = Some(self.shell.runtime_status());
        Ok(s)
    }

    /// Requests the current MSKs of a service's key groups now (the basic
    /// MSK request with Key Number 0).
    pub fn request_current_msks(&self, service: &str) -> Result<(), UeError> {
        if !self.cfg.service_list.iter().any(|s| s.id == service) {
            return Err(UeError::UnknownService(service.to_owned()));
        }
        self.shell
            .km
            .send(KmMsg::Manual {
                service: service.to_owned(),
            })
            .map_err(|_| UeError::Stopped)
    }

    /// Bootstraps again now (new B-TID, new MUKs) and registers again.
    pub async fn rebootstrap(&self) -> Result<(), UeError> {
        let (tx, rx) = oneshot::channel();
        self.shell
            .km
            .send(KmMsg::Rebootstrap { reply: tx })
            .map_err(|_| UeError::Stopped)?;
        rx.await.map_err(|_| UeError::Stopped)?
    }

    /// Stops the UE; with `deregister`, deregisters from every registered
    /// service first (and deletes their MSKs). The state directory keeps
    /// everything else.
    pub async fn shutdown(mut self, deregister: bool) -> Result<(), UeError> {
        let (tx, rx) = oneshot::channel();
        let r = if self
            .shell
            .km
            .send(KmMsg::Shutdown {
                deregister,
                reply: tx,
            })
            .is_ok()
        {
            rx.await.unwrap_or(Ok(()))
        } else {
            Ok(())
        };
        if let Some(k) = self.km_task.take() {
            let _ = k.await;
        }
        for t in &self.tasks {
            t.abort();
        }
        // Wait until the aborted tasks dropped their sockets.
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
        // The last status file: a file write and a rename, which on a busy
        // disk can take tens of milliseconds; off the runtime's workers, so
        // that many UEs stopping at once (the demo's 10,000) overlap.
        let shell = self.shell.clone();
        if tokio::task::spawn_blocking(move || shell.write_status(false))
            .await
            .is_err()
        {
            warn!("writing status.json: the blocking task failed");
        }
        r
    }
}

impl Drop for RunningUe {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if let Some(k) = &self.km_task {
            k.abort();
        }
    }
}

async fn mikey_task(shell: Arc<Shell>, mut inbox: Inbox) {
    let mut buf = Vec::new();
    while let Some(r) = inbox.recv(&mut buf).await {
        let got = match r {
            Ok(x) => x,
            Err(e) => {
                // ICMP port unreachable of an earlier send, etc.
                debug!(error = %e, "MIKEY socket");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let outs = shell.core().on_mikey(got.bytes(&buf), got.from());
        shell.exec(outs).await;
    }
}

async fn srtp_task(shell: Arc<Shell>, i: usize, mut inbox: Inbox) {
    let mut buf = Vec::new();
    while let Some(r) = inbox.recv(&mut buf).await {
        let got = match r {
            Ok(x) => x,
            Err(e) => {
                debug!(error = %e, "SRTP socket");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // The packet is decrypted in place: a copy of its own (a shared
        // socket's datagram goes to every hosted UE).
        let outs = shell.core_fast().on_srtp(i, got.bytes(&buf).to_vec());
        shell.exec(outs).await;
    }
}

async fn status_task(shell: Arc<Shell>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let dirty = shell.core_fast().dirty;
        if dirty {
            shell.write_status(true);
        }
    }
}

/// Services whose key groups include `group`, in configuration order.
pub(crate) fn services_of<'a>(
    cfg: &'a UeConfig,
    group: mbms::KeyGroupName,
) -> impl Iterator<Item = &'a crate::config::Service> + 'a {
    cfg.service_list
        .iter()
        .filter(move |s| s.protected() && s.key_group_names().contains(&group))
}

/// Every key group of the given services.
pub(crate) fn groups_of<'a>(
    services: impl Iterator<Item = &'a crate::config::Service>,
) -> BTreeSet<mbms::KeyGroupName> {
    services.flat_map(|s| s.key_group_names()).collect()
}

/// The state directory path of a config (for `status`).
pub fn state_dir(cfg: &UeConfig) -> &Path {
    &cfg.state_dir
}
