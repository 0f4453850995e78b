//! Plumbing shared by the async service shells (`bsf`, `bmsc`, `ue`): one
//! place for how they log, stop, create files that hold secrets, open
//! their SQLite databases ([`db`]), serve HTTP within limits ([`http`]),
//! read their configuration files and bearer tokens ([`config`]), read the
//! clock and write times ([`clock`]), serve HTTP Digest ([`digest`]), batch UDP ([`udp`]) and
//! log errors ([`ErrorChain`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod clock;
pub mod config;
pub mod db;
pub mod digest;
pub mod udp;

use std::future::Future;
use std::path::Path;

pub mod http;
pub use http::{serve_http, HttpLimits};

pub use clock::{rfc3339, rfc3339_millis, rfc3339_secs, unix_millis, unix_now};
pub use config::{ConfigError, Token};

/// Displays an error with its chain of causes (`a: b: c`), for logs.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cur = self.0.source();
        while let Some(e) = cur {
            write!(f, ": {e}")?;
            cur = e.source();
        }
        Ok(())
    }
}

/// How log lines are written on standard error (`--log-format`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines: timestamp, level, target, message and the
    /// event's fields as `key=value` (coloured only on a terminal).
    #[default]
    Text,
    /// One JSON object per line: `timestamp` (RFC 3339, UTC), `level`,
    /// `target` and `fields` (the event's fields, its text under
    /// `message`), for log collectors.
    Json,
}

/// The logging options every service takes (`mbms bsf`, `mbms bmsc`,
/// `mbms ue run`).
#[derive(clap::Args, Clone, Copy, Debug, Default)]
pub struct LogArgs {
    /// Log line format on standard error: `text` (key=value) or `json`
    /// (one object per line). The level filter is `RUST_LOG` (default
    /// `info`).
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Structured logs on standard error in `format`, filtered by `RUST_LOG`
/// (default `info`); text is coloured only on a terminal. Does nothing if
/// a subscriber is already installed.
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder
            .with_ansi(false)
            .json()
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
}

/// Registers the SIGINT and SIGTERM handlers now, so that a signal arriving
/// while the service starts is not lost, and returns a future that resolves
/// on the first of them.
pub fn shutdown_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    let streams = {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::interrupt()).ok(),
            signal(SignalKind::terminate()).ok(),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let (mut int, mut term) = streams;
            let int = async {
                match int.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => {
                        let _ = tokio::signal::ctrl_c().await;
                    }
                }
            };
            let term = async {
                match term.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            tokio::select! {
                () = int => {}
                () = term => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Tells the service manager that start-up is complete (systemd
/// `Type=notify`: `READY=1` on `$NOTIFY_SOCKET`, with our PID). Call it once
/// the service's sockets are bound and it serves. Without a service manager
/// (no `NOTIFY_SOCKET`) it does nothing; a failure to notify is logged, not
/// fatal (the manager then times the start out on its own).
pub fn notify_ready() {
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::MainPid(std::process::id()),
    ]);
}

/// Tells the service manager that the service is stopping (`STOPPING=1`).
pub fn notify_stopping() {
    notify(&[sd_notify::NotifyState::Stopping]);
}

fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "could not notify the service manager");
    }
}

/// Creates `path` with mode 0600 if it does not exist (an existing file is
/// left as it is), so that a database holding keys is never readable by
/// others, not even between its creation and a chmod.
pub fn create_private_file(path: &Path) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    match opts.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes `bytes` to `path` as a file that holds secrets: mode 0600 whether
/// the file is new or existed before with wider permissions (the mode is
/// narrowed before the old content is truncated and the new one written),
/// then flushed to disk.
pub fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    f.set_len(0)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_chain_lists_the_causes() {
        let e = ConfigError::Read {
            path: "x.toml".into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "gone"),
        };
        assert_eq!(ErrorChain(&e).to_string(), "cannot read x.toml: gone");
    }

    #[test]
    fn private_file_is_0600_and_existing_files_are_kept() {
        let dir = std::env::temp_dir().join(format!("mbms-service-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("db");
        create_private_file(&p).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        std::fs::write(&p, b"kept").unwrap();
        create_private_file(&p).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"kept");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn private_write_narrows_an_existing_wide_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keylog");
        std::fs::write(&p, b"an older, longer content").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        write_private_file(&p, b"MUK x").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"MUK x");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }
}
