//! The `mbms bsf` command: run the BSF, and manage its subscribers.
//!
//! ```text
//! mbms bsf --config FILE [--listen ADDR] [--db PATH] [--fqdn FQDN] [--init] [--log-format text|json]
//! mbms bsf run --config FILE ...                     (same)
//! mbms bsf subscriber add    --db PATH --impi IMPI --k HEX --opc HEX [--sqn N] [--amf HEX] [--gba-type gba_me|gba_u]
//! mbms bsf subscriber list   --db PATH [--show-secrets]
//! mbms bsf subscriber remove --db PATH --impi IMPI
//! mbms bsf subscriber import --db PATH FILE.csv      (header: impi,k,opc,sqn,amf[,gba_type])
//! ```
//!
//! Every subscriber command also accepts `--config FILE` instead of `--db`
//! and then uses the configuration's database.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Subcommand};
use tracing::info;

use crate::config::{parse_subscriber, BsfConfig, ConfigError};
use crate::server::Bsf;
use crate::sqlite::SqliteStore;
use crate::store::{GbaType, Store, StoreError, Subscriber};
use mbms_service::db::Create;

/// `mbms bsf`: the GBA Bootstrapping Server Function (TS 33.220, TS 24.109
/// Ub, JSON Zn). Without a subcommand it runs the server.
#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct BsfArgs {
    /// What to do; without one, `mbms bsf --config FILE` starts the server.
    #[command(subcommand)]
    pub command: Option<BsfCommand>,
    /// Server options (when no subcommand is given).
    #[command(flatten)]
    pub run: RunArgs,
}

/// Subcommands of `mbms bsf`.
#[derive(Subcommand, Debug)]
pub enum BsfCommand {
    /// Start the BSF (the same as `mbms bsf --config FILE`).
    Run(RunArgs),
    /// Manage the subscribers (IMPI, K, OPc, SQN, AMF) in the BSF database.
    #[command(subcommand)]
    Subscriber(SubscriberCommand),
}

/// Options of the server.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// TOML configuration file (see examples/bsf.toml and docs/bsf.md):
    /// fqdn, listen, db, session_lifetime, nonce_lifetime, purge_interval,
    /// zn_token and `[[subscriber]]` entries to provision.
    #[arg(long, short = 'c', value_name = "FILE", required = true)]
    pub config: Option<PathBuf>,
    /// Listen address, overriding `listen` (e.g. 127.0.0.1:8080; port 0
    /// picks a free port, printed in the log).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// SQLite database file, overriding `db`. It holds K, OPc and Ks and is
    /// created with mode 0600.
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// BSF FQDN (Digest realm and B-TID suffix), overriding `fqdn`.
    #[arg(long, value_name = "FQDN")]
    pub fqdn: Option<String>,
    /// Key lifetime of bootstrapping sessions in seconds, overriding
    /// `session_lifetime`.
    #[arg(long, value_name = "SECONDS")]
    pub session_lifetime: Option<u64>,
    /// Create a new, empty database at the configured path and exit
    /// without starting the server. Works where no file exists or on a
    /// 0-byte file; refuses any file with content (valid or not): it never
    /// overwrites data. Without --init, a database is created only where
    /// no file exists, and an existing one is checked at every start.
    #[arg(long)]
    pub init: bool,
    /// Logging options.
    #[command(flatten)]
    pub log: mbms_service::LogArgs,
}

/// Where the subscriber commands find the database.
#[derive(Args, Debug, Clone)]
pub struct DbArgs {
    /// SQLite database of the BSF (created with mode 0600 if missing).
    #[arg(long, value_name = "PATH", required_unless_present = "config")]
    pub db: Option<PathBuf>,
    /// Use the database named in this BSF configuration file.
    #[arg(long, short = 'c', value_name = "FILE", conflicts_with = "db")]
    pub config: Option<PathBuf>,
}

/// `mbms bsf subscriber ...`.
#[derive(Subcommand, Debug)]
pub enum SubscriberCommand {
    /// Add one subscriber (fails if the IMPI exists).
    Add(AddArgs),
    /// List subscribers (IMPI, SQN, AMF, GBA type); K and OPc only with
    /// --show-secrets.
    List(ListArgs),
    /// Remove a subscriber and its bootstrapping sessions.
    Remove(RemoveArgs),
    /// Import subscribers from a CSV file with the header line
    /// `impi,k,opc,sqn,amf` (optionally `,gba_type`), all or nothing.
    Import(ImportArgs),
}

/// `subscriber add`.
#[derive(Args, Debug)]
pub struct AddArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub db: DbArgs,
    /// IMPI, e.g. user1_private@home1.net.
    #[arg(long)]
    pub impi: String,
    /// K, 32 hex digits.
    #[arg(long, value_name = "HEX")]
    pub k: String,
    /// OPc, 32 hex digits.
    #[arg(long, value_name = "HEX")]
    pub opc: String,
    /// Initial SQN_HE; the first vector uses SQN + 1.
    #[arg(long, default_value_t = 0)]
    pub sqn: u64,
    /// AMF, 4 hex digits.
    #[arg(long, value_name = "HEX", default_value = "8000")]
    pub amf: String,
    /// gba_me (Ks_NAF only on Zn) or gba_u (also Ks_int_NAF).
    #[arg(long, value_name = "TYPE", default_value = "gba_me")]
    pub gba_type: String,
}

/// `subscriber list`.
#[derive(Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub db: DbArgs,
    /// Also print K and OPc.
    #[arg(long)]
    pub show_secrets: bool,
}

/// `subscriber remove`.
#[derive(Args, Debug)]
pub struct RemoveArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub db: DbArgs,
    /// The IMPI to remove.
    #[arg(long)]
    pub impi: String,
}

/// `subscriber import`.
#[derive(Args, Debug)]
pub struct ImportArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub db: DbArgs,
    /// CSV file: header `impi,k,opc,sqn,amf[,gba_type]`, then one
    /// subscriber per line; blank lines and lines starting with # are
    /// skipped.
    #[arg(value_name = "FILE.csv")]
    pub file: PathBuf,
}

/// Errors of the `mbms bsf` command.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// Configuration problem.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Store problem.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Bad command-line or file input.
    #[error("{0}")]
    Input(String),
    /// I/O (binding the socket, reading a file...).
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Runs `mbms bsf ...`.
pub async fn run(args: BsfArgs) -> Result<(), CliError> {
    match args.command {
        None => run_server(args.run).await,
        Some(BsfCommand::Run(r)) => run_server(r).await,
        Some(BsfCommand::Subscriber(cmd)) => {
            let out = tokio::task::spawn_blocking(move || subscriber_command(cmd))
                .await
                .map_err(|e| CliError::Input(format!("internal error: {e}")))??;
            print!("{out}");
            Ok(())
        }
    }
}

/// Resolves on SIGINT or SIGTERM. The handlers are registered when this is
/// called (not when the future is first polled), so a signal that arrives
/// right after start-up, e.g. just after READY=1, still stops the BSF
/// gracefully.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    let signal = mbms_service::shutdown_signal();
    async move {
        signal.await;
        mbms_service::notify_stopping();
        info!("shutdown signal received, finishing running requests");
    }
}

/// Loads the configuration and applies the command-line overrides.
pub fn load_config(args: &RunArgs) -> Result<BsfConfig, CliError> {
    let path = args
        .config
        .as_deref()
        .ok_or_else(|| CliError::Input("--config FILE is required".into()))?;
    let mut cfg = BsfConfig::load(path)?;
    if let Some(l) = args.listen {
        cfg.listen = l;
    }
    if let Some(db) = &args.db {
        cfg.db = db.clone();
    }
    if let Some(f) = &args.fqdn {
        cfg.fqdn = f.clone();
    }
    if let Some(s) = args.session_lifetime {
        cfg.session_lifetime = s;
    }
    cfg.validate()?;
    Ok(cfg)
}

async fn run_server(args: RunArgs) -> Result<(), CliError> {
    mbms_service::init_tracing(args.log.log_format);
    let stop = shutdown_signal();
    let cfg = load_config(&args)?;
    // One server per database file (two would issue authentication
    // vectors from the same stored SQNs).
    let _serving = mbms_service::db::ServingLock::acquire(&cfg.db).map_err(StoreError::from)?;
    if args.init {
        let db_path = cfg.db.clone();
        tokio::task::spawn_blocking(move || SqliteStore::open_with(&db_path, Create::Init))
            .await
            .map_err(|e| CliError::Input(format!("internal error: {e}")))??;
        println!("initialised the database {}", cfg.db.display());
        return Ok(());
    }
    let subscribers = cfg.provisioned_subscribers()?;
    let db_path = cfg.db.clone();
    let store = tokio::task::spawn_blocking(move || -> Result<SqliteStore, StoreError> {
        let store = SqliteStore::open(&db_path)?;
        let added = store.provision_subscribers(&subscribers)?;
        let purged = store.purge_expired_sessions(crate::unix_now())?;
        info!(
            db = %db_path.display(),
            provisioned = added,
            purged,
            "database opened"
        );
        Ok(store)
    })
    .await
    .map_err(|e| CliError::Input(format!("internal error: {e}")))??;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| CliError::Io {
            context: format!("cannot listen on {}", cfg.listen),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| CliError::Io {
        context: "local address".into(),
        source,
    })?;
    info!(
        fqdn = %cfg.fqdn,
        listen = %addr,
        session_lifetime = cfg.session_lifetime,
        "BSF listening (Ub on GET /, Zn on POST /zn/v1/naf-keys)"
    );
    mbms_service::notify_ready();
    Bsf::new(cfg.settings(), Arc::new(store))
        .serve(listener, stop)
        .await
        .map_err(|source| CliError::Io {
            context: "server".into(),
            source,
        })?;
    info!("BSF stopped");
    Ok(())
}

fn db_path(args: &DbArgs) -> Result<PathBuf, CliError> {
    match (&args.db, &args.config) {
        (Some(db), _) => Ok(db.clone()),
        (None, Some(cfg)) => Ok(BsfConfig::load(cfg)?.db),
        (None, None) => Err(CliError::Input(
            "--db PATH or --config FILE is required".into(),
        )),
    }
}

fn open(args: &DbArgs) -> Result<SqliteStore, CliError> {
    Ok(SqliteStore::open(&db_path(args)?)?)
}

/// Runs a subscriber command and returns what it prints.
pub fn subscriber_command(cmd: SubscriberCommand) -> Result<String, CliError> {
    match cmd {
        SubscriberCommand::Add(a) => {
            let gba_type: GbaType = a.gba_type.parse()?;
            let sub = parse_subscriber(&a.impi, &a.k, &a.opc, a.sqn, Some(&a.amf), gba_type)
                .map_err(CliError::Input)?;
            open(&a.db)?.add_subscribers(std::slice::from_ref(&sub))?;
            Ok(format!("added {}\n", sub.impi))
        }
        SubscriberCommand::List(a) => {
            let subs = open(&a.db)?.subscribers()?;
            Ok(format_list(&subs, a.show_secrets))
        }
        SubscriberCommand::Remove(a) => {
            if open(&a.db)?.remove_subscriber(&a.impi)? {
                Ok(format!("removed {}\n", a.impi))
            } else {
                Err(StoreError::UnknownSubscriber(a.impi).into())
            }
        }
        SubscriberCommand::Import(a) => {
            let subs = read_csv(&a.file)?;
            open(&a.db)?.add_subscribers(&subs)?;
            Ok(format!(
                "imported {} subscriber(s) from {}\n",
                subs.len(),
                a.file.display()
            ))
        }
    }
}

/// The subscriber table; K and OPc only when `show_secrets`.
pub fn format_list(subs: &[Subscriber], show_secrets: bool) -> String {
    let width = subs
        .iter()
        .map(|s| s.impi.len())
        .chain([4])
        .max()
        .unwrap_or(4);
    let mut out = format!(
        "{:<width$}  {:>15}  {:4}  {:6}",
        "IMPI", "SQN", "AMF", "GBA"
    );
    if show_secrets {
        out.push_str(&format!("  {:32}  {:32}", "K", "OPc"));
    }
    out.push('\n');
    for s in subs {
        let _ = write!(
            out,
            "{:<width$}  {:>15}  {:4}  {:6}",
            s.impi,
            s.sqn.value(),
            hex::encode(s.amf),
            s.gba_type
        );
        if show_secrets {
            let _ = write!(
                out,
                "  {}  {}",
                hex::encode(s.k.as_bytes()),
                hex::encode(s.opc.as_bytes())
            );
        }
        out.push('\n');
    }
    if subs.is_empty() {
        out.push_str("(no subscribers)\n");
    }
    out
}

/// Reads a subscriber CSV file (see [`parse_csv`]).
pub fn read_csv(path: &Path) -> Result<Vec<Subscriber>, CliError> {
    let text = std::fs::read_to_string(path).map_err(|source| CliError::Io {
        context: format!("cannot read {}", path.display()),
        source,
    })?;
    parse_csv(&text).map_err(|e| CliError::Input(format!("{}: {e}", path.display())))
}

/// Parses subscriber CSV: a header line `impi,k,opc,sqn,amf` (optionally
/// `,gba_type`), then one subscriber per line. Blank lines and `#` comments
/// are skipped; fields are trimmed; no quoting. The whole file is checked
/// (including duplicate IMPIs) before anything is returned.
pub fn parse_csv(text: &str) -> Result<Vec<Subscriber>, String> {
    const REQUIRED: [&str; 5] = ["impi", "k", "opc", "sqn", "amf"];
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'));
    let (_, header) = lines
        .next()
        .ok_or("empty file: expected the header impi,k,opc,sqn,amf")?;
    let columns: Vec<String> = header
        .split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .collect();
    let with_type = columns.len() == 6 && columns[5] == "gba_type";
    if columns[..columns.len().min(5)] != REQUIRED || !(columns.len() == 5 || with_type) {
        return Err(format!(
            "line 1: header must be `impi,k,opc,sqn,amf` (optionally `,gba_type`), got `{header}`"
        ));
    }
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (n, line) in lines {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if f.len() != columns.len() {
            return Err(format!(
                "line {n}: expected {} fields, got {}",
                columns.len(),
                f.len()
            ));
        }
        let sqn: u64 = f[3]
            .parse()
            .map_err(|_| format!("line {n}: SQN {:?} is not a decimal number", f[3]))?;
        let gba_type = if with_type {
            f[5].parse().map_err(|e| format!("line {n}: {e}"))?
        } else {
            GbaType::GbaMe
        };
        let sub = parse_subscriber(f[0], f[1], f[2], sqn, Some(f[4]), gba_type)
            .map_err(|e| format!("line {n}: {e}"))?;
        if !seen.insert(sub.impi.clone()) {
            return Err(format!("line {n}: duplicate IMPI {}", sub.impi));
        }
        out.push(sub);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: &str = "465b5ce8b199b49faa5f0a2ee238a6bc";
    const OPC: &str = "cd63cb71954a9f4e48a5994e37a02baf";

    #[test]
    fn csv_parsing() {
        let text = format!(
            "# subscribers\nimpi,k,opc,sqn,amf\n\na@x,{K},{OPC},0,8000\nb@x, {K} ,{OPC},42,b9b9\n"
        );
        let subs = parse_csv(&text).unwrap();
        assert_eq!(subs.len(), 2);
        assert_eq!(subs[1].sqn.value(), 42);
        assert_eq!(subs[1].amf, [0xb9, 0xb9]);
        let typed = format!("impi,k,opc,sqn,amf,gba_type\na@x,{K},{OPC},0,8000,gba_u\n");
        assert_eq!(parse_csv(&typed).unwrap()[0].gba_type, GbaType::GbaU);
        for bad in [
            String::new(),
            format!("impi,opc,k,sqn,amf\na@x,{K},{OPC},0,8000\n"),
            format!("impi,k,opc,sqn,amf\na@x,{K},{OPC},0\n"),
            format!("impi,k,opc,sqn,amf\na@x,{K},{OPC},-1,8000\n"),
            format!("impi,k,opc,sqn,amf\na@x,{K},zz,0,8000\n"),
            format!("impi,k,opc,sqn,amf\na@x,{K},{OPC},0,80\n"),
            format!("impi,k,opc,sqn,amf\na@x,{K},{OPC},0,8000\na@x,{K},{OPC},0,8000\n"),
        ] {
            assert!(parse_csv(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn list_hides_secrets() {
        let subs = parse_csv(&format!("impi,k,opc,sqn,amf\na@x,{K},{OPC},7,8000\n")).unwrap();
        let plain = format_list(&subs, false);
        assert!(plain.contains("a@x") && !plain.contains(K) && !plain.contains(OPC));
        let shown = format_list(&subs, true);
        assert!(shown.contains(K) && shown.contains(OPC));
    }
}
