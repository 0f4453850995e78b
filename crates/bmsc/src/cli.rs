//! The `mbms bmsc` command.
//!
//! ```text
//! mbms bmsc --config FILE [--listen ADDR] [--mikey-listen ADDR] [--db PATH|URL] [--init]
//!            [--pcap FILE] [--log-format text|json]
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;
use tracing::info;

use crate::config::{BmscConfig, ConfigError};
use crate::server::{self, ServerError};
use crate::store::{self, StoreError};

/// `mbms bmsc`: the BM-SC key management server (TS 33.246): Ua
/// registration and MSK requests with HTTP Digest, MIKEY MSK delivery over
/// UDP, MTK delivery and traffic protection, admin API.
#[derive(Args, Debug, Clone)]
pub struct BmscArgs {
    /// TOML configuration (see examples/bmsc.toml and docs/bmsc.md).
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: PathBuf,
    /// HTTP listen address, overriding `listen` (port 0: any free port).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// MIKEY UDP address, overriding `mikey_listen`.
    #[arg(long, value_name = "ADDR")]
    pub mikey_listen: Option<SocketAddr>,
    /// Database, overriding `db`: a SQLite file (created with mode 0600) or
    /// a postgres:// URL.
    #[arg(long, value_name = "PATH|URL")]
    pub db: Option<String>,
    /// Create a new, empty database and exit without starting the server.
    /// SQLite: where no file exists or on a 0-byte file; any file with
    /// content (valid or not) is refused, --init never overwrites data.
    /// PostgreSQL: in a schema holding none of the BM-SC's tables. Without
    /// --init a database is created only where no file exists (or in an
    /// empty schema), and an existing one is checked at every start.
    #[arg(long)]
    pub init: bool,
    /// Write every MIKEY, MTK and SRTP datagram this instance sends or
    /// receives to this pcap file (the datagram tap; written and flushed
    /// per packet, so a killed process leaves whole packets up to its
    /// end). It holds no keys (see docs/demo.md for the key log).
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,
    /// Async worker threads (default: one per CPU). Fewer wake each other
    /// less when the BM-SC shares the machine with busy neighbours (`mbms
    /// bench http` runs it with 1 beside its load generator); blocking work
    /// (group commits, rotations) has its own threads either way.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub worker_threads: Option<u16>,
    /// Logging options.
    #[command(flatten)]
    pub log: mbms_service::LogArgs,
}

/// Errors of `mbms bmsc`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// Configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Storage.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Server.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// Other.
    #[error("{0}")]
    Other(String),
}

/// Loads the configuration and applies the overrides.
pub fn load_config(args: &BmscArgs) -> Result<BmscConfig, CliError> {
    let mut cfg = BmscConfig::load(&args.config)?;
    if let Some(l) = args.listen {
        cfg.listen = l;
    }
    if let Some(l) = args.mikey_listen {
        cfg.mikey_listen = l;
    }
    if let Some(db) = &args.db {
        cfg.db = db.clone();
    }
    cfg.validate()?;
    Ok(cfg)
}

/// The database for messages (a URL may hold a password: not shown).
fn db_label(db: &str) -> String {
    if store::is_postgres(db) {
        "on PostgreSQL".to_owned()
    } else {
        db.to_owned()
    }
}

/// Runs `mbms bmsc` until SIGINT / SIGTERM.
pub async fn run(args: BmscArgs) -> Result<(), CliError> {
    mbms_service::init_tracing(args.log.log_format);
    let cfg = load_config(&args)?;
    let db = cfg.db.clone();
    let create = if args.init {
        store::Create::Init
    } else {
        store::Create::IfMissing
    };
    // One server per SQLite file (a second one would hand out the same
    // MUK counters); PostgreSQL instances share a database by design.
    let _serving = if store::is_postgres(&db) {
        None
    } else {
        Some(
            mbms_service::db::ServingLock::acquire(std::path::Path::new(&db))
                .map_err(StoreError::from)?,
        )
    };
    let st = tokio::task::spawn_blocking(move || store::open_with(&db, create))
        .await
        .map_err(|e| CliError::Other(format!("internal error: {e}")))??;
    if args.init {
        // Dropped on a blocking thread like every use of the store.
        let _ = tokio::task::spawn_blocking(move || drop(st)).await;
        println!("initialised the database {}", db_label(&cfg.db));
        return Ok(());
    }
    info!(backend = st.backend(), "database opened");
    let stop = mbms_service::shutdown_signal();
    let tap = match &args.pcap {
        Some(p) => Some(pcap_tap(p)?),
        None => None,
    };
    let running = server::start_with_tap(&cfg, st, tap).await?;
    mbms_service::notify_ready();
    stop.await;
    mbms_service::notify_stopping();
    info!("shutdown signal received, finishing running requests");
    running
        .shutdown()
        .await
        .map_err(|e| CliError::Other(format!("server: {e}")))?;
    info!("BM-SC stopped");
    Ok(())
}

/// A [`crate::Tap`] writing each datagram to a pcap file at `path`, one
/// `write` per packet (`mbms bmsc --pcap`).
fn pcap_tap(path: &std::path::Path) -> Result<crate::Tap, CliError> {
    use std::net::SocketAddrV4;
    use std::sync::Mutex;
    let file = std::fs::File::create(path)
        .map_err(|e| CliError::Other(format!("--pcap {}: {e}", path.display())))?;
    let mut w = mbms_capture::PcapWriter::new(std::io::BufWriter::new(file))
        .map_err(|e| CliError::Other(format!("--pcap {}: {e}", path.display())))?;
    w.flush()
        .map_err(|e| CliError::Other(format!("--pcap {}: {e}", path.display())))?;
    let w = Mutex::new(w);
    let v4 = |a: SocketAddr| match a {
        SocketAddr::V4(a) => Some(a),
        SocketAddr::V6(a) => a
            .ip()
            .to_ipv4_mapped()
            .map(|ip| SocketAddrV4::new(ip, a.port())),
    };
    Ok(crate::Tap::new(move |d| {
        let (Some(src), Some(dst)) = (v4(d.src), v4(d.dst)) else {
            return;
        };
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let Ok(mut w) = w.lock() else { return };
        if w.write_udp(time, src, dst, d.bytes).is_ok() {
            let _ = w.flush();
        }
    }))
}
