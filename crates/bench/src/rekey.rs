//! `mbms bench rekey`: the real BSF and BM-SC, a UE swarm, one MSK
//! rotation; the report of schema `mbms-bench-rekey/1` (docs/bench.md).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use mbms::{KeyDomainId, MskName};

use crate::admin::{sum_metrics, Admin};
use crate::procfs::{self, Metrics, UdpCounters};
use crate::services::{self, poll_until, BenchError, Cluster, ServiceOptions, Services};
use crate::swarm::{CounterViolation, Swarm, SwarmStats};
use crate::timeline::{MetricsSampler, RekeyTimeline};

/// The JSON schema name of [`RekeyReport`].
pub const REKEY_SCHEMA: &str = "mbms-bench-rekey/1";

/// Options of a rekey run.
#[derive(Clone, Debug)]
pub struct RekeyOptions {
    /// The `mbms` binary that runs the services.
    pub mbms_bin: PathBuf,
    /// Number of UEs.
    pub ues: usize,
    /// Fraction of datagrams the swarm drops in each direction.
    pub loss: f64,
    /// At most this many acknowledgements per second from the swarm.
    pub pace: Option<u64>,
    /// Seed of the keys and of the loss.
    pub seed: u64,
    /// UDP sockets of the swarm (default: one per core).
    pub sockets: Option<usize>,
    /// Concurrent HTTP requests during the setup.
    pub concurrency: usize,
    /// BM-SC `[retransmit] initial_ms`.
    pub retransmit_initial_ms: u64,
    /// A UE that misses the new MSK this long after the rotation asks for
    /// it over Ua (and again after as long), like the real UE's missed key
    /// update; `None` (the default): never.
    pub request_after: Option<Duration>,
    /// Give up waiting (setup deliveries, rekey) after this long.
    pub timeout: Duration,
    /// Draw progress bars on standard error.
    pub progress: bool,
    /// Record the rotation's timeline ([`RekeyReport::timeline`], for
    /// `--plot`).
    pub timeline: bool,
    /// `--kill-bmsc-at F`: once this fraction of the UEs hold the new MSK,
    /// SIGKILL the BM-SC and restart it at once on the same configuration,
    /// store and ports, then check what must survive a crash
    /// ([`KillReport`]). The key group then charges (the 4-way procedure,
    /// seed 004 6.3.2.3.3), so that every acknowledgement leaves a record.
    pub kill_bmsc_at: Option<f64>,
    /// `--bmsc-instances K`: BM-SC instances on one PostgreSQL database
    /// (issue 13, docs/scale-out.md); the swarm's UEs register and ask at
    /// instance `i mod K`. With [`Self::kill_bmsc_at`] and K > 1 the
    /// anchor of the key group is killed and not restarted: the survivors
    /// take over ([`FailoverReport`]).
    pub bmsc_instances: usize,
    /// `--postgres URL`: the BM-SC store on a fresh database created from
    /// this URL (dropped at the end); `None`: SQLite.
    pub postgres: Option<String>,
    /// `--lease-ms`: the instances' `[cluster] lease_ms` (takeover time);
    /// `None`: the BM-SC's default.
    pub lease_ms: Option<u64>,
    /// `--no-wait-settled`: with several instances, the UEs start at once,
    /// while the instances still share out the UE shards (the first one up
    /// holds them all until the others join and it hands some over),
    /// instead of after `Admin::wait_settled`. Shows that UEs registering
    /// while their shards move get their MSKs (docs/scale-out.md).
    pub no_wait_settled: bool,
}

impl RekeyOptions {
    /// Defaults for `ues` UEs run by `mbms_bin`.
    pub fn new(mbms_bin: PathBuf, ues: usize) -> Self {
        RekeyOptions {
            mbms_bin,
            ues,
            loss: 0.0,
            pace: None,
            seed: 1,
            sockets: None,
            concurrency: 128,
            retransmit_initial_ms: 2000,
            request_after: None,
            timeout: Duration::from_secs(600),
            progress: false,
            timeline: false,
            kill_bmsc_at: None,
            bmsc_instances: 1,
            postgres: None,
            lease_ms: None,
            no_wait_settled: false,
        }
    }
}

/// Setup figures.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SetupReport {
    /// Seconds of `mbms bsf subscriber import` (all subscribers).
    pub import_s: f64,
    /// Seconds for every UE to bootstrap.
    pub bootstrap_s: f64,
    /// Bootstraps per second.
    pub bootstraps_per_s: f64,
    /// Seconds for every UE to register.
    pub register_s: f64,
    /// Registrations per second.
    pub registrations_per_s: f64,
    /// Seconds from the last registration until every UE held both MSKs
    /// pushed at registration and the BM-SC had processed every
    /// acknowledgement.
    pub settle_s: f64,
}

/// Rekey figures.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RekeyFigures {
    /// Seconds from sending the rotation request to the BM-SC having
    /// processed every acknowledgement the swarm sent, every UE holding
    /// the new MSK (see docs/bench.md).
    pub seconds: f64,
    /// Seconds from the rotation request until every UE held the new MSK
    /// (swarm side).
    pub all_hold_s: f64,
    /// UEs holding the new MSK at the end.
    pub ues_holding: usize,
    /// BM-SC `bmsc_msk_messages_sent_total` delta.
    pub messages_sent: u64,
    /// BM-SC `bmsc_msk_retransmissions_total` delta.
    pub retransmissions: u64,
    /// BM-SC `bmsc_msk_acks_total{kind="accepted"}` delta.
    pub acks_accepted: u64,
    /// BM-SC `bmsc_msk_acks_total` delta, every kind.
    pub acks_processed: u64,
    /// BM-SC `bmsc_msk_give_ups_total` delta.
    pub give_ups: u64,
    /// Swarm counters during the rekey.
    pub swarm: SwarmStats,
}

/// CPU seconds per process (user + system).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Cpu {
    /// The BSF.
    pub bsf_s: f64,
    /// The BM-SC (every instance).
    pub bmsc_s: f64,
    /// Each BM-SC instance, in order (a killed instance: its CPU until
    /// the kill).
    pub bmsc_instances_s: Vec<f64>,
    /// The swarm (this process).
    pub swarm_s: f64,
}

impl Cpu {
    fn read(services: &Services) -> Cpu {
        let instances: Vec<f64> = services
            .bmsc_pids()
            .iter()
            .map(|p| p.and_then(procfs::cpu_seconds).unwrap_or(0.0))
            .collect();
        Cpu {
            bsf_s: procfs::cpu_seconds(services.pids().0).unwrap_or(0.0),
            bmsc_s: instances.iter().sum(),
            bmsc_instances_s: instances,
            swarm_s: procfs::self_cpu_seconds(),
        }
    }

    fn since(&self, e: &Cpu) -> Cpu {
        let instances: Vec<f64> = self
            .bmsc_instances_s
            .iter()
            .zip(&e.bmsc_instances_s)
            .map(|(a, b)| a - b)
            .collect();
        Cpu {
            bsf_s: self.bsf_s - e.bsf_s,
            bmsc_s: instances.iter().sum(),
            bmsc_instances_s: instances,
            swarm_s: self.swarm_s - e.swarm_s,
        }
    }

    /// Adds the CPU seconds a killed instance used until its kill.
    fn add_killed(&mut self, at_kill: &[f64]) {
        for (c, k) in self.bmsc_instances_s.iter_mut().zip(at_kill) {
            *c += k;
        }
        self.bmsc_s = self.bmsc_instances_s.iter().sum();
    }
}

/// The request phase: every UE asks once for the current MSK over Ua
/// (`requesttype=msk-request`, Digest with its MRK), spread over the
/// instances like its registration.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MskRequestReport {
    /// Requests sent (one per UE).
    pub requests: usize,
    /// Requests that failed (transport error or not answered 200).
    pub errors: usize,
    /// The first failure, if any.
    pub first_error: Option<String>,
    /// Requests sent again because no answer came (transport errors).
    pub retries: usize,
    /// Seconds from the first request to the last answer.
    pub seconds: f64,
    /// Answered requests per second.
    pub per_s: f64,
    /// CPU seconds of the phase (per BM-SC instance in
    /// `bmsc_instances_s`).
    pub cpu: Cpu,
}

/// Memory figures.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Memory {
    /// BM-SC VmRSS before the registrations, KiB (every instance).
    pub bmsc_rss_before_kib: u64,
    /// BM-SC VmRSS after the registrations settled, KiB.
    pub bmsc_rss_after_kib: u64,
    /// (after - before) * 1024 / UEs.
    pub bmsc_bytes_per_ue: f64,
}

/// What `--kill-bmsc-at` measured and checked (docs/bench.md).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct KillReport {
    /// The fraction asked for.
    pub at_fraction: f64,
    /// UEs holding the new MSK active (the 4-way procedure done for them,
    /// swarm side) when the BM-SC was killed: below `ues` when the kill
    /// landed mid-rotation.
    pub holders_at_kill: usize,
    /// UEs holding the new MSK in any state (step 1 received) at the kill.
    pub pushed_at_kill: usize,
    /// `holders_at_kill` < `ues`: the kill landed mid-rotation, so the
    /// survivors (or the restarted BM-SC) finished a live rotation; part
    /// of `passed`.
    pub mid_rotation: bool,
    /// Seconds from the rotation request to the SIGKILL.
    pub killed_after_s: f64,
    /// Seconds from the SIGKILL to the first MIKEY datagram of the
    /// restarted BM-SC at the swarm; `null` when none came.
    pub restart_s: Option<f64>,
    /// Seconds from the SIGKILL to the restarted BM-SC answering
    /// `/healthz`.
    pub healthy_s: f64,
    /// MIKEY datagrams the swarm received from the killed BM-SC in the
    /// rotation (its own counters died with it).
    pub datagrams_before_kill: u64,
    /// MSK messages the restarted BM-SC sent (`bmsc_msk_messages_sent_total`
    /// of the new process).
    pub messages_after_restart: u64,
    /// Of those, retransmissions (`bmsc_msk_retransmissions_total`).
    pub retransmissions_after_restart: u64,
    /// MSK messages whose counter was not above the last one the same UE's
    /// MGV-F saw, over the whole run (must be 0).
    pub counter_violations: u64,
    /// The first of them (UE, counters, sending ports, what the MGV-F made
    /// of it), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_counter_violation: Option<CounterViolation>,
    /// UEs holding the new MSK active at the end (must be every UE).
    pub ues_active: usize,
    /// Charging records of the new MSK in the BM-SC's store (admin API
    /// `GET /admin/v1/charging-records`; must be one per UE).
    pub charging_records: u64,
    /// UEs charged exactly once for the new MSK (must be every UE).
    pub ues_charged_once: usize,
    /// UEs charged more than once for the new MSK (must be 0).
    pub ues_charged_twice: usize,
    /// With several BM-SC instances: the anchor's kill and the
    /// survivors' takeover (absent with one instance).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failover: Option<FailoverReport>,
    /// Every check above holds.
    pub passed: bool,
}

/// The failover of `--kill-bmsc-at` with several instances: the anchor of
/// the key group is killed mid-rotation and stays dead (docs/scale-out.md).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct FailoverReport {
    /// BM-SC instances.
    pub instances: usize,
    /// `instance_id` of the killed anchor (`GET /admin/v1/cluster`).
    pub killed_instance: String,
    /// `[cluster] lease_ms` asked for (`null`: the BM-SC's default).
    pub lease_ms: Option<u64>,
    /// Seconds from the SIGKILL until a survivor's `GET /admin/v1/cluster`
    /// names a live survivor as the key group's anchor; `null`: never
    /// seen before the end.
    pub takeover_s: Option<f64>,
    /// Seconds from the SIGKILL until every UE held the new MSK active:
    /// the failover time.
    pub every_ue_active_s: f64,
}

/// The report of `mbms bench rekey` (schema [`REKEY_SCHEMA`]).
#[derive(Clone, Debug, serde::Serialize)]
pub struct RekeyReport {
    /// [`REKEY_SCHEMA`].
    pub schema: &'static str,
    /// UEs.
    pub ues: usize,
    /// Simulated loss per direction.
    pub loss: f64,
    /// Acknowledgement pacing, datagrams per second.
    pub pace: Option<u64>,
    /// Swarm UDP sockets.
    pub sockets: usize,
    /// `SO_RCVBUF` granted to each swarm socket, bytes.
    pub socket_buffer: usize,
    /// Concurrent HTTP requests of the setup.
    pub concurrency: usize,
    /// CPUs of the machine.
    pub cpus: usize,
    /// Setup.
    pub setup: SetupReport,
    /// The rotation.
    pub rekey: RekeyFigures,
    /// Kernel UDP drops during the rekey (`/proc/net/snmp`, whole machine).
    pub udp_drops_rekey: UdpCounters,
    /// Kernel UDP drops during the setup.
    pub udp_drops_setup: UdpCounters,
    /// BM-SC memory.
    pub memory: Memory,
    /// CPU seconds during the setup (bootstrap to settle).
    pub cpu_setup: Cpu,
    /// CPU seconds during the rekey.
    pub cpu_rekey: Cpu,
    /// Swarm CPU microseconds per UE during the rekey.
    pub swarm_cpu_us_per_ue_rekey: f64,
    /// Swarm CPU microseconds per UE during the setup.
    pub swarm_cpu_us_per_ue_setup: f64,
    /// Microseconds the swarm's shard tasks spent per MSK message received
    /// during the rekey (MGV-F processing, routing, sending the
    /// acknowledgement; from `rekey.swarm.busy_ns`).
    pub swarm_us_per_message: f64,
    /// BM-SC instances (`--bmsc-instances`).
    pub bmsc_instances: usize,
    /// The store: `sqlite` or `postgres`.
    pub store: &'static str,
    /// The request phase (every UE asks once for the current MSK).
    pub msk_request: MskRequestReport,
    /// Every UE holds the new MSK.
    pub every_ue_holds_new_msk: bool,
    /// `--kill-bmsc-at`: the crash and its checks (absent without it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kill: Option<KillReport>,
    /// The rotation's timeline when [`RekeyOptions::timeline`] asked for
    /// it (not in the JSON report; drawn by [`crate::plot`]).
    #[serde(skip)]
    pub timeline: Option<RekeyTimeline>,
}

fn bar(show: bool, len: u64, what: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(len);
    b.set_style(
        ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    b.set_message(what.to_owned());
    b
}

/// Runs a phase of the swarm while a bar shows its progress.
async fn with_bar<F: std::future::Future<Output = Result<(), crate::swarm::SwarmError>>>(
    swarm: &Swarm,
    show: bool,
    what: &str,
    f: F,
) -> Result<f64, BenchError> {
    let b = bar(show, swarm.config().ues as u64, what);
    let t0 = Instant::now();
    tokio::pin!(f);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let r = loop {
        tokio::select! {
            r = &mut f => break r,
            _ = tick.tick() => b.set_position(swarm.progress()),
        }
    };
    b.set_position(swarm.progress());
    b.finish();
    r?;
    Ok(t0.elapsed().as_secs_f64())
}

/// Runs `mbms bench rekey` (see the module documentation).
pub async fn run(o: &RekeyOptions) -> Result<RekeyReport, BenchError> {
    let mut services = Services::start_cluster(
        &ServiceOptions {
            mbms_bin: o.mbms_bin.clone(),
            subscribers: o.ues,
            seed: o.seed,
            retransmit_initial_ms: o.retransmit_initial_ms,
            retransmit_max_attempts: 6,
            max_connections: (o.concurrency * 2).max(512),
            charging: o.kill_bmsc_at.is_some(),
            bmsc_worker_threads: None,
        },
        &Cluster {
            instances: o.bmsc_instances,
            postgres: o.postgres.clone(),
            lease_ms: o.lease_ms,
            pcap: false,
        },
    )?;
    let result = run_with(o, &mut services).await;
    if result.is_err() {
        let _ = services.check_running();
    }
    services.stop();
    result
}

/// What [`request_all`] got back.
#[derive(Clone, Debug, Default)]
pub struct RequestOutcome {
    /// Requests that failed (transport error, or a key not answered 200).
    pub failed: usize,
    /// The first failure's description.
    pub first_error: Option<String>,
    /// Requests sent again after a transport error (no answer came).
    pub retries: usize,
}

/// Attempts of one UE's MSK request in [`request_all`]: a request that got
/// no answer at all (the connection closed under it, as can happen to a
/// kept-alive connection on a loaded machine) is sent again, as a UE would;
/// an answer is never retried.
const REQUEST_ATTEMPTS: usize = 3;

/// Every UE of `swarm` asks once for `key` over Ua at its instance,
/// `concurrency` at a time.
pub async fn request_all(swarm: &Swarm, key: MskName, concurrency: usize) -> RequestOutcome {
    let n = swarm.config().ues;
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let Some(mut c) = swarm.ua_client(i) else {
            continue;
        };
        let sem = sem.clone();
        set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let mut retries = 0;
            loop {
                let err = match c.msk_request(&[key]).await {
                    Ok(st) if st.iter().all(|s| s.status == 200) => None,
                    Ok(st) => Some(format!(
                        "UE {i}: key statuses {:?}",
                        st.iter().map(|s| s.status).collect::<Vec<_>>()
                    )),
                    Err(e) if retries + 1 < REQUEST_ATTEMPTS => {
                        tracing::debug!(ue = i, error = %e, "MSK request sent again");
                        retries += 1;
                        continue;
                    }
                    Err(e) => {
                        let mut text = format!("UE {i}: {e}");
                        let mut source = std::error::Error::source(&e);
                        while let Some(s) = source {
                            text.push_str(&format!(": {s}"));
                            source = s.source();
                        }
                        Some(text)
                    }
                };
                return (err, retries);
            }
        });
    }
    let mut out = RequestOutcome {
        failed: n - set.len(),
        first_error: (set.len() < n).then(|| "a UE without a B-TID".to_owned()),
        retries: 0,
    };
    while let Some(r) = set.join_next().await {
        let (err, retries) = r.unwrap_or_else(|e| (Some(format!("task: {e}")), 0));
        out.retries += retries;
        if let Some(e) = err {
            out.failed += 1;
            out.first_error.get_or_insert(e);
        }
    }
    out
}

/// The measurement over running services.
async fn run_with(o: &RekeyOptions, services: &mut Services) -> Result<RekeyReport, BenchError> {
    let mut http = reqwest::Client::builder().timeout(Duration::from_secs(60));
    if o.kill_bmsc_at.is_some() {
        // No connection kept to a BM-SC that is going to be killed.
        http = http.pool_max_idle_per_host(0);
    }
    let admin = Admin::new(http.build()?, services);
    // Several instances share out the UE shards before the first UE comes
    // (clean measurements), unless asked to start at once.
    if !o.no_wait_settled {
        admin
            .wait_settled(services.names.key_group, Duration::from_secs(60))
            .await?;
    }
    let mut cfg = services.swarm_config(o.ues, o.seed);
    if let Some(s) = o.sockets {
        cfg.sockets = s.max(1);
    }
    cfg.concurrency = o.concurrency.max(1);
    cfg.loss = o.loss;
    cfg.pace = o.pace;
    let swarm = Swarm::start(cfg).await?;
    let n = o.ues;
    let rss = |services: &Services| -> u64 {
        services
            .bmsc_pids()
            .iter()
            .flatten()
            .map(|p| procfs::rss_kib(*p).unwrap_or(0))
            .sum()
    };

    let rss0 = rss(services);
    let udp0 = UdpCounters::read();
    let cpu0 = Cpu::read(services);
    let bootstrap_s = with_bar(&swarm, o.progress, "bootstrap", swarm.bootstrap_all()).await?;
    services.check_running()?;
    let register_s = with_bar(&swarm, o.progress, "register", swarm.register_all()).await?;
    services.check_running()?;

    // The registrations pushed the current and the next MSK to every UE.
    let kg = services.names.key_group;
    let (cur, next) = admin.key_group(kg).await?;
    let key_domain: KeyDomainId = services
        .names
        .key_domain
        .parse()
        .map_err(|e| BenchError::Service(format!("key domain: {e}")))?;
    let name = |msk_id| MskName { key_domain, msk_id };
    let t_settle = Instant::now();
    swarm.set_target(&[cur, next]);
    let since_start = (t_settle, SwarmStats::default(), Metrics::default(), udp0);
    wait_settled(
        o,
        &swarm,
        &admin,
        &[name(cur), name(next)],
        since_start,
        "settle",
        services,
        None,
    )
    .await?;
    let settle_s = t_settle.elapsed().as_secs_f64();
    let rss1 = rss(services);
    let cpu1 = Cpu::read(services);

    // The request phase: every UE asks for the current MSK once; the
    // pushes it brings are acknowledged before the rotation starts.
    let mr0 = admin.metrics().await?;
    let t_req = Instant::now();
    let requested = request_all(&swarm, name(cur), o.concurrency).await;
    let request_errors = requested.failed;
    let request_s = t_req.elapsed().as_secs_f64();
    let cpu_req = Cpu::read(services);
    poll_until(
        Duration::from_secs(30),
        Duration::from_millis(20),
        || Ok(()),
        || async {
            admin.metrics().await.is_ok_and(|m| {
                counter_delta(&m, &mr0, ACCEPTED) + counter_delta(&m, &mr0, GIVE_UPS)
                    >= (n - request_errors) as u64
            })
        },
    )
    .await?;
    wait_quiet(&admin, Duration::from_millis(50)).await?;
    services.check_running()?;
    let msk_request = MskRequestReport {
        requests: n,
        errors: request_errors,
        first_error: requested.first_error,
        retries: requested.retries,
        seconds: request_s,
        per_s: (n - request_errors) as f64 / request_s.max(1e-9),
        cpu: cpu_req.since(&cpu1),
    };
    let cpu1 = Cpu::read(services);
    let udp1 = UdpCounters::read();

    // The rotation.
    let m0_each = admin.metrics_each().await?;
    let m0 = sum_metrics(m0_each.iter().flatten());
    let s0 = swarm.stats();
    let t0 = Instant::now();
    let sampler = o.timeline.then(|| {
        swarm
            .timeline()
            .start(t0, n, o.timeout + Duration::from_secs(5), &[cur, next]);
        let url = format!("{}/metrics", admin.base());
        MetricsSampler::start(admin.http.clone(), url, t0, m0.clone())
    });
    // Killing the anchor mid-rotation: the rotation is asked at the anchor,
    // which answers once it rotated (another instance answers only once it
    // adopted the new MSKs, when the pushes may be over).
    let at = if o.kill_bmsc_at.is_some() && services.bmsc_instances() > 1 {
        admin.anchor(kg).await?
    } else {
        None
    };
    let new_next = admin.rotate_at(kg, at).await?;
    swarm.set_target(&[new_next]);
    let since = (t0, s0, m0.clone(), udp1);
    let mut kill = o.kill_bmsc_at.map(|f| Kill {
        at_holders: ((f * n as f64).ceil() as usize).clamp(1, n),
        key_group: kg,
        key: Some(name(new_next)),
        anchor: at,
        ..Kill::default()
    });
    if let Some(k) = &kill {
        // The swarm stops reading at the kill point until the kill is done.
        swarm.pause_at_active(name(new_next), k.at_holders);
    }
    let done = wait_settled(
        o,
        &swarm,
        &admin,
        &[name(new_next)],
        since,
        "rekey",
        services,
        kill.as_mut(),
    )
    .await?;
    let seconds = t0.elapsed().as_secs_f64().min(done.seconds);
    let mut cpu2 = Cpu::read(services);
    let udp2 = UdpCounters::read();
    let m1_each = admin.metrics_each().await?;
    let m1 = sum_metrics(m1_each.iter().flatten());
    let s1 = swarm.stats();
    let holding = swarm.count_holders();
    // A killed BM-SC's counters died with it: the BM-SC figures of the
    // rekey are then the live processes' (a restarted one counting from
    // zero, the survivors of several from the rotation on).
    let restarted = kill.is_some() && services.bmsc_instances() == 1;
    if let Some(k) = &kill {
        cpu2.add_killed(&k.cpu_at_kill);
    }
    let base = if restarted {
        Metrics::default()
    } else {
        sum_metrics(
            m0_each
                .iter()
                .zip(&m1_each)
                .filter(|(_, now)| now.is_some())
                .filter_map(|(then, _)| then.as_ref()),
        )
    };
    let kill_report = match kill {
        Some(k) => Some(
            kill_checks(
                o,
                k,
                &swarm,
                &admin,
                name(new_next),
                t0,
                &m1,
                &base,
                done.active_at,
            )
            .await?,
        ),
        None => None,
    };
    let timeline = match sampler {
        Some(s) => Some(RekeyTimeline {
            bmsc: s.finish().await,
            swarm: swarm.timeline().snapshot(),
        }),
        None => None,
    };
    let socket_buffer = swarm.granted_buffer;
    swarm.stop();

    let delta = |name: &str| (m1.sum(name) - base.sum(name)).max(0.0) as u64;
    let cpu_setup = cpu1.since(&cpu0);
    let cpu_rekey = cpu2.since(&cpu1);
    let sockets = o
        .sockets
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    Ok(RekeyReport {
        schema: REKEY_SCHEMA,
        ues: n,
        loss: o.loss,
        pace: o.pace,
        sockets,
        socket_buffer,
        concurrency: o.concurrency,
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        setup: SetupReport {
            import_s: services.import_seconds,
            bootstrap_s,
            bootstraps_per_s: n as f64 / bootstrap_s.max(1e-9),
            register_s,
            registrations_per_s: n as f64 / register_s.max(1e-9),
            settle_s,
        },
        rekey: RekeyFigures {
            seconds,
            all_hold_s: done.all_hold_s,
            ues_holding: holding,
            messages_sent: delta("bmsc_msk_messages_sent_total"),
            retransmissions: delta("bmsc_msk_retransmissions_total"),
            acks_accepted: counter_delta(&m1, &base, ACCEPTED),
            acks_processed: delta("bmsc_msk_acks_total"),
            give_ups: delta("bmsc_msk_give_ups_total"),
            swarm: stats_since(&s1, &s0),
        },
        udp_drops_rekey: udp2.since(&udp1),
        udp_drops_setup: udp1.since(&udp0),
        memory: Memory {
            bmsc_rss_before_kib: rss0,
            bmsc_rss_after_kib: rss1,
            bmsc_bytes_per_ue: (rss1.saturating_sub(rss0) as f64 * 1024.0) / n.max(1) as f64,
        },
        swarm_cpu_us_per_ue_rekey: cpu_rekey.swarm_s * 1e6 / n.max(1) as f64,
        swarm_cpu_us_per_ue_setup: cpu_setup.swarm_s * 1e6 / n.max(1) as f64,
        cpu_setup,
        cpu_rekey,
        swarm_us_per_message: {
            let d = stats_since(&s1, &s0);
            d.busy_ns as f64 / 1e3 / d.datagrams_received.max(1) as f64
        },
        bmsc_instances: services.bmsc_instances(),
        store: if o.postgres.is_some() {
            "postgres"
        } else {
            "sqlite"
        },
        msk_request,
        every_ue_holds_new_msk: holding == n,
        kill: kill_report,
        timeline,
    })
}

fn stats_since(a: &SwarmStats, b: &SwarmStats) -> SwarmStats {
    SwarmStats {
        datagrams_received: a.datagrams_received - b.datagrams_received,
        dropped_in: a.dropped_in - b.dropped_in,
        msk_accepted: a.msk_accepted - b.msk_accepted,
        refused: a.refused - b.refused,
        unknown_idr: a.unknown_idr - b.unknown_idr,
        acks_made: a.acks_made - b.acks_made,
        dropped_out: a.dropped_out - b.dropped_out,
        acks_sent: a.acks_sent - b.acks_sent,
        solicited_pulls: a.solicited_pulls - b.solicited_pulls,
        msk_requests: a.msk_requests - b.msk_requests,
        busy_ns: a.busy_ns - b.busy_ns,
        bootstrap_retries: a.bootstrap_retries - b.bootstrap_retries,
        register_retries: a.register_retries - b.register_retries,
        counter_violations: a.counter_violations - b.counter_violations,
    }
}

/// The state of `--kill-bmsc-at` during the rekey.
#[derive(Default)]
struct Kill {
    /// Kill once this many UEs hold the new MSK active.
    at_holders: usize,
    /// The key group rotated (its anchor is killed among several).
    key_group: u16,
    /// The new MSK.
    key: Option<MskName>,
    /// Among several: the anchor asked to rotate (looked up before the
    /// rotation, so that the kill waits for no request).
    anchor: Option<usize>,
    /// UEs holding it active at the kill.
    holders_at_kill: usize,
    /// UEs holding it in any state at the kill.
    pushed_at_kill: usize,
    /// MIKEY datagrams the swarm received from the killed BM-SC during the
    /// rotation.
    datagrams_before_kill: u64,
    /// The CPU seconds of each instance at the kill (0 for the others).
    cpu_at_kill: Vec<f64>,
    /// The SIGKILL.
    killed_at: Option<Instant>,
    /// The restarted BM-SC answered `/healthz` (one instance).
    healthy_at: Option<Instant>,
    /// Among several: the killed anchor's index and `instance_id`.
    killed_instance: Option<(usize, String)>,
    /// Among several: when a survivor was named the anchor.
    takeover: Option<tokio::task::JoinHandle<Option<Instant>>>,
}

/// SIGKILL mid-rotation (see [`RekeyOptions::kill_bmsc_at`]): the one
/// BM-SC, restarted at once; among several instances, the key group's
/// anchor (`GET /admin/v1/cluster`), not restarted.
async fn kill_bmsc(
    k: &mut Kill,
    swarm: &Swarm,
    s0: SwarmStats,
    services: &mut Services,
    admin: &Admin,
    timeout: Duration,
) -> Result<(), BenchError> {
    let several = services.bmsc_instances() > 1;
    k.holders_at_kill = k.key.map_or(0, |key| swarm.count_active(key));
    k.pushed_at_kill = swarm.holders();
    let victim = if let Some(a) = k.anchor.filter(|_| several) {
        a
    } else if several {
        admin.anchor(k.key_group).await?.ok_or_else(|| {
            BenchError::Service(format!(
                "GET /admin/v1/cluster names no anchor of key group {}",
                k.key_group
            ))
        })?
    } else {
        0
    };
    k.cpu_at_kill = services
        .bmsc_pids()
        .iter()
        .enumerate()
        .map(|(i, p)| {
            if i == victim {
                p.and_then(procfs::cpu_seconds).unwrap_or(0.0)
            } else {
                0.0
            }
        })
        .collect();
    let killed_at = if several {
        let at = services.kill_bmsc(victim)?;
        admin.mark_dead(victim);
        k.killed_instance = Some((victim, services::instance_id(victim)));
        let (a, kg) = (admin.clone(), k.key_group);
        k.takeover = Some(tokio::spawn(async move {
            a.wait_takeover(kg, victim, timeout).await
        }));
        at
    } else {
        services.kill_and_restart_bmsc()?
    };
    k.killed_at = Some(killed_at);
    swarm.resume();
    // What the killed BM-SC sent may still wait in the swarm's socket
    // queues: once they are empty, every datagram is from a live process.
    let ports = swarm.ports();
    poll_until(
        Duration::from_secs(2),
        Duration::from_millis(1),
        || Ok(()),
        || async { procfs::udp_rx_queue(&ports).unwrap_or(0) == 0 },
    )
    .await?;
    swarm.arm_first_datagram();
    k.datagrams_before_kill = swarm.stats().datagrams_received - s0.datagrams_received;
    if !several {
        services.wait_bmsc_healthy(Duration::from_secs(120)).await?;
        k.healthy_at = Some(Instant::now());
    }
    Ok(())
}

/// Waits (at most 5 s) until the BM-SC's acknowledgement counter stays
/// still for `still`: the last acknowledgements are processed before its
/// counters are read.
async fn wait_quiet(admin: &Admin, still: Duration) -> Result<(), BenchError> {
    let start = Instant::now();
    let mut last = admin.metrics().await?.sum("bmsc_msk_acks_total");
    while start.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(still).await;
        let now = admin.metrics().await?.sum("bmsc_msk_acks_total");
        if now == last {
            break;
        }
        last = now;
    }
    Ok(())
}

/// The checks of `--kill-bmsc-at` after the rekey.
#[allow(clippy::too_many_arguments)]
async fn kill_checks(
    o: &RekeyOptions,
    k: Kill,
    swarm: &Swarm,
    admin: &Admin,
    key: MskName,
    t0: Instant,
    m1: &Metrics,
    base: &Metrics,
    active_at: Option<Instant>,
) -> Result<KillReport, BenchError> {
    let n = o.ues;
    let Some(killed_at) = k.killed_at else {
        return Err(BenchError::Service(
            "--kill-bmsc-at: the rekey ended before the BM-SC was killed".into(),
        ));
    };
    let (charging_records, per_ue) = admin.charges(&key, n).await?;
    let ues_charged_once = per_ue.iter().filter(|c| **c == 1).count();
    let ues_charged_twice = per_ue.iter().filter(|c| **c > 1).count();
    let counter_violations = swarm.stats().counter_violations;
    let ues_active = swarm.count_active(key);
    let since_kill = |t: Instant| t.saturating_duration_since(killed_at).as_secs_f64();
    let failover = match (k.killed_instance, k.takeover) {
        (Some((_, id)), Some(task)) => {
            let takeover = task.await.ok().flatten();
            Some(FailoverReport {
                instances: admin.bases.len(),
                killed_instance: id,
                lease_ms: o.lease_ms,
                takeover_s: takeover.map(since_kill),
                every_ue_active_s: active_at.map_or(0.0, since_kill),
            })
        }
        _ => None,
    };
    Ok(KillReport {
        at_fraction: o.kill_bmsc_at.unwrap_or(0.0),
        holders_at_kill: k.holders_at_kill,
        pushed_at_kill: k.pushed_at_kill,
        killed_after_s: killed_at.saturating_duration_since(t0).as_secs_f64(),
        restart_s: swarm.first_datagram().map(since_kill),
        healthy_s: k.healthy_at.map_or(0.0, since_kill),
        datagrams_before_kill: k.datagrams_before_kill,
        messages_after_restart: counter_delta(m1, base, SENT),
        retransmissions_after_restart: counter_delta(m1, base, RETRANSMISSIONS),
        counter_violations,
        first_counter_violation: swarm.first_counter_violation(),
        ues_active,
        charging_records,
        ues_charged_once,
        ues_charged_twice,
        mid_rotation: k.holders_at_kill < n,
        passed: counter_violations == 0
            && k.holders_at_kill < n
            && ues_active == n
            && ues_charged_once == n
            && ues_charged_twice == 0
            && charging_records == n as u64
            && failover.as_ref().is_none_or(|f| f.takeover_s.is_some()),
        failover,
    })
}

/// `bmsc_msk_messages_sent_total`.
const SENT: (&str, Option<(&str, &str)>) = ("bmsc_msk_messages_sent_total", None);
/// `bmsc_msk_retransmissions_total`.
const RETRANSMISSIONS: (&str, Option<(&str, &str)>) = ("bmsc_msk_retransmissions_total", None);

/// `bmsc_msk_acks_total{kind="accepted"}`.
const ACCEPTED: (&str, Option<(&str, &str)>) = ("bmsc_msk_acks_total", Some(("kind", "accepted")));
/// `bmsc_msk_give_ups_total`.
const GIVE_UPS: (&str, Option<(&str, &str)>) = ("bmsc_msk_give_ups_total", None);

fn counter_delta(now: &Metrics, before: &Metrics, c: (&str, Option<(&str, &str)>)) -> u64 {
    let v = |m: &Metrics| match c.1 {
        Some((label, value)) => m.get(c.0, label, value),
        None => m.sum(c.0),
    };
    (v(now) - v(before)).max(0.0) as u64
}

struct Settled {
    /// Seconds from the start to the end condition.
    seconds: f64,
    /// Seconds from the start until every UE held the target.
    all_hold_s: f64,
    /// With a kill: when every UE held each key active.
    active_at: Option<Instant>,
}

/// Waits until every UE holds the target MSKs and the BM-SC has closed a
/// delivery of each of `keys` to every UE since `since`: its accepted
/// acknowledgements (`bmsc_msk_acks_total{kind="accepted"}`) and give-ups
/// (`bmsc_msk_give_ups_total`) grew by `keys.len()` x N together. UEs
/// missing one of `keys` [`RekeyOptions::request_after`] after the start
/// ask for it over Ua.
///
/// With the 4-way procedure (`--kill-bmsc-at`) each delivery takes two
/// acknowledgements (step 1 and the activation) and every UE must hold
/// each of `keys` active. With `kill`, the BM-SC is killed and restarted
/// once `kill.at_holders` UEs hold the target; the killed process's
/// counters (its last scrape) add to the restarted one's.
#[allow(clippy::too_many_arguments)]
async fn wait_settled(
    o: &RekeyOptions,
    swarm: &Swarm,
    admin: &Admin,
    keys: &[MskName],
    since: (Instant, SwarmStats, Metrics, UdpCounters),
    what: &str,
    services: &mut Services,
    mut kill: Option<&mut Kill>,
) -> Result<Settled, BenchError> {
    let n = o.ues;
    let (start, s0, m0, _udp0) = since;
    let four_way = o.kill_bmsc_at.is_some();
    let steps = if four_way { 2 } else { 1 };
    let b = bar(o.progress, n as u64, what);
    let mut all_hold: Option<f64> = None;
    let mut active_seen: Option<Instant> = None;
    let mut next_request = o.request_after.map(|d| start + d);
    loop {
        let holders = swarm.holders();
        b.set_position(holders as u64);
        if let Some(k) = kill.as_deref_mut() {
            // The kill lands mid-rotation: once the wanted fraction holds
            // the new MSK active (the 4-way procedure done for them), the
            // others still in it.
            let active = || k.key.map_or(holders, |key| swarm.count_active(key));
            if k.killed_at.is_none()
                && (swarm.paused() || (holders >= k.at_holders.min(n) && active() >= k.at_holders))
            {
                kill_bmsc(k, swarm, s0, services, admin, o.timeout).await?;
            }
        }
        if holders >= n && all_hold.is_none() {
            all_hold = Some(start.elapsed().as_secs_f64());
        }
        if all_hold.is_some() && kill.is_some() {
            // The killed BM-SC's counters died with it: the UEs' side
            // decides. Every UE holding each key active got its
            // activation, sent once its step-1 acknowledgement was
            // charged and committed.
            let t = start.elapsed().as_secs_f64();
            let killed = kill.as_ref().is_some_and(|k| k.killed_at.is_some());
            // Among several instances the survivors must also have taken
            // the anchor's key group (and its UEs, whose pending
            // deliveries they finish) before the checks.
            let taken = kill
                .as_ref()
                .is_none_or(|k| k.takeover.as_ref().is_none_or(|t| t.is_finished()));
            if killed && keys.iter().all(|k| swarm.count_active(*k) >= n) {
                let active_at = *active_seen.get_or_insert_with(Instant::now);
                if !taken {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                b.finish();
                let several = services.bmsc_instances() > 1;
                wait_quiet(
                    admin,
                    Duration::from_millis(if several { 1000 } else { 50 }),
                )
                .await?;
                return Ok(Settled {
                    seconds: t,
                    all_hold_s: all_hold.unwrap_or(t),
                    active_at: Some(active_at),
                });
            }
        } else if all_hold.is_some() {
            let m = admin.metrics().await?;
            let t = start.elapsed().as_secs_f64();
            let closed = counter_delta(&m, &m0, ACCEPTED) + counter_delta(&m, &m0, GIVE_UPS);
            if closed >= (keys.len() * n * steps) as u64
                && (!four_way || keys.iter().all(|k| swarm.count_active(*k) >= n))
            {
                b.finish();
                return Ok(Settled {
                    seconds: t,
                    all_hold_s: all_hold.unwrap_or(t),
                    active_at: None,
                });
            }
        }
        if start.elapsed() > o.timeout {
            b.abandon();
            let m = admin.metrics().await?;
            return Err(BenchError::Service(format!(
                "timeout ({what}): {} of {n} UEs hold the MSKs after {:?}; the BM-SC processed {} acknowledgements (accepted {}, given up {}), the swarm sent {} (swarm {:?})",
                swarm.count_holders(),
                o.timeout,
                m.sum("bmsc_msk_acks_total") - m0.sum("bmsc_msk_acks_total"),
                counter_delta(&m, &m0, ACCEPTED),
                counter_delta(&m, &m0, GIVE_UPS),
                swarm.stats().acks_sent - s0.acks_sent,
                swarm.stats()
            )));
        }
        if let (Some(at), Some(every)) = (next_request, o.request_after) {
            if Instant::now() >= at && all_hold.is_none() {
                for key in keys {
                    swarm.request_missing(*key, every).await;
                }
                next_request = Some(Instant::now() + every);
            }
        }
        services.check_running()?;
        let kill_pending = kill.as_ref().is_some_and(|k| k.killed_at.is_none());
        tokio::time::sleep(Duration::from_millis(if kill_pending {
            1
        } else if all_hold.is_some() {
            10
        } else {
            20
        }))
        .await;
    }
}
