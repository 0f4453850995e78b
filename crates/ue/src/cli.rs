//! The `mbms ue` command.
//!
//! ```text
//! mbms ue run --config ue.toml [--deregister-on-exit] [--start-over] [--log-format text|json]
//! mbms ue status (--config ue.toml | --state-dir DIR) [--json]
//! mbms ue bootstrap --bsf URL --impi IMPI --k HEX --opc HEX [--sqn N]
//!                   [--naf FQDN] [--bsf-fqdn FQDN] [--json] [--show-secrets]
//! ```

use std::io::Write as _;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::json;
use zeroize::Zeroizing;

use gba::{Opc, Sqn48, SubscriberKey, Usim};

use crate::bootstrap::{BootstrapClient, BootstrapError, DEFAULT_NAF_FQDN};

/// `mbms ue`: the MBMS UE.
#[derive(Args, Debug)]
pub struct UeArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: UeCommand,
}

/// Subcommands of `mbms ue`.
#[derive(Subcommand, Debug)]
pub enum UeCommand {
    /// Run the UE: bootstrap with the BSF, register to the services of the
    /// service description, keep the MSKs current (push with
    /// acknowledgements, solicited pull, missed key update), decrypt SRTP to
    /// plain RTP (with an SDP file per session for ffplay/VLC) and download
    /// objects to files. Stops on Ctrl-C / SIGTERM.
    ///
    /// Exit status: 0 stopped cleanly; 1 failure (configuration, a missing
    /// or damaged state directory, bootstrapping or registration at start).
    Run(RunArgs),
    /// Show the UE's services, registrations, MSKs (IDs, windows,
    /// active/inactive), MUK counters, MTKs in use, counters and last
    /// errors, read from its state directory (works whether it runs or not).
    Status(StatusArgs),
    /// Run GBA bootstrapping (Ub, TS 24.109) against a BSF and print the
    /// B-TID and key lifetime; with --show-secrets also Ks_NAF, MRK and MUK
    /// for a NAF (BM-SC).
    ///
    /// Exit status: 0 bootstrapped; 1 failure (network authentication
    /// failure, BSF refusal, transport error, bad input).
    Bootstrap(BootstrapArgs),
}

/// `mbms ue run`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// The UE configuration (see examples/ue.toml and docs/ue.md).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// Deregister from every service (and delete their MSKs) on exit.
    #[arg(long)]
    pub deregister_on_exit: bool,
    /// Start over: discard the state directory's B-TID, MUKs, MSKs, MTKs
    /// and registrations (the USIM's SQN is kept) and bootstrap again.
    /// Without it, a state directory whose MGV-S or any other state file is
    /// missing or damaged is refused (exit 1) rather than silently reset.
    #[arg(long)]
    pub start_over: bool,
    /// Logging options.
    #[command(flatten)]
    pub log: mbms_service::LogArgs,
}

/// `mbms ue status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// The UE configuration (its state_dir is read).
    #[arg(long, value_name = "FILE", conflicts_with = "state_dir")]
    pub config: Option<PathBuf>,
    /// The state directory.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Print JSON (schema "mbms-ue-status/1", see docs/ue.md).
    #[arg(long)]
    pub json: bool,
}

/// `mbms ue bootstrap`.
#[derive(Args, Debug)]
pub struct BootstrapArgs {
    /// BSF URL, e.g. http://127.0.0.1:8080 (Ub is served on its path, `/`).
    #[arg(long, value_name = "URL")]
    pub bsf: String,
    /// IMPI of the subscriber, e.g. user1_private@home1.net.
    #[arg(long)]
    pub impi: String,
    /// The USIM's K, 32 hex digits.
    #[arg(long, value_name = "HEX")]
    pub k: String,
    /// The USIM's OPc, 32 hex digits.
    #[arg(long, value_name = "HEX")]
    pub opc: String,
    /// The USIM's highest accepted SQN (SQN_MS). A one-shot command keeps no
    /// state: pass the `sqn_ms` printed by the previous run, or let the BSF
    /// re-synchronise (a lower value than the BSF's triggers AUTS).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub sqn: u64,
    /// NAF (BM-SC) FQDN for the Ks_NAF / MRK / MUK printed with
    /// --show-secrets.
    #[arg(long, value_name = "FQDN", default_value = DEFAULT_NAF_FQDN)]
    pub naf: String,
    /// BSF FQDN sent as realm in the first request (default: bsf. + the
    /// IMPI's domain).
    #[arg(long, value_name = "FQDN")]
    pub bsf_fqdn: Option<String>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// Also print Ks_NAF, MRK and MUK (hex). They are secrets.
    #[arg(long)]
    pub show_secrets: bool,
}

/// Errors of the `mbms ue` command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// Bad command-line input.
    #[error("{0}")]
    Input(String),
    /// Bootstrapping failed.
    #[error("bootstrapping failed")]
    Bootstrap(#[from] BootstrapError),
    /// Key derivation failed.
    #[error("key derivation failed")]
    Kdf(#[from] gba::KdfError),
    /// The configuration could not be used.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The UE failed.
    #[error(transparent)]
    Ue(#[from] crate::runtime::UeError),
    /// The state directory could not be read.
    #[error(transparent)]
    State(#[from] crate::state::StateError),
}

/// Runs `mbms ue ...`, printing the result on standard output.
pub async fn run(args: UeArgs) -> Result<(), CliError> {
    match args.command {
        UeCommand::Run(a) => run_command(&a).await,
        UeCommand::Status(a) => {
            print!("{}", status_command(&a)?);
            Ok(())
        }
        UeCommand::Bootstrap(a) => {
            let out = bootstrap_command(&a).await?;
            print!("{}", &*out);
            Ok(())
        }
    }
}

/// Runs `mbms ue run` until Ctrl-C or SIGTERM.
pub async fn run_command(a: &RunArgs) -> Result<(), CliError> {
    mbms_service::init_tracing(a.log.log_format);
    let mut cfg = crate::config::UeConfig::load(&a.config)?;
    cfg.start_over = a.start_over;
    let deregister = a.deregister_on_exit || cfg.deregister_on_exit;
    let stop = mbms_service::shutdown_signal();
    let ue = crate::runtime::RunningUe::start(cfg).await?;
    // A closed standard output (e.g. a supervisor that read only the first
    // line) must not stop the UE: ignore write errors.
    let _ = writeln!(std::io::stdout(), "{}", started_text(&ue));
    mbms_service::notify_ready();
    stop.await;
    mbms_service::notify_stopping();
    tracing::info!(deregister, "shutdown signal received, stopping");
    ue.shutdown(deregister).await?;
    tracing::info!("UE stopped");
    Ok(())
}

fn started_text(ue: &crate::runtime::RunningUe) -> String {
    let cfg = ue.config();
    let mut s = format!(
        "UE running: MIKEY on {}, state in {}\n",
        ue.mikey_addr(),
        cfg.state_dir.display()
    );
    if let Ok(st) = ue.status() {
        if let Some(b) = &st.btid {
            s.push_str(&format!(
                "B-TID {b} (expires {})\n",
                st.btid_expires.clone().unwrap_or_default()
            ));
        }
        for r in &st.registrations {
            s.push_str(&format!("service {}: {}\n", r.service, r.state));
        }
    }
    for svc in &cfg.service_list {
        for sess in &svc.sessions {
            match sess.kind {
                crate::config::SessionKind::Streaming => s.push_str(&format!(
                    "session {}: SRTP {} -> plain RTP {}; play: ffplay -protocol_whitelist file,udp,rtp -i {}\n",
                    sess.name,
                    sess.srtp_listen.map(|a| a.to_string()).unwrap_or_default(),
                    sess.rtp_output.map(|a| a.to_string()).unwrap_or_default(),
                    cfg.sdp_path(sess).display()
                )),
                crate::config::SessionKind::Download => s.push_str(&format!(
                    "session {}: objects in {} -> files in {}\n",
                    sess.name,
                    sess.input_dir.as_deref().unwrap_or(std::path::Path::new("")).display(),
                    sess.output_dir.as_deref().unwrap_or(std::path::Path::new("")).display()
                )),
            }
        }
    }
    s.trim_end().to_owned()
}

/// Runs `mbms ue status` and returns what it prints.
pub fn status_command(a: &StatusArgs) -> Result<String, CliError> {
    let dir = match (&a.state_dir, &a.config) {
        (Some(d), _) => d.clone(),
        (None, Some(c)) => crate::config::UeConfig::load(c)?.state_dir,
        (None, None) => return Err(CliError::Input("give --config or --state-dir".into())),
    };
    if !dir.is_dir() {
        return Err(CliError::Input(format!(
            "no state directory {} (the UE never ran with this configuration)",
            dir.display()
        )));
    }
    let st = crate::status::read(&dir)?;
    Ok(if a.json {
        serde_json::to_string_pretty(&st).unwrap_or_default() + "\n"
    } else {
        crate::status::to_text(&st)
    })
}

/// Runs `mbms ue bootstrap` and returns what it prints.
pub async fn bootstrap_command(a: &BootstrapArgs) -> Result<Zeroizing<String>, CliError> {
    let k =
        SubscriberKey::from_hex(a.k.trim()).map_err(|e| CliError::Input(format!("--k: {e}")))?;
    let opc = Opc::from_hex(a.opc.trim()).map_err(|e| CliError::Input(format!("--opc: {e}")))?;
    let sqn = Sqn48::new(a.sqn).map_err(|e| CliError::Input(format!("--sqn: {e}")))?;
    if a.naf.trim().is_empty() {
        return Err(CliError::Input("--naf: empty FQDN".into()));
    }
    let mut usim = Usim::new(k, opc, sqn);
    let mut client = BootstrapClient::new(&a.bsf)?;
    if let Some(f) = &a.bsf_fqdn {
        client = client.with_bsf_fqdn(f.clone());
    }
    let b = client.bootstrap(&a.impi, &mut usim).await?;
    let sqn_ms = usim.sqn_ms().value();
    let secrets = if a.show_secrets {
        let (ks_naf, keys) = b.mbms_keys(&a.naf)?;
        Some((
            Zeroizing::new(hex::encode(ks_naf.as_bytes())),
            Zeroizing::new(hex::encode(keys.mrk.as_bytes())),
            Zeroizing::new(hex::encode(keys.muk.as_bytes())),
        ))
    } else {
        None
    };
    let out = if a.json {
        let mut v = json!({
            "btid": b.btid.as_str(),
            "lifetime": b.lifetime,
            "impi": b.impi,
            "sqn_ms": sqn_ms,
        });
        if let Some((ks_naf, mrk, muk)) = &secrets {
            v["naf"] = json!(a.naf);
            v["ks_naf"] = json!(ks_naf.as_str());
            v["mrk"] = json!(mrk.as_str());
            v["muk"] = json!(muk.as_str());
        }
        let mut s = v.to_string();
        s.push('\n');
        Zeroizing::new(s)
    } else {
        let mut s = format!(
            "B-TID:    {}\nlifetime: {}\nSQN_MS:   {sqn_ms}\n",
            b.btid, b.lifetime
        );
        if let Some((ks_naf, mrk, muk)) = &secrets {
            s.push_str(&format!(
                "NAF:      {}\nKs_NAF:   {}\nMRK:      {}\nMUK:      {}\n",
                a.naf,
                ks_naf.as_str(),
                mrk.as_str(),
                muk.as_str()
            ));
        }
        Zeroizing::new(s)
    };
    Ok(out)
}
