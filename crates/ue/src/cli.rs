//! The `mbms ue` command.
//!
//! ```text
//! mbms ue bootstrap --bsf URL --impi IMPI --k HEX --opc HEX [--sqn N]
//!                   [--naf FQDN] [--bsf-fqdn FQDN] [--json] [--show-secrets]
//! ```

use clap::{Args, Subcommand};
use serde_json::json;
use zeroize::Zeroizing;

use gba::{Opc, Sqn48, SubscriberKey, Usim};

use crate::bootstrap::{BootstrapClient, BootstrapError, DEFAULT_NAF_FQDN};

/// `mbms ue`: the MBMS UE (for now: GBA bootstrapping only).
#[derive(Args, Debug)]
pub struct UeArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: UeCommand,
}

/// Subcommands of `mbms ue`.
#[derive(Subcommand, Debug)]
pub enum UeCommand {
    /// Run GBA bootstrapping (Ub, TS 24.109) against a BSF and print the
    /// B-TID and key lifetime; with --show-secrets also Ks_NAF, MRK and MUK
    /// for a NAF (BM-SC).
    ///
    /// Exit status: 0 bootstrapped; 1 failure (network authentication
    /// failure, BSF refusal, transport error, bad input).
    Bootstrap(BootstrapArgs),
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
}

/// Runs `mbms ue ...`, printing the result on standard output.
pub async fn run(args: UeArgs) -> Result<(), CliError> {
    match args.command {
        UeCommand::Bootstrap(a) => {
            let out = bootstrap_command(&a).await?;
            print!("{}", &*out);
            Ok(())
        }
    }
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
