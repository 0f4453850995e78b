//! The real BSF and BM-SC as child processes (`mbms bsf`, `mbms bmsc`) with
//! generated configurations in a private temporary folder, free ports on
//! 127.0.0.1 and their real SQLite stores on disk.

use std::fs;
use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::RngCore as _;

use crate::swarm::{self, SwarmConfig};

/// Errors of the harness.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// A file or process operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A service did not start, or failed.
    #[error("{0}")]
    Service(String),
    /// The swarm failed.
    #[error(transparent)]
    Swarm(#[from] swarm::SwarmError),
    /// An HTTP request of the harness failed.
    #[error("HTTP: {0}")]
    Http(#[from] reqwest::Error),
}

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> BenchError {
    let what = what.into();
    move |source| BenchError::Io { what, source }
}

/// Options of the services.
#[derive(Clone, Debug)]
pub struct ServiceOptions {
    /// The `mbms` binary.
    pub mbms_bin: PathBuf,
    /// Subscribers to provision in the BSF (the swarm's, see
    /// [`swarm::write_subscribers_csv`]).
    pub subscribers: usize,
    /// Seed of the subscriber keys.
    pub seed: u64,
    /// BM-SC `[retransmit] initial_ms`.
    pub retransmit_initial_ms: u64,
    /// BM-SC `[retransmit] max_attempts`.
    pub retransmit_max_attempts: u32,
    /// `[http] max_connections` of both services.
    pub max_connections: usize,
    /// `[[key_group]] charging` of the one key group: the 4-way procedure
    /// and a charging record per acknowledged MSK (seed 004 6.3.2.3.3).
    pub charging: bool,
}

/// The running BSF and BM-SC.
pub struct Services {
    dir: tempfile::TempDir,
    mbms_bin: PathBuf,
    bsf: Child,
    bmsc: Child,
    /// Ub / Zn URL of the BSF.
    pub bsf_url: String,
    /// HTTP base URL of the BM-SC (Ua, admin, metrics).
    pub bmsc_url: String,
    /// The BM-SC's admin bearer token.
    pub admin_token: String,
    /// Seconds `mbms bsf subscriber import` took.
    pub import_seconds: f64,
    /// The BSF and BM-SC FQDNs, the service ID and the Key Domain.
    pub names: Names,
}

/// Names in the generated configurations.
#[derive(Clone, Debug)]
pub struct Names {
    /// BSF FQDN.
    pub bsf_fqdn: String,
    /// BM-SC FQDN.
    pub bmsc_fqdn: String,
    /// The one service (open) of the one key group.
    pub service: String,
    /// Key group number.
    pub key_group: u16,
    /// Key Domain ID (`MCC-MNC`).
    pub key_domain: String,
    /// IMPI domain of the subscribers.
    pub domain: String,
}

impl Default for Names {
    fn default() -> Self {
        Names {
            bsf_fqdn: "bsf.swarm.bench".into(),
            bmsc_fqdn: "bmsc.swarm.bench".into(),
            service: "urn:mbms:service:bench".into(),
            key_group: 1,
            key_domain: "001-01".into(),
            domain: "swarm.bench".into(),
        }
    }
}

fn free_tcp() -> io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

fn free_udp() -> io::Result<SocketAddr> {
    UdpSocket::bind("127.0.0.1:0")?.local_addr()
}

fn token() -> String {
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

fn write_private(path: &Path, text: &str) -> Result<(), BenchError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(format!("creating {}", path.display())))?;
    f.write_all(text.as_bytes())
        .map_err(io_err(format!("writing {}", path.display())))
}

impl Services {
    /// Provisions the subscribers (`mbms bsf subscriber import`), writes
    /// the configurations and starts both services; returns once both
    /// answer `/healthz`.
    pub fn start(o: &ServiceOptions) -> Result<Services, BenchError> {
        let names = Names::default();
        let dir = tempfile::Builder::new()
            .prefix("mbms-bench-")
            .tempdir()
            .map_err(io_err("creating the temporary folder"))?;
        {
            use std::os::unix::fs::PermissionsExt as _;
            fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700))
                .map_err(io_err("chmod 0700 of the temporary folder"))?;
        }
        let d = dir.path();
        let csv = d.join("subscribers.csv");
        swarm::write_subscribers_csv(&csv, o.seed, &names.domain, o.subscribers)
            .map_err(io_err("writing the subscriber file"))?;
        let bsf_db = d.join("bsf.db");
        let t0 = Instant::now();
        let out = Command::new(&o.mbms_bin)
            .args(["bsf", "subscriber", "import", "--db"])
            .arg(&bsf_db)
            .arg(&csv)
            .stdout(Stdio::null())
            .output()
            .map_err(io_err(format!("running {}", o.mbms_bin.display())))?;
        if !out.status.success() {
            return Err(BenchError::Service(format!(
                "mbms bsf subscriber import failed: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let import_seconds = t0.elapsed().as_secs_f64();
        let _ = fs::remove_file(&csv);

        let zn_token = token();
        let admin_token = token();
        let bsf_addr = free_tcp().map_err(io_err("finding a free port"))?;
        let bmsc_addr = free_tcp().map_err(io_err("finding a free port"))?;
        let mikey_addr = free_udp().map_err(io_err("finding a free port"))?;
        let bsf_toml = format!(
            "fqdn = \"{}\"\nlisten = \"{bsf_addr}\"\ndb = \"{}\"\nsession_lifetime = 86400\nnonce_lifetime = 300\npurge_interval = 3600\nzn_token = \"{zn_token}\"\n\n[http]\nmax_connections = {}\n",
            names.bsf_fqdn,
            bsf_db.display(),
            o.max_connections
        );
        let bmsc_toml = format!(
            "fqdn = \"{}\"\nlisten = \"{bmsc_addr}\"\nmikey_listen = \"{mikey_addr}\"\ndb = \"{}\"\nkey_domain = \"{}\"\nadmin_token = \"{admin_token}\"\n\n[bsf]\nurl = \"http://{bsf_addr}\"\nzn_token = \"{zn_token}\"\n\n[http]\nmax_connections = {}\n\n[retransmit]\ninitial_ms = {}\nfactor = 2\nmax_interval_ms = 60000\nmax_attempts = {}\njitter_permille = 100\n\n[[key_group]]\nid = {}\nrotate_interval = 0\ncharging = {}\n\n[[service]]\nid = \"{}\"\nkey_groups = [{}]\nopen = true\n",
            names.bmsc_fqdn,
            d.join("bmsc.db").display(),
            names.key_domain,
            o.max_connections,
            o.retransmit_initial_ms,
            o.retransmit_max_attempts,
            names.key_group,
            o.charging,
            names.service,
            names.key_group
        );
        write_private(&d.join("bsf.toml"), &bsf_toml)?;
        write_private(&d.join("bmsc.toml"), &bmsc_toml)?;
        let mut bsf = spawn(&o.mbms_bin, "bsf", d, false)?;
        let bmsc = match spawn(&o.mbms_bin, "bmsc", d, false) {
            Ok(c) => c,
            Err(e) => {
                let _ = bsf.kill();
                let _ = bsf.wait();
                return Err(e);
            }
        };
        let mut services = Services {
            mbms_bin: o.mbms_bin.clone(),
            bmsc,
            bsf,
            dir,
            bsf_url: format!("http://{bsf_addr}"),
            bmsc_url: format!("http://{bmsc_addr}"),
            admin_token,
            import_seconds,
            names,
        };
        services.wait_healthy(Duration::from_secs(60))?;
        Ok(services)
    }

    fn wait_healthy(&mut self, limit: Duration) -> Result<(), BenchError> {
        let start = Instant::now();
        for (name, url) in [
            ("bsf", self.bsf_url.clone()),
            ("bmsc", self.bmsc_url.clone()),
        ] {
            let addr = url.trim_start_matches("http://").to_owned();
            loop {
                if let Some(status) = self.child(name).try_wait().ok().flatten() {
                    return Err(BenchError::Service(format!(
                        "mbms {name} exited ({status}) at start: {}",
                        self.log_tail(name)
                    )));
                }
                if healthz(&addr) {
                    break;
                }
                if start.elapsed() > limit {
                    return Err(BenchError::Service(format!(
                        "mbms {name} did not answer /healthz: {}",
                        self.log_tail(name)
                    )));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    fn child(&mut self, name: &str) -> &mut Child {
        if name == "bsf" {
            &mut self.bsf
        } else {
            &mut self.bmsc
        }
    }

    /// The last lines of a service's log (`bsf` or `bmsc`).
    pub fn log_tail(&self, name: &str) -> String {
        let text =
            fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    /// Process IDs of the BSF and the BM-SC.
    pub fn pids(&self) -> (u32, u32) {
        (self.bsf.id(), self.bmsc.id())
    }

    /// The folder of the configurations, databases and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A swarm configuration for these services.
    pub fn swarm_config(&self, ues: usize, seed: u64) -> SwarmConfig {
        let mut c = SwarmConfig::new(
            ues,
            &self.bsf_url,
            &format!("{}/keymanagement", self.bmsc_url),
        );
        c.seed = seed;
        c.domain = self.names.domain.clone();
        c.bsf_fqdn = self.names.bsf_fqdn.clone();
        c.bmsc_fqdn = self.names.bmsc_fqdn.clone();
        c.services = vec![self.names.service.clone()];
        c
    }

    /// SIGKILL to the BM-SC (no chance to flush or close anything), reaps
    /// it and starts it again at once with the same configuration, store
    /// and ports (its log goes on in `bmsc.log`); returns the instant of
    /// the kill. The new process may not answer yet: see
    /// [`Self::wait_bmsc_healthy`].
    pub fn kill_and_restart_bmsc(&mut self) -> Result<Instant, BenchError> {
        let killed_at = Instant::now();
        self.bmsc.kill().map_err(io_err("SIGKILL to the BM-SC"))?;
        self.bmsc.wait().map_err(io_err("reaping the BM-SC"))?;
        self.bmsc = spawn(&self.mbms_bin, "bmsc", self.dir.path(), true)?;
        Ok(killed_at)
    }

    /// Waits until the BM-SC answers `/healthz` (without blocking the
    /// runtime's threads).
    pub async fn wait_bmsc_healthy(&mut self, limit: Duration) -> Result<(), BenchError> {
        let start = Instant::now();
        let addr = self.bmsc_url.trim_start_matches("http://").to_owned();
        loop {
            if let Some(status) = self.bmsc.try_wait().ok().flatten() {
                return Err(BenchError::Service(format!(
                    "mbms bmsc exited ({status}) at its restart: {}",
                    self.log_tail("bmsc")
                )));
            }
            let a = addr.clone();
            if tokio::task::spawn_blocking(move || healthz(&a))
                .await
                .unwrap_or(false)
            {
                return Ok(());
            }
            if start.elapsed() > limit {
                return Err(BenchError::Service(format!(
                    "mbms bmsc did not answer /healthz after its restart: {}",
                    self.log_tail("bmsc")
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Whether both still run.
    pub fn check_running(&mut self) -> Result<(), BenchError> {
        for name in ["bsf", "bmsc"] {
            if let Some(status) = self.child(name).try_wait().ok().flatten() {
                return Err(BenchError::Service(format!(
                    "mbms {name} exited ({status}): {}",
                    self.log_tail(name)
                )));
            }
        }
        Ok(())
    }

    /// SIGTERM to both, then waits (SIGKILL after 15 s).
    pub fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        use nix::sys::signal::{kill, Signal};
        use nix::unistd::Pid;
        for c in [&mut self.bmsc, &mut self.bsf] {
            if c.try_wait().ok().flatten().is_some() {
                continue;
            }
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
            let start = Instant::now();
            while c.try_wait().ok().flatten().is_none() {
                if start.elapsed() > Duration::from_secs(15) {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        self.terminate();
    }
}

fn spawn(bin: &Path, what: &str, dir: &Path, append: bool) -> Result<Child, BenchError> {
    let log = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(dir.join(format!("{what}.log")))
        .map_err(io_err(format!("creating {what}.log")))?;
    let log2 = log.try_clone().map_err(io_err("log file"))?;
    let mut cmd = Command::new(bin);
    cmd.arg(what)
        .arg("--config")
        .arg(dir.join(format!("{what}.toml")))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
    if std::env::var_os("RUST_LOG").is_none() {
        // Failures and state changes only: one line per request is
        // DEBUG, and a log line per UE would be measured too.
        cmd.env("RUST_LOG", "warn");
    }
    cmd.spawn()
        .map_err(io_err(format!("starting {} {what}", bin.display())))
}

/// `GET /healthz` answered `ok` (a tiny HTTP/1.1 exchange, no client
/// library needed before the runtime exists).
fn healthz(addr: &str) -> bool {
    use std::io::{Read as _, Write as _};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(
        format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .is_err()
    {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.1 200")
}
