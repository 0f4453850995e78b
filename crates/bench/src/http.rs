//! `mbms bench http`: the authenticated MSK request rate of the real BM-SC
//! against an axum "hello" server, both driven by the same load generator
//! in the same run (schema `mbms-bench-http/1`, docs/bench.md).
//!
//! The BM-SC side: `connections` swarm UEs (bootstrapped and registered
//! first), each sending `msk-request`s back to back over its own
//! keep-alive connection with HTTP Digest on every request, as the UE's
//! [`ue::ua::UaClient`] does (the `nextnonce` of the last answer, the
//! nonce count advancing; `Authentication-Info` checked). Every accepted
//! request makes the BM-SC push an MSK message, which the swarm
//! acknowledges. The hello side: the same number of connections posting
//! the same body to an axum server in this process (on its own runtime
//! with as many threads as the BM-SC's) that answers `hello`. The two are
//! measured alternately, `rounds` times each; the report gives the
//! medians.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mbms::{KeyDomainId, MskId, MskName};

use crate::services::{io_err, BenchError, ServiceOptions, Services};
use crate::swarm::Swarm;

/// The JSON schema name of [`HttpReport`].
pub const HTTP_SCHEMA: &str = "mbms-bench-http/1";

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
    /// `bmsc.median_per_s / hello.median_per_s`.
    pub ratio: f64,
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
    let mut hello_rates = Vec::new();
    let (mut bmsc_errors, mut hello_errors) = (0, 0);
    let bmsc_pid = services.pids().1;
    // CPU seconds (BM-SC, bench process) and requests of the BM-SC rounds;
    // bench-process seconds and requests of the hello rounds.
    let (mut bmsc_cpu, mut generator_cpu, mut bmsc_n) = (0.0, 0.0, 0u64);
    let (mut hello_cpu, mut hello_n) = (0.0, 0u64);
    // Voluntary context switches: BM-SC, generator, hello side.
    let (mut bmsc_sw, mut generator_sw, mut hello_sw) = (0u64, 0u64, 0u64);
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
        let before = crate::procfs::self_cpu_seconds();
        let sw_before = crate::procfs::voluntary_switches("self").unwrap_or(0);
        let (n, e, t) = drive(c, dur, |_| {
            let (http, url, body) = (hello_http.clone(), hello_url.clone(), body.clone());
            async move {
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
        })
        .await;
        hello_cpu += crate::procfs::self_cpu_seconds() - before;
        hello_sw += crate::procfs::voluntary_switches("self")
            .unwrap_or(0)
            .saturating_sub(sw_before);
        hello_n += n;
        hello_rates.push(n as f64 / t);
        hello_errors += e;
    }
    services.check_running()?;
    swarm.stop();
    let bmsc = Rate {
        median_per_s: median(&bmsc_rates),
        rounds: bmsc_rates,
        errors: bmsc_errors,
    };
    let hello = Rate {
        median_per_s: median(&hello_rates),
        rounds: hello_rates,
        errors: hello_errors,
    };
    Ok(HttpReport {
        schema: HTTP_SCHEMA,
        connections: c,
        seconds: dur.as_secs_f64(),
        ratio: bmsc.median_per_s / hello.median_per_s.max(1e-9),
        cpu_us_per_request: CpuPerRequest {
            bmsc: us_per(bmsc_cpu, bmsc_n),
            generator: us_per(generator_cpu, bmsc_n),
            hello: us_per(hello_cpu, hello_n),
        },
        voluntary_switches_per_request: SwitchesPerRequest {
            bmsc: per(bmsc_sw, bmsc_n),
            generator: per(generator_sw, bmsc_n),
            hello: per(hello_sw, hello_n),
        },
        bmsc,
        hello,
        cpus,
    })
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
