//! Where the demo's BM-SC runs ([`Deployment`]): in this process (SQLite in
//! the run's folder, the datagram tap in memory), or, for `mbms demo
//! --bmsc-instances K --postgres URL` (issue 13, docs/scale-out.md), as K
//! `mbms bmsc` child processes on one fresh PostgreSQL database (created
//! from the URL, dropped at the end) behind a small round-robin TCP load
//! balancer. The scenario of [`crate::run`] is the same for both: the
//! UEs' Ua requests go to [`Bmsc::ua_url`], the admin calls to any live
//! instance, the plain RTP to every live instance's `rtp_listen` (content
//! ingress to all: only the key group's anchor protects and sends it), and
//! the captures are the instances' pcap files merged by time.
//!
//! Addressing: instance *i* listens on its own loopback address
//! ([`instance_ip`], 127.0.2.1, 127.0.2.2, ...) with the run's MIKEY port,
//! so tshark decodes the merged pcap with the single demo's `-d` hints.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context as _};
use bmsc::TapKind;
use mbms_bench::admin::Admin;
use mbms_bench::services::{bmsc_name, healthz, instance_id, spawn, PgDatabase};
use tokio::net::{TcpListener, TcpStream};

use crate::Captured;

/// Where the BM-SC of the demo runs.
#[derive(Clone, Debug, Default)]
pub enum Deployment {
    /// In this process, on SQLite in the run's folder, with the datagram
    /// tap in memory (the single-instance demo).
    #[default]
    InProcess,
    /// K `mbms bmsc` processes on one PostgreSQL database (issue 13).
    Processes(Processes),
}

/// `mbms demo --bmsc-instances K --postgres URL`.
#[derive(Clone, Debug)]
pub struct Processes {
    /// Number of BM-SC instances (at least 2: the anchor of key group 1
    /// is killed in the middle of its rotation).
    pub instances: usize,
    /// A PostgreSQL URL (any database of the server; a database of the
    /// run's own is created from it and dropped).
    pub postgres: String,
    /// The `mbms` binary that runs the instances
    /// (`std::env::current_exe()`; tests pass `CARGO_BIN_EXE_mbms`).
    pub mbms_bin: PathBuf,
    /// `[cluster] lease_ms` of the instances (the takeover time); `None`:
    /// the BM-SC's default (10 s).
    pub lease_ms: Option<u64>,
}

/// The procedures the demo adds with several instances, before the
/// capture check.
pub const CLUSTER_PROCEDURES: [&str; 2] = ["charging once", "counters never repeat"];

/// What the scale-out run found beyond the procedures.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ClusterFacts {
    /// BM-SC instances.
    pub instances: usize,
    /// The killed anchor's `instance_id`.
    pub killed_instance: String,
    /// UEs holding the new MSK of key group 1 at the kill.
    pub holders_at_kill: usize,
    /// Milliseconds from the SIGKILL until a survivor was named the key
    /// group's anchor (`null`: not seen).
    pub takeover_ms: Option<u64>,
    /// Milliseconds from the SIGKILL until every UE held the new MSK (the
    /// failover time).
    pub failover_ms: u64,
    /// MSK messages per instance in the capture (sent).
    pub msk_messages_per_instance: Vec<usize>,
    /// Ua connections the load balancer gave each instance.
    pub ua_connections_per_instance: Vec<u64>,
    /// (MUK, counter) or (MSK, counter) pairs carried by two different
    /// messages (must be 0).
    pub counter_reuses: usize,
}

/// The loopback address of BM-SC instance `i`: 127.0.2.(i+1).
pub fn instance_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 2, 1 + i as u8)
}

/// A running BM-SC of the demo.
pub(crate) enum Bmsc {
    /// In this process.
    InProcess {
        running: bmsc::RunningBmsc,
        captured: Arc<Mutex<Vec<Captured>>>,
        rtp_in: SocketAddr,
    },
    /// Child processes.
    Processes(Box<Fleet>),
}

impl Bmsc {
    /// The base URL the UEs use for Ua (the load balancer's with several
    /// instances).
    pub(crate) fn ua_url(&self) -> String {
        match self {
            Bmsc::InProcess { running, .. } => running.url(),
            Bmsc::Processes(f) => format!("http://{}", f.lb.addr),
        }
    }

    /// The base URL for admin calls: the first live instance.
    pub(crate) fn admin_url(&self) -> String {
        match self {
            Bmsc::InProcess { running, .. } => running.url(),
            Bmsc::Processes(f) => f.admin.base().to_owned(),
        }
    }

    /// Every live instance's base URL.
    pub(crate) fn admin_urls(&self) -> Vec<String> {
        match self {
            Bmsc::InProcess { running, .. } => vec![running.url()],
            Bmsc::Processes(f) => f.admin.live().map(|(_, b)| b.to_owned()).collect(),
        }
    }

    /// Where plain RTP goes: every live instance's `rtp_listen` (only the
    /// anchor of the session's key group protects and sends it).
    pub(crate) fn rtp_ingress(&self) -> Vec<SocketAddr> {
        match self {
            Bmsc::InProcess { rtp_in, .. } => vec![*rtp_in],
            Bmsc::Processes(f) => f
                .rtp_ins
                .iter()
                .enumerate()
                .filter(|(i, _)| f.admin.is_alive(*i))
                .map(|(_, a)| *a)
                .collect(),
        }
    }

    /// The datagrams captured so far, in time order (the instances' pcap
    /// files merged).
    pub(crate) fn captures(&self) -> anyhow::Result<Vec<Captured>> {
        self.capture_source().read()
    }

    /// Where the captures are, to read them after [`Self::shutdown`].
    pub(crate) fn capture_source(&self) -> CaptureSource {
        match self {
            Bmsc::InProcess { captured, .. } => CaptureSource::Tap(captured.clone()),
            Bmsc::Processes(f) => CaptureSource::Files(f.pcaps.clone()),
        }
    }

    /// The instances, if several.
    pub(crate) fn fleet(&self) -> Option<&Fleet> {
        match self {
            Bmsc::InProcess { .. } => None,
            Bmsc::Processes(f) => Some(f),
        }
    }

    /// Stops the BM-SC (SIGTERM to the instances, then their database is
    /// dropped; their pcap files stay in the run's folder).
    pub(crate) async fn shutdown(self) {
        match self {
            Bmsc::InProcess { running, .. } => {
                let _ = running.shutdown().await;
            }
            Bmsc::Processes(f) => {
                let _ = tokio::task::spawn_blocking(move || f.terminate()).await;
            }
        }
    }
}

/// The BM-SC's datagram tap: in memory, or the instances' pcap files.
pub(crate) enum CaptureSource {
    Tap(Arc<Mutex<Vec<Captured>>>),
    Files(Vec<PathBuf>),
}

impl CaptureSource {
    /// The datagrams, in time order.
    pub(crate) fn read(&self) -> anyhow::Result<Vec<Captured>> {
        match self {
            CaptureSource::Tap(c) => Ok(c.lock().unwrap().clone()),
            CaptureSource::Files(f) => Ok(read_captures(f)?.0),
        }
    }
}

/// The K instances, their database and the load balancer.
pub(crate) struct Fleet {
    children: Mutex<Vec<Option<Child>>>,
    /// Admin API and `/metrics` of every live instance.
    pub(crate) admin: Admin,
    rtp_ins: Vec<SocketAddr>,
    pcaps: Vec<PathBuf>,
    lb: LoadBalancer,
    database: Mutex<Option<PgDatabase>>,
    dir: PathBuf,
    /// `[cluster] lease_ms`.
    pub(crate) lease: Duration,
}

impl Fleet {
    /// SIGKILL to instance `i` (reaped; it stays dead); the instant of
    /// the kill.
    pub(crate) fn kill(&self, i: usize) -> anyhow::Result<Instant> {
        let mut child = self
            .children
            .lock()
            .unwrap()
            .get_mut(i)
            .and_then(Option::take)
            .ok_or_else(|| anyhow!("no running BM-SC instance {i}"))?;
        let at = Instant::now();
        child.kill().context("SIGKILL to the BM-SC instance")?;
        child.wait().context("reaping the BM-SC instance")?;
        self.admin.mark_dead(i);
        Ok(at)
    }

    /// Number of instances (killed ones included).
    pub(crate) fn instances(&self) -> usize {
        self.rtp_ins.len()
    }

    /// Ua connections the load balancer gave each instance.
    pub(crate) fn connections(&self) -> Vec<u64> {
        self.lb
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }

    /// The last lines of instance `i`'s log.
    fn log_tail(&self, i: usize) -> String {
        let name = bmsc_name(i, self.instances());
        let text =
            std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    /// SIGTERM to every live instance (SIGKILL after 15 s), then the
    /// database is dropped.
    fn terminate(&self) {
        self.lb.task.abort();
        let mut children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        mbms_bench::services::stop_children(children.iter_mut().flatten());
        children.clear();
        if let Some(db) = self
            .database
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            if let Err(e) = db.drop_database() {
                eprintln!("warning: {e}");
            }
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        // A run dropped on a signal or an error: nothing stays behind.
        self.terminate();
    }
}

/// What [`start_processes`] needs of the run.
pub(crate) struct FleetPlan<'a> {
    /// The run's private folder (configurations, logs, pcap files, the
    /// shared download folders).
    pub(crate) dir: &'a Path,
    /// The BM-SC configuration of instance `i` given its HTTP listen
    /// address, MIKEY address, RTP ingress, database URL and `[cluster]`
    /// section.
    pub(crate) config: &'a dyn Fn(SocketAddr, SocketAddr, SocketAddr, &str, &str) -> String,
    /// The run's MIKEY port (the same on every instance's address).
    pub(crate) mikey_port: u16,
    /// Port numbers not to take for the RTP ingress (the run's MIKEY, MTK
    /// and SRTP ports).
    pub(crate) avoid: &'a [u16],
}

/// Starts the instances on a fresh database; returns once they answer and
/// have shared out the UE shards (the UEs start from there).
pub(crate) async fn start_processes(p: &Processes, plan: FleetPlan<'_>) -> anyhow::Result<Bmsc> {
    let k = p.instances;
    if k < 2 {
        bail!("--bmsc-instances: at least 2 (one is killed)");
    }
    if k > 250 {
        bail!("--bmsc-instances: at most 250");
    }
    let server = p.postgres.clone();
    let database = tokio::task::spawn_blocking(move || PgDatabase::create(&server))
        .await?
        .context("creating the run's PostgreSQL database")?;
    let db_url = database.url().to_owned();
    let mut urls = Vec::with_capacity(k);
    let mut rtp_ins = Vec::with_capacity(k);
    let mut pcaps = Vec::with_capacity(k);
    let mut http_addrs = Vec::with_capacity(k);
    for i in 0..k {
        let ip = instance_ip(i);
        let http = std::net::TcpListener::bind((ip, 0))
            .and_then(|l| l.local_addr())
            .with_context(|| format!("binding {ip} (is 127.0.0.0/8 routed to lo?)"))?;
        let rtp_in = SocketAddr::from((ip, crate::free_port(ip, plan.avoid)?));
        let mikey = SocketAddr::from((ip, plan.mikey_port));
        let lease = p
            .lease_ms
            .map(|l| format!("lease_ms = {l}\n"))
            .unwrap_or_default();
        let cluster = format!(
            "\n[cluster]\ninstance_id = \"{}\"\nadvertise_url = \"http://{http}\"\n{lease}",
            instance_id(i)
        );
        let text = (plan.config)(http, mikey, rtp_in, &db_url, &cluster);
        // Its validation, here rather than in a child's log.
        bmsc::BmscConfig::parse(&text).context("BM-SC configuration")?;
        let name = bmsc_name(i, k);
        mbms_service::write_private_file(&plan.dir.join(format!("{name}.toml")), text.as_bytes())
            .with_context(|| format!("writing {name}.toml"))?;
        urls.push(format!("http://{http}"));
        http_addrs.push(http);
        rtp_ins.push(rtp_in);
        pcaps.push(plan.dir.join(format!("{name}.pcap")));
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(0)
        .build()?;
    let admin = Admin::with_bases(http, urls, crate::ADMIN);
    let lb = LoadBalancer::start(http_addrs.clone(), admin.clone()).await?;
    let fleet = Fleet {
        children: Mutex::new(Vec::with_capacity(k)),
        admin,
        rtp_ins,
        pcaps,
        lb,
        database: Mutex::new(Some(database)),
        dir: plan.dir.to_path_buf(),
        lease: Duration::from_millis(p.lease_ms.unwrap_or(10_000)),
    };
    // The first instance migrates the fresh database; the others after.
    for (i, addr) in http_addrs.iter().enumerate() {
        let child = spawn(
            &p.mbms_bin,
            "bmsc",
            &bmsc_name(i, k),
            plan.dir,
            false,
            true,
            &[],
        )
        .context("starting a BM-SC instance")?;
        fleet.children.lock().unwrap().push(Some(child));
        if i == 0 || i + 1 == k {
            for (j, a) in http_addrs.iter().enumerate().take(i + 1) {
                wait_healthy(&fleet, j, *a).await?;
            }
        }
        let _ = addr;
    }
    fleet
        .admin
        .wait_settled(1, Duration::from_secs(60))
        .await
        .context("the instances sharing out the UE shards")?;
    Ok(Bmsc::Processes(Box::new(fleet)))
}

async fn wait_healthy(fleet: &Fleet, i: usize, addr: SocketAddr) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let exited = fleet.children.lock().unwrap()[i]
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten());
        if let Some(status) = exited {
            bail!(
                "mbms bmsc instance {i} exited ({status}) at start: {}",
                fleet.log_tail(i)
            );
        }
        let a = addr.to_string();
        if tokio::task::spawn_blocking(move || healthz(&a)).await? {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!(
                "mbms bmsc instance {i} did not answer /healthz: {}",
                fleet.log_tail(i)
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The Ua load balancer of the deployment picture (docs/scale-out.md): one
/// listening address; each accepted connection goes to the next live
/// instance (round robin), a connect failure moves on to the next one.
/// It keeps the client's address ([`connect_from`]).
struct LoadBalancer {
    addr: SocketAddr,
    counts: Arc<Vec<AtomicU64>>,
    task: tokio::task::JoinHandle<()>,
}

impl LoadBalancer {
    async fn start(backends: Vec<SocketAddr>, admin: Admin) -> anyhow::Result<LoadBalancer> {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .context("binding the load balancer")?;
        let addr = l.local_addr()?;
        let counts: Arc<Vec<AtomicU64>> =
            Arc::new(backends.iter().map(|_| AtomicU64::new(0)).collect());
        let next = Arc::new(AtomicUsize::new(0));
        let c2 = counts.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut down, peer)) = l.accept().await {
                let (backends, admin, counts, next) =
                    (backends.clone(), admin.clone(), c2.clone(), next.clone());
                tokio::spawn(async move {
                    let k = backends.len();
                    let first = next.fetch_add(1, Ordering::Relaxed);
                    for j in 0..k {
                        let i = (first + j) % k;
                        if !admin.is_alive(i) {
                            continue;
                        }
                        if let Ok(mut up) = connect_from(peer, backends[i]).await {
                            counts[i].fetch_add(1, Ordering::Relaxed);
                            let _ = up.set_nodelay(true);
                            let _ = down.set_nodelay(true);
                            let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                            return;
                        }
                    }
                });
            }
        });
        Ok(LoadBalancer { addr, counts, task })
    }
}

/// A connection to `to` from the client's own address (`from`, port 0):
/// the BM-SC sends MIKEY to the source address of the Ua requests, so the
/// balancer keeps it, as a transparent (or direct server return) load
/// balancer does; on loopback any 127.x address can be bound.
async fn connect_from(from: SocketAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let s = match from {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    s.bind(SocketAddr::new(from.ip(), 0))?;
    s.connect(to).await
}

/// The instances' pcap files merged by time; the MSK messages each sent.
/// A file cut inside its last record (the killed instance's, or one read
/// while its instance writes) counts up to its last whole record.
pub(crate) fn read_captures(files: &[PathBuf]) -> anyhow::Result<(Vec<Captured>, Vec<usize>)> {
    let mut caps = Vec::new();
    let mut per_instance = Vec::with_capacity(files.len());
    for (i, f) in files.iter().enumerate() {
        let bytes = match std::fs::read(f) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", f.display())),
        };
        if bytes.len() < 24 {
            // Not started yet, or killed before its header was written.
            per_instance.push(0);
            continue;
        }
        let cap = read_whole_records(&bytes).map_err(|e| anyhow!("{}: {e}", f.display()))?;
        let mut msk_messages = 0;
        for r in &cap.records {
            let link = cap
                .interfaces
                .get(r.interface as usize)
                .map_or(1, |i| i.link_type);
            let Some(u) = mbms_capture::udp_in_frame(link, &r.data) else {
                continue;
            };
            let (SocketAddr::V4(mut src), SocketAddr::V4(dst)) = (u.src, u.dst) else {
                continue;
            };
            // The sessions' senders bind 0.0.0.0: the instance's address
            // is the one they leave from.
            if src.ip().is_unspecified() {
                src.set_ip(instance_ip(i));
            }
            let payload = r.data[u.payload.clone()].to_vec();
            let kind = kind_of(&payload);
            if kind == TapKind::Mikey
                && mikey::Message::parse(&payload).is_ok_and(|m| m.kemac().is_some())
            {
                msk_messages += 1;
            }
            caps.push(Captured {
                time: SystemTime::UNIX_EPOCH + r.time,
                kind,
                src,
                dst,
                bytes: payload,
            });
        }
        per_instance.push(msk_messages);
    }
    caps.sort_by_key(|c| c.time);
    Ok((caps, per_instance))
}

/// MIKEY (MSK messages, pulls, acknowledgements), MTK messages or SRTP.
fn kind_of(payload: &[u8]) -> TapKind {
    match mikey::Message::parse(payload) {
        Ok(m) if m.key_ids().any(|k| k.key_id_type == mikey::KeyIdType::MTK) => TapKind::Mtk,
        Ok(_) => TapKind::Mikey,
        Err(_) => TapKind::Srtp,
    }
}

/// A classic pcap read up to its last whole record.
fn read_whole_records(b: &[u8]) -> Result<mbms_capture::Capture, mbms_capture::ReadError> {
    match mbms_capture::read_capture(b) {
        Err(mbms_capture::ReadError::Truncated { what, offset }) if offset > 24 => {
            // The record header (16 bytes) of a cut record's data.
            let cut = if what == "pcap record" {
                offset.saturating_sub(16)
            } else {
                offset
            };
            mbms_capture::read_capture(&b[..cut.max(24)])
        }
        r => r,
    }
}

/// Pairs of a key and a counter carried by two different messages: a
/// (MUK, counter) pair of MSK messages (by IDr) or an (MSK, counter) pair
/// of MTK messages (by the MSK's key ID). Retransmissions and repetitions
/// repeat the same bytes and count once.
pub(crate) fn counter_reuses(caps: &[Captured]) -> usize {
    let mut seen: HashMap<(u8, Vec<u8>, String), &[u8]> = HashMap::new();
    let mut reuses = 0;
    for c in caps
        .iter()
        .filter(|c| matches!(c.kind, TapKind::Mikey | TapKind::Mtk))
    {
        let Ok(m) = mikey::Message::parse(&c.bytes) else {
            continue;
        };
        if m.kemac().is_none() {
            continue;
        }
        let Some(t) = m.timestamp() else { continue };
        let key = if c.kind == TapKind::Mtk {
            let Some(k) = m.key_ids().find(|k| k.key_id_type == mikey::KeyIdType::MSK) else {
                continue;
            };
            (1, k.key_id.to_vec(), format!("{t:?}"))
        } else {
            let Some(idr) = m.ids().last() else { continue };
            (0, idr.data.to_vec(), format!("{t:?}"))
        };
        match seen.get(&key) {
            Some(b) if *b != c.bytes.as_slice() => reuses += 1,
            Some(_) => {}
            None => {
                seen.insert(key, &c.bytes);
            }
        }
    }
    reuses
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pcap_of(n: usize) -> Vec<u8> {
        let mut w = mbms_capture::PcapWriter::new(Vec::new()).unwrap();
        for i in 0..n {
            w.write_udp(
                Duration::from_secs(1 + i as u64),
                "127.0.2.1:2269".parse().unwrap(),
                "127.0.1.1:2269".parse().unwrap(),
                &[0x55; 40],
            )
            .unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn a_capture_cut_inside_its_last_record_reads_up_to_it() {
        let whole = pcap_of(3);
        assert_eq!(read_whole_records(&whole).unwrap().records.len(), 3);
        // Cut inside the last record's data, and inside its header.
        for cut in [whole.len() - 5, whole.len() - 40 - 8] {
            let c = read_whole_records(&whole[..cut]).unwrap();
            assert_eq!(c.records.len(), 2, "cut at {cut}");
        }
    }

    #[test]
    fn instances_have_addresses_of_their_own() {
        assert_eq!(instance_ip(0), Ipv4Addr::new(127, 0, 2, 1));
        assert_eq!(instance_ip(2), Ipv4Addr::new(127, 0, 2, 3));
    }
}
