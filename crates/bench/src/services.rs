//! The real BSF and BM-SC as child processes (`mbms bsf`, `mbms bmsc`) with
//! generated configurations in a private temporary folder, free ports on
//! 127.0.0.1 and their real SQLite stores on disk; or, with [`Cluster`],
//! K BM-SC instances on one fresh PostgreSQL database (docs/scale-out.md).

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
    /// `mbms bmsc --worker-threads N`; `None`: its default (one per CPU).
    pub bmsc_worker_threads: Option<usize>,
}

/// The running BSF and BM-SC.
pub struct Services {
    dir: tempfile::TempDir,
    mbms_bin: PathBuf,
    /// Arguments of every BM-SC start beyond `--config` (`--worker-threads`).
    bmsc_args: Vec<String>,
    bsf: Child,
    /// The BM-SC instances; `None` once killed by [`Self::kill_bmsc`].
    bmsc: Vec<Option<Child>>,
    /// The PostgreSQL database of the instances (dropped last).
    database: Option<PgDatabase>,
    /// [`Cluster::pcap`].
    pcap: bool,
    /// Ub / Zn URL of the BSF.
    pub bsf_url: String,
    /// HTTP base URL of the first BM-SC instance (Ua, admin, metrics).
    pub bmsc_url: String,
    /// HTTP base URLs of every BM-SC instance, in order (instance `i` has
    /// the `instance_id` `bmsc-<i>` when there are several).
    pub bmsc_urls: Vec<String>,
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

/// Several BM-SC instances on one PostgreSQL database (issue 13,
/// docs/scale-out.md): every instance gets the same configuration but its
/// own `listen` / `mikey_listen` ports and `[cluster] instance_id`.
#[derive(Clone, Debug, Default)]
pub struct Cluster {
    /// Number of BM-SC instances (0 counts as 1).
    pub instances: usize,
    /// A PostgreSQL URL: a database of its own (`mbms_bench_<pid>_<hex>`)
    /// is created from it and dropped at the end. `None`: SQLite (one
    /// instance only).
    pub postgres: Option<String>,
    /// `[cluster] lease_ms` (the takeover time); `None`: the BM-SC's
    /// default.
    pub lease_ms: Option<u64>,
    /// Each instance writes its datagram tap to `<name>.pcap` in the
    /// folder (`mbms bmsc --pcap`, [`Services::pcap_files`]).
    pub pcap: bool,
}

/// The `instance_id` of BM-SC instance `i` in a [`Cluster`].
pub fn instance_id(i: usize) -> String {
    format!("bmsc-{i}")
}

impl Services {
    /// Provisions the subscribers (`mbms bsf subscriber import`), writes
    /// the configurations and starts both services; returns once both
    /// answer `/healthz`.
    pub fn start(o: &ServiceOptions) -> Result<Services, BenchError> {
        Self::start_cluster(o, &Cluster::default())
    }

    /// [`Self::start`] with `c.instances` BM-SC instances on a fresh
    /// PostgreSQL database when `c.postgres` is given. The first instance
    /// starts (and migrates the empty database) before the others.
    pub fn start_cluster(o: &ServiceOptions, c: &Cluster) -> Result<Services, BenchError> {
        let k = c.instances.max(1);
        if k > 1 && c.postgres.is_none() {
            return Err(BenchError::Service(
                "several BM-SC instances need a PostgreSQL URL (--postgres)".into(),
            ));
        }
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

        let database = match &c.postgres {
            Some(url) => Some(PgDatabase::create(url)?),
            None => None,
        };
        let db = match &database {
            Some(pg) => pg.url.clone(),
            None => d.join("bmsc.db").display().to_string(),
        };
        let zn_token = token();
        let admin_token = token();
        let bsf_addr = free_tcp().map_err(io_err("finding a free port"))?;
        let bsf_toml = format!(
            "fqdn = \"{}\"\nlisten = \"{bsf_addr}\"\ndb = \"{}\"\nsession_lifetime = 86400\nnonce_lifetime = 300\npurge_interval = 3600\nzn_token = \"{zn_token}\"\n\n[http]\nmax_connections = {}\n",
            names.bsf_fqdn,
            bsf_db.display(),
            o.max_connections
        );
        write_private(&d.join("bsf.toml"), &bsf_toml)?;
        let mut bmsc_urls = Vec::with_capacity(k);
        for i in 0..k {
            let bmsc_addr = free_tcp().map_err(io_err("finding a free port"))?;
            let mikey_addr = free_udp().map_err(io_err("finding a free port"))?;
            let mut bmsc_toml = format!(
                "fqdn = \"{}\"\nlisten = \"{bmsc_addr}\"\nmikey_listen = \"{mikey_addr}\"\ndb = \"{db}\"\nkey_domain = \"{}\"\nadmin_token = \"{admin_token}\"\n\n[bsf]\nurl = \"http://{bsf_addr}\"\nzn_token = \"{zn_token}\"\n\n[http]\nmax_connections = {}\n\n[retransmit]\ninitial_ms = {}\nfactor = 2\nmax_interval_ms = 60000\nmax_attempts = {}\njitter_permille = 100\n\n[[key_group]]\nid = {}\nrotate_interval = 0\ncharging = {}\n\n[[service]]\nid = \"{}\"\nkey_groups = [{}]\nopen = true\n",
                names.bmsc_fqdn,
                names.key_domain,
                o.max_connections,
                o.retransmit_initial_ms,
                o.retransmit_max_attempts,
                names.key_group,
                o.charging,
                names.service,
                names.key_group
            );
            if k > 1 {
                bmsc_toml.push_str(&format!(
                    "\n[cluster]\ninstance_id = \"{}\"\nadvertise_url = \"http://{bmsc_addr}\"\n",
                    instance_id(i)
                ));
                if let Some(l) = c.lease_ms {
                    bmsc_toml.push_str(&format!("lease_ms = {l}\n"));
                }
            }
            write_private(&d.join(format!("{}.toml", bmsc_name(i, k))), &bmsc_toml)?;
            bmsc_urls.push(format!("http://{bmsc_addr}"));
        }
        let bsf = spawn(&o.mbms_bin, "bsf", "bsf", d, false, false, &[])?;
        let mut services = Services {
            mbms_bin: o.mbms_bin.clone(),
            bmsc_args: o
                .bmsc_worker_threads
                .map(|n| vec!["--worker-threads".to_owned(), n.to_string()])
                .unwrap_or_default(),
            bmsc: Vec::with_capacity(k),
            bsf,
            dir,
            database,
            pcap: c.pcap,
            bsf_url: format!("http://{bsf_addr}"),
            bmsc_url: bmsc_urls[0].clone(),
            bmsc_urls,
            admin_token,
            import_seconds,
            names,
        };
        // The BSF and the first instance (which migrates a fresh database)
        // first, then the others.
        for i in 0..k {
            let name = bmsc_name(i, k);
            let child = spawn(
                &o.mbms_bin,
                "bmsc",
                &name,
                services.dir.path(),
                false,
                services.pcap,
                &services.bmsc_args,
            )?;
            services.bmsc.push(Some(child));
            if i == 0 || i + 1 == k {
                services.wait_healthy(Duration::from_secs(60))?;
            }
        }
        Ok(services)
    }

    /// The pcap files of the instances ([`Cluster::pcap`]), in order; a
    /// killed instance's holds its packets up to the kill.
    pub fn pcap_files(&self) -> Vec<PathBuf> {
        let total = self.bmsc_urls.len();
        (0..total)
            .map(|i| {
                self.dir
                    .path()
                    .join(format!("{}.pcap", bmsc_name(i, total)))
            })
            .collect()
    }

    /// Number of BM-SC instances (killed ones included).
    pub fn bmsc_instances(&self) -> usize {
        self.bmsc.len()
    }

    /// Whether BM-SC instance `i` runs (was not killed).
    pub fn bmsc_alive(&self, i: usize) -> bool {
        self.bmsc.get(i).is_some_and(Option::is_some)
    }

    fn wait_healthy(&mut self, limit: Duration) -> Result<(), BenchError> {
        let start = Instant::now();
        let mut targets = vec![("bsf".to_owned(), self.bsf_url.clone())];
        let total = self.bmsc_urls.len();
        for (i, url) in self.bmsc_urls.iter().enumerate().take(self.bmsc.len()) {
            targets.push((bmsc_name(i, total), url.clone()));
        }
        for (name, url) in targets {
            let addr = url.trim_start_matches("http://").to_owned();
            loop {
                if let Some(status) = self.exited(&name) {
                    return Err(BenchError::Service(format!(
                        "mbms {name} exited ({status}) at start: {}",
                        self.log_tail(&name)
                    )));
                }
                if healthz(&addr) {
                    break;
                }
                if start.elapsed() > limit {
                    return Err(BenchError::Service(format!(
                        "mbms {name} did not answer /healthz: {}",
                        self.log_tail(&name)
                    )));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    /// The exit status of a service (`bsf`, `bmsc`, `bmsc-<i>`) that
    /// exited; `None` while it runs (or after it was killed on purpose).
    fn exited(&mut self, name: &str) -> Option<std::process::ExitStatus> {
        let total = self.bmsc_urls.len();
        let child = if name == "bsf" {
            Some(&mut self.bsf)
        } else {
            (0..self.bmsc.len())
                .find(|i| bmsc_name(*i, total) == name)
                .and_then(|i| self.bmsc[i].as_mut())
        };
        child.and_then(|c| c.try_wait().ok().flatten())
    }

    /// The last lines of a service's log (`bsf` or `bmsc`).
    pub fn log_tail(&self, name: &str) -> String {
        let text =
            fs::read_to_string(self.dir.path().join(format!("{name}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    /// Process IDs of the BSF and the first BM-SC instance.
    pub fn pids(&self) -> (u32, u32) {
        (self.bsf.id(), self.bmsc_pids()[0].unwrap_or(0))
    }

    /// Process IDs of the BM-SC instances (`None`: killed).
    pub fn bmsc_pids(&self) -> Vec<Option<u32>> {
        self.bmsc
            .iter()
            .map(|c| c.as_ref().map(Child::id))
            .collect()
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
        // UE i registers and asks at instance i mod K (round robin, as a
        // load balancer would spread them).
        c.key_management_uris = self
            .bmsc_urls
            .iter()
            .map(|u| format!("{u}/keymanagement"))
            .collect();
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
    /// [`Self::wait_bmsc_healthy`]. One instance only (see
    /// [`Self::kill_bmsc`] for several).
    pub fn kill_and_restart_bmsc(&mut self) -> Result<Instant, BenchError> {
        let killed_at = self.kill_bmsc(0)?;
        let name = bmsc_name(0, self.bmsc_urls.len());
        // (Its pcap, if any, is not reopened: it would be truncated.)
        self.bmsc[0] = Some(spawn(
            &self.mbms_bin,
            "bmsc",
            &name,
            self.dir.path(),
            true,
            false,
            &self.bmsc_args,
        )?);
        Ok(killed_at)
    }

    /// SIGKILL to BM-SC instance `i`, reaped; it stays dead (its
    /// [`Self::check_running`] no longer applies). Returns the instant of
    /// the kill.
    pub fn kill_bmsc(&mut self, i: usize) -> Result<Instant, BenchError> {
        let mut child = self
            .bmsc
            .get_mut(i)
            .and_then(Option::take)
            .ok_or_else(|| BenchError::Service(format!("no running BM-SC instance {i}")))?;
        let killed_at = Instant::now();
        child.kill().map_err(io_err("SIGKILL to the BM-SC"))?;
        child.wait().map_err(io_err("reaping the BM-SC"))?;
        Ok(killed_at)
    }

    /// Waits until the first BM-SC instance answers `/healthz` (without
    /// blocking the runtime's threads).
    pub async fn wait_bmsc_healthy(&mut self, limit: Duration) -> Result<(), BenchError> {
        let start = Instant::now();
        let addr = self.bmsc_url.trim_start_matches("http://").to_owned();
        let name = bmsc_name(0, self.bmsc_urls.len());
        poll_until(
            limit,
            Duration::from_millis(5),
            || {
                if let Some(status) = self.exited(&name) {
                    return Err(BenchError::Service(format!(
                        "mbms bmsc exited ({status}) at its restart: {}",
                        self.log_tail(&name)
                    )));
                }
                Ok(())
            },
            || {
                let a = addr.clone();
                async move {
                    tokio::task::spawn_blocking(move || healthz(&a))
                        .await
                        .unwrap_or(false)
                }
            },
        )
        .await?
        .ok_or_else(|| {
            BenchError::Service(format!(
                "mbms bmsc did not answer /healthz {:?} after its restart: {}",
                start.elapsed(),
                self.log_tail(&name)
            ))
        })
    }

    /// Whether every service still runs (instances killed on purpose
    /// aside).
    pub fn check_running(&mut self) -> Result<(), BenchError> {
        let total = self.bmsc_urls.len();
        let names =
            std::iter::once("bsf".to_owned()).chain((0..total).map(|i| bmsc_name(i, total)));
        for name in names.collect::<Vec<_>>() {
            if let Some(status) = self.exited(&name) {
                return Err(BenchError::Service(format!(
                    "mbms {name} exited ({status}): {}",
                    self.log_tail(&name)
                )));
            }
        }
        Ok(())
    }

    /// SIGTERM to every service, then waits (SIGKILL after 15 s); drops
    /// the PostgreSQL database.
    pub fn stop(mut self) {
        self.terminate();
    }

    /// [`Self::stop`] keeping the folder (its logs and pcap files) until
    /// the value is dropped.
    pub fn stop_processes(&mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        // The instances first (they may still talk to the BSF), then it.
        stop_children(self.bmsc.iter_mut().flatten());
        stop_children(std::iter::once(&mut self.bsf));
        if let Some(db) = self.database.take() {
            if let Err(e) = db.drop_database() {
                eprintln!("warning: {e}");
            }
        }
    }
}

/// SIGTERM to every child still running, then waits for each (SIGKILL
/// after 15 s): the one home of the harness's graceful stop of its
/// service processes (the bench's, the demo's instances).
pub fn stop_children<'a>(children: impl IntoIterator<Item = &'a mut Child>) {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let mut running: Vec<&mut Child> = children
        .into_iter()
        .filter_map(|c| c.try_wait().ok().flatten().is_none().then_some(c))
        .collect();
    for c in &running {
        let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGTERM);
    }
    for c in &mut running {
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

/// Polls `ready` every `every` until it says yes (`Some(())`) or `limit`
/// passed (`None`); `check` runs before each poll and ends the wait with
/// its error. The one home of the harness's wait loops.
pub(crate) async fn poll_until<C, R, F>(
    limit: Duration,
    every: Duration,
    mut check: C,
    mut ready: R,
) -> Result<Option<()>, BenchError>
where
    C: FnMut() -> Result<(), BenchError>,
    R: FnMut() -> F,
    F: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        check()?;
        if ready().await {
            return Ok(Some(()));
        }
        if start.elapsed() > limit {
            return Ok(None);
        }
        tokio::time::sleep(every).await;
    }
}

/// The log and configuration name of BM-SC instance `i` of `total`:
/// `bmsc` alone, `bmsc-<i>` among several.
pub fn bmsc_name(i: usize, total: usize) -> String {
    if total > 1 {
        format!("bmsc-{i}")
    } else {
        "bmsc".to_owned()
    }
}

/// A database of its own on a PostgreSQL server, created from the URL of
/// any database there and dropped (`WITH (FORCE)`) at the end: runs on the
/// same server stay apart (`mbms bench rekey` and `mbms demo` with
/// several BM-SC instances).
pub struct PgDatabase {
    /// The URL given.
    server: String,
    /// `mbms_bench_<pid>_<hex>`.
    name: String,
    /// `server` with the path replaced by `name`.
    url: String,
}

impl PgDatabase {
    /// Creates `mbms_bench_<pid>_<hex>` on the server of `server` (the URL
    /// of any database there).
    pub fn create(server: &str) -> Result<PgDatabase, BenchError> {
        let mut suffix = [0u8; 4];
        rand::rngs::OsRng.fill_bytes(&mut suffix);
        let name = format!("mbms_bench_{}_{}", std::process::id(), hex::encode(suffix));
        let url = with_database(server, &name)
            .ok_or_else(|| BenchError::Service("--postgres: not a postgres:// URL".into()))?;
        let db = PgDatabase {
            server: server.to_owned(),
            name,
            url,
        };
        db.execute(&format!("CREATE DATABASE {}", db.name))?;
        Ok(db)
    }

    /// The URL of the new database (it may hold a password).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Drops the database (`WITH (FORCE)`: its clients are disconnected).
    pub fn drop_database(self) -> Result<(), BenchError> {
        self.execute(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
    }

    /// One statement on the server's given database, on a thread of its
    /// own (the synchronous client must not run on a runtime's thread).
    fn execute(&self, sql: &str) -> Result<(), BenchError> {
        let (server, statement) = (self.server.clone(), sql.to_owned());
        let r = std::thread::spawn(move || -> Result<(), postgres::Error> {
            let mut c = postgres::Client::connect(&server, postgres::NoTls)?;
            c.batch_execute(&statement)
        })
        .join()
        .map_err(|_| BenchError::Service("PostgreSQL client thread panicked".into()))?;
        // The URL may hold a password: only the statement is named.
        r.map_err(|e| BenchError::Service(format!("PostgreSQL `{sql}`: {e}")))
    }
}

/// `url` (`postgres://user:pw@host:port/db?opts`) naming database `name`
/// instead.
fn with_database(url: &str, name: &str) -> Option<String> {
    let rest_at = url.find("://")? + 3;
    let (scheme, rest) = url.split_at(rest_at);
    if !scheme.starts_with("postgres") {
        return None;
    }
    let (authority, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => match rest.find('?') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        },
    };
    let query = tail.find('?').map_or("", |i| &tail[i..]);
    Some(format!("{scheme}{authority}/{name}{query}"))
}

impl Drop for Services {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// Starts `mbms <what> --config <name>.toml` in `dir`, logging to
/// `<name>.log` there (appended to with `append`), with `--pcap
/// <name>.pcap` when `pcap`.
pub fn spawn(
    bin: &Path,
    what: &str,
    name: &str,
    dir: &Path,
    append: bool,
    pcap: bool,
    extra: &[String],
) -> Result<Child, BenchError> {
    let log = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(dir.join(format!("{name}.log")))
        .map_err(io_err(format!("creating {name}.log")))?;
    let log2 = log.try_clone().map_err(io_err("log file"))?;
    let mut cmd = Command::new(bin);
    cmd.arg(what)
        .arg("--config")
        .arg(dir.join(format!("{name}.toml")))
        .current_dir(dir)
        .args(
            pcap.then(|| ["--pcap".into(), dir.join(format!("{name}.pcap"))])
                .into_iter()
                .flatten(),
        )
        .args(extra)
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
pub fn healthz(addr: &str) -> bool {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_of_a_url_is_replaced() {
        let w = |u| with_database(u, "mbms_bench_1_ab");
        assert_eq!(
            w("postgres://postgres:pw@localhost:5432/mbms_test").as_deref(),
            Some("postgres://postgres:pw@localhost:5432/mbms_bench_1_ab")
        );
        assert_eq!(
            w("postgresql://h/db?sslmode=disable").as_deref(),
            Some("postgresql://h/mbms_bench_1_ab?sslmode=disable")
        );
        assert_eq!(
            w("postgres://h:5432").as_deref(),
            Some("postgres://h:5432/mbms_bench_1_ab")
        );
        assert_eq!(
            w("postgres://h?connect_timeout=3").as_deref(),
            Some("postgres://h/mbms_bench_1_ab?connect_timeout=3")
        );
        assert_eq!(w("mysql://h/db"), None);
        assert_eq!(w("bmsc.db"), None);
    }

    #[test]
    fn instances_have_names_of_their_own() {
        assert_eq!(bmsc_name(0, 1), "bmsc");
        assert_eq!(bmsc_name(2, 3), "bmsc-2");
        assert_eq!(instance_id(2), "bmsc-2");
    }
}
