//! `mbms bench rekey`: one MSK rotation to N UEs over the real BSF and
//! BM-SC (child processes of this binary), with the UE swarm of the
//! `mbms-bench` crate in this process. See docs/bench.md.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use mbms_bench::rekey::{self, RekeyOptions, RekeyReport};

/// Options of `mbms bench rekey`.
#[derive(Args, Debug)]
pub struct RekeyArgs {
    /// Number of simulated UEs (each bootstraps, registers and receives
    /// the rotation's MSK).
    #[arg(long, value_name = "N", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    ues: u64,
    /// Print the report as JSON (schema "mbms-bench-rekey/1").
    #[arg(long)]
    json: bool,
    /// Fraction of datagrams the swarm drops in each direction (seeded).
    #[arg(long, value_name = "P", default_value_t = 0.0, value_parser = parse_fraction)]
    loss: f64,
    /// At most this many acknowledgements per second from the swarm.
    #[arg(long, value_name = "DATAGRAMS_PER_S", value_parser = clap::value_parser!(u64).range(1..))]
    pace: Option<u64>,
    /// Seed of the subscriber keys and of the loss.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// UDP sockets of the swarm (default: one per core).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1024))]
    sockets: Option<u64>,
    /// Concurrent HTTP requests (keep-alive connections) during the setup.
    #[arg(long, value_name = "N", default_value_t = 128,
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    concurrency: u64,
    /// BM-SC retransmission: first interval in milliseconds
    /// (`[retransmit] initial_ms`).
    #[arg(long, value_name = "MS", default_value_t = 2000)]
    retransmit_initial_ms: u64,
    /// A UE that misses the new MSK this many seconds after the rotation
    /// asks for it over Ua, and again as often (0: never). Default: 5 with
    /// --loss, never without (the BM-SC's retransmissions deliver).
    #[arg(long, value_name = "SECONDS")]
    request_after: Option<f64>,
    /// Give up after this many seconds of waiting for the deliveries.
    #[arg(long, value_name = "SECONDS", default_value_t = 600)]
    timeout: u64,
    /// Draw the rotation into an SVG chart: UEs holding the new MSK and
    /// acknowledgements over time, retransmissions and losses marked.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<std::path::PathBuf>,
    /// Crash test: once this fraction of the UEs hold the new MSK, SIGKILL
    /// the BM-SC and restart it at once (same configuration, store and
    /// ports). The key group charges (4-way procedure); the run fails
    /// unless every UE ends holding the new MSK active, no UE saw a
    /// counter twice or going backwards, and every UE is charged exactly
    /// once for the new MSK.
    /// With --bmsc-instances K > 1 the anchor of the key group is killed
    /// instead (`GET /admin/v1/cluster`) and stays dead: the survivors
    /// take over (the failover time is reported).
    #[arg(long, value_name = "F", value_parser = parse_kill_fraction)]
    kill_bmsc_at: Option<f64>,
    /// Run K BM-SC instances on one PostgreSQL database (needs
    /// --postgres); the UEs register and ask at instance i mod K (round
    /// robin), the rotation goes through any instance.
    #[arg(long, value_name = "K", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=16))]
    bmsc_instances: u64,
    #[command(flatten)]
    cluster: crate::cluster_args::ClusterArgs,
    /// With --bmsc-instances K > 1: start the UEs at once, while the
    /// instances still share out the UE shards (default: once they have,
    /// for clean measurements).
    #[arg(long)]
    no_wait_settled: bool,
}

fn parse_kill_fraction(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("not a number: {s}"))?;
    if v > 0.0 && v < 1.0 {
        Ok(v)
    } else {
        Err("must be above 0 and below 1".into())
    }
}

fn parse_fraction(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("not a number: {s}"))?;
    if (0.0..1.0).contains(&v) {
        Ok(v)
    } else {
        Err("must be at least 0 and below 1".into())
    }
}

/// Runs `mbms bench rekey`.
pub fn run(a: RekeyArgs) -> ExitCode {
    let bin = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: cannot find this program's path: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut o = RekeyOptions::new(bin, a.ues as usize);
    o.loss = a.loss;
    o.pace = a.pace;
    o.seed = a.seed;
    o.sockets = a.sockets.map(|s| s as usize);
    o.concurrency = a.concurrency as usize;
    o.retransmit_initial_ms = a.retransmit_initial_ms;
    let request_after = a
        .request_after
        .unwrap_or(if a.loss > 0.0 { 5.0 } else { 0.0 });
    o.request_after = (request_after > 0.0).then(|| Duration::from_secs_f64(request_after));
    o.timeout = Duration::from_secs(a.timeout);
    o.progress = !a.json || std::io::IsTerminal::is_terminal(&std::io::stderr());
    o.timeline = a.plot.is_some();
    o.kill_bmsc_at = a.kill_bmsc_at;
    o.postgres = match a.cluster.postgres_for(a.bmsc_instances) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    o.bmsc_instances = a.bmsc_instances as usize;
    o.lease_ms = a.cluster.lease_ms;
    o.no_wait_settled = a.no_wait_settled;
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(rekey::run(&o)) {
        Ok(r) => {
            let cmd = mbms_bench::plot::command_line(
                std::env::args_os().map(|a| a.to_string_lossy().into_owned()),
            );
            if let Some(Err(e)) = a
                .plot
                .as_ref()
                .map(|p| mbms_bench::plot::write(p, &r, &cmd))
            {
                eprintln!("error: --plot: {e}");
                return ExitCode::FAILURE;
            }
            if a.json {
                println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            } else {
                print!("{}", text(&r));
            }
            if r.every_ue_holds_new_msk && r.kill.as_ref().is_none_or(|k| k.passed) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn text(r: &RekeyReport) -> String {
    let mut t = figures(r);
    if let Some(k) = &r.kill {
        t.push_str(&format!(
            "kill:   SIGKILL at {:.3} s ({} of {} UEs held the new MSK active, {} had it pushed{}); restarted BM-SC's first MIKEY datagram {}, /healthz after {:.3} s\n\
             \x20       {} datagrams from the killed BM-SC, {} MSK messages sent after the restart ({} retransmissions)\n\
             checks: {} counter violations; {} of {} UEs hold the new MSK active; {} charging records, {} UEs charged once, {} more than once: {}\n",
            k.killed_after_s,
            k.holders_at_kill,
            r.ues,
            k.pushed_at_kill,
            if k.mid_rotation { ": mid-rotation" } else { ": NOT mid-rotation" },
            k.restart_s.map_or("never".to_owned(), |s| format!("after {s:.3} s")),
            k.healthy_s,
            k.datagrams_before_kill,
            k.messages_after_restart,
            k.retransmissions_after_restart,
            k.counter_violations,
            k.ues_active,
            r.ues,
            k.charging_records,
            k.ues_charged_once,
            k.ues_charged_twice,
            if k.passed { "passed" } else { "FAILED" },
        ));
        if let Some(f) = &k.failover {
            t.push_str(&format!(
                "failover: {} of {} instances killed (the anchor); a survivor named the anchor after {}; every UE active {:.3} s after the SIGKILL\n",
                f.killed_instance,
                f.instances,
                f.takeover_s.map_or("never".to_owned(), |s| format!("{s:.3} s")),
                f.every_ue_active_s,
            ));
        }
    }
    t
}

fn figures(r: &RekeyReport) -> String {
    let s = &r.setup;
    let k = &r.rekey;
    format!(
        "mbms bench rekey: {} UEs, loss {}, {} swarm sockets ({} KiB buffers), {} CPUs\n\
         setup:  import {:.2} s; bootstrap {:.2} s ({:.0}/s); register {:.2} s ({:.0}/s); settle {:.2} s\n\
         rekey:  {:.3} s (every UE holds the new MSK after {:.3} s; {} of {} hold it)\n\
         BM-SC:  {} MSK messages sent, {} retransmissions, {} acks accepted of {} processed, {} given up\n\
         swarm:  {} datagrams in, {} acks out, {} dropped by --loss in / {} out, {} MSK requests, {} refused\n\
         kernel: UDP drops during the rekey: {} receive-buffer, {} send-buffer (setup: {} / {})\n\
         memory: BM-SC RSS {} -> {} KiB, {:.0} bytes per registered UE\n\
         CPU s:  rekey BM-SC {:.2}, BSF {:.2}, swarm {:.2} ({:.2} us/UE, {:.2} us busy per message); setup BM-SC {:.2}, BSF {:.2}, swarm {:.2} ({:.1} us/UE)\n\
         msk-request: {} requests in {:.3} s ({:.0}/s, {} failed); BM-SC CPU {:.2} s\n\
         BM-SC instances: {} on {}; CPU s per instance: rekey {}; msk-request {}\n{}",
        r.ues, r.loss, r.sockets, r.socket_buffer / 1024, r.cpus,
        s.import_s, s.bootstrap_s, s.bootstraps_per_s, s.register_s, s.registrations_per_s, s.settle_s,
        k.seconds, k.all_hold_s, k.ues_holding, r.ues,
        k.messages_sent, k.retransmissions, k.acks_accepted, k.acks_processed, k.give_ups,
        k.swarm.datagrams_received, k.swarm.acks_sent, k.swarm.dropped_in, k.swarm.dropped_out, k.swarm.msk_requests, k.swarm.refused,
        r.udp_drops_rekey.rcvbuf_errors, r.udp_drops_rekey.sndbuf_errors, r.udp_drops_setup.rcvbuf_errors, r.udp_drops_setup.sndbuf_errors,
        r.memory.bmsc_rss_before_kib, r.memory.bmsc_rss_after_kib, r.memory.bmsc_bytes_per_ue,
        r.cpu_rekey.bmsc_s, r.cpu_rekey.bsf_s, r.cpu_rekey.swarm_s, r.swarm_cpu_us_per_ue_rekey, r.swarm_us_per_message,
        r.cpu_setup.bmsc_s, r.cpu_setup.bsf_s, r.cpu_setup.swarm_s, r.swarm_cpu_us_per_ue_setup,
        r.msk_request.requests, r.msk_request.seconds, r.msk_request.per_s, r.msk_request.errors, r.msk_request.cpu.bmsc_s,
        r.bmsc_instances, r.store, per_instance(&r.cpu_rekey.bmsc_instances_s), per_instance(&r.msk_request.cpu.bmsc_instances_s),
        r.msk_request.first_error.as_ref().map_or(String::new(), |e| format!("msk-request: first failure: {e}\n")),
    )
}

fn per_instance(cpu: &[f64]) -> String {
    cpu.iter()
        .map(|c| format!("{c:.2}"))
        .collect::<Vec<_>>()
        .join(" / ")
}

/// Options of `mbms bench http`.
#[derive(Args, Debug)]
pub struct HttpArgs {
    /// Concurrent keep-alive connections (one swarm UE each on the BM-SC).
    #[arg(long, value_name = "C", default_value_t = 64,
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    connections: u64,
    /// Seconds per measurement.
    #[arg(long, value_name = "SECONDS", default_value_t = 3.0)]
    seconds: f64,
    /// Measurements of each server, alternating (the report gives the
    /// medians).
    #[arg(long, value_name = "N", default_value_t = 3,
          value_parser = clap::value_parser!(u64).range(1..=100))]
    rounds: u64,
    /// The BM-SC's async worker threads (`mbms bmsc --worker-threads`);
    /// 0: its default, one per CPU.
    #[arg(long, value_name = "N",
          default_value_t = mbms_bench::http::BMSC_WORKER_THREADS as u64,
          value_parser = clap::value_parser!(u64).range(0..=1024))]
    bmsc_worker_threads: u64,
    /// Print the report as JSON (schema "mbms-bench-http/2").
    #[arg(long)]
    json: bool,
}

/// Runs `mbms bench http`.
pub fn run_http(a: HttpArgs) -> ExitCode {
    let bin = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: cannot find this program's path: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut o = mbms_bench::http::HttpOptions::new(bin);
    o.connections = a.connections as usize;
    o.seconds = a.seconds;
    o.rounds = a.rounds as usize;
    o.bmsc_worker_threads = (a.bmsc_worker_threads > 0).then_some(a.bmsc_worker_threads as usize);
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(mbms_bench::http::run(&o)) {
        Ok(r) => {
            if a.json {
                println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            } else {
                let rounds = |r: &mbms_bench::http::Rate| {
                    r.rounds.iter().map(|x| x.round()).collect::<Vec<_>>()
                };
                let cpu = &r.cpu_us_per_request;
                let sw = &r.voluntary_switches_per_request;
                let f = &r.floor_counts;
                println!(
                    "mbms bench http: {} connections, {} s x {} rounds, {} CPUs\n\
                     BM-SC msk-request (Digest): {:.0} req/s (rounds {:?}, {} errors)\n\
                     axum hello:                 {:.0} req/s (rounds {:?}, {} errors)\n\
                     hello+udp (floor):          {:.0} req/s (rounds {:?}, {} errors)\n\
                     hello+udp+commit:           {:.0} req/s (rounds {:?}, {} errors)\n\
                     ratio BM-SC / hello: {:.2}; BM-SC / hello+udp (ratio_to_floor): {:.2}; \
                     BM-SC / hello+udp+commit: {:.2}; hello+udp / hello: {:.2}\n\
                     CPU per request: BM-SC {:.1} us + generator {:.1} us; hello (server and generator) {:.1} us; \
                     hello+udp {:.1} us; hello+udp+commit {:.1} us\n\
                     voluntary context switches per request: BM-SC {:.2} + generator {:.2}; hello {:.2}; \
                     hello+udp {:.2}; hello+udp+commit {:.2}\n\
                     floor datagrams: hello+udp {} sent, {} replies read; hello+udp+commit {} sent, {} replies read, \
                     {} rows in {} transactions",
                    r.connections,
                    r.seconds,
                    r.bmsc.rounds.len(),
                    r.cpus,
                    r.bmsc.median_per_s,
                    rounds(&r.bmsc),
                    r.bmsc.errors,
                    r.hello.median_per_s,
                    rounds(&r.hello),
                    r.hello.errors,
                    r.hello_udp.median_per_s,
                    rounds(&r.hello_udp),
                    r.hello_udp.errors,
                    r.hello_udp_commit.median_per_s,
                    rounds(&r.hello_udp_commit),
                    r.hello_udp_commit.errors,
                    r.ratio,
                    r.ratio_to_floor,
                    r.ratio_to_commit_floor,
                    r.floor_to_hello,
                    cpu.bmsc,
                    cpu.generator,
                    cpu.hello,
                    cpu.hello_udp,
                    cpu.hello_udp_commit,
                    sw.bmsc,
                    sw.generator,
                    sw.hello,
                    sw.hello_udp,
                    sw.hello_udp_commit,
                    f.hello_udp_sent,
                    f.hello_udp_replies,
                    f.hello_udp_commit_sent,
                    f.hello_udp_commit_replies,
                    f.rows,
                    f.transactions,
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
