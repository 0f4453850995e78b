//! `mbms demo`: runs the scenario of the `mbms-demo` crate and prints the
//! table (or the `mbms-demo/1` JSON object, `docs/demo.md`).

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use mbms_demo::{DemoOptions, Progress};

/// Exit status of a demo stopped by SIGINT or SIGTERM (128 + SIGINT, as a
/// shell reports an interrupted command).
const EXIT_SIGNALLED: u8 = 130;

/// `mbms demo` arguments.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Number of UEs (at least 2).
    #[arg(long, default_value_t = 10)]
    ues: usize,
    /// Print the report as JSON (schema mbms-demo/1) instead of the table.
    #[arg(long)]
    json: bool,
    /// Write every MIKEY, MTK and SRTP datagram of the run to this pcap file.
    #[arg(long, value_name = "FILE")]
    pcap: Option<PathBuf>,
    /// Write the keys of the run (MUK, MSK, MTK lines) to this key log; it
    /// holds secrets (mode 0600).
    #[arg(long, value_name = "FILE")]
    keylog: Option<PathBuf>,
    /// Use free UDP ports instead of 2269 (MIKEY), 5008 (MTK) and 5006
    /// (SRTP), e.g. to run next to another demo or a service that holds
    /// them; the table names the ports used.
    #[arg(long)]
    free_ports: bool,
    /// Write a self-contained HTML page with the results table and a
    /// sequence chart per procedure (UE, BM-SC, BSF), drawn from the run's
    /// messages (docs/demo.md). It holds key identifiers, never keys.
    #[arg(long, value_name = "FILE.html")]
    report: Option<PathBuf>,
    /// Scale-out (docs/scale-out.md): the whole scenario with the BM-SC as
    /// K `mbms bmsc` processes on one PostgreSQL database (needs
    /// --postgres) behind a round-robin load balancer, the anchor of key
    /// group 1 killed (SIGKILL) in the middle of its rotation; succeeds
    /// only if every procedure does on the survivors, every UE ends with
    /// the current MSK, no counter was used twice and every UE is charged
    /// exactly once.
    #[arg(long, value_name = "K", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=16))]
    bmsc_instances: u64,
    #[command(flatten)]
    cluster: crate::cluster_args::ClusterArgs,
}

/// Runs the demo; exit 0 only if every procedure succeeded for every UE.
pub fn run(a: DemoArgs) -> ExitCode {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .try_init();
    }
    let tty = std::io::stderr().is_terminal();
    let progress = move |p: Progress| {
        let mut e = std::io::stderr().lock();
        match p {
            Progress::Procedure { name, index, total } => {
                if tty {
                    let _ = write!(e, "\r\x1b[2K");
                }
                let _ = writeln!(e, "[{index:>2}/{total}] {name}");
            }
            Progress::Ues { done, total } if tty => {
                let width = 30;
                let fill = (done * width).checked_div(total).unwrap_or(0);
                let _ = write!(
                    e,
                    "\r\x1b[2K        [{}{}] {done}/{total} UEs",
                    "#".repeat(fill),
                    "-".repeat(width - fill)
                );
                let _ = e.flush();
            }
            Progress::Ues { .. } => {}
            Progress::Note(m) => {
                let _ = writeln!(e, "\nnote: {m}");
            }
        }
    };
    let postgres = match a.cluster.postgres_for(a.bmsc_instances) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if postgres.is_some() && a.bmsc_instances == 1 {
        // The single-instance demo runs its BM-SC in process on SQLite.
        eprintln!("error: --postgres is for --bmsc-instances above 1");
        return ExitCode::FAILURE;
    }
    let deployment = if let Some(postgres) = postgres {
        let mbms_bin = match std::env::current_exe() {
            Ok(p) => p,
            Err(e) => {
                eprintln!("error: cannot find this program's path: {e}");
                return ExitCode::FAILURE;
            }
        };
        mbms_demo::Deployment::Processes(mbms_demo::Processes {
            instances: a.bmsc_instances as usize,
            postgres,
            mbms_bin,
            lease_ms: a.cluster.lease_ms,
        })
    } else {
        mbms_demo::Deployment::InProcess
    };
    // The run's databases and UE state hold K, OPc, Ks, MUKs and MSKs: a
    // 0700 folder that we remove on every way out, SIGINT and SIGTERM
    // included (the services are stopped first, then the folder goes; with
    // several instances their database is dropped too).
    let work_dir = match mbms_demo::private_temp_dir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("error: temporary folder: {e}");
            return ExitCode::FAILURE;
        }
    };
    let opts = DemoOptions {
        ues: a.ues,
        pcap: a.pcap,
        keylog: a.keylog,
        work_dir: Some(work_dir.path().to_path_buf()),
        ports: mbms_demo::DemoPorts::DEFAULT,
        free_ports: a.free_ports,
        deployment,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(mbms_demo::worker_threads())
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = rt.block_on(async {
        let signal = mbms_service::shutdown_signal();
        tokio::select! {
            r = run_demo(opts, &progress, a.report.is_some()) => Some(r),
            () = signal => None,
        }
    });
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    let removed = work_dir.close();
    if tty {
        eprint!("\r\x1b[2K");
    }
    let Some(report) = outcome else {
        match removed {
            Ok(()) => eprintln!("stopped by a signal; the temporary folder was removed"),
            Err(e) => eprintln!("stopped by a signal; removing the temporary folder: {e}"),
        }
        return ExitCode::from(EXIT_SIGNALLED);
    };
    if let Err(e) = removed {
        eprintln!("warning: removing the temporary folder: {e}");
    }
    match report {
        Ok((r, recording)) => {
            if let (Some(path), Some(rec)) = (&a.report, recording) {
                let page = mbms_demo::render_html(&r, &rec);
                match std::fs::write(path, page.as_bytes()) {
                    Ok(()) => eprintln!("report: {}", path.display()),
                    Err(e) => {
                        eprintln!("error: writing {}: {e}", path.display());
                        return ExitCode::FAILURE;
                    }
                }
            }
            let out = if a.json {
                serde_json::to_string_pretty(&r).unwrap_or_default() + "\n"
            } else {
                mbms_demo::render_table(&r)
            };
            let _ = std::io::stdout().write_all(out.as_bytes());
            if r.success {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The run, with its recording for the report page when one is asked for.
async fn run_demo(
    opts: DemoOptions,
    progress: &(dyn Fn(Progress) + Send + Sync),
    record: bool,
) -> anyhow::Result<(mbms_demo::DemoReport, Option<mbms_demo::Recording>)> {
    if record {
        let (r, rec) = mbms_demo::run_with_recording(opts, progress).await?;
        Ok((r, Some(rec)))
    } else {
        Ok((mbms_demo::run(opts, progress).await?, None))
    }
}
