//! Delivery sessions: MTK messages (`PROFILE.md` section 6) and traffic
//! protection (`PROFILE.md` section 8) for one key group.
//!
//! * **Streaming**: plain RTP (and RTCP multiplexed on the same port, RFC
//!   5761) arrives on `rtp_listen`, leaves SRTP/SRTCP-protected (`srtp`
//!   crate; master key and salt = the MTK and its salt, MKI = MSK ID || MTK
//!   ID; cipher and authentication as the session chooses,
//!   [`crate::protection`]) to every `srtp_destinations` address. A new MTK is issued
//!   every `mtk_interval` seconds and at once when the key group rotates; its
//!   MTK message goes out immediately and the sender switches to it
//!   `switch_delay_ms` later, so receivers hold the new MTK before the
//!   first packet that uses it (no gap: the previous key stays installed
//!   until then). The MTK messages in use (the active MTK's, and the new
//!   one's until the switch) are repeated every `mtk_repeat` seconds for
//!   late joiners, but only those under the key group's current MSK: after
//!   a rotation the retired MSK's MTK message is never repeated (a UE that
//!   joined since does not hold that MSK and would only ask for it again),
//!   even while its key stays installed for the switch delay. The SRTP-ID
//!   map of the MTK message lists the
//!   SSRCs seen so far with their ROC (SSRC 0, ROC 0 before the first
//!   packet).
//! * **Download**: every regular file that appears in `watch_dir` (names
//!   starting with `.` or ending in `.tmp` / `.part` are skipped; a file is
//!   taken once its size stopped changing for one scan) is protected with a
//!   new MTK into `out_dir/<name>` (the protected object) and
//!   `out_dir/<name>.mikey` (its MTK message), then removed from
//!   `watch_dir`. The admin API can post objects too. With
//!   `mtk_destinations`, the MTK messages are also sent there (and
//!   repeated while their MSK is the current one).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::RngCore as _;
use tokio::net::UdpSocket;
use tokio::sync::watch;

use mbms::engine::MtkOutput;
use mbms::messages::Streaming;

use crate::config::{SessionKind, SessionSection};
use crate::core::{now_ts, CoreHandle};
use crate::metrics::Metrics;
use crate::udp;

/// What the admin API shows of a session.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SessionStatus {
    /// Name.
    pub name: String,
    /// `streaming` or `download`.
    pub kind: String,
    /// Key group.
    pub key_group: u16,
    /// MSK ID (hex) of the MTK in use.
    pub msk_id: Option<String>,
    /// MTK ID in use (streaming: the one protecting packets now).
    pub mtk_id: Option<u16>,
    /// MTKs issued since start.
    pub mtks_issued: u64,
    /// SRTP packets sent (per destination).
    pub srtp_packets: u64,
    /// Protected objects written.
    pub objects: u64,
    /// The last error, if any.
    pub last_error: Option<String>,
}

/// A session's configuration and status.
#[derive(Debug)]
pub struct Session {
    /// The configuration.
    pub cfg: SessionSection,
    status: Mutex<SessionStatus>,
}

impl Session {
    fn new(cfg: SessionSection) -> Self {
        let status = SessionStatus {
            name: cfg.name.clone(),
            kind: match cfg.kind {
                SessionKind::Streaming => "streaming",
                SessionKind::Download => "download",
            }
            .into(),
            key_group: cfg.key_group,
            ..Default::default()
        };
        Session {
            cfg,
            status: Mutex::new(status),
        }
    }

    fn update(&self, f: impl FnOnce(&mut SessionStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// The current status.
    pub fn status(&self) -> SessionStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// What the session tasks need from the server.
#[derive(Clone, Debug)]
pub struct SessionCtx {
    /// The core (MTKs).
    pub core: CoreHandle,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Rotation generation: changes when any key group rotates.
    pub rotations: watch::Receiver<u64>,
    /// Multicast TTL.
    pub multicast_ttl: u32,
    /// The datagram tap, if any.
    pub tap: Option<crate::tap::Tap>,
}

/// The sessions of a server.
#[derive(Debug, Default)]
pub struct Sessions {
    map: BTreeMap<String, Arc<Session>>,
}

/// A failure of a download protection.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// No such download session.
    #[error("no download session {0}")]
    UnknownSession(String),
    /// Bad object name.
    #[error("invalid object name {0:?}")]
    BadName(String),
    /// Issuing the MTK failed.
    #[error("issuing an MTK: {0}")]
    Core(String),
    /// Writing failed.
    #[error("protecting the object")]
    Io(#[from] std::io::Error),
    /// Protection failed.
    #[error("protecting the object: {0}")]
    Protect(#[from] srtp::download::DownloadError),
    /// The session's protection settings are refused.
    #[error("session protection: {0}")]
    Protection(#[from] crate::protection::ProtectionError),
}

/// A protected object written by a download session.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ObjectInfo {
    /// The protected object.
    pub object: PathBuf,
    /// Its MTK message.
    pub mikey: PathBuf,
    /// MSK ID (hex).
    pub msk_id: String,
    /// MTK ID.
    pub mtk_id: u16,
    /// Length of the protected object.
    pub length: u64,
}

impl Sessions {
    /// The sessions of the configuration.
    pub fn new(cfgs: &[SessionSection]) -> Self {
        Sessions {
            map: cfgs
                .iter()
                .map(|c| (c.name.clone(), Arc::new(Session::new(c.clone()))))
                .collect(),
        }
    }

    /// Every session.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Session>> {
        self.map.values()
    }

    /// A session by name.
    pub fn get(&self, name: &str) -> Option<&Arc<Session>> {
        self.map.get(name)
    }
}

async fn bind_for(dests: &[SocketAddr], ttl: u32) -> std::io::Result<UdpSocket> {
    let v6 = dests.first().is_some_and(SocketAddr::is_ipv6);
    let sock = if v6 {
        UdpSocket::bind("[::]:0").await?
    } else {
        UdpSocket::bind("0.0.0.0:0").await?
    };
    if !v6 {
        sock.set_multicast_ttl_v4(ttl)?;
    }
    Ok(sock)
}

fn fan_out(bytes: &[u8], dests: &[SocketAddr]) -> Vec<(SocketAddr, Vec<u8>)> {
    dests.iter().map(|d| (*d, bytes.to_vec())).collect()
}

async fn send_mtk(sock: &UdpSocket, ctx: &SessionCtx, s: &Session, msgs: &[Arc<Vec<u8>>]) {
    let dests = &s.cfg.mtk_destinations;
    if dests.is_empty() || msgs.is_empty() {
        return;
    }
    let batch: Vec<(SocketAddr, Vec<u8>)> = msgs.iter().flat_map(|m| fan_out(m, dests)).collect();
    if let (Some(t), Ok(src)) = (&ctx.tap, sock.local_addr()) {
        t.sent(crate::tap::TapKind::Mtk, src, &batch);
    }
    let r = udp::send_batch(sock, &batch).await;
    Metrics::inc_session(&ctx.metrics.mtk_sent, &s.cfg.name, r.sent as u64);
    ctx.metrics.udp_send_errors.inc_by(r.failed as u64);
}

async fn issue(
    ctx: &SessionCtx,
    s: &Session,
    streaming: Option<Streaming>,
) -> Result<MtkOutput, String> {
    let g = s.cfg.key_group;
    if !ctx.core.run_short(move |c| c.is_anchor(g)).await {
        // Several instances: only the key group's anchor issues MTKs
        // (TS 33.246 6.3.4.5); this session waits until this instance is.
        tracing::debug!(session = %s.cfg.name, key_group = g, "not the anchor: no MTK issued here");
        return Err(format!("key group {g} is anchored by another instance"));
    }
    let r = ctx
        .core
        .run(move |c| c.next_mtk(g, streaming, now_ts()))
        .await;
    match r {
        Ok((out, rotated)) => {
            if rotated {
                ctx.core.wake();
            }
            Metrics::inc_session(&ctx.metrics.mtks_issued, &s.cfg.name, 1);
            s.update(|st| {
                st.mtks_issued += 1;
                st.last_error = None;
            });
            tracing::info!(session = %s.cfg.name, msk = %out.msk, mtk_id = %out.mtk_id, "new MTK");
            Ok(out)
        }
        Err(e) => {
            let m = format!("{}", crate::ErrorChain(&e));
            s.update(|st| st.last_error = Some(m.clone()));
            tracing::error!(session = %s.cfg.name, error = %m, "issuing an MTK failed");
            Err(m)
        }
    }
}

/// Runs a session until `stop` turns true.
pub async fn run(ctx: SessionCtx, s: Arc<Session>, stop: watch::Receiver<bool>) {
    let r = match s.cfg.kind {
        SessionKind::Streaming => run_streaming(ctx, s.clone(), stop).await,
        SessionKind::Download => run_download(ctx, s.clone(), stop).await,
    };
    if let Err(e) = r {
        tracing::error!(session = %s.cfg.name, error = %e, "session stopped");
        s.update(|st| st.last_error = Some(e));
    }
}

/// An MTK message a session repeats, with the MSK it is under.
struct Announced {
    msk: mbms::MskName,
    mki: Option<srtp::Mki>,
    bytes: Arc<Vec<u8>>,
}

/// Keep only the MTK messages under `current` (the key group's current
/// MSK): the messages of a retired MSK are not repeated (issue 11, point 9).
fn keep_current(set: &mut VecDeque<Announced>, current: Option<mbms::MskName>) {
    if let Some(c) = current {
        set.retain(|a| a.msk == c);
    }
}

fn bytes_of(set: &VecDeque<Announced>) -> Vec<Arc<Vec<u8>>> {
    set.iter().map(|a| a.bytes.clone()).collect()
}

fn current_msk_of(
    ctx: &SessionCtx,
    g: u16,
) -> impl std::future::Future<Output = Option<mbms::MskName>> {
    let core = ctx.core.clone();
    async move {
        core.run(move |c| c.key_group_info(g).map(|i| i.current.name))
            .await
    }
}

async fn run_streaming(
    mut ctx: SessionCtx,
    s: Arc<Session>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let cfg = &s.cfg;
    let listen = cfg.rtp_listen.ok_or("rtp_listen missing")?;
    let rtp = UdpSocket::bind(listen)
        .await
        .map_err(|e| format!("cannot bind RTP {listen}: {e}"))?;
    let out = bind_for(&cfg.srtp_destinations, ctx.multicast_ttl)
        .await
        .map_err(|e| format!("cannot open the sending socket: {e}"))?;
    // Confidentiality and integrity as configured (seed 000 6.3.2.2.2);
    // the MTK messages announce them in their SP payload.
    let (srtp_cfg, policy) = crate::protection::streaming(cfg).map_err(|e| e.to_string())?;
    let mut sender = srtp::Sender::new(srtp_cfg).map_err(|e| e.to_string())?;
    let mut ssrcs: Vec<u32> = Vec::new();
    let mut installed: VecDeque<srtp::Mki> = VecDeque::new();
    let mut announced: VecDeque<Announced> = VecDeque::new();
    let mut switch: Option<(Instant, srtp::Mki, u16)> = None;
    let mut current_msk = None;
    let mut next_issue = Instant::now();
    let mut repeat = tokio::time::interval(Duration::from_secs(cfg.mtk_repeat));
    repeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(session = %cfg.name, rtp = %listen, "streaming session started");
    let (mut rtp_rx, mut rtp_in) = (udp::Receiver::new(), udp::RecvBatch::new());
    loop {
        if Instant::now() >= next_issue {
            let streams: Vec<mikey::SrtpIdEntry> = if ssrcs.is_empty() {
                vec![mikey::SrtpIdEntry {
                    policy_no: mbms::messages::STREAMING_POLICY_NO,
                    ssrc: 0,
                    roc: 0,
                }]
            } else {
                ssrcs
                    .iter()
                    .map(|ssrc| mikey::SrtpIdEntry {
                        policy_no: mbms::messages::STREAMING_POLICY_NO,
                        ssrc: *ssrc,
                        roc: sender.roc(*ssrc).unwrap_or(0),
                    })
                    .collect()
            };
            let streaming = Streaming {
                streams,
                policy: policy.clone(),
            };
            match issue(&ctx, &s, Some(streaming)).await {
                Ok(o) => {
                    let mki = srtp::Mki::new(&o.mki()).ok_or("MKI")?;
                    let (k, salt) = o.srtp_master();
                    let mk = srtp::MasterKey::with_mki(*k, *salt, mki);
                    sender.add_key(&mk).map_err(|e| e.to_string())?;
                    installed.push_back(mki);
                    current_msk = Some(o.msk);
                    let msg = Arc::new(o.bytes.clone());
                    // The previous MSK's message (after a rotation) is no
                    // longer repeated, even while its key stays installed.
                    keep_current(&mut announced, Some(o.msk));
                    announced.push_back(Announced {
                        msk: o.msk,
                        mki: Some(mki),
                        bytes: msg.clone(),
                    });
                    while announced.len() > 2 {
                        announced.pop_front();
                    }
                    send_mtk(&out, &ctx, &s, &[msg]).await;
                    if sender.active_mki().is_none() {
                        sender.set_active_key(&mki).map_err(|e| e.to_string())?;
                        let id = o.mtk_id.value();
                        let msk = o.msk.msk_id.to_string();
                        s.update(|st| {
                            st.mtk_id = Some(id);
                            st.msk_id = Some(msk);
                        });
                    } else {
                        switch = Some((
                            Instant::now() + Duration::from_millis(cfg.switch_delay_ms),
                            mki,
                            o.mtk_id.value(),
                        ));
                    }
                    next_issue = Instant::now() + Duration::from_secs(cfg.mtk_interval);
                }
                Err(_) => next_issue = Instant::now() + Duration::from_secs(1),
            }
        }
        if let Some((at, mki, id)) = switch {
            if Instant::now() >= at {
                sender.set_active_key(&mki).map_err(|e| e.to_string())?;
                let msk = mki.mbms_parts().map(|(m, _)| format!("{m:08X}"));
                s.update(|st| {
                    st.mtk_id = Some(id);
                    st.msk_id = msk;
                });
                switch = None;
                // The superseded MTK is no longer in use: not repeated.
                announced.retain(|a| a.mki == Some(mki));
                while installed.len() > 2 {
                    if let Some(old) = installed.pop_front() {
                        let _ = sender.remove_key(&old);
                    }
                }
            }
        }
        let wake_at = [Some(next_issue), switch.map(|s| s.0)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        tokio::select! {
            _ = stop.changed() => {
                if *stop.borrow() { break; }
            }
            r = ctx.rotations.changed() => {
                if r.is_err() { break; }
                let now_msk = current_msk_of(&ctx, cfg.key_group).await;
                if now_msk.is_some() && now_msk != current_msk {
                    next_issue = Instant::now();
                }
            }
            _ = repeat.tick() => {
                // A rotation this session was not told about (another
                // session exhausted the window): drop the retired MSK's
                // message and issue one under the new MSK now.
                let now_msk = current_msk_of(&ctx, cfg.key_group).await;
                keep_current(&mut announced, now_msk);
                if now_msk.is_some() && current_msk.is_some() && now_msk != current_msk {
                    next_issue = Instant::now();
                    continue;
                }
                send_mtk(&out, &ctx, &s, &bytes_of(&announced)).await;
            }
            _ = tokio::time::sleep_until(wake_at.into()) => {}
            r = rtp_rx.recv(&rtp, &mut rtp_in) => {
                r.map_err(|e| format!("RTP socket: {e}"))?;
                let mut sends = Vec::with_capacity(rtp_in.len() * cfg.srtp_destinations.len());
                for (pkt, _) in rtp_in.iter() {
                    // Protected in place: SRTP appends its tag.
                    let mut pkt = pkt.to_vec();
                    if pkt.len() < 12 || pkt[0] >> 6 != 2 {
                        Metrics::inc_session(&ctx.metrics.rtp_dropped, &cfg.name, 1);
                        continue;
                    }
                    // RTCP multiplexed on the RTP input (RFC 5761 4: byte 1
                    // in 192..=223) leaves as SRTCP (RFC 3711 3.4).
                    if (192..=223).contains(&pkt[1]) {
                        if sender.protect_rtcp_vec(&mut pkt).is_err() {
                            Metrics::inc_session(&ctx.metrics.rtp_dropped, &cfg.name, 1);
                            continue;
                        }
                        sends.extend(fan_out(&pkt, &cfg.srtp_destinations));
                        continue;
                    }
                    let ssrc = u32::from_be_bytes([pkt[8], pkt[9], pkt[10], pkt[11]]);
                    if !ssrcs.contains(&ssrc) && ssrcs.len() < 16 {
                        ssrcs.push(ssrc);
                    }
                    if sender.protect_rtp_vec(&mut pkt).is_err() {
                        Metrics::inc_session(&ctx.metrics.rtp_dropped, &cfg.name, 1);
                        continue;
                    }
                    sends.extend(fan_out(&pkt, &cfg.srtp_destinations));
                }
                if let (Some(t), Ok(src)) = (&ctx.tap, out.local_addr()) {
                    t.sent(crate::tap::TapKind::Srtp, src, &sends);
                }
                let r = udp::send_batch(&out, &sends).await;
                Metrics::inc_session(&ctx.metrics.srtp_packets, &cfg.name, r.sent as u64);
                ctx.metrics.udp_send_errors.inc_by(r.failed as u64);
                s.update(|st| st.srtp_packets += r.sent as u64);
            }
        }
    }
    Ok(())
}

/// Whether a file name in a watched folder is one to protect.
fn eligible(name: &str) -> bool {
    !name.starts_with('.') && !name.ends_with(".tmp") && !name.ends_with(".part")
}

/// Protects `input` (a file) or `data` as the object `name` of download
/// session `s`.
async fn protect(
    ctx: &SessionCtx,
    s: &Session,
    name: &str,
    source: Source,
) -> Result<(ObjectInfo, mbms::MskName, Arc<Vec<u8>>), SessionError> {
    if name.is_empty()
        || name.len() > 255
        || name.contains(['/', '\\', '\0'])
        || name.starts_with('.')
        || name.ends_with(".mikey")
    {
        return Err(SessionError::BadName(name.to_owned()));
    }
    let out_dir = s
        .cfg
        .out_dir
        .clone()
        .ok_or_else(|| SessionError::UnknownSession(s.cfg.name.clone()))?;
    let o = issue(ctx, s, None).await.map_err(SessionError::Core)?;
    let object = out_dir.join(name);
    let mikey_path = out_dir.join(format!("{name}.mikey"));
    let protection = crate::protection::download(&s.cfg)?;
    let mut iv = [0u8; 16];
    if protection.encryption {
        rand::rngs::OsRng.fill_bytes(&mut iv);
    }
    let header = srtp::download::ObjectHeader {
        protection,
        key_domain_id: o.msk.key_domain.0,
        msk_id: u32::from_be_bytes(o.msk.msk_id.to_bytes()),
        mtk_id: o.mtk_id.value(),
        csb_id: o.csb_id(),
        rand: o.rand.to_vec(),
        iv,
    };
    let dk = o.download_keys();
    let keys = srtp::download::DownloadKeys::new(*dk.encr.as_bytes(), *dk.auth.as_bytes());
    let bytes = Arc::new(o.bytes.clone());
    let (obj2, mk2, b2) = (object.clone(), mikey_path.clone(), bytes.clone());
    let length = tokio::task::spawn_blocking(move || -> Result<u64, SessionError> {
        std::fs::create_dir_all(obj2.parent().unwrap_or(Path::new(".")))?;
        // The MTK message first: a receiver that sees the object finds its key.
        let tmp = mk2.with_extension("mikey.tmp");
        std::fs::write(&tmp, &*b2)?;
        std::fs::rename(&tmp, &mk2)?;
        let n = match source {
            Source::File(p) => {
                let n = srtp::download::protect_file(&keys, &header, &p, &obj2)?;
                std::fs::remove_file(&p)?;
                n
            }
            Source::Bytes(d) => {
                let tmp = obj2.with_extension("partial");
                let f = std::fs::File::create(&tmp)?;
                let n = srtp::download::protect(&keys, &header, &d[..], f)?;
                std::fs::rename(&tmp, &obj2)?;
                n
            }
        };
        Ok(n)
    })
    .await
    .map_err(|e| SessionError::Io(std::io::Error::other(e)))??;
    Metrics::inc_session(&ctx.metrics.download_objects, &s.cfg.name, 1);
    let msk_id = o.msk.msk_id.to_string();
    let mtk_id = o.mtk_id.value();
    s.update(|st| {
        st.objects += 1;
        st.msk_id = Some(msk_id.clone());
        st.mtk_id = Some(mtk_id);
    });
    tracing::info!(session = %s.cfg.name, object = %object.display(), msk = %o.msk, mtk_id, "protected object written");
    Ok((
        ObjectInfo {
            object,
            mikey: mikey_path,
            msk_id,
            mtk_id,
            length,
        },
        o.msk,
        bytes,
    ))
}

enum Source {
    File(PathBuf),
    Bytes(Vec<u8>),
}

/// Protects `data` as object `name` of download session `session` (admin
/// API).
pub async fn protect_object(
    ctx: &SessionCtx,
    sessions: &Sessions,
    session: &str,
    name: &str,
    data: Vec<u8>,
) -> Result<ObjectInfo, SessionError> {
    let s = sessions
        .get(session)
        .filter(|s| s.cfg.kind == SessionKind::Download)
        .ok_or_else(|| SessionError::UnknownSession(session.to_owned()))?;
    let (info, _, msg) = protect(ctx, s, name, Source::Bytes(data)).await?;
    if !s.cfg.mtk_destinations.is_empty() {
        if let Ok(sock) = bind_for(&s.cfg.mtk_destinations, ctx.multicast_ttl).await {
            send_mtk(&sock, ctx, s, &[msg]).await;
        }
    }
    Ok(info)
}

async fn run_download(
    ctx: SessionCtx,
    s: Arc<Session>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let cfg = &s.cfg;
    let watch_dir = cfg.watch_dir.clone().ok_or("watch_dir missing")?;
    let out_dir = cfg.out_dir.clone().ok_or("out_dir missing")?;
    for d in [&watch_dir, &out_dir] {
        std::fs::create_dir_all(d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }
    let sock = if cfg.mtk_destinations.is_empty() {
        None
    } else {
        Some(
            bind_for(&cfg.mtk_destinations, ctx.multicast_ttl)
                .await
                .map_err(|e| format!("cannot open the sending socket: {e}"))?,
        )
    };
    let mut sizes: HashMap<PathBuf, u64> = HashMap::new();
    let mut recent: VecDeque<Announced> = VecDeque::new();
    let mut scan = tokio::time::interval(Duration::from_secs(cfg.scan_interval));
    let mut repeat = tokio::time::interval(Duration::from_secs(cfg.mtk_repeat));
    tracing::info!(session = %cfg.name, watch = %watch_dir.display(), out = %out_dir.display(), "download session started");
    loop {
        tokio::select! {
            _ = stop.changed() => {
                if *stop.borrow() { break; }
            }
            _ = repeat.tick() => {
                if let Some(sock) = &sock {
                    if !recent.is_empty() {
                        keep_current(&mut recent, current_msk_of(&ctx, cfg.key_group).await);
                        send_mtk(sock, &ctx, &s, &bytes_of(&recent)).await;
                    }
                }
            }
            _ = scan.tick() => {
                let dir = watch_dir.clone();
                let listing = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<(PathBuf, String, u64)>> {
                    let mut v = Vec::new();
                    for e in std::fs::read_dir(&dir)? {
                        let e = e?;
                        let md = e.metadata()?;
                        if !md.is_file() { continue; }
                        if let Some(n) = e.file_name().to_str() {
                            if eligible(n) { v.push((e.path(), n.to_owned(), md.len())); }
                        }
                    }
                    v.sort();
                    Ok(v)
                }).await.map_err(|e| e.to_string())?;
                let listing = match listing {
                    Ok(l) => l,
                    Err(e) => {
                        s.update(|st| st.last_error = Some(format!("scanning: {e}")));
                        continue;
                    }
                };
                // Several instances share the folder: only the key group's
                // anchor protects (and removes) a file; the others leave it
                // alone, quietly (TS 33.246 6.3.4.5: one issuer of MTKs).
                let g = cfg.key_group;
                if !ctx.core.run_short(move |c| c.is_anchor(g)).await {
                    sizes.clear();
                    continue;
                }
                let mut seen = HashMap::new();
                for (path, name, size) in listing {
                    let stable = sizes.get(&path) == Some(&size);
                    seen.insert(path.clone(), size);
                    if !stable { continue; }
                    match protect(&ctx, &s, &name, Source::File(path.clone())).await {
                        Ok((_, msk, msg)) => {
                            seen.remove(&path);
                            if let Some(sock) = &sock {
                                send_mtk(sock, &ctx, &s, std::slice::from_ref(&msg)).await;
                            }
                            keep_current(&mut recent, Some(msk));
                            recent.push_back(Announced { msk, mki: None, bytes: msg });
                            while recent.len() > 4 { recent.pop_front(); }
                        }
                        Err(e) => {
                            let m = format!("{}", crate::ErrorChain(&e));
                            tracing::error!(session = %cfg.name, file = %path.display(), error = %m, "protecting failed");
                            s.update(|st| st.last_error = Some(m));
                        }
                    }
                }
                sizes = seen;
            }
        }
    }
    Ok(())
}
