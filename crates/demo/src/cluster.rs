//! `mbms demo --bmsc-instances K --postgres URL` (issue 13,
//! docs/scale-out.md): the BM-SC as K `mbms bmsc` child processes on one
//! fresh PostgreSQL database (created from the URL, dropped at the end),
//! the real BSF as a child too, and N UEs with their own USIM keys and
//! MGV-Fs (the bench swarm: GBA over Ub, Ua with HTTP Digest, MIKEY) whose
//! Ua requests are spread round robin over the instances. The paid key
//! group charges (the 4-way procedure, seed 004 6.3.2.3.3). In the middle
//! of a rotation the key group's anchor (`GET /admin/v1/cluster`) gets
//! SIGKILL and stays dead; the run succeeds only if every UE ends holding
//! the current MSK active, no (MUK, counter) pair was used for two
//! different MSK messages (checked from the capture opened with the key
//! log) and every UE was charged exactly once for the new MSK.
//!
//! Capture: every instance writes its datagram tap to a pcap file of its
//! own (`mbms bmsc --pcap`, one write per packet, so the killed instance's
//! file holds its packets up to the kill); the demo merges them by time
//! into `--pcap` and derives the key log (MUKs from the UEs' K/OPc and
//! B-TIDs, MSKs from the MSK messages opened with them) as the
//! single-instance demo does. The sessions (MTK, SRTP, download) are the
//! single-instance demo's: with several instances the demo shows the key
//! management.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{anyhow, bail, Context as _};
use mbms::{KeyDomainId, MskName};
use mbms_bench::admin::Admin;
use mbms_bench::services::{Cluster, ServiceOptions, Services};
use mbms_bench::swarm::{self, Swarm};

use crate::{
    check_capture, muk_for_naf, open_msks, write_pcap, CaptureCheck, CaptureReport, Captured,
    DemoReport, ProcedureResult, Progress, SCHEMA,
};
use bmsc::TapKind;

/// The procedures of the scale-out demo, in order.
pub const CLUSTER_PROCEDURES: [&str; 7] = [
    "bootstrapping",
    "registration + 4-way",
    "msk request (spread)",
    "rotate + kill anchor",
    "charging once",
    "counters never repeat",
    "capture check",
];

/// What to run.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// The `mbms` binary that runs the BSF and the instances
    /// (`std::env::current_exe()`; tests pass `CARGO_BIN_EXE_mbms`).
    pub mbms_bin: PathBuf,
    /// Number of UEs (at least 2).
    pub ues: usize,
    /// Number of BM-SC instances (at least 2).
    pub instances: usize,
    /// A PostgreSQL URL (any database of the server; a database of the
    /// run's own is created from it and dropped).
    pub postgres: String,
    /// `[cluster] lease_ms` of the instances (the takeover time); `None`:
    /// the BM-SC's default (10 s).
    pub lease_ms: Option<u64>,
    /// Write the merged capture to this pcap file.
    pub pcap: Option<PathBuf>,
    /// Write the key log (MUK and MSK lines) to this file (mode 0600).
    pub keylog: Option<PathBuf>,
}

/// What the scale-out run found beyond the procedures.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ClusterFacts {
    /// BM-SC instances.
    pub instances: usize,
    /// The killed anchor's `instance_id`.
    pub killed_instance: String,
    /// UEs holding the new MSK at the kill.
    pub holders_at_kill: usize,
    /// Milliseconds from the SIGKILL until a survivor was named the key
    /// group's anchor (`null`: not seen).
    pub takeover_ms: Option<u64>,
    /// Milliseconds from the SIGKILL until every UE held the new MSK
    /// active (the failover time).
    pub failover_ms: u64,
    /// MSK messages per instance in the capture (sent).
    pub msk_messages_per_instance: Vec<usize>,
    /// (MUK, counter) pairs of two different MSK messages (must be 0).
    pub counter_reuses: usize,
}

fn result(
    idx: usize,
    clause: &'static str,
    succeeded: usize,
    total: usize,
    t: Instant,
    detail: Option<String>,
) -> ProcedureResult {
    ProcedureResult {
        procedure: CLUSTER_PROCEDURES[idx],
        clause,
        succeeded,
        total,
        millis: t.elapsed().as_millis() as u64,
        detail,
    }
}

/// Polls `done` every 20 ms until it holds or `limit` passed.
async fn until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if done() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs the scale-out demo (see the module documentation).
pub async fn run_cluster(
    o: &ClusterOptions,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> anyhow::Result<DemoReport> {
    let n = o.ues;
    if n < 2 {
        bail!("the demo needs at least 2 UEs");
    }
    if o.instances < 2 {
        bail!("--bmsc-instances: at least 2 (one is killed)");
    }
    let services = Services::start_cluster(
        &ServiceOptions {
            mbms_bin: o.mbms_bin.clone(),
            subscribers: n,
            seed: 1,
            retransmit_initial_ms: 500,
            retransmit_max_attempts: 8,
            max_connections: 512,
            charging: true,
            bmsc_worker_threads: None,
        },
        &Cluster {
            instances: o.instances,
            postgres: Some(o.postgres.clone()),
            lease_ms: o.lease_ms,
            pcap: true,
        },
    )
    .context("starting the BSF and the BM-SC instances")?;
    run_with(o, services, progress).await
}

async fn run_with(
    o: &ClusterOptions,
    mut services: Services,
    progress: &(dyn Fn(Progress) + Send + Sync),
) -> anyhow::Result<DemoReport> {
    let n = o.ues;
    let start = Instant::now();
    let total = CLUSTER_PROCEDURES.len();
    let begin = |idx: usize| {
        progress(Progress::Procedure {
            name: CLUSTER_PROCEDURES[idx],
            index: idx + 1,
            total,
        });
        Instant::now()
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(0)
        .build()?;
    let admin = Admin::new(http, &services);
    // The instances share out the UE shards before the first UE comes.
    admin
        .wait_settled(services.names.key_group, Duration::from_secs(60))
        .await?;
    let mut cfg = services.swarm_config(n, 1);
    cfg.concurrency = 32;
    cfg.sockets = 2;
    let swarm = Swarm::start(cfg).await?;
    let names = services.names.clone();
    let key_domain: KeyDomainId = names
        .key_domain
        .parse()
        .map_err(|e| anyhow!("key domain: {e}"))?;
    let name = |msk_id| MskName { key_domain, msk_id };
    let mut results = Vec::new();

    // ---- bootstrapping, registration --------------------------------------
    let t = begin(0);
    let boot = swarm.bootstrap_all().await;
    results.push(result(
        0,
        "TS 33.220 4.5",
        if boot.is_ok() { n } else { 0 },
        n,
        t,
        boot.as_ref().err().map(ToString::to_string),
    ));
    boot?;
    let t = begin(1);
    let reg = swarm.register_all().await;
    reg.map_err(|e| anyhow!("registration: {e}"))?;
    let kg = names.key_group;
    let (cur, next) = admin.key_group(kg).await?;
    swarm.set_target(&[cur, next]);
    let limit = Duration::from_secs(120);
    until(limit, || {
        swarm.count_active(name(cur)) >= n && swarm.count_active(name(next)) >= n
    })
    .await;
    let both = swarm
        .count_active(name(cur))
        .min(swarm.count_active(name(next)));
    results.push(result(
        1,
        "6.3.2.1, 6.3.2.3.3",
        both,
        n,
        t,
        (both < n).then(|| format!("{both} of {n} UEs hold the current and next MSK active")),
    ));

    // ---- msk request, spread over the instances ----------------------------
    let t = begin(2);
    let asked = mbms_bench::rekey::request_all(&swarm, name(cur), 32).await;
    results.push(result(
        2,
        "6.3.2.2",
        n - asked.failed,
        n,
        t,
        asked
            .first_error
            .map(|e| format!("{} requests failed, the first: {e}", asked.failed)),
    ));
    // Their pushes acknowledged before the rotation.
    tokio::time::sleep(Duration::from_millis(500)).await;

    // ---- rotation; the anchor killed in the middle ---------------------------
    let t = begin(3);
    let new_next = admin.rotate(kg).await?;
    swarm.set_target(&[new_next]);
    let third = n.div_ceil(3);
    until(limit, || swarm.holders() >= third).await;
    let victim = admin
        .anchor(kg)
        .await?
        .ok_or_else(|| anyhow!("GET /admin/v1/cluster names no anchor of key group {kg}"))?;
    let holders_at_kill = swarm.holders();
    let killed_at = services.kill_bmsc(victim)?;
    admin.mark_dead(victim);
    progress(Progress::Note(format!(
        "SIGKILL to bmsc-{victim}, the anchor of key group {kg}, with {holders_at_kill} of {n} UEs holding the new MSK"
    )));
    let lease = Duration::from_millis(o.lease_ms.unwrap_or(10_000));
    let a2 = admin.clone();
    let takeover =
        tokio::spawn(async move { a2.wait_takeover(kg, victim, lease * 3 + limit).await });
    let all_active = until(lease * 3 + limit, || {
        swarm.count_active(name(new_next)) >= n
    })
    .await;
    let failover = killed_at.elapsed();
    let takeover = takeover.await.ok().flatten();
    let active = swarm.count_active(name(new_next));
    results.push(result(
        3,
        "6.3.4.3 (one anchor per key group)",
        active,
        n,
        t,
        (!all_active || takeover.is_none()).then(|| {
            format!(
                "{active} of {n} UEs hold the new MSK active; takeover {}",
                if takeover.is_some() {
                    "seen"
                } else {
                    "not seen"
                }
            )
        }),
    ));

    // ---- charging exactly once ---------------------------------------------------
    let t = begin(4);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (records, per_ue) = admin.charges(&name(new_next), n).await?;
    let once = per_ue.iter().filter(|c| **c == 1).count();
    results.push(result(
        4,
        "6.3.2.3.3",
        once,
        n,
        t,
        (once < n || records != n as u64)
            .then(|| format!("{records} records of the new MSK, {once} UEs charged once")),
    ));

    // ---- the capture: counters, key log, self-check -----------------------------
    // The B-TID of each UE (its MUK's IDr) and its keys.
    let mut btids: HashMap<String, usize> = HashMap::new();
    for i in 0..n {
        if let Some(c) = swarm.ua_client(i) {
            btids.insert(c.btid().to_owned(), i);
        }
    }
    let violations_swarm = swarm.stats().counter_violations;
    swarm.stop();
    services.stop_processes();
    let (caps, per_instance) = read_captures(&services.pcap_files())?;
    drop(services);
    let mut muks: BTreeMap<String, [u8; 32]> = BTreeMap::new();
    for (btid, i) in &btids {
        let s = swarm::subscriber(1, &names.domain, *i);
        muks.insert(
            btid.clone(),
            muk_for_naf(&s.k, &s.opc, &s.impi, btid, &names.bmsc_fqdn)?,
        );
    }
    let msks = open_msks(&caps, &muks);
    let mut keylog = String::new();
    for (btid, muk) in &muks {
        keylog.push_str(&format!(
            "MUK {} {btid} {}\n",
            names.bmsc_fqdn,
            hex::encode(muk)
        ));
    }
    for (kid, key) in &msks {
        keylog.push_str(&format!(
            "MSK {} {} {}\n",
            hex::encode(&kid[..3]),
            hex::encode(&kid[3..]),
            hex::encode(key)
        ));
    }
    let t = begin(5);
    let reuses = counter_reuses(&caps);
    results.push(result(
        5,
        "6.4.1 (MUK counter)",
        usize::from(reuses == 0 && violations_swarm == 0),
        1,
        t,
        (reuses > 0 || violations_swarm > 0).then(|| {
            format!(
                "{reuses} (MUK, counter) pairs on two MSK messages in the capture; {violations_swarm} counter violations at the UEs"
            )
        }),
    ));
    let t = begin(6);
    let CaptureCheck {
        opened,
        mikey,
        srtp,
        failures,
    } = check_capture(&caps, &muks, &msks);
    if let Some(p) = &o.keylog {
        mbms_service::write_private_file(p, keylog.as_bytes())
            .with_context(|| format!("writing {}", p.display()))?;
    }
    if let Some(p) = &o.pcap {
        write_pcap(p, &caps)?;
    }
    results.push(result(
        6,
        "(pcap + key log)",
        opened,
        mikey,
        t,
        (!failures.is_empty()).then(|| format!("not opened: {}", failures.join(", "))),
    ));
    let success = results.iter().all(ProcedureResult::ok);
    let facts = ClusterFacts {
        instances: o.instances,
        killed_instance: mbms_bench::services::instance_id(victim),
        holders_at_kill,
        takeover_ms: takeover.map(|t| t.saturating_duration_since(killed_at).as_millis() as u64),
        failover_ms: failover.as_millis() as u64,
        msk_messages_per_instance: per_instance,
        counter_reuses: reuses,
    };
    let report = DemoReport {
        schema: SCHEMA,
        ues: n,
        success,
        wall_millis: start.elapsed().as_millis() as u64,
        mikey_port: 0,
        mtk_port: 0,
        srtp_port: 0,
        port_fallback: false,
        procedures: results,
        capture: CaptureReport {
            pcap: o.pcap.clone(),
            keylog: o.keylog.clone(),
            datagrams: caps.len(),
            mikey,
            srtp,
            mikey_opened: opened,
            keylog_lines: keylog.lines().count(),
        },
        cluster: Some(facts),
    };
    Ok(report)
}

/// The instances' pcap files merged by time; the MSK messages each sent.
fn read_captures(files: &[PathBuf]) -> anyhow::Result<(Vec<Captured>, Vec<usize>)> {
    let mut caps = Vec::new();
    let mut per_instance = Vec::with_capacity(files.len());
    for f in files {
        let bytes = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
        let cap =
            mbms_capture::read_capture(&bytes).map_err(|e| anyhow!("{}: {e}", f.display()))?;
        let mut msk_messages = 0;
        for r in &cap.records {
            let link = cap
                .interfaces
                .get(r.interface as usize)
                .map_or(1, |i| i.link_type);
            let Some(u) = mbms_capture::udp_in_frame(link, &r.data) else {
                continue;
            };
            let (SocketAddr::V4(src), SocketAddr::V4(dst)) = (u.src, u.dst) else {
                continue;
            };
            let payload = r.data[u.payload.clone()].to_vec();
            let parsed = mikey::Message::parse(&payload).ok();
            let kind = match &parsed {
                Some(m) if m.key_ids().any(|k| k.key_id_type == mikey::KeyIdType::MTK) => {
                    TapKind::Mtk
                }
                Some(_) => TapKind::Mikey,
                None => TapKind::Srtp,
            };
            if kind == TapKind::Mikey && parsed.as_ref().is_some_and(|m| m.kemac().is_some()) {
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

/// (IDr, counter) pairs carried by two different MSK messages: a MUK
/// counter used twice (retransmissions repeat the same bytes and count
/// once).
fn counter_reuses(caps: &[Captured]) -> usize {
    let mut seen: HashMap<(Vec<u8>, String), &[u8]> = HashMap::new();
    let mut reuses = 0;
    for c in caps.iter().filter(|c| c.kind == TapKind::Mikey) {
        let Ok(m) = mikey::Message::parse(&c.bytes) else {
            continue;
        };
        if m.kemac().is_none() {
            continue;
        }
        let (Some(idr), Some(t)) = (m.ids().last(), m.timestamp()) else {
            continue;
        };
        let key = (idr.data.to_vec(), format!("{t:?}"));
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
