//! # mbms-demo: the whole MBMS security system in one run (`mbms demo`)
//!
//! [`run`] starts, on loopback and with nothing to install or configure, a
//! BSF, a BM-SC (SQLite in a temporary folder) and N UEs as real services
//! talking real HTTP and UDP, and drives every procedure of the seeds in
//! order: bootstrapping, registration, MSK push with acknowledgement, basic
//! MSK request, a key group rotation pushed to all UEs, BM-SC solicited pull,
//! the 4-way procedure with a charging record, MTK delivery for a streaming
//! session (a synthetic RTP stream) and a download session (a generated
//! file), a missed key update by a UE that was offline during a rotation, and
//! deregistration (after which no push reaches that UE). It checks that every
//! UE decrypted the stream and the file byte-exactly and returns a
//! [`DemoReport`] (JSON schema `mbms-demo/1`, `docs/demo.md`).
//!
//! Addresses: UE *i* gets its own loopback address (127.0.1.1, 127.0.1.2,
//! ...; Linux routes all of 127.0.0.0/8 to `lo`) with its MIKEY listener on
//! the profile's port 2269, MTK messages on 5008 and SRTP on 5006, and binds
//! its HTTP client to that address (the BM-SC sends MIKEY to the source IP
//! of the Ua requests). The BM-SC's MIKEY socket is 127.0.0.1:2269. When a
//! port is taken (or [`DemoOptions::free_ports`] asks for it), three free
//! port numbers are used instead, the same on every address, and the report
//! names them ([`DemoReport::mikey_port`], [`DemoReport::mtk_port`],
//! [`DemoReport::srtp_port`], [`DemoReport::tshark_decode_as`]).
//!
//! Captures: the BM-SC's datagram tap ([`bmsc::Tap`]) records every MIKEY,
//! MTK and SRTP datagram with its real addresses; `--pcap` writes them,
//! `--keylog` writes the MUKs (derived from each UE's K/OPc and B-TID), the
//! MSKs and MTKs (read from the captured messages opened with those keys,
//! and from the download session's MTK message). The run then opens every
//! MIKEY datagram of the capture with the key log, as `mbms mikey decode
//! --keylog` does, and reports the result.
//!
//! Several BM-SC instances ([`DemoOptions::deployment`] =
//! [`Deployment::Processes`], `mbms demo --bmsc-instances K --postgres
//! URL`, issue 13): the same scenario with the BM-SC as K `mbms bmsc`
//! processes on a fresh PostgreSQL database behind a round-robin Ua load
//! balancer; the anchor of key group 1 is killed in the middle of its
//! rotation, and [`CLUSTER_PROCEDURES`] check that every UE is charged once
//! and no counter repeats (`cluster` module, `docs/demo.md`).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context as _};
use serde::Serialize;
use tokio::net::UdpSocket;

use bmsc::{Tap, TapKind};
use ue::{RequestReason, RunningUe, UeConfig, UeEvent};

mod cluster;
mod html;
mod record;

use cluster::Bmsc;
pub use cluster::{instance_ip, ClusterFacts, Deployment, Processes, CLUSTER_PROCEDURES};

pub use html::render_html;
use record::Recorder;
pub use record::{Arrow, Chart, Item, Lane, Note, Recording, Style};

/// The JSON schema name of [`DemoReport`].
pub const SCHEMA: &str = "mbms-demo/1";
/// The BM-SC FQDN of the demo.
pub const BMSC_FQDN: &str = "bmsc.home1.net";
/// The BSF FQDN of the demo.
pub const BSF_FQDN: &str = "bsf.home1.net";
/// The MIKEY port (`PROFILE.md` section 3, 6).
pub const MIKEY_PORT: u16 = 2269;
/// The UEs' MTK message port.
pub const MTK_PORT: u16 = 5008;
/// The UEs' SRTP port.
pub const SRTP_PORT: u16 = 5006;
/// The free-to-air service (key groups 1 and 3: streaming and download).
pub const NEWS: &str = "urn:mbms:service:news";
/// The paid service (key group 2, charging: the 4-way procedure).
pub const PAY: &str = "urn:mbms:service:pay";
const ZN_TOKEN: &str = "zn-demo-token";
const ADMIN: &str = "admin-demo-token";
/// RTP packets of the synthetic stream.
const RTP_PACKETS: u16 = 60;
/// RTP sequence number of the first pre-roll packet; the pre-roll has at
/// most `STREAM_FIRST_SEQ - PREROLL_FIRST_SEQ` packets.
const PREROLL_FIRST_SEQ: u16 = 60_000;
/// RTP sequence number of the first packet of the checked stream.
const STREAM_FIRST_SEQ: u16 = 60_200;
/// Size of the generated download file.
const FILE_LEN: usize = 48 * 1024;

/// What to run.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Number of UEs (at least 2: one goes offline, one deregisters).
    pub ues: usize,
    /// Write every MIKEY/MTK/SRTP datagram to this pcap file.
    pub pcap: Option<PathBuf>,
    /// Write the keys of the run to this key log (`docs/keylog.md`).
    pub keylog: Option<PathBuf>,
    /// The folder for the run's databases and UE state (they hold K, OPc,
    /// Ks, MUKs and MSKs). `None`: a new private temporary folder (see
    /// [`private_temp_dir`]) that the run removes when it ends. A caller
    /// that must remove it on a signal too (`mbms demo`) creates it with
    /// [`private_temp_dir`], passes its path here and drops it itself.
    pub work_dir: Option<PathBuf>,
    /// The MIKEY, MTK and SRTP ports to use if they are free on every
    /// address (default: [`DemoPorts::DEFAULT`], 2269, 5008, 5006); free
    /// ports otherwise.
    pub ports: DemoPorts,
    /// Never try [`DemoOptions::ports`]: always pick free ones. For tests
    /// and for runs next to other programs (two demos at once).
    pub free_ports: bool,
    /// Where the BM-SC runs: in this process (default) or as several
    /// `mbms bmsc` processes on PostgreSQL (issue 13); the scenario is the
    /// same, with the anchor of key group 1 killed in the middle of its
    /// rotation and [`CLUSTER_PROCEDURES`] added when several.
    pub deployment: Deployment,
}

/// The UDP ports of a run: the same numbers on every UE address, and the
/// MIKEY port on the BM-SC's 127.0.0.1 too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct DemoPorts {
    /// MSK messages, solicited pulls and acknowledgements.
    pub mikey: u16,
    /// MTK messages to the UEs.
    pub mtk: u16,
    /// SRTP to the UEs.
    pub srtp: u16,
}

impl DemoPorts {
    /// [`MIKEY_PORT`], [`MTK_PORT`], [`SRTP_PORT`].
    pub const DEFAULT: DemoPorts = DemoPorts {
        mikey: MIKEY_PORT,
        mtk: MTK_PORT,
        srtp: SRTP_PORT,
    };
}

impl Default for DemoPorts {
    fn default() -> Self {
        DemoPorts::DEFAULT
    }
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            ues: 10,
            pcap: None,
            keylog: None,
            work_dir: None,
            ports: DemoPorts::DEFAULT,
            free_ports: false,
            deployment: Deployment::InProcess,
        }
    }
}

/// A new temporary folder `mbms-demo-*`, mode 0700 from its creation (it
/// holds the run's secrets), removed when the value is dropped.
pub fn private_temp_dir() -> std::io::Result<tempfile::TempDir> {
    let mut b = tempfile::Builder::new();
    b.prefix("mbms-demo-");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        b.permissions(std::fs::Permissions::from_mode(0o700));
    }
    b.tempdir()
}

/// Progress of a run, for the caller's display.
#[derive(Clone, Debug)]
pub enum Progress {
    /// A procedure starts (`index` of `total`).
    Procedure {
        /// Its name.
        name: &'static str,
        /// 1-based position.
        index: usize,
        /// Number of procedures.
        total: usize,
    },
    /// UEs done so far in the running procedure.
    Ues {
        /// Done.
        done: usize,
        /// Of.
        total: usize,
    },
    /// A remark (e.g. a port fallback).
    Note(String),
}

/// One procedure's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct ProcedureResult {
    /// Name.
    pub procedure: &'static str,
    /// The seed clause(s) it exercises.
    pub clause: &'static str,
    /// UEs (or items) that succeeded.
    pub succeeded: usize,
    /// UEs (or items) it was run for.
    pub total: usize,
    /// Wall time in milliseconds.
    pub millis: u64,
    /// Why not all succeeded, if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl ProcedureResult {
    /// All succeeded.
    pub fn ok(&self) -> bool {
        self.succeeded == self.total && self.total > 0
    }
}

/// The capture files and their self-check.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CaptureReport {
    /// The pcap file written, if asked.
    pub pcap: Option<PathBuf>,
    /// The key log written, if asked.
    pub keylog: Option<PathBuf>,
    /// Datagrams captured (= pcap packets).
    pub datagrams: usize,
    /// MIKEY datagrams among them (MSK messages, pulls, acknowledgements, MTK messages).
    pub mikey: usize,
    /// SRTP datagrams among them.
    pub srtp: usize,
    /// MIKEY datagrams verified (MAC) with a key from the key log.
    pub mikey_opened: usize,
    /// Lines of the key log.
    pub keylog_lines: usize,
}

/// The outcome of a run (`docs/demo.md`, schema [`SCHEMA`]).
#[derive(Clone, Debug, Serialize)]
pub struct DemoReport {
    /// [`SCHEMA`].
    pub schema: &'static str,
    /// Number of UEs.
    pub ues: usize,
    /// Every procedure succeeded for every UE and the capture opened.
    pub success: bool,
    /// Wall time of the whole run, milliseconds.
    pub wall_millis: u64,
    /// The MIKEY port of the UEs and of the BM-SC ([`MIKEY_PORT`] unless
    /// taken or [`DemoOptions::free_ports`]).
    pub mikey_port: u16,
    /// The UEs' MTK message port ([`MTK_PORT`] unless taken or free ports
    /// were asked for).
    pub mtk_port: u16,
    /// The UEs' SRTP port ([`SRTP_PORT`] unless taken or free ports were
    /// asked for).
    pub srtp_port: u16,
    /// Free ports were used because one of [`DemoOptions::ports`] was
    /// taken.
    pub port_fallback: bool,
    /// The procedures in order.
    pub procedures: Vec<ProcedureResult>,
    /// Captured datagrams and their check.
    pub capture: CaptureReport,
    /// `--bmsc-instances K`: the scale-out run's facts (absent in the
    /// single-instance demo). The ports above are the same: every instance
    /// has the MIKEY port on its own address ([`instance_ip`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterFacts>,
}

impl DemoReport {
    /// The tshark arguments that decode every MIKEY datagram of the run's
    /// pcap: `-d udp.port==MTK,mikey`, and `-d udp.port==MIKEY,mikey` when
    /// the MIKEY port is not 2269 (which tshark decodes as MIKEY by itself).
    pub fn tshark_decode_as(&self) -> Vec<String> {
        let mut v = vec![
            "-d".to_owned(),
            format!("udp.port=={},mikey", self.mtk_port),
        ];
        if self.mikey_port != MIKEY_PORT {
            v.push("-d".to_owned());
            v.push(format!("udp.port=={},mikey", self.mikey_port));
        }
        v
    }
}

/// The names of the procedures in order (with several BM-SC instances,
/// [`CLUSTER_PROCEDURES`] come before the capture check:
/// [`procedures_of`]).
pub const PROCEDURES: [&str; 12] = [
    "bootstrapping",
    "registration",
    "msk push + ack",
    "basic msk request",
    "key group rotation",
    "solicited pull",
    "4-way + charging",
    "mtk + srtp stream",
    "mtk + download",
    "missed key update",
    "deregistration",
    "capture check",
];

/// The procedures of a run on `deployment`, in order.
pub fn procedures_of(deployment: &Deployment) -> Vec<&'static str> {
    let mut v = PROCEDURES.to_vec();
    if matches!(deployment, Deployment::Processes(_)) {
        let check = v.pop();
        v.extend(CLUSTER_PROCEDURES);
        v.extend(check);
    }
    v
}

/// A captured datagram.
#[derive(Clone, Debug)]
struct Captured {
    time: SystemTime,
    kind: TapKind,
    src: SocketAddrV4,
    dst: SocketAddrV4,
    bytes: Vec<u8>,
}

fn v4(a: SocketAddr) -> SocketAddrV4 {
    match a {
        SocketAddr::V4(mut s) => {
            if s.ip().is_unspecified() {
                s.set_ip(Ipv4Addr::LOCALHOST);
            }
            s
        }
        SocketAddr::V6(s) => SocketAddrV4::new(Ipv4Addr::LOCALHOST, s.port()),
    }
}

/// UEs that run standalone, as `mbms ue run` runs one: UE 0 (the offline
/// one, behind relays) and UE 1 (the one that deregisters), each with its
/// own address, sockets and HTTP client. The others are hosted
/// ([`ue::UeHost`]) on [`HOST_IP`].
pub const STANDALONE_UES: usize = 2;

/// The address the hosted UEs (every UE from index [`STANDALONE_UES`] on)
/// share: one MIKEY, one MTK and one SRTP socket and one pool of HTTP
/// connections for all of them (`docs/demo.md`, "Many UEs").
pub const HOST_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 1, 3);

/// Ub and Ua requests the hosted UEs have in flight at most, together
/// (each holds one connection to the BSF or the BM-SC while in flight).
pub const HOST_HTTP_CONCURRENCY: usize = 64;

/// The loopback address of UE `i`: 127.0.1.1 and 127.0.1.2 for the two
/// standalone UEs, [`HOST_IP`] for every hosted one.
pub fn ue_ip(i: usize) -> Ipv4Addr {
    if i < STANDALONE_UES {
        Ipv4Addr::new(127, 0, 1, 1 + i as u8)
    } else {
        HOST_IP
    }
}

fn port_free(ip: Ipv4Addr, port: u16) -> bool {
    std::net::UdpSocket::bind((ip, port)).is_ok()
}

/// A free port on `ip` whose number is none of `avoid` (the run's MIKEY,
/// MTK and SRTP ports, which other UEs bind on their own addresses).
fn free_port(ip: Ipv4Addr, avoid: &[u16]) -> anyhow::Result<u16> {
    for _ in 0..100 {
        let p = std::net::UdpSocket::bind((ip, 0))?.local_addr()?.port();
        if !avoid.contains(&p) {
            return Ok(p);
        }
    }
    bail!("no free UDP port on {ip}")
}

/// The run's MIKEY, MTK and SRTP port numbers, the same on every address.
struct Ports {
    mikey: u16,
    mtk: u16,
    srtp: u16,
    /// The defaults were wanted but one was taken.
    fallback: bool,
    /// 127.0.0.1 held on the MTK and SRTP port numbers for the whole run
    /// and on the MIKEY port until the BM-SC binds it: no other socket of
    /// this host (the BM-SC's senders bind 0.0.0.0:0) gets these numbers,
    /// so no other datagram of the capture travels on a port that tshark
    /// is told to decode as MIKEY.
    hold: Vec<std::net::UdpSocket>,
}

/// Picks the ports: `wanted` if asked for and free on 127.0.0.1 (MIKEY)
/// and every UE address, else three distinct numbers the kernel hands out
/// on 127.0.0.1 that are free on every UE address too.
fn choose_ports(ips: &[Ipv4Addr], wanted: Option<DemoPorts>) -> anyhow::Result<Ports> {
    if let Some(w) = wanted {
        let wanted_free = port_free(Ipv4Addr::LOCALHOST, w.mikey)
            && ips.iter().all(|ip| {
                port_free(*ip, w.mikey) && port_free(*ip, w.mtk) && port_free(*ip, w.srtp)
            });
        if wanted_free {
            return Ok(Ports {
                mikey: w.mikey,
                mtk: w.mtk,
                srtp: w.srtp,
                fallback: false,
                hold: Vec::new(),
            });
        }
    }
    let mut hold: Vec<std::net::UdpSocket> = Vec::with_capacity(3);
    let mut tries = 0;
    while hold.len() < 3 {
        tries += 1;
        if tries > 200 {
            bail!("no UDP port number free on 127.0.0.1 and every UE address");
        }
        let s = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        let p = s.local_addr()?.port();
        if ips.iter().all(|ip| port_free(*ip, p)) {
            hold.push(s);
        }
    }
    let port = |i: usize| hold[i].local_addr().map(|a| a.port());
    Ok(Ports {
        mikey: port(0)?,
        mtk: port(1)?,
        srtp: port(2)?,
        fallback: wanted.is_some(),
        hold,
    })
}

/// A UDP relay that can drop everything (the offline UE).
struct Relay {
    online: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn new(listen: SocketAddr, to: SocketAddr, avoid: &[u16]) -> anyhow::Result<Relay> {
        // Both ways: datagrams to `listen` go to `to` (when online); the
        // answers of `to` (acknowledgements) go back to the last sender from
        // `listen`, so the BM-SC sees them come from the advertised port.
        let sock = Arc::new(UdpSocket::bind(listen).await?);
        let out_ip = match listen.ip() {
            std::net::IpAddr::V4(ip) => ip,
            std::net::IpAddr::V6(_) => Ipv4Addr::LOCALHOST,
        };
        let out = Arc::new(UdpSocket::bind((out_ip, free_port(out_ip, avoid)?)).await?);
        let online = Arc::new(AtomicBool::new(true));
        let peer: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
        let (o, s2, o2, p2) = (online.clone(), sock.clone(), out.clone(), peer.clone());
        let back = tokio::spawn(async move {
            let mut buf = vec![0u8; 65535];
            while let Ok((n, _)) = o2.recv_from(&mut buf).await {
                let to = *p2.lock().unwrap();
                if let Some(to) = to {
                    let _ = s2.send_to(&buf[..n], to).await;
                }
            }
        });
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65535];
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                if o.load(Ordering::SeqCst) {
                    *peer.lock().unwrap() = Some(from);
                    let _ = out.send_to(&buf[..n], to).await;
                }
            }
            back.abort();
        });
        Ok(Relay { online, task })
    }
    fn set_online(&self, on: bool) {
        self.online.store(on, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One UE of the run.
struct DemoUe {
    impi: String,
    ip: Ipv4Addr,
    ue: Option<RunningUe>,
    events: Arc<Mutex<Vec<UeEvent>>>,
    plain: Arc<Mutex<Vec<Vec<u8>>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    input_dir: PathBuf,
    output_dir: PathBuf,
}

impl DemoUe {
    fn events_since(&self, mark: usize) -> Vec<UeEvent> {
        let ev = self.events.lock().unwrap();
        ev[mark.min(ev.len())..].to_vec()
    }
    fn mark(&self) -> usize {
        self.events.lock().unwrap().len()
    }
}

fn stored(e: &UeEvent) -> Option<&str> {
    match e {
        UeEvent::MskStored { msk, .. } => Some(msk),
        _ => None,
    }
}

/// The key groups of service NEWS (key groups 1 and 3).
const NEWS_GROUPS: [&str; 2] = ["00F110/0001", "00F110/0003"];

/// Every MSK of key group 2 stored inactive has been activated (4-way
/// procedure steps 1 and 3, seed 004 6.3.2.3.3): the BM-SC has nothing
/// more to send for it.
fn four_way_settled(ev: &[UeEvent]) -> bool {
    let mut inactive = ev.iter().filter_map(|e| match e {
        UeEvent::MskStored {
            msk,
            inactive: true,
            ..
        } if msk.starts_with("00F110/0002") => Some(msk),
        _ => None,
    });
    inactive.all(|m| {
        ev.iter()
            .any(|e| matches!(e, UeEvent::MskStored { msk, inactive: false, .. } if msk == m))
    })
}

/// How far a UE got through the solicited pull of key group 1, from its
/// events since the pull was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pulled {
    /// No pull accepted.
    NoPull,
    /// Accepted, no MSK request answered 200 yet.
    NotAnswered,
    /// Answered, no MSK of key group 1 stored yet.
    NoMsk,
    /// Pull, request (or its retry: a UE whose request got no answer
    /// retries, `docs/ue.md`) answered 200, MSK stored.
    Done,
}

fn pulled(ev: &[UeEvent]) -> Pulled {
    const G: &str = "00F110/0001";
    let Some(at) = ev
        .iter()
        .position(|e| matches!(e, UeEvent::SolicitedPull { key_group } if key_group == G))
    else {
        return Pulled::NoPull;
    };
    let after = &ev[at..];
    let answered = after.iter().any(|e| {
        matches!(e, UeEvent::MskRequested { reason: RequestReason::SolicitedPull | RequestReason::Retry, keys, statuses }
            if keys.iter().any(|k| k.starts_with(G))
                && !statuses.is_empty() && statuses.iter().all(|s| *s == 200))
    });
    if !answered {
        Pulled::NotAnswered
    } else if after
        .iter()
        .any(|e| stored(e).is_some_and(|m| m.starts_with(G)))
    {
        Pulled::Done
    } else {
        Pulled::NoMsk
    }
}

/// Why UEs did not complete the solicited pull: how many stopped where,
/// and the first error of the first UE that got no pull.
fn pull_detail(ues: &[DemoUe], live: &[usize], marks: &[usize]) -> String {
    let (mut no_pull, mut not_answered, mut no_msk) = (0, 0, 0);
    let mut first = None;
    for &i in live {
        let ev = ues[i].events_since(marks[i]);
        match pulled(&ev) {
            Pulled::NoPull => {
                no_pull += 1;
                if first.is_none() {
                    // Its last error (a refused MIKEY message is one).
                    first = ues[i]
                        .ue
                        .as_ref()
                        .and_then(|u| u.status().ok())
                        .and_then(|st| st.runtime?.last_errors.pop())
                        .map(|e| format!(" (UE {i}, last error: {})", e.what));
                }
            }
            Pulled::NotAnswered => not_answered += 1,
            Pulled::NoMsk => no_msk += 1,
            Pulled::Done => {}
        }
    }
    format!(
        "{no_pull} UEs accepted no pull{}, {not_answered} got no 200 to their MSK request, {no_msk} stored no MSK",
        first.unwrap_or_default()
    )
}

/// Why UEs did not complete the basic MSK request: the first UE whose
/// request got no 200 or no MSK, with its answers and its last error.
fn request_detail(ues: &[DemoUe], live: &[usize], marks: &[usize]) -> String {
    for &i in live {
        let ev = ues[i].events_since(marks[i]);
        let statuses: Vec<String> = ev
            .iter()
            .filter_map(|e| match e {
                UeEvent::MskRequested {
                    reason, statuses, ..
                } => Some(format!("{reason:?} {statuses:?}")),
                _ => None,
            })
            .collect();
        let stored: Vec<&str> = ev.iter().filter_map(stored).collect();
        let done = NEWS_GROUPS
            .iter()
            .all(|g| stored.iter().any(|m| m.starts_with(g)));
        if !done || statuses.is_empty() {
            let last = ues[i]
                .ue
                .as_ref()
                .and_then(|u| u.status().ok())
                .and_then(|st| st.runtime?.last_errors.pop())
                .map(|e| e.what)
                .unwrap_or_default();
            return format!(
                "UE {i}: requests {statuses:?}, MSKs stored {stored:?}, last error: {last}"
            );
        }
    }
    String::new()
}

/// The time a procedure gets for `n` UEs: `base_s` seconds for the first
/// few plus 10 ms per UE (the UEs, the BSF and the BM-SC share the host's
/// cores; at 10,000 UEs a push to all of them takes tens of seconds).
fn grace(base_s: u64, n: usize) -> Duration {
    Duration::from_secs(base_s) + Duration::from_millis(10 * n as u64)
}

/// Waits until `f` holds for every UE in `which` or `timeout` passes;
/// returns how many it holds for. Reports progress.
async fn wait_all(
    ues: &[DemoUe],
    which: &[usize],
    timeout: Duration,
    progress: &(dyn Fn(Progress) + Send + Sync),
    mut f: impl FnMut(usize, &DemoUe) -> bool,
) -> usize {
    let deadline = Instant::now() + timeout;
    // Polled every 20 ms, 50 ms per 1,000 UEs beyond 400: a poll looks at
    // every UE not yet done.
    let every = Duration::from_millis((ues.len() as u64 / 20).max(20));
    let mut done = BTreeSet::new();
    let mut last = usize::MAX;
    loop {
        for &i in which {
            if !done.contains(&i) && f(i, &ues[i]) {
                done.insert(i);
            }
        }
        if done.len() != last {
            last = done.len();
            progress(Progress::Ues {
                done: last,
                total: which.len(),
            });
        }
        if done.len() == which.len() || Instant::now() >= deadline {
            return done.len();
        }
        tokio::time::sleep(every).await;
    }
}

/// The `[http] max_connections` of the demo's BSF and BM-SC: the default
/// (512) whatever the number of UEs. The hosted UEs share at most
/// [`HOST_HTTP_CONCURRENCY`] connections, each standalone UE keeps one to
/// each server, the admin API one. (When every UE had its own HTTP client,
/// its keep-alive connections took 2 per UE, and with 512 the 513th UE's
/// connection waited in the listen backlog until an idle one timed out:
/// issue 12.)
fn http_connections(_n: usize) -> usize {
    mbms_service::http::DEFAULT_MAX_CONNECTIONS.max(HOST_HTTP_CONCURRENCY + 2 * STANDALONE_UES + 64)
}

/// The streaming session's `mtk_interval` (seconds) and `switch_delay_ms`
/// for `n` UEs: 2 s and 500 ms, plus 5 s and 3 s per 1,000 UEs. The BM-SC
/// switches SRTP to a new MTK `switch_delay_ms` after sending its MTK
/// message to every UE; each UE stores the new MTK (two fsyncs each for its
/// MGV-S and its MTK cache) before it can decrypt with it. At 1,000 UEs on
/// 2 cores those 4,000 fsyncs took longer than 500 ms (and than 1.5 s on a
/// busy disk), and a UE dropped the packets of the new MKI until it got
/// there (issue 12: UEs with 45 or 54 of 60 packets). The delay stays
/// shorter than the interval, or no switch would ever happen.
fn mtk_timing(n: usize) -> (u64, u64) {
    (2 + 5 * n as u64 / 1000, 500 + 3 * n as u64)
}

/// The BM-SC configuration of the demo: its sessions, key groups 1, 2
/// (charging) and 3, services news and pay. `listen`, `mikey`, `rtp_in`
/// and `db` are the instance's own; `cluster` is its `[cluster]` section
/// (empty for the in-process BM-SC). The download folders are the run's,
/// shared by every instance.
#[allow(clippy::too_many_arguments)]
fn bmsc_config(
    dir: &std::path::Path,
    n: usize,
    bsf_url: &str,
    listen: SocketAddr,
    mikey: SocketAddr,
    rtp_in: SocketAddr,
    db: &str,
    mtk_dests: &[SocketAddr],
    srtp_dests: &[SocketAddr],
    cluster: &str,
) -> String {
    let d = dir.display();
    let list = |v: &[SocketAddr]| {
        v.iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        r#"
fqdn = "{BMSC_FQDN}"
listen = "{listen}"
mikey_listen = "{mikey}"
db = "{db}"
key_domain = "001-01"
admin_token = "{ADMIN}"
counter_block = 16

[bsf]
url = "{bsf_url}"
zn_token = "{ZN_TOKEN}"

[http]
max_connections = {max_connections}

[retransmit]
initial_ms = 1000
factor = 2
max_interval_ms = 1000
max_attempts = 3
jitter_permille = 0

[[key_group]]
id = 1
window_len = 1000

[[key_group]]
id = 2
window_len = 1000
charging = true

[[key_group]]
id = 3
window_len = 1000

[[service]]
id = "{NEWS}"
key_groups = [1, 3]
open = true

[[service]]
id = "{PAY}"
key_groups = [2]
open = true

[[session]]
name = "video"
kind = "streaming"
key_group = 1
mtk_destinations = [{mtk}]
mtk_interval = {mtk_interval}
mtk_repeat = 1
rtp_listen = "{rtp_in}"
srtp_destinations = [{srtp}]
switch_delay_ms = {switch_delay_ms}

[[session]]
name = "files"
kind = "download"
key_group = 3
watch_dir = "{d}/bmsc-watch"
out_dir = "{d}/bmsc-out"
scan_interval = 1
{cluster}"#,
        mtk = list(mtk_dests),
        srtp = list(srtp_dests),
        max_connections = http_connections(n),
        mtk_interval = mtk_timing(n).0,
        switch_delay_ms = mtk_timing(n).1,
    )
}

#[allow(clippy::too_many_arguments)]
fn ue_config(
    dir: &std::path::Path,
    impi: &str,
    k: &[u8; 16],
    opc: &[u8; 16],
    ip: Ipv4Addr,
    mikey_listen: SocketAddr,
    advertised: Option<u16>,
    mtk: SocketAddr,
    srtp: SocketAddr,
    rtp_out: SocketAddr,
    bsf_url: &str,
    bmsc_url: &str,
    scan_ms: u64,
) -> anyhow::Result<UeConfig> {
    std::fs::create_dir_all(dir)?;
    let d = dir.display();
    let adv = advertised
        .map(|p| format!("mikey_advertised_port = {p}\n"))
        .unwrap_or_default();
    let text = format!(
        r#"
state_dir = "{d}/state"
services = "{d}/services.toml"
mikey_listen = "{mikey_listen}"
{adv}http_local_address = "{ip}"
initial_msk_wait_ms = 4000
msk_delivery_timeout_ms = 4000
missed_key_backoff_ms = 300
msk_request_attempts = 3
http_timeout_s = 30

[identity]
impi = "{impi}"
k = "{k}"
opc = "{opc}"
bsf = "{bsf_url}"
bsf_fqdn = "{BSF_FQDN}"
"#,
        k = hex::encode(k),
        opc = hex::encode(opc),
    );
    let mut cfg = UeConfig::parse(&text)?;
    let uri = format!("{bmsc_url}/keymanagement");
    let svc = format!(
        r#"
[[service]]
id = "{NEWS}"
key_management_uri = "{uri}"
bmsc_fqdn = "{BMSC_FQDN}"
key_domain = "001-01"
key_groups = [1, 3]

[[service.session]]
name = "video"
kind = "streaming"
mtk_listen = "{mtk}"
srtp_listen = "{srtp}"
rtp_output = "{rtp_out}"
sdp = "{d}/video.sdp"

[[service.session]]
name = "files"
kind = "download"
key_group = 3
input_dir = "{d}/in"
output_dir = "{d}/out"
scan_interval_ms = {scan_ms}

[[service]]
id = "{PAY}"
key_management_uri = "{uri}"
bmsc_fqdn = "{BMSC_FQDN}"
key_domain = "001-01"
key_groups = [2]
"#
    );
    cfg.service_list = ue::config::parse_services(&svc)?;
    cfg.validate()?;
    Ok(cfg)
}

/// How often each UE scans its download input folder, in milliseconds, for
/// `n` UEs: every 100 ms, and no more than 1,000 scans per second over all
/// UEs (at 10,000 UEs, every 100 ms was 100,000 folder reads a second).
fn download_scan_ms(n: usize) -> u64 {
    (n as u64).max(100)
}

/// The time between two RTP packets of the stream for `n` UEs: 10 ms up
/// to 50 UEs, 20 ms up to 1,000, then 20 us per UE (every packet is one
/// SRTP datagram per UE for the BM-SC to protect and send, and for the UEs
/// to receive and decrypt, on the host's cores: 200 ms at 10,000).
fn stream_pace(n: usize) -> Duration {
    let floor = if n > 50 { 20_000 } else { 10_000 };
    Duration::from_micros((20 * n as u64).max(floor))
}

/// The packets of the checked stream among a UE's decrypted packets: all
/// but those of the pre-roll (sequence numbers [`PREROLL_FIRST_SEQ`] up
/// to [`STREAM_FIRST_SEQ`]), which may still arrive after the list was
/// cleared when the BM-SC's sending lags behind the pre-roll (issue 12:
/// "UEs count 70 of 60 packets" at 1,000 UEs were pre-roll packets).
fn stream_part(plain: &[Vec<u8>]) -> impl Iterator<Item = &[u8]> {
    plain.iter().map(Vec::as_slice).filter(|p| {
        let seq = p.get(2..4).map(|b| u16::from_be_bytes([b[0], b[1]]));
        !seq.is_some_and(|s| (PREROLL_FIRST_SEQ..STREAM_FIRST_SEQ).contains(&s))
    })
}

/// A UE decrypted exactly the packets `sent`, byte-exact and in order (and
/// nothing else but pre-roll packets).
fn stream_matches(plain: &[Vec<u8>], sent: &[Vec<u8>]) -> bool {
    stream_part(plain).eq(sent.iter().map(Vec::as_slice))
}

/// An RTP packet of the synthetic stream: version 2, PT 33, SSRC, SEQ,
/// timestamp and a payload that names its sequence number.
pub fn rtp(ssrc: u32, seq: u16, len: usize) -> Vec<u8> {
    let mut p = vec![0x80, 33];
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
    p.extend_from_slice(&ssrc.to_be_bytes());
    for i in 0..len {
        p.push((seq as usize * 31 + i) as u8);
    }
    p
}

/// The MUK of a UE, derived as the UE and the BM-SC do (GBA_ME): Milenage
/// f3/f4 on the B-TID's RAND give Ks, the TS 33.220 KDF gives Ks_NAF, the
/// profile's KDF the MUK.
pub fn muk_of(k: &[u8; 16], opc: &[u8; 16], impi: &str, btid: &str) -> anyhow::Result<[u8; 32]> {
    muk_for_naf(k, opc, impi, btid, BMSC_FQDN)
}

/// [`muk_of`] for the BM-SC (NAF) `bmsc_fqdn`.
pub fn muk_for_naf(
    k: &[u8; 16],
    opc: &[u8; 16],
    impi: &str,
    btid: &str,
    bmsc_fqdn: &str,
) -> anyhow::Result<[u8; 32]> {
    let btid = gba::BTid::parse(btid).map_err(|e| anyhow!("B-TID: {e}"))?;
    let m = gba::Milenage::new(
        &gba::SubscriberKey::from_bytes(*k),
        &gba::Opc::from_bytes(*opc),
    );
    let out = m.f2345(btid.rand());
    let ks = gba::Ks::from_ck_ik(&out.ck, &out.ik);
    let ks_naf = gba::kdf::derive_ks_naf(&ks, btid.rand(), impi, &gba::NafId::mbms(bmsc_fqdn))
        .map_err(|e| anyhow!("KDF: {e}"))?;
    Ok(*gba::kdf::derive_muk(&ks_naf).as_bytes())
}

/// File descriptors one standalone UE holds: its MIKEY, MTK, SRTP and
/// plain RTP output sockets, its HTTP client's connections to the BSF and
/// the BM-SC and their server ends, and one more for files being written.
const DESCRIPTORS_PER_STANDALONE_UE: u64 = 9;

/// File descriptors of everything else, whatever the number of UEs: the
/// hosted UEs' three shared sockets, their at most
/// [`HOST_HTTP_CONCURRENCY`] connections and the server ends, the servers'
/// listeners and databases, the relays, state files being written (one per
/// worker thread at most), the runtime. A hosted UE holds none of its own.
const DESCRIPTORS_SHARED: u64 = 1024;

/// The file descriptors `n` UEs need.
fn descriptors_needed(n: usize) -> u64 {
    n.min(STANDALONE_UES) as u64 * DESCRIPTORS_PER_STANDALONE_UE + DESCRIPTORS_SHARED
}

/// Makes room for `n` UEs' descriptors: raises the soft `RLIMIT_NOFILE` up
/// to the hard limit if needed (returns a note saying so), or fails naming
/// the limit when even the hard limit is too low (issue 12: beyond it,
/// sockets and connections fail one by one in the middle of the run).
fn descriptors_for(n: usize) -> anyhow::Result<Option<String>> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let need = descriptors_needed(n);
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("reading RLIMIT_NOFILE")?;
    if soft >= need {
        return Ok(None);
    }
    if hard < need {
        bail!(
            "{n} UEs need about {need} file descriptors; this process may open {hard} at most (`ulimit -Hn`)"
        );
    }
    setrlimit(Resource::RLIMIT_NOFILE, need, hard).context("raising RLIMIT_NOFILE")?;
    Ok(Some(format!(
        "raised the open file limit from {soft} to {need} for {n} UEs"
    )))
}

/// The worker threads of the runtime `mbms demo` runs in: at least 64.
/// The in-process UEs write their state files (fsync: the MGV-S, the MTK
/// cache, the registrations) on the thread that handles their datagram or
/// HTTP answer, so the runtime's worker threads bound how many of these
/// writes wait for the disk at once; with one worker per core (2 here),
/// starting 1,000 UEs took 3 minutes, the disk idle most of the time
/// (issue 12). With 16, on a disk shared with other builds (an fsync took
/// 180 ms), 10,000 UEs started at 2 a second: the file system commits
/// the fsyncs waiting at the same time together, so more of them at once
/// go faster.
pub fn worker_threads() -> usize {
    std::thread::available_parallelism()
        .map(usize::from)
        .unwrap_or(1)
        .max(STARTS_AT_ONCE)
}

/// UEs starting (bootstrapping, registering, storing their first MSKs) at
/// the same time; see [`worker_threads`].
const STARTS_AT_ONCE: usize = 64;

/// Runs the demo. `progress` is called from the running task.
pub async fn run(
    opts: DemoOptions,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> anyhow::Result<DemoReport> {
    run_recorded(opts, progress, &Recorder::default()).await
}

/// Runs the demo and records its messages for the report page
/// (`mbms demo --report`, [`render_html`]): the sequence charts of UE 1
/// (every procedure) and UE 0 (the missed key update).
pub async fn run_with_recording(
    opts: DemoOptions,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> anyhow::Result<(DemoReport, Recording)> {
    let rec = Recorder::on();
    let report = run_recorded(opts, progress, &rec).await?;
    Ok((report, rec.recording()))
}

async fn run_recorded(
    opts: DemoOptions,
    progress: &(dyn Fn(Progress) + Send + Sync),
    rec: &Recorder,
) -> anyhow::Result<DemoReport> {
    let n = opts.ues;
    if n < 2 {
        bail!("the demo needs at least 2 UEs (one goes offline, one deregisters)");
    }
    if n > 250 * 200 {
        bail!("at most 50000 UEs");
    }
    let start = Instant::now();
    if let Some(note) = descriptors_for(n)? {
        progress(Progress::Note(note));
    }
    // Our own folder (removed when `_own_dir` drops), or the caller's.
    let (_own_dir, dir) = match &opts.work_dir {
        Some(p) => (None, WorkDir(p.clone())),
        None => {
            let d = private_temp_dir().context("temporary folder")?;
            let p = WorkDir(d.path().to_path_buf());
            (Some(d), p)
        }
    };
    let mut results: Vec<ProcedureResult> = Vec::new();
    let names = procedures_of(&opts.deployment);
    let total = names.len();
    let begin = |idx: usize| {
        rec.procedure(idx);
        progress(Progress::Procedure {
            name: names[idx],
            index: idx + 1,
            total,
        });
        Instant::now()
    };
    // With several instances: the cluster procedures come before the
    // capture check.
    let p_charging_once = PROCEDURES.len() - 1;
    let p_counters = PROCEDURES.len();
    let p_capture = total - 1;
    let fleet_plan = match &opts.deployment {
        Deployment::InProcess => None,
        Deployment::Processes(p) => {
            if p.instances < 2 {
                bail!("--bmsc-instances: at least 2 (the anchor is killed)");
            }
            Some(p)
        }
    };
    let instance_ips: Vec<Ipv4Addr> = fleet_plan
        .map(|p| (0..p.instances).map(instance_ip).collect())
        .unwrap_or_default();

    // ---- addresses -------------------------------------------------------
    let ips: Vec<Ipv4Addr> = (0..n).map(ue_ip).collect();
    // The distinct addresses: the standalone UEs' and the host's.
    let addrs: Vec<Ipv4Addr> = ips
        .iter()
        .copied()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if !addrs.iter().all(|ip| port_free(*ip, 0)) {
        bail!("cannot bind the UEs' loopback addresses 127.0.1.x (is 127.0.0.0/8 routed to lo?)");
    }
    let wanted = opts.ports;
    if [wanted.mikey, wanted.mtk, wanted.srtp].contains(&0)
        || wanted.mikey == wanted.mtk
        || wanted.mikey == wanted.srtp
        || wanted.mtk == wanted.srtp
    {
        bail!("the demo's MIKEY, MTK and SRTP ports must be three different non-zero ports: {wanted:?}");
    }
    // The instances' addresses need the MIKEY port too.
    let port_ips: Vec<Ipv4Addr> = addrs.iter().chain(&instance_ips).copied().collect();
    if !instance_ips.iter().all(|ip| port_free(*ip, 0)) {
        bail!("cannot bind the BM-SC instances' loopback addresses 127.0.2.x (is 127.0.0.0/8 routed to lo?)");
    }
    let mut chosen = choose_ports(&port_ips, (!opts.free_ports).then_some(wanted))?;
    let (mp, tp, sp) = (chosen.mikey, chosen.mtk, chosen.srtp);
    let avoid = [mp, tp, sp];
    if chosen.fallback {
        progress(Progress::Note(format!(
            "port {}, {} or {} is taken: using MIKEY port {mp}, MTK port {tp}, SRTP port {sp} (tshark -d udp.port=={tp},mikey -d udp.port=={mp},mikey)",
            wanted.mikey, wanted.mtk, wanted.srtp
        )));
    }
    let bmsc_mikey = SocketAddr::from((Ipv4Addr::LOCALHOST, mp));
    // The plain RTP output of every UE goes to one sink the demo drains.
    let sink = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let sink_addr = sink.local_addr()?;
    let sink_task = tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while sink.recv_from(&mut buf).await.is_ok() {}
    });
    // The offline UE (index 0) sits behind relays on its MIKEY and MTK ports.
    let offline = 0usize;
    let dereg = 1usize;
    // One MTK and one SRTP destination per address: the hosted UEs all
    // receive what reaches the host's shared sockets.
    let mtk_dests: Vec<SocketAddr> = addrs.iter().map(|ip| SocketAddr::from((*ip, tp))).collect();
    let srtp_dests: Vec<SocketAddr> = addrs.iter().map(|ip| SocketAddr::from((*ip, sp))).collect();

    // ---- BSF ---------------------------------------------------------------
    let mut keys = Vec::with_capacity(n);
    {
        use rand::RngCore as _;
        let mut rng = rand::thread_rng();
        for _ in 0..n {
            let (mut k, mut opc) = ([0u8; 16], [0u8; 16]);
            rng.fill_bytes(&mut k);
            rng.fill_bytes(&mut opc);
            keys.push((k, opc));
        }
    }
    let impis: Vec<String> = (0..n).map(|i| format!("ue{i:05}@home1.net")).collect();
    let bsf_db = dir.path().join("bsf.db");
    let subs: Vec<bsf::Subscriber> = (0..n)
        .map(|i| bsf::Subscriber {
            impi: impis[i].clone(),
            k: gba::SubscriberKey::from_bytes(keys[i].0),
            opc: gba::Opc::from_bytes(keys[i].1),
            sqn: gba::Sqn48::ZERO,
            amf: [0x80, 0x00],
            gba_type: bsf::GbaType::GbaMe,
        })
        .collect();
    let bsf_store = tokio::task::spawn_blocking(move || -> anyhow::Result<bsf::SqliteStore> {
        use bsf::Store as _;
        let s = bsf::SqliteStore::open(&bsf_db)?;
        s.provision_subscribers(&subs)?;
        Ok(s)
    })
    .await??;
    let mut bsf_cfg = bsf::BsfConfig::new(BSF_FQDN, bsf::ZnToken::new(ZN_TOKEN));
    bsf_cfg.http.max_connections = http_connections(n);
    let bsf = bsf::Bsf::new(bsf_cfg.settings(), Arc::new(bsf_store))
        .spawn("127.0.0.1:0".parse()?)
        .await
        .context("starting the BSF")?;

    // ---- BM-SC: with the tap in this process, or K instances ---------------
    let zn_url = rec.zn_url(&bsf.url()).await?;
    // The BM-SC binds its MIKEY port now (the MTK and SRTP holds stay).
    if !chosen.hold.is_empty() {
        chosen.hold.remove(0);
    }
    let bmsc = match fleet_plan {
        None => {
            let captured: Arc<Mutex<Vec<Captured>>> = Arc::new(Mutex::new(Vec::new()));
            let c2 = captured.clone();
            let tap = Tap::new(move |d| {
                let c = Captured {
                    time: SystemTime::now(),
                    kind: d.kind,
                    src: v4(d.src),
                    dst: v4(d.dst),
                    bytes: d.bytes.to_vec(),
                };
                c2.lock().unwrap().push(c);
            });
            let rtp_in =
                SocketAddr::from((Ipv4Addr::LOCALHOST, free_port(Ipv4Addr::LOCALHOST, &avoid)?));
            let db = dir.path().join("bmsc.db");
            let cfg_text = bmsc_config(
                dir.path(),
                n,
                &zn_url,
                SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
                bmsc_mikey,
                rtp_in,
                &db.display().to_string(),
                &mtk_dests,
                &srtp_dests,
                "",
            );
            let bcfg = bmsc::BmscConfig::parse(&cfg_text).context("BM-SC configuration")?;
            let store = tokio::task::spawn_blocking(
                move || -> anyhow::Result<Arc<dyn bmsc::store::Store>> {
                    Ok(Arc::new(bmsc::store::SqliteStore::open(&db)?)
                        as Arc<dyn bmsc::store::Store>)
                },
            )
            .await??;
            let running = bmsc::start_with_tap(&bcfg, store, Some(tap))
                .await
                .context("starting the BM-SC")?;
            Bmsc::InProcess {
                running,
                captured,
                rtp_in,
            }
        }
        Some(p) => {
            progress(Progress::Note(format!(
                "starting {} BM-SC instances on a fresh PostgreSQL database",
                p.instances
            )));
            let config = |listen, mikey, rtp_in, db: &str, cluster: &str| {
                bmsc_config(
                    dir.path(),
                    n,
                    &zn_url,
                    listen,
                    mikey,
                    rtp_in,
                    db,
                    &mtk_dests,
                    &srtp_dests,
                    cluster,
                )
            };
            cluster::start_processes(
                p,
                cluster::FleetPlan {
                    dir: dir.path(),
                    config: &config,
                    mikey_port: mp,
                    avoid: &avoid,
                },
            )
            .await?
        }
    };
    let bmsc_url = bmsc.ua_url();
    let http = reqwest::Client::new();
    let admin = |path: &str| {
        rec.admin(path);
        let req = http
            .post(format!("{}{path}", bmsc.admin_url()))
            .bearer_auth(ADMIN);
        async move {
            let r = req.send().await?;
            let s = r.status();
            let v: serde_json::Value = r.json().await.unwrap_or(serde_json::Value::Null);
            if !s.is_success() {
                bail!("admin {s}: {v}");
            }
            Ok::<_, anyhow::Error>(v)
        }
    };

    // ---- UEs: bootstrapping and registration --------------------------------
    let t0 = begin(0);
    let mut relays = Vec::new();
    let mut ues: Vec<DemoUe> = Vec::with_capacity(n);
    let mut cfgs = Vec::with_capacity(n);
    for i in 0..n {
        let ip = ips[i];
        if i == offline || i == dereg {
            rec.watch(i, &impis[i], ip, i == offline);
        }
        let (bsf_url, ua_url) = rec.ue_urls(i, &bsf.url(), &bmsc_url).await?;
        let udir = dir.path().join(format!("ue{i:05}"));
        let (mikey_listen, adv, mtk_listen) = if i == offline {
            let inner_m = SocketAddr::from((ip, free_port(ip, &avoid)?));
            let inner_t = SocketAddr::from((ip, free_port(ip, &avoid)?));
            relays.push(Relay::new(SocketAddr::from((ip, mp)), inner_m, &avoid).await?);
            relays.push(Relay::new(SocketAddr::from((ip, tp)), inner_t, &avoid).await?);
            (inner_m, Some(mp), inner_t)
        } else {
            (SocketAddr::from((ip, mp)), None, SocketAddr::from((ip, tp)))
        };
        let cfg = ue_config(
            &udir,
            &impis[i],
            &keys[i].0,
            &keys[i].1,
            ip,
            mikey_listen,
            adv,
            mtk_listen,
            SocketAddr::from((ip, sp)),
            sink_addr,
            &bsf_url,
            &ua_url,
            download_scan_ms(n),
        )?;
        ues.push(DemoUe {
            impi: impis[i].clone(),
            ip,

            ue: None,
            events: Arc::new(Mutex::new(Vec::new())),
            plain: Arc::new(Mutex::new(Vec::new())),
            tasks: Vec::new(),
            input_dir: udir.join("in"),
            output_dir: udir.join("out"),
        });
        cfgs.push(cfg);
    }
    // Start them with bounded concurrency: the standalone ones on their
    // own sockets, the others on the host's.
    let host = Arc::new(
        ue::UeHost::new(&ue::HostConfig {
            address: HOST_IP.into(),
            http_concurrency: HOST_HTTP_CONCURRENCY,
            http_timeout: Duration::from_secs(30),
        })
        .context("the UE host")?,
    );
    let sem = Arc::new(tokio::sync::Semaphore::new(STARTS_AT_ONCE));
    let mut set = tokio::task::JoinSet::new();
    for (i, cfg) in cfgs.into_iter().enumerate() {
        let sem = sem.clone();
        let host = host.clone();
        set.spawn(async move {
            let _p = sem.acquire().await;
            let r = if i < STANDALONE_UES {
                RunningUe::start_subscribed(cfg).await
            } else {
                host.start(cfg).await
            };
            (i, r)
        });
    }
    let mut started = 0usize;
    let mut start_errors = Vec::new();
    while let Some(r) = set.join_next().await {
        let (i, r) = r?;
        match r {
            Ok((ue, mut rx)) => {
                let ev = ues[i].events.clone();
                ues[i].tasks.push(tokio::spawn(async move {
                    loop {
                        match rx.recv().await {
                            Ok(e) => ev.lock().unwrap().push(e),
                            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                            Err(_) => break,
                        }
                    }
                }));
                let mut prx = ue.plain_packets();
                let pl = ues[i].plain.clone();
                ues[i].tasks.push(tokio::spawn(async move {
                    loop {
                        match prx.recv().await {
                            Ok(p) if !p.rtcp => pl.lock().unwrap().push(p.bytes),
                            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                            Err(_) => break,
                        }
                    }
                }));
                ues[i].ue = Some(ue);
                started += 1;
                progress(Progress::Ues {
                    done: started,
                    total: n,
                });
            }
            Err(e) => start_errors.push(format!("UE {i}: {e}")),
        }
    }
    let all: Vec<usize> = (0..n).collect();
    let live: Vec<usize> = (0..n).filter(|i| ues[*i].ue.is_some()).collect();
    let boot_ok = wait_all(&ues, &all, grace(5, n), progress, |_, u| {
        u.events_since(0)
            .iter()
            .any(|e| matches!(e, UeEvent::Bootstrapped { .. }))
    })
    .await;
    results.push(ProcedureResult {
        procedure: PROCEDURES[0],
        clause: "GBA (TS 33.220); 002 6.3.2.2.1",
        succeeded: boot_ok,
        total: n,
        millis: t0.elapsed().as_millis() as u64,
        detail: start_errors.first().cloned(),
    });
    let t = begin(1);
    let reg_ok = wait_all(&ues, &all, grace(5, n), progress, |_, u| {
        let ev = u.events_since(0);
        [NEWS, PAY].iter().all(|s| {
            ev.iter()
                .any(|e| matches!(e, UeEvent::Registered { service, status: 200 } if service == s))
        })
    })
    .await;
    results.push(ProcedureResult {
        procedure: PROCEDURES[1],
        clause: "002 G.2.3 (register)",
        succeeded: reg_ok,
        total: n,
        millis: (t0.elapsed() + t.elapsed()).as_millis() as u64 / 2,
        detail: None,
    });

    // ---- MSK push with acknowledgement (key groups 1 and 3) ----------------
    let t = begin(2);
    let push_ok = wait_all(&ues, &live, grace(20, n), progress, |_, u| {
        let ev = u.events_since(0);
        ["0001", "0003"].iter().all(|g| {
            ev.iter().any(|e| {
                matches!(e, UeEvent::MskStored { msk, acknowledged: true, .. } if msk.starts_with(&format!("00F110/{g}")))
            })
        })
    })
    .await;
    results.push(ProcedureResult {
        procedure: PROCEDURES[2],
        clause: "000 6.3.2.3.1, 004 6.4.2, 6.5.3",
        succeeded: push_ok,
        total: n,
        millis: t.elapsed().as_millis() as u64 + t0.elapsed().as_millis() as u64 / 2,
        detail: None,
    });

    // ---- basic MSK request ---------------------------------------------------
    let t = begin(3);
    let marks: Vec<usize> = ues.iter().map(DemoUe::mark).collect();
    for &i in &live {
        if let Some(u) = &ues[i].ue {
            let _ = u.request_current_msks(NEWS);
        }
    }
    // Every key group of the service asked for and answered 200, and an
    // MSK of each delivered: the BM-SC has sent everything the request
    // asked for before the next procedure starts (see the solicited pull).
    let req_ok = wait_all(&ues, &live, grace(20, n), progress, |i, u| {
        let ev = u.events_since(marks[i]);
        NEWS_GROUPS.iter().all(|g| {
            let asked = ev.iter().any(|e| {
                matches!(e, UeEvent::MskRequested { reason: RequestReason::Manual, keys, statuses }
                    if keys.iter().any(|k| k.starts_with(g))
                        && !statuses.is_empty() && statuses.iter().all(|s| *s == 200))
            });
            asked
                && ev
                    .iter()
                    .any(|e| stored(e).is_some_and(|m| m.starts_with(g)))
        })
    })
    .await;
    results.push(ProcedureResult {
        procedure: PROCEDURES[3],
        clause: "002 6.3.2.2.1, G.2.3",
        succeeded: req_ok,
        total: n,
        millis: t.elapsed().as_millis() as u64,
        detail: (req_ok < live.len()).then(|| request_detail(&ues, &live, &marks)),
    });

    // ---- key group rotation pushed to all ------------------------------------
    let t = begin(4);
    let marks: Vec<usize> = ues.iter().map(DemoUe::mark).collect();
    let victim = match bmsc.fleet() {
        Some(f) => Some(anchor_of_group_1(f).await?),
        None => None,
    };
    let v = admin("/admin/v1/key-groups/1/rotate").await?;
    let next = v["next"].as_str().unwrap_or_default().to_owned();
    let holds_next = |i: usize, u: &DemoUe| {
        u.events_since(marks[i]).iter().any(|e| {
            matches!(e, UeEvent::MskStored { msk, acknowledged: true, .. } if msk.ends_with(&next))
        })
    };
    // Several instances: SIGKILL to the key group's anchor once about a
    // third of the UEs hold the new MSK; it stays dead, and the survivors
    // take over its key groups and UEs (6.3.4.3).
    let mut kill = match (bmsc.fleet(), victim) {
        (Some(f), Some(v)) => {
            Some(kill_mid_rotation(f, v, &ues, &live, &holds_next, progress).await?)
        }
        _ => None,
    };
    let lease_wait = bmsc.fleet().map_or(Duration::ZERO, |f| f.lease * 3);
    let rot_ok = wait_all(&ues, &live, grace(20, n) + lease_wait, progress, |i, u| {
        holds_next(i, u)
    })
    .await;
    let failover = kill.as_ref().map(|k| k.at.elapsed());
    let takeover = match kill.as_mut() {
        Some(k) => (&mut k.takeover)
            .await
            .ok()
            .flatten()
            .map(|t| t.saturating_duration_since(k.at)),
        None => None,
    };
    // The later procedures start once the survivors hold every UE shard
    // and key group again, so that each procedure's time is its own: a
    // solicited pull of a UE whose shard nobody holds yet waits for the
    // lease to run out (the instance that takes the shard carries it out,
    // `bmsc::core::Core::remember_pull`; before that fix it was lost: 17
    // of 100 UEs in one run).
    let shards_taken = match (bmsc.fleet(), &kill) {
        (Some(f), Some(k)) => {
            survivors_hold_everything(f, &k.instance, grace(20, n) + lease_wait).await
        }
        _ => true,
    };
    results.push(ProcedureResult {
        procedure: PROCEDURES[4],
        clause: if kill.is_some() {
            "000 6.3.2.3.1, 6.3.2.1; 6.3.4.3 (anchor killed)"
        } else {
            "000 6.3.2.3.1, 6.3.2.1"
        },
        succeeded: if kill.is_some() && (takeover.is_none() || !shards_taken) {
            0
        } else {
            rot_ok
        },
        total: n,
        millis: t.elapsed().as_millis() as u64,
        detail: kill.as_ref().map(|k| {
            format!(
                "SIGKILL to {} (the anchor) with {} of {n} UEs holding the new MSK; takeover {}; every UE held it {} ms after the kill; the survivors hold every UE shard: {shards_taken}",
                k.instance,
                k.holders,
                takeover.map_or("not seen".to_owned(), |t| format!("after {} ms", t.as_millis())),
                failover.unwrap_or_default().as_millis()
            )
        }),
    });

    // ---- solicited pull ------------------------------------------------------
    // The pull starts once the BM-SC has sent every MSK message of the
    // procedures before it, the 4-way exchanges of key group 2 included
    // (their activations go out as the UEs acknowledge; at 10,000 UEs some
    // were still queued here). A pull is refused by a UE that accepted a
    // later counter first (PROFILE.md section 7: the counter must be
    // greater), and the BM-SC never resends it (V = 0: seed 002 6.3.2.2.4):
    // the BM-SC builds the pulls of the whole key group at once and sends
    // them after, so an MSK message built after a UE's pull but sent before
    // it (a queued delivery) made 482 of 10,000 UEs miss the pull (issue 12).
    let t = begin(5);
    wait_all(&ues, &live, grace(20, n), &|_| {}, |_, u| {
        four_way_settled(&u.events_since(0))
    })
    .await;
    let marks: Vec<usize> = ues.iter().map(DemoUe::mark).collect();
    admin("/admin/v1/key-groups/1/solicited-pull").await?;
    let pull_ok = wait_all(&ues, &live, grace(30, n), progress, |i, u| {
        pulled(&u.events_since(marks[i])) == Pulled::Done
    })
    .await;
    results.push(ProcedureResult {
        procedure: PROCEDURES[5],
        clause: "002/003 6.3.2.2.4",
        succeeded: pull_ok,
        total: n,
        millis: t.elapsed().as_millis() as u64,
        detail: (pull_ok < live.len()).then(|| pull_detail(&ues, &live, &marks)),
    });

    // ---- 4-way procedure with charging (service PAY, key group 2) -----------
    let t = begin(6);
    let four_ok_ues: BTreeSet<usize> = {
        let mut s = BTreeSet::new();
        wait_all(&ues, &live, grace(20, n), progress, |i, u| {
            let ev = u.events_since(0);
            let inactive: Vec<&str> = ev
                .iter()
                .filter_map(|e| match e {
                    UeEvent::MskStored { msk, inactive: true, acknowledged: true, .. }
                        if msk.starts_with("00F110/0002") =>
                    {
                        Some(msk.as_str())
                    }
                    _ => None,
                })
                .collect();
            let ok = inactive.iter().any(|m| {
                ev.iter().any(|e| matches!(e, UeEvent::MskStored { msk, inactive: false, acknowledged: true, .. } if msk == m))
            });
            if ok {
                s.insert(i);
            }
            ok
        })
        .await;
        s
    };
    // The charging records, one per (UE, MSK) at least.
    let charged: BTreeSet<String> = {
        let r = http
            .get(format!(
                "{}/admin/v1/charging-records?limit=1000000",
                bmsc.admin_url()
            ))
            .bearer_auth(ADMIN)
            .send()
            .await?;
        let text = r.text().await.unwrap_or_default();
        rec.charging(&text);
        // Every string of the answer (a search of the whole answer per UE
        // was quadratic: 10,000 UEs x megabytes).
        let mut strings = BTreeSet::new();
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
            json_strings(&v, &mut strings);
        }
        impis
            .iter()
            .filter(|impi| strings.contains(impi.as_str()))
            .cloned()
            .collect()
    };
    let four_ok = four_ok_ues
        .iter()
        .filter(|i| charged.contains(&impis[**i]))
        .count();
    results.push(ProcedureResult {
        procedure: PROCEDURES[6],
        clause: "004 6.3.2.3.3",
        succeeded: four_ok,
        total: n,
        millis: t.elapsed().as_millis() as u64,
        detail: (four_ok < n).then(|| {
            format!(
                "{} UEs completed the 4-way exchange, {} have charging records",
                four_ok_ues.len(),
                charged.len()
            )
        }),
    });

    // ---- MTK delivery + SRTP stream -------------------------------------------
    let t = begin(7);
    // Every UE holds an MTK of the streaming session before the stream.
    wait_all(&ues, &live, grace(15, n), progress, |_, u| {
        u.events_since(0).iter().any(
            |e| matches!(e, UeEvent::MtkAccepted { msk, .. } if msk.starts_with("00F110/0001")),
        )
    })
    .await;
    let rtp_sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    // Pre-roll: the first packets of a new SSRC make the BM-SC announce an
    // MTK for it (SRTP-ID map with SSRC and ROC); wait until every UE
    // decrypts, then send the stream that is checked.
    let pace = stream_pace(n);
    for k in 0..STREAM_FIRST_SEQ - PREROLL_FIRST_SEQ {
        let p = rtp(0x4d42_4d53, PREROLL_FIRST_SEQ + k, 160);
        send_rtp(&rtp_sock, &bmsc, &p).await?;
        tokio::time::sleep(pace).await;
        if live
            .iter()
            .all(|i| !ues[*i].plain.lock().unwrap().is_empty())
        {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    for u in &ues {
        u.plain.lock().unwrap().clear();
    }
    let mut sent = Vec::new();
    for seq in 0..RTP_PACKETS {
        let p = rtp(0x4d42_4d53, seq.wrapping_add(STREAM_FIRST_SEQ), 160);
        send_rtp(&rtp_sock, &bmsc, &p).await?;
        sent.push(p);
        tokio::time::sleep(pace).await;
    }
    let stream_ok = wait_all(&ues, &live, grace(10, n), progress, |_, u| {
        stream_matches(&u.plain.lock().unwrap(), &sent)
    })
    .await;
    let short: Vec<String> = live
        .iter()
        .filter(|i| !stream_matches(&ues[**i].plain.lock().unwrap(), &sent))
        .take(3)
        .map(|i| {
            let plain = ues[*i].plain.lock().unwrap();
            let part: Vec<&[u8]> = stream_part(&plain).collect();
            let in_order = part
                .iter()
                .zip(&sent)
                .take_while(|(a, b)| **a == b.as_slice())
                .count();
            format!(
                "UE {i}: {} packets of the stream ({in_order} byte-exact in order) of {}, {} of the pre-roll",
                part.len(),
                sent.len(),
                plain.len() - part.len()
            )
        })
        .collect();
    results.push(ProcedureResult {
        procedure: PROCEDURES[7],
        clause: "004 6.4.2, 6.5.4 (SRTP)",
        succeeded: stream_ok,
        total: n,
        millis: t.elapsed().as_millis() as u64,
        detail: (!short.is_empty()).then(|| format!("byte-exact packets: {}", short.join(", "))),
    });

    // ---- MTK delivery + download object ----------------------------------------
    let t = begin(8);
    let plain: Vec<u8> = (0..FILE_LEN as u32)
        .map(|i| (i.wrapping_mul(7) ^ (i >> 8)) as u8)
        .collect();
    let watch = dir.path().join("bmsc-watch");
    std::fs::create_dir_all(&watch)?;
    std::fs::write(watch.join("report.tmp"), &plain)?;
    std::fs::rename(watch.join("report.tmp"), watch.join("report.bin"))?;
    let object = dir.path().join("bmsc-out/report.bin");
    let object_mikey = dir.path().join("bmsc-out/report.bin.mikey");
    let deadline = Instant::now() + Duration::from_secs(15);
    while !(object.exists() && object_mikey.exists()) {
        if Instant::now() > deadline {
            bail!("the BM-SC did not protect the download file");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let protected = std::fs::read(&object)?;
    let download_mikey = std::fs::read(&object_mikey)?;
    for &i in &live {
        let u = &ues[i];
        std::fs::write(u.input_dir.join("report.bin.mikey"), &download_mikey)?;
        rec.file_delivered(i, "report.bin", &download_mikey);
        std::fs::write(u.input_dir.join("report.bin.tmp"), &protected)?;
        std::fs::rename(
            u.input_dir.join("report.bin.tmp"),
            u.input_dir.join("report.bin"),
        )?;
    }
    let dl_ok = wait_all(&ues, &live, grace(20, n), progress, |_, u| {
        std::fs::read(u.output_dir.join("report.bin")).is_ok_and(|b| b == plain)
    })
    .await;
    results.push(ProcedureResult {
        procedure: PROCEDURES[8],
        clause: "004 6.4.2, 6.5.4 (download)",
        succeeded: dl_ok,
        total: n,
        millis: t.elapsed().as_millis() as u64,
        detail: None,
    });

    // ---- missed key update by the offline UE ------------------------------------
    let t = begin(9);
    let mark0 = ues[offline].mark();
    for r in &relays {
        r.set_online(false);
    }
    rec.offline(offline, true);
    admin("/admin/v1/key-groups/1/rotate").await?;
    let v = admin("/admin/v1/key-groups/1/rotate").await?;
    let current = v["current"].as_str().unwrap_or_default().to_owned();
    // Wait until the BM-SC gave up the pushes to the offline UE. With
    // several instances only its owner lists them: ask every live one, and
    // wait until one listed them (the rotation reaches the owner through
    // the database) or 3 s passed.
    let asked = Instant::now();
    let deadline = asked + grace(20, n);
    let mut seen_busy = bmsc.fleet().is_none();
    loop {
        let mut busy = false;
        for base in bmsc.admin_urls() {
            let r = http
                .get(format!(
                    "{base}/admin/v1/registrations/{}/deliveries",
                    ues[offline].impi
                ))
                .bearer_auth(ADMIN)
                .send()
                .await?;
            let v: serde_json::Value = r.json().await.unwrap_or_default();
            busy |= v
                .as_array()
                .or_else(|| v["deliveries"].as_array())
                .is_some_and(|a| {
                    a.iter()
                        .any(|d| matches!(d["state"].as_str(), Some("pending" | "sent")))
                });
        }
        seen_busy |= busy;
        let waited = seen_busy || asked.elapsed() > Duration::from_secs(3);
        if (!busy && waited) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for r in &relays {
        r.set_online(true);
    }
    rec.offline(offline, false);
    let missed_ok = wait_all(&ues, &[offline], grace(30, n), progress, |_, u| {
        let ev = u.events_since(mark0);
        ev.iter().any(|e| {
            matches!(e, UeEvent::MskRequested { reason: RequestReason::MissedKeyUpdate | RequestReason::Retry, statuses, .. } if statuses.contains(&200))
        }) && ev.iter().any(|e| stored(e).is_some_and(|m| m.ends_with(&current)))
    })
    .await;
    // Its traffic decrypts again: a short stream under the recovered MSK.
    let mut recovered = false;
    if missed_ok == 1 {
        // The session switches to an MTK under the new MSK at its next MTK
        // (up to `mtk_interval` after the rotation) plus `switch_delay_ms`:
        // keep streaming that long, and 10 s more. (A fixed count of rounds,
        // 36 s at 10,000 UEs, was shorter than the 52 s + 30.5 s there.)
        let (interval_s, switch_ms) = mtk_timing(n);
        let until = Instant::now()
            + Duration::from_secs(interval_s + 10)
            + Duration::from_millis(switch_ms);
        let mut round: u16 = 0;
        while Instant::now() < until {
            round = round.wrapping_add(1);
            ues[offline].plain.lock().unwrap().clear();
            let mut sent = Vec::new();
            for k in 0..10u16 {
                let seq = 1000u16.wrapping_add(round.wrapping_mul(10)).wrapping_add(k);
                let p = rtp(0x4d42_4d53, seq, 160);
                send_rtp(&rtp_sock, &bmsc, &p).await?;
                sent.push(p);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mki = ues[offline]
                .ue
                .as_ref()
                .and_then(|u| u.status().ok())
                .and_then(|s| s.runtime)
                .and_then(|r| r.sessions.first().and_then(|s| s.last_mki.clone()));
            let got = ues[offline].plain.lock().unwrap().clone();
            if mki.is_some_and(|m| m.starts_with(&current)) && got.last() == sent.last() {
                recovered = true;
                break;
            }
        }
    }
    let detail = match (missed_ok == 1, recovered) {
        (true, true) => None,
        (false, _) => Some("the offline UE did not get the missed MSK".to_string()),
        (true, false) => Some(
            "the offline UE got the missed MSK, but the stream did not decrypt under it in time"
                .to_string(),
        ),
    };
    let missed_ok = usize::from(missed_ok == 1 && recovered);
    results.push(ProcedureResult {
        procedure: PROCEDURES[9],
        clause: "000 6.3.2.2.3",
        succeeded: missed_ok,
        total: 1,
        millis: t.elapsed().as_millis() as u64,
        detail,
    });

    // ---- deregistration ------------------------------------------------------------
    let t = begin(10);
    let mut dereg_ok = 0;
    let mut detail = None;
    if let Some(u) = ues[dereg].ue.take() {
        let mark = ues[dereg].mark();
        match u.shutdown(true).await {
            Ok(()) => {
                // The UE's events reach `events` through a task of their
                // own, which may run after `shutdown` returned: wait for
                // them (a busy 1,000-UE run read them too early).
                let deadline = Instant::now() + Duration::from_secs(10);
                let both = loop {
                    let ev = ues[dereg].events_since(mark);
                    let both = [NEWS, PAY].iter().all(|s| {
                        ev.iter()
                            .any(|e| matches!(e, UeEvent::Deregistered { service } if service == s))
                    });
                    if both || Instant::now() >= deadline {
                        break both;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                };
                // Several instances: the deregistration, answered by any
                // instance, reaches the UE's owner through the database; the
                // rotation follows at once (the anchor handles the notices
                // committed before it rotates: `ClusterState::sync_notices`),
                // and afterwards no instance may list the UE.
                let before = SystemTime::now();
                let marks: Vec<usize> = ues.iter().map(DemoUe::mark).collect();
                let v = admin("/admin/v1/key-groups/1/rotate").await?;
                let next = v["next"].as_str().unwrap_or_default().to_owned();
                let others: Vec<usize> = live.iter().copied().filter(|i| *i != dereg).collect();
                let got = wait_all(&ues, &others, grace(20, n), progress, |i, u| {
                    u.events_since(marks[i]).iter().any(
                        |e| matches!(e, UeEvent::MskStored { msk, .. } if msk.ends_with(&next)),
                    )
                })
                .await;
                tokio::time::sleep(Duration::from_millis(300)).await;
                let gone = if bmsc.fleet().is_some() {
                    forgotten_everywhere(&http, &bmsc.admin_urls(), &ues[dereg].impi).await
                } else {
                    true
                };
                let target = ues[dereg].ip;
                let pushed = bmsc
                    .captures()?
                    .iter()
                    .filter(|c| c.time >= before)
                    .filter(|c| c.kind == TapKind::Mikey && *c.dst.ip() == target)
                    .count();
                if both && gone && pushed == 0 && got == others.len() {
                    dereg_ok = 1;
                } else {
                    detail = Some(format!(
                        "deregistered from both services: {both}; forgotten by every instance: {gone}; MSK messages to it after: {pushed}; others that got the rotation: {got}/{}",
                        others.len()
                    ));
                }
            }
            Err(e) => detail = Some(format!("shutdown: {e}")),
        }
    }
    results.push(ProcedureResult {
        procedure: PROCEDURES[10],
        clause: "002 G.2.3 (deregister)",
        succeeded: dereg_ok,
        total: 1,
        millis: t.elapsed().as_millis() as u64,
        detail,
    });

    // ---- several instances: charging exactly once -------------------------------------
    if bmsc.fleet().is_some() {
        let t = begin(p_charging_once);
        let (once, detail) = charged_once(&http, &bmsc.admin_url(), &impis).await?;
        results.push(ProcedureResult {
            procedure: names[p_charging_once],
            clause: "004 6.3.2.3.3; 6.3.4 (one record per acknowledgement)",
            succeeded: once,
            total: n,
            millis: t.elapsed().as_millis() as u64,
            detail,
        });
    }
    let fleet_facts = bmsc.fleet().map(|f| (f.instances(), f.connections()));
    let capture_source = bmsc.capture_source();

    // ---- stop everything -------------------------------------------------------------
    // Many at once: each writes its last status file, and one after the
    // other 10,000 of them took most of an hour on a busy disk.
    let mut stopping = tokio::task::JoinSet::new();
    for u in ues.iter_mut() {
        if let Some(r) = u.ue.take() {
            if stopping.len() >= STARTS_AT_ONCE {
                stopping.join_next().await;
            }
            stopping.spawn(async move {
                let _ = r.shutdown(false).await;
            });
        }
    }
    while stopping.join_next().await.is_some() {}
    for u in ues.iter_mut() {
        for t in u.tasks.drain(..) {
            t.abort();
        }
    }
    drop(relays);
    bmsc.shutdown().await;
    sink_task.abort();
    // The UEs' state folders go now, many at once, while the capture is
    // checked.
    let removal = remove_folders(
        ues.iter()
            .filter_map(|u| u.input_dir.parent().map(std::path::Path::to_path_buf))
            .collect(),
    );

    // ---- captures and key log ----------------------------------------------------------
    let caps = capture_source.read()?;
    // Several instances: no (MUK, counter) or (MSK, counter) pair on two
    // different messages (6.3.4: counter blocks reserved in the database).
    let mut cluster_facts = None;
    if let (Some((instances, connections)), Some(k)) = (fleet_facts, &kill) {
        let t = begin(p_counters);
        let reuses = cluster::counter_reuses(&caps);
        results.push(ProcedureResult {
            procedure: names[p_counters],
            clause: "6.3.4, PROFILE.md 7 (MUK and MSK counters)",
            succeeded: usize::from(reuses == 0),
            total: 1,
            millis: t.elapsed().as_millis() as u64,
            detail: (reuses > 0).then(|| {
                format!("{reuses} (key, counter) pairs on two different messages in the capture")
            }),
        });
        let per_instance = match &capture_source {
            cluster::CaptureSource::Files(f) => cluster::read_captures(f)?.1,
            cluster::CaptureSource::Tap(_) => Vec::new(),
        };
        cluster_facts = Some(ClusterFacts {
            instances,
            killed_instance: k.instance.clone(),
            holders_at_kill: k.holders,
            takeover_ms: takeover.map(|t| t.as_millis() as u64),
            failover_ms: failover.unwrap_or_default().as_millis() as u64,
            msk_messages_per_instance: per_instance,
            ua_connections_per_instance: connections,
            counter_reuses: reuses,
        });
    }
    let t = begin(p_capture);
    let mut keylog = String::new();
    let mut muks: BTreeMap<String, [u8; 32]> = BTreeMap::new();
    // The UE of each B-TID, from its events (hosted UEs share an address).
    let mut btid_owner: HashMap<String, usize> = HashMap::new();
    for (i, u) in ues.iter().enumerate() {
        for e in u.events.lock().unwrap().iter() {
            if let UeEvent::Bootstrapped { btid, .. } = e {
                btid_owner.insert(btid.clone(), i);
            }
        }
    }
    // B-TIDs in captured messages (a UE may have bootstrapped more than once).
    for c in caps.iter().filter(|c| c.kind == TapKind::Mikey) {
        if let Ok(m) = mikey::Message::parse(&c.bytes) {
            for id in m.ids() {
                if let Ok(s) = std::str::from_utf8(&id.data) {
                    if s.contains('@') && !muks.contains_key(s) {
                        // Find the UE: by its B-TID.
                        if let Some(&i) = btid_owner.get(s) {
                            if let Ok(muk) = muk_of(&keys[i].0, &keys[i].1, &impis[i], s) {
                                muks.insert(s.to_owned(), muk);
                            }
                        }
                    }
                }
            }
        }
    }
    for (btid, muk) in &muks {
        keylog.push_str(&format!("MUK {BMSC_FQDN} {btid} {}\n", hex::encode(muk)));
    }
    let msks = open_msks(&caps, &muks);
    rec.datagrams(&caps, &muks);
    for (kid, key) in &msks {
        keylog.push_str(&format!(
            "MSK {} {} {}\n",
            hex::encode(&kid[..3]),
            hex::encode(&kid[3..]),
            hex::encode(key)
        ));
    }
    // MTKs: open every MTK message (and the download one) with its MSK.
    let mut mtks: BTreeSet<String> = BTreeSet::new();
    let mtk_msgs = caps
        .iter()
        .filter(|c| c.kind == TapKind::Mtk)
        .map(|c| c.bytes.as_slice())
        .chain(std::iter::once(download_mikey.as_slice()));
    for b in mtk_msgs {
        let Ok(m) = mikey::Message::parse(b) else {
            continue;
        };
        let kid = m
            .key_ids()
            .find(|k| k.key_id_type == mikey::KeyIdType::MSK)
            .map(|k| k.key_id.to_vec());
        let mtk_id = m
            .key_ids()
            .find(|k| k.key_id_type == mikey::KeyIdType::MTK)
            .map(|k| k.key_id.to_vec());
        let (Some(kid), Some(mtk_id)) = (kid, mtk_id) else {
            continue;
        };
        let Some(msk) = msks.get(&kid) else { continue };
        if let Ok(o) = mikey::open_psk(b, msk) {
            if let Some(kd) = o.key_data.first() {
                mtks.insert(format!(
                    "MTK {} {} {} {} {}\n",
                    hex::encode(&kid[..3]),
                    hex::encode(&kid[3..]),
                    hex::encode(&mtk_id),
                    hex::encode(kd.key.expose()),
                    hex::encode(kd.salt.as_ref().map(|s| s.expose()).unwrap_or_default())
                ));
            }
        }
    }
    for l in &mtks {
        keylog.push_str(l);
    }
    // The self-check: every captured MIKEY datagram opens with the key log.
    let CaptureCheck {
        opened,
        mikey: mikey_count,
        srtp: srtp_count,
        failures,
        ..
    } = check_capture(&caps, &muks, &msks);
    let keylog_lines = keylog.lines().count();
    if let Some(p) = &opts.keylog {
        mbms_service::write_private_file(p, keylog.as_bytes())
            .with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &opts.pcap {
        write_pcap(p, &caps)?;
    }
    results.push(ProcedureResult {
        procedure: names[p_capture],
        clause: "(pcap + key log)",
        succeeded: opened,
        total: mikey_count,
        millis: t.elapsed().as_millis() as u64,
        detail: (!failures.is_empty()).then(|| format!("not opened: {}", failures.join(", "))),
    });

    removal.await;
    let success = results.iter().all(ProcedureResult::ok);
    Ok(DemoReport {
        schema: SCHEMA,
        ues: n,
        success,
        wall_millis: start.elapsed().as_millis() as u64,
        mikey_port: mp,
        mtk_port: tp,
        srtp_port: sp,
        port_fallback: chosen.fallback,
        procedures: results,
        capture: CaptureReport {
            pcap: opts.pcap.clone(),
            keylog: opts.keylog.clone(),
            datagrams: caps.len(),
            mikey: mikey_count,
            srtp: srtp_count,
            mikey_opened: opened,
            keylog_lines,
        },
        cluster: cluster_facts,
    })
}

/// Polls `GET /admin/v1/cluster` every 20 ms until the live instances
/// other than `victim` hold all 256 UE shards and anchor key groups 1, 2
/// and 3 between them; false after `limit`.
async fn survivors_hold_everything(f: &cluster::Fleet, victim: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(v) = f.admin.get_json("/admin/v1/cluster").await {
            let live: Vec<&serde_json::Value> = v["instances"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter(|x| x["alive"] != false && x["instance_id"] != victim)
                        .collect()
                })
                .unwrap_or_default();
            let shards: u64 = live
                .iter()
                .map(|x| x["ue_shards"].as_u64().unwrap_or(0))
                .sum();
            let anchored = |g: u64| {
                live.iter().any(|x| {
                    x["key_groups"]
                        .as_array()
                        .is_some_and(|k| k.iter().any(|k| k.as_u64() == Some(g)))
                })
            };
            if shards == 256 && [1, 2, 3].into_iter().all(anchored) {
                return true;
            }
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `GET /admin/v1/registrations` of every instance in `bases`
/// until none lists `impi` (its owner lists the UEs it serves); false
/// after 10 s.
async fn forgotten_everywhere(http: &reqwest::Client, bases: &[String], impi: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut listed = false;
        for b in bases {
            let v: serde_json::Value = match http
                .get(format!("{b}/admin/v1/registrations"))
                .bearer_auth(ADMIN)
                .send()
                .await
            {
                Ok(r) => r.json().await.unwrap_or_default(),
                Err(_) => serde_json::Value::Null,
            };
            listed |= v
                .as_array()
                .is_none_or(|a| a.iter().any(|u| u["impi"] == impi));
        }
        if !listed {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends a plain RTP packet to the BM-SC's RTP ingress (every live
/// instance's: only the anchor of the session's key group protects it).
async fn send_rtp(sock: &UdpSocket, bmsc: &Bmsc, p: &[u8]) -> anyhow::Result<()> {
    for a in bmsc.rtp_ingress() {
        sock.send_to(p, a).await?;
    }
    Ok(())
}

/// Charging exactly once (several instances): every UE of `impis` has a
/// charging record, and none has two for the same MSK, whichever instance
/// saw the acknowledgement. The UEs charged once, and why not all.
async fn charged_once(
    http: &reqwest::Client,
    base: &str,
    impis: &[String],
) -> anyhow::Result<(usize, Option<String>)> {
    const PAGE: usize = 100_000;
    let mut per: HashMap<(String, String), u32> = HashMap::new();
    let mut after = 0i64;
    loop {
        let v: serde_json::Value = http
            .get(format!(
                "{base}/admin/v1/charging-records?after={after}&limit={PAGE}"
            ))
            .bearer_auth(ADMIN)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let page = v["records"]
            .as_array()
            .ok_or_else(|| anyhow!("charging records: {v}"))?;
        for r in page {
            after = after.max(r["id"].as_i64().unwrap_or(after));
            let impi = r["impi"].as_str().unwrap_or_default().to_owned();
            let msk = r["msk"].as_str().unwrap_or_default().to_owned();
            *per.entry((impi, msk)).or_default() += 1;
        }
        if page.len() < PAGE {
            break;
        }
    }
    let mut records: HashMap<&str, (u32, bool)> = HashMap::new();
    for ((impi, _), c) in &per {
        let e = records.entry(impi.as_str()).or_insert((0, true));
        e.0 += c;
        e.1 &= *c == 1;
    }
    let once = impis
        .iter()
        .filter(|i| {
            records
                .get(i.as_str())
                .is_some_and(|(c, one)| *c > 0 && *one)
        })
        .count();
    let twice = per.values().filter(|c| **c > 1).count();
    let none = impis
        .iter()
        .filter(|i| !records.contains_key(i.as_str()))
        .count();
    Ok((
        once,
        (once < impis.len()).then(|| {
            format!("{none} UEs without a charging record; {twice} (UE, MSK) pairs charged more than once")
        }),
    ))
}

/// The SIGKILL of [`kill_mid_rotation`].
struct Kill {
    /// The instance's `instance_id`.
    instance: String,
    /// UEs that held the new MSK at the kill.
    holders: usize,
    at: Instant,
    /// Waits for a survivor named the anchor of key group 1.
    takeover: tokio::task::JoinHandle<Option<Instant>>,
}

/// The anchor of key group 1 (`GET /admin/v1/cluster`), the instance
/// [`kill_mid_rotation`] kills. Looked up before the rotation: on a loaded
/// machine the lookup (a database query) outlasted the rest of a 12-UE
/// rotation, and the kill came after it.
async fn anchor_of_group_1(f: &cluster::Fleet) -> anyhow::Result<usize> {
    f.admin
        .anchor(1)
        .await?
        .ok_or_else(|| anyhow!("GET /admin/v1/cluster names no anchor of key group 1"))
}

/// Waits (polling every 2 ms) until a third of the UEs in `live` hold the
/// rotation's new MSK, then SIGKILLs `victim`, the anchor of key group 1
/// ([`anchor_of_group_1`]), and starts watching for its successor.
async fn kill_mid_rotation(
    f: &cluster::Fleet,
    victim: usize,
    ues: &[DemoUe],
    live: &[usize],
    holds: &(dyn Fn(usize, &DemoUe) -> bool + Sync),
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> anyhow::Result<Kill> {
    let n = ues.len();
    let third = n.div_ceil(3);
    let count = || live.iter().filter(|i| holds(**i, &ues[**i])).count();
    let deadline = Instant::now() + grace(20, n);
    while count() < third && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let holders = count();
    let at = f.kill(victim)?;
    let instance = mbms_bench::services::instance_id(victim);
    progress(Progress::Note(format!(
        "SIGKILL to {instance}, the anchor of key group 1, with {holders} of {n} UEs holding the new MSK"
    )));
    let a = f.admin.clone();
    let limit = f.lease * 3 + grace(20, n);
    let takeover = tokio::spawn(async move { a.wait_takeover(1, victim, limit).await });
    Ok(Kill {
        instance,
        holders,
        at,
        takeover,
    })
}

/// The MSKs of a capture: every MSK message (a KEMAC with an MSK Key ID)
/// opened with the MUK of its IDr; key domain || MSK ID -> key.
fn open_msks(caps: &[Captured], muks: &BTreeMap<String, [u8; 32]>) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut msks: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for c in caps.iter().filter(|c| c.kind == TapKind::Mikey) {
        let Ok(m) = mikey::Message::parse(&c.bytes) else {
            continue;
        };
        if m.kemac().is_none() {
            continue;
        }
        let ids: Vec<&[u8]> = m.ids().map(|i| &*i.data).collect();
        let Some(muk) = ids
            .get(1)
            .and_then(|r| std::str::from_utf8(r).ok())
            .and_then(|r| muks.get(r))
        else {
            continue;
        };
        let kid = m
            .key_ids()
            .find(|k| k.key_id_type == mikey::KeyIdType::MSK)
            .map(|k| k.key_id.to_vec());
        if let (Ok(o), Some(kid)) = (mikey::open_psk(&c.bytes, muk), kid) {
            if let Some(kd) = o.key_data.first() {
                if kid.len() == 7 && kid[3..] != [0, 0, 0, 0][..] {
                    msks.entry(kid).or_insert_with(|| kd.key.expose().to_vec());
                }
            }
        }
    }
    msks
}

/// What [`check_capture`] found.
struct CaptureCheck {
    /// MIKEY datagrams (MSK, MTK messages, acknowledgements) opened.
    opened: usize,
    /// MIKEY datagrams.
    mikey: usize,
    /// SRTP datagrams.
    srtp: usize,
    /// The first few not opened.
    failures: Vec<String>,
}

/// The capture's self-check: every MIKEY datagram opens with the keys of
/// the key log (MSK and MTK messages by their KEMAC, acknowledgements by
/// their verification MAC against the MSK message they answer).
fn check_capture(
    caps: &[Captured],
    muks: &BTreeMap<String, [u8; 32]>,
    msks: &BTreeMap<Vec<u8>, Vec<u8>>,
) -> CaptureCheck {
    let mut opened = 0usize;
    let mut mikey_count = 0usize;
    let mut srtp_count = 0usize;
    let mut failures = Vec::new();
    // The MSK messages seen so far by (T, IDr), for the acknowledgements
    // (a scan of every earlier datagram made the check quadratic: 61 s of
    // a 1,000-UE run), and the outcome of each distinct KEMAC message (an
    // MTK message goes to every UE: the same bytes open the same way).
    let mut initiators: HashMap<InitiatorKey, Vec<usize>> = HashMap::new();
    let mut kemac_opened: HashMap<&[u8], bool> = HashMap::new();
    for (idx, c) in caps.iter().enumerate() {
        match c.kind {
            TapKind::Srtp => {
                srtp_count += 1;
                continue;
            }
            TapKind::Mikey | TapKind::Mtk => mikey_count += 1,
        }
        let ok = check_one(&c.bytes, caps, &initiators, &mut kemac_opened, muks, msks);
        if c.kind == TapKind::Mikey {
            if let Some(key) = mikey::Message::parse(&c.bytes)
                .ok()
                .filter(|m| m.kemac().is_some())
                .and_then(|m| initiator_key(&m))
            {
                initiators.entry(key).or_default().push(idx);
            }
        }
        if ok {
            opened += 1;
        } else if failures.len() < 3 {
            failures.push(format!(
                "datagram {idx} ({:?} {} -> {})",
                c.kind, c.src, c.dst
            ));
        }
    }
    CaptureCheck {
        opened,
        mikey: mikey_count,
        srtp: srtp_count,
        failures,
    }
}

/// Writes the captured datagrams as a pcap file.
fn write_pcap(p: &std::path::Path, caps: &[Captured]) -> anyhow::Result<()> {
    let f = std::io::BufWriter::new(
        std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
    );
    let mut w = mbms_capture::PcapWriter::new(f)?;
    for c in caps {
        let t = c
            .time
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        w.write_udp(t, c.src, c.dst, &c.bytes)?;
    }
    w.finish()?;
    Ok(())
}

/// Folders removed at once at most by [`remove_folders`].
const REMOVAL_THREADS: usize = 32;

/// Removes `dirs` (best effort: what remains goes with the run's folder),
/// [`REMOVAL_THREADS`] at a time. On a disk mounted with `discard` every
/// unlink waits for the device: one after the other, the 10,000 UEs' state
/// files took minutes (7 ms each here); side by side, a tenth of that.
fn remove_folders(dirs: Vec<PathBuf>) -> impl std::future::Future<Output = ()> {
    let dirs = Arc::new(dirs);
    let mut set = tokio::task::JoinSet::new();
    for k in 0..REMOVAL_THREADS {
        let dirs = dirs.clone();
        set.spawn_blocking(move || {
            for d in dirs.iter().skip(k).step_by(REMOVAL_THREADS) {
                let _ = std::fs::remove_dir_all(d);
            }
        });
    }
    async move { while set.join_next().await.is_some() {} }
}

/// Every string in a JSON value.
fn json_strings(v: &serde_json::Value, out: &mut BTreeSet<String>) {
    match v {
        serde_json::Value::String(s) => {
            out.insert(s.clone());
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| json_strings(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| json_strings(x, out)),
        _ => {}
    }
}

/// The timestamp (its `Debug` form) and IDr of a MIKEY message: what an
/// acknowledgement shares with the MSK message it answers.
type InitiatorKey = (String, Vec<u8>);

fn initiator_key(m: &mikey::Message<'_>) -> Option<InitiatorKey> {
    Some((
        format!("{:?}", m.timestamp()?),
        m.ids().last()?.data.to_vec(),
    ))
}

/// Opens one MIKEY datagram with the keys: KEMAC messages with the MUK (by
/// IDr) or the MSK (by MSK Key ID), acknowledgements with the MUK of their
/// IDr and the initiator found among the earlier datagrams.
fn check_one<'c>(
    bytes: &'c [u8],
    caps: &[Captured],
    initiators: &HashMap<InitiatorKey, Vec<usize>>,
    kemac_opened: &mut HashMap<&'c [u8], bool>,
    muks: &BTreeMap<String, [u8; 32]>,
    msks: &BTreeMap<Vec<u8>, Vec<u8>>,
) -> bool {
    let Ok(m) = mikey::Message::parse(bytes) else {
        return false;
    };
    let is_mtk = m.key_ids().any(|k| k.key_id_type == mikey::KeyIdType::MTK);
    let ids: Vec<&[u8]> = m.ids().map(|i| &*i.data).collect();
    let idr = ids.last().and_then(|r| std::str::from_utf8(r).ok());
    if m.kemac().is_some() {
        let key: Option<Vec<u8>> = if is_mtk {
            m.key_ids()
                .find(|k| k.key_id_type == mikey::KeyIdType::MSK)
                .and_then(|k| msks.get(&k.key_id[..]).cloned())
        } else {
            idr.and_then(|r| muks.get(r)).map(|k| k.to_vec())
        };
        if let Some(ok) = kemac_opened.get(bytes) {
            return *ok;
        }
        let ok = key.is_some_and(|k| mikey::open_psk(bytes, &k).is_ok());
        kemac_opened.insert(bytes, ok);
        return ok;
    }
    if m.verification().is_some() {
        let Some(muk) = idr.and_then(|r| muks.get(r)) else {
            return false;
        };
        // The initiator: the latest earlier MSK message with the same T and IDr.
        let Some(earlier) = initiator_key(&m).and_then(|k| initiators.get(&k)) else {
            return false;
        };
        for &i in earlier.iter().rev() {
            let Ok(init) = mikey::Message::parse(&caps[i].bytes) else {
                continue;
            };
            let keys = mikey::PskKeys::for_message(muk, &init);
            if mikey::crypto::verify_verification_mac(
                bytes,
                &m,
                &keys.auth_key,
                &mikey::InitiatorFields::of(&init),
            )
            .is_ok()
            {
                return true;
            }
        }
        return false;
    }
    false
}

/// The run's folder (`dir.path()` as with a `TempDir`).
struct WorkDir(PathBuf);

impl WorkDir {
    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

/// The final table (procedure, UEs that succeeded / total, time).
pub fn render_table(r: &DemoReport) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "{:<22} {:>11} {:>10}  {}\n",
        "procedure", "succeeded", "time", "clause"
    ));
    for p in &r.procedures {
        s.push_str(&format!(
            "{:<22} {:>11} {:>8.2} s  {}{}\n",
            p.procedure,
            format!("{}/{}", p.succeeded, p.total),
            p.millis as f64 / 1000.0,
            p.clause,
            p.detail
                .as_ref()
                .map(|d| format!("  [{d}]"))
                .unwrap_or_default()
        ));
    }
    s.push_str(&format!(
        "{} UEs, {} datagrams captured ({} MIKEY, {} SRTP), {} MIKEY opened with the key log; total {:.1} s: {}\n",
        r.ues,
        r.capture.datagrams,
        r.capture.mikey,
        r.capture.srtp,
        r.capture.mikey_opened,
        r.wall_millis as f64 / 1000.0,
        if r.success { "SUCCESS" } else { "FAILED" }
    ));
    if let Some(c) = &r.cluster {
        s.push_str(&format!(
            "{} BM-SC instances on PostgreSQL; SIGKILL to {} (the anchor of key group 1) with {} UEs holding the new MSK; a survivor took over after {}; every UE held it {:.2} s after the kill; Ua connections per instance {:?}; MSK messages per instance {:?}; (key, counter) reuses {}\n",
            c.instances,
            c.killed_instance,
            c.holders_at_kill,
            c.takeover_ms.map_or("(not seen)".to_owned(), |t| format!("{:.2} s", t as f64 / 1000.0)),
            c.failover_ms as f64 / 1000.0,
            c.ua_connections_per_instance,
            c.msk_messages_per_instance,
            c.counter_reuses,
        ));
    }
    if (r.mikey_port, r.mtk_port, r.srtp_port) != (MIKEY_PORT, MTK_PORT, SRTP_PORT) {
        if r.port_fallback {
            s.push_str("note: a port asked for was taken; free ports were used\n");
        }
        s.push_str(&format!(
            "ports: MIKEY {}, MTK {}, SRTP {} (tshark {})\n",
            r.mikey_port,
            r.mtk_port,
            r.srtp_port,
            r.tshark_decode_as().join(" ")
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored_ev(msk: &str, inactive: bool) -> UeEvent {
        UeEvent::MskStored {
            msk: msk.into(),
            inactive,
            replaced: None,
            acknowledged: true,
        }
    }

    fn requested(reason: RequestReason, statuses: Vec<u16>) -> UeEvent {
        UeEvent::MskRequested {
            keys: vec!["00F110/00010000".into()],
            reason,
            statuses,
        }
    }

    #[test]
    fn a_solicited_pull_is_done_with_its_request_or_retry_answered_and_an_msk_stored() {
        let pull = UeEvent::SolicitedPull {
            key_group: "00F110/0001".into(),
        };
        let msk = stored_ev("00F110/00010002", false);
        assert_eq!(pulled(&[]), Pulled::NoPull);
        // Events before the pull do not count.
        let early = [
            requested(RequestReason::SolicitedPull, vec![200]),
            msk.clone(),
            pull.clone(),
        ];
        assert_eq!(pulled(&early), Pulled::NotAnswered);
        let refused = [
            pull.clone(),
            requested(RequestReason::SolicitedPull, vec![500]),
        ];
        assert_eq!(pulled(&refused), Pulled::NotAnswered);
        let answered = [
            pull.clone(),
            requested(RequestReason::SolicitedPull, vec![200]),
        ];
        assert_eq!(pulled(&answered), Pulled::NoMsk);
        // A request that got no answer is retried (docs/ue.md).
        let retried = [
            pull.clone(),
            requested(RequestReason::Retry, vec![200]),
            stored_ev("00F110/00030001", false),
        ];
        assert_eq!(pulled(&retried), Pulled::NoMsk);
        let mut done = retried.to_vec();
        done.push(msk);
        assert_eq!(pulled(&done), Pulled::Done);
        // A request of another reason is not the pull's.
        let manual = [
            pull,
            requested(RequestReason::Manual, vec![200]),
            stored_ev("00F110/00010002", false),
        ];
        assert_eq!(pulled(&manual), Pulled::NotAnswered);
    }

    #[test]
    fn the_four_way_exchange_is_settled_once_every_inactive_msk_is_activated() {
        assert!(four_way_settled(&[]));
        let one = stored_ev("00F110/00020001", true);
        let two = stored_ev("00F110/00020002", true);
        assert!(!four_way_settled(std::slice::from_ref(&one)));
        let a1 = stored_ev("00F110/00020001", false);
        assert!(four_way_settled(&[one.clone(), a1.clone()]));
        assert!(!four_way_settled(&[one, a1, two]));
        // Other key groups do not count.
        assert!(four_way_settled(&[stored_ev("00F110/00010001", true)]));
    }

    #[test]
    fn late_preroll_packets_are_not_part_of_the_stream() {
        let sent: Vec<Vec<u8>> = (0..3).map(|k| rtp(7, STREAM_FIRST_SEQ + k, 8)).collect();
        let late = rtp(7, STREAM_FIRST_SEQ - 1, 8);
        let mut plain = vec![late.clone()];
        plain.extend(sent.iter().cloned());
        assert!(stream_matches(&plain, &sent));
        // A missing, repeated, reordered or altered stream packet still fails.
        assert!(!stream_matches(&plain[..3], &sent));
        let mut twice = plain.clone();
        twice.push(sent[2].clone());
        assert!(!stream_matches(&twice, &sent));
        let mut swapped = plain.clone();
        swapped.swap(1, 2);
        assert!(!stream_matches(&swapped, &sent));
        let mut altered = plain;
        altered[3][15] ^= 1;
        assert!(!stream_matches(&altered, &sent));
        // A packet of another stream (the missed key update's) is not pre-roll.
        let mut other = vec![rtp(7, 1000, 8)];
        other.extend(sent.iter().cloned());
        assert!(!stream_matches(&other, &sent));
    }

    #[test]
    fn the_mtk_switch_comes_before_the_next_mtk() {
        for n in [2, 10, 20, 200, 1000, 2000, 10_000, 50_000] {
            assert!(download_scan_ms(n) >= n as u64);
            let (interval_s, delay_ms) = mtk_timing(n);
            assert!(delay_ms < interval_s * 1000, "{n} UEs: {delay_ms} ms");
        }
        assert_eq!(mtk_timing(10), (2, 530));
    }

    #[test]
    fn servers_take_a_connection_per_ue_and_service() {
        assert_eq!(
            http_connections(10),
            mbms_service::http::DEFAULT_MAX_CONNECTIONS
        );
        assert_eq!(http_connections(10_000), http_connections(10));
    }
}
