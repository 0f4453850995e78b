//! The BM-SC configuration file (TOML) and its validation. Every key is
//! described in `docs/bmsc.md`; `examples/bmsc.toml` is a working example.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use mbms::engine::{RetransmitPolicy, MAX_WINDOW_LEN};
use mbms::KeyDomainId;
use mbms_service::HttpLimits;

use crate::store::{KeyGroupDef, ServiceDef};

/// Largest Ua request body (the issue: 64 KiB).
pub const MAX_UA_BODY: usize = 64 * 1024;

/// Errors reading or validating the configuration (shared by the
/// services).
pub use mbms_service::ConfigError;

/// A bearer token (Zn, admin API): zeroized, redacted in `Debug`, compared
/// in constant time.
pub use mbms_service::Token;

/// `[bsf]`: where Zn is.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BsfSection {
    /// Base URL of the BSF (Zn is `POST <url>/zn/v1/naf-keys`).
    pub url: String,
    /// The Zn bearer token.
    pub zn_token: Token,
    /// Zn request timeout, seconds.
    #[serde(default = "default_zn_timeout")]
    pub timeout: u64,
}

fn default_zn_timeout() -> u64 {
    10
}

/// `[retransmit]`: MSK message retransmission (seed 004 6.4.2).
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetransmitSection {
    /// Timer of the first transmission, milliseconds.
    pub initial_ms: u64,
    /// Multiplier between timers.
    pub factor: u32,
    /// Largest timer, milliseconds.
    pub max_interval_ms: u64,
    /// Transmissions before giving up.
    pub max_attempts: u32,
    /// Jitter in thousandths.
    pub jitter_permille: u32,
}

impl Default for RetransmitSection {
    fn default() -> Self {
        let p = RetransmitPolicy::default();
        RetransmitSection {
            initial_ms: p.initial.as_millis() as u64,
            factor: p.factor,
            max_interval_ms: p.max_interval.as_millis() as u64,
            max_attempts: p.max_attempts,
            jitter_permille: p.jitter_permille,
        }
    }
}

impl RetransmitSection {
    /// As the engine's policy.
    pub fn policy(&self) -> RetransmitPolicy {
        RetransmitPolicy {
            initial: Duration::from_millis(self.initial_ms),
            factor: self.factor,
            max_interval: Duration::from_millis(self.max_interval_ms),
            max_attempts: self.max_attempts,
            jitter_permille: self.jitter_permille,
        }
    }
}

/// `[[key_group]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyGroupSection {
    /// Key Group part of the MSK IDs (1..=65535).
    pub id: u16,
    /// MTK IDs per MSK.
    #[serde(default = "default_window")]
    pub window_len: u16,
    /// Charging: the 4-way procedure.
    #[serde(default)]
    pub charging: bool,
    /// V bit of plain pushes.
    #[serde(default = "yes")]
    pub ack: bool,
    /// Seconds between automatic rotations (0: on request only).
    #[serde(default)]
    pub rotate_interval: u64,
}

fn default_window() -> u16 {
    mbms::engine::DEFAULT_WINDOW_LEN
}

fn yes() -> bool {
    true
}

impl KeyGroupSection {
    /// As a stored definition.
    pub fn def(&self) -> KeyGroupDef {
        KeyGroupDef {
            key_group: self.id,
            window_len: self.window_len,
            charging: self.charging,
            ack: self.ack,
            rotate_interval: self.rotate_interval,
        }
    }
}

/// `[[service]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSection {
    /// Service ID.
    pub id: String,
    /// Key groups of the service.
    pub key_groups: Vec<u16>,
    /// Any subscriber may register.
    #[serde(default)]
    pub open: bool,
    /// Otherwise these IMPIs.
    #[serde(default)]
    pub allowed: Vec<String>,
}

impl ServiceSection {
    /// As a stored definition.
    pub fn def(&self) -> ServiceDef {
        ServiceDef {
            id: self.id.clone(),
            key_groups: self.key_groups.clone(),
            open: self.open,
            allowed: self.allowed.clone(),
        }
    }
}

/// Kind of a delivery session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionKind {
    /// RTP in, SRTP out, streaming MTK messages.
    Streaming,
    /// Files in, protected objects and `.mikey` files out.
    Download,
}

/// `[[session]]`: a streaming or download session of a key group.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionSection {
    /// Name (admin API, logs, metrics).
    pub name: String,
    /// `streaming` or `download`.
    pub kind: SessionKind,
    /// The key group whose current MSK protects the MTKs.
    pub key_group: u16,
    /// UDP destinations of the MTK messages (a multicast group or unicast
    /// addresses). Optional for download sessions.
    #[serde(default)]
    pub mtk_destinations: Vec<SocketAddr>,
    /// Seconds between new MTKs.
    #[serde(default = "default_mtk_interval")]
    pub mtk_interval: u64,
    /// Seconds between repetitions of the current MTK message (late
    /// joiners).
    #[serde(default = "default_mtk_repeat")]
    pub mtk_repeat: u64,
    /// Streaming: where plain RTP arrives.
    #[serde(default)]
    pub rtp_listen: Option<SocketAddr>,
    /// Streaming: where SRTP goes.
    #[serde(default)]
    pub srtp_destinations: Vec<SocketAddr>,
    /// Streaming: milliseconds between announcing a new MTK and protecting
    /// with it.
    #[serde(default = "default_switch_delay")]
    pub switch_delay_ms: u64,
    /// Streaming: a named SRTP suite, `AES_CM_128_HMAC_SHA1_80` (default),
    /// `AES_CM_128_HMAC_SHA1_32`, `NULL_HMAC_SHA1_80`, `NULL_HMAC_SHA1_32`,
    /// `AES_CM_128_NULL_AUTH` or `NULL_CIPHER_NULL_AUTH`
    /// ([`crate::protection`]). Not together with `srtp_encryption` /
    /// `srtp_auth`.
    #[serde(default)]
    pub srtp_suite: Option<String>,
    /// Streaming: confidentiality, `aes-cm-128` (default) or `null`.
    #[serde(default)]
    pub srtp_encryption: Option<String>,
    /// Streaming: integrity, `hmac-sha1-80` (default), `hmac-sha1-32`,
    /// `hmac-sha1-<bits>` (a multiple of 8 up to 160) or `null`.
    #[serde(default)]
    pub srtp_auth: Option<String>,
    /// Streaming: encrypt SRTCP too (default: when there is a cipher).
    #[serde(default)]
    pub srtcp_encryption: Option<bool>,
    /// Download: confidentiality of the objects, `aes-128-cbc` (default)
    /// or `null`.
    #[serde(default)]
    pub download_encryption: Option<String>,
    /// Download: integrity of the objects, `hmac-sha1-80` (default) or
    /// `null`.
    #[serde(default)]
    pub download_auth: Option<String>,
    /// Download: folder watched for files to protect.
    #[serde(default)]
    pub watch_dir: Option<PathBuf>,
    /// Download: where protected objects and `.mikey` files go.
    #[serde(default)]
    pub out_dir: Option<PathBuf>,
    /// Download: seconds between scans of `watch_dir`.
    #[serde(default = "default_scan")]
    pub scan_interval: u64,
}

fn default_mtk_interval() -> u64 {
    60
}
fn default_mtk_repeat() -> u64 {
    2
}
fn default_switch_delay() -> u64 {
    1000
}
fn default_scan() -> u64 {
    2
}

/// The whole configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BmscConfig {
    /// The BM-SC FQDN: NAF identity, IDi of MSK messages, Digest realm
    /// suffix.
    pub fqdn: String,
    /// HTTP listen address (Ua, admin API, `/metrics`, `/healthz`).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// UDP address MSK messages are sent from and acknowledgements received
    /// on.
    #[serde(default = "default_mikey_listen")]
    pub mikey_listen: SocketAddr,
    /// Receive and send buffer of the MIKEY socket, bytes (SO_RCVBUF,
    /// SO_SNDBUF): a rotation sends one message to every UE and their
    /// acknowledgements arrive in a burst. The kernel may grant less
    /// (`net.core.rmem_max`, `wmem_max`); the BM-SC logs what it got.
    #[serde(default = "default_mikey_socket_buffer")]
    pub mikey_socket_buffer: usize,
    /// SQLite file or `postgres://` URL.
    #[serde(default = "default_db")]
    pub db: String,
    /// Microseconds the group committer waits before a commit under load
    /// (once the commit before wrote several rows), so that more requests
    /// share one disk sync; 0: never waits (`crate::committer`).
    #[serde(default = "default_commit_gather_us")]
    pub commit_gather_us: u64,
    /// Key Domain ID: `MCC-MNC` (e.g. `001-01`) or 6 hex digits.
    pub key_domain: String,
    /// Bearer token of the admin API.
    pub admin_token: Token,
    /// Digest nonce lifetime, seconds.
    #[serde(default = "default_nonce_lifetime")]
    pub nonce_lifetime: u64,
    /// Digest algorithms offered, preferred first: `MD5`, `SHA-256`.
    #[serde(default = "default_algorithms")]
    pub digest_algorithms: Vec<String>,
    /// MUK counters reserved per store write.
    #[serde(default = "default_counter_block")]
    pub counter_block: u32,
    /// TTL of multicast MTK messages and SRTP.
    #[serde(default = "default_ttl")]
    pub multicast_ttl: u32,
    /// Zn.
    pub bsf: BsfSection,
    /// Retransmission policy.
    #[serde(default)]
    pub retransmit: RetransmitSection,
    /// HTTP limits: header, body and idle timeouts, connection limit,
    /// shutdown bound (the `[http]` table).
    #[serde(default)]
    pub http: HttpLimits,
    /// Key groups.
    #[serde(default, rename = "key_group")]
    pub key_groups: Vec<KeyGroupSection>,
    /// Services.
    #[serde(default, rename = "service")]
    pub services: Vec<ServiceSection>,
    /// Sessions.
    #[serde(default, rename = "session")]
    pub sessions: Vec<SessionSection>,
    /// Several instances on one PostgreSQL database ([`crate::cluster`]).
    #[serde(default)]
    pub cluster: ClusterSection,
}

/// `[cluster]`: this instance among several on one PostgreSQL database
/// (ignored with SQLite, where one process owns everything).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// This instance's name (default `<hostname>-<pid>`).
    #[serde(default)]
    pub instance_id: Option<String>,
    /// Lease time in milliseconds (default [`DEFAULT_LEASE_MS`]): an
    /// instance that stops renewing loses its key groups and UE shards
    /// after this (the takeover time).
    #[serde(default)]
    pub lease_ms: Option<u64>,
    /// How the other instances and tools reach this instance's HTTP
    /// (default `http://<listen>`).
    #[serde(default)]
    pub advertise_url: Option<String>,
}

/// The default `[cluster] lease_ms` (issue 13: takeover within 10 s).
pub const DEFAULT_LEASE_MS: u64 = 10_000;

/// The shortest `[cluster] lease_ms` accepted (renewed every eighth).
pub const MIN_LEASE_MS: u64 = 300;

impl ClusterSection {
    /// The lease time.
    pub fn lease_ms(&self) -> u64 {
        self.lease_ms.unwrap_or(DEFAULT_LEASE_MS)
    }

    /// The instance ID: configured, or `<hostname>-<pid>`. Several BM-SCs
    /// started in one process (tests, benchmarks) must configure distinct
    /// IDs; a restarted process with the same configured ID gets its
    /// leases back at once (another ID waits until they expire).
    pub fn instance_id(&self) -> String {
        self.instance_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "bmsc".into());
            format!("{host}-{}", std::process::id())
        })
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8081))
}
fn default_mikey_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], mbms::profile::MIKEY_UDP_PORT))
}
fn default_mikey_socket_buffer() -> usize {
    crate::udp::DEFAULT_SOCKET_BUFFER
}
fn default_commit_gather_us() -> u64 {
    crate::committer::DEFAULT_COMMIT_GATHER_US
}
fn default_db() -> String {
    "bmsc.db".into()
}
fn default_nonce_lifetime() -> u64 {
    gba::digest::server::DEFAULT_NONCE_LIFETIME_SECS
}
fn default_algorithms() -> Vec<String> {
    vec!["MD5".into(), "SHA-256".into()]
}
fn default_counter_block() -> u32 {
    mbms::engine::DEFAULT_COUNTER_BLOCK
}
fn default_ttl() -> u32 {
    1
}

impl BmscConfig {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let cfg: BmscConfig = mbms_service::config::load_toml(path)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let cfg: BmscConfig = mbms_service::config::parse_toml(text)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The Key Domain ID.
    pub fn key_domain_id(&self) -> Result<KeyDomainId, ConfigError> {
        self.key_domain
            .parse()
            .map_err(|e| ConfigError::Invalid(format!("key_domain: {e}")))
    }

    /// The Digest algorithms.
    pub fn algorithms(&self) -> Result<Vec<gba::digest::Algorithm>, ConfigError> {
        use gba::digest::Algorithm;
        self.digest_algorithms
            .iter()
            .map(|a| match a.parse::<Algorithm>() {
                Ok(x @ (Algorithm::Md5 | Algorithm::Sha256)) => Ok(x),
                _ => Err(ConfigError::Invalid(format!(
                    "digest_algorithms: {a:?} (use MD5 and/or SHA-256)"
                ))),
            })
            .collect()
    }

    /// Checks the values and their consistency.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.fqdn.is_empty() || self.fqdn.len() > 255 || self.fqdn.contains(['"', ' ', '/']) {
            return bad(format!("fqdn {:?}", self.fqdn));
        }
        self.key_domain_id()?;
        if self.algorithms()?.is_empty() {
            return bad("digest_algorithms is empty".into());
        }
        if self.cluster.lease_ms() < MIN_LEASE_MS {
            return bad(format!(
                "[cluster] lease_ms must be at least {MIN_LEASE_MS}"
            ));
        }
        if self
            .cluster
            .instance_id
            .as_ref()
            .is_some_and(|i| i.is_empty() || i.len() > 200)
        {
            return bad("[cluster] instance_id must have 1 to 200 characters".into());
        }
        if self.nonce_lifetime == 0 {
            return bad("nonce_lifetime must be at least 1 second".into());
        }
        if self.counter_block == 0 {
            return bad("counter_block must be at least 1".into());
        }
        self.http.validate().map_err(ConfigError::Invalid)?;
        if self.admin_token.expose().len() < 8 {
            return bad("admin_token must have at least 8 characters".into());
        }
        if !(self.bsf.url.starts_with("http://") || self.bsf.url.starts_with("https://")) {
            return bad(format!("bsf.url {:?} is not an http(s) URL", self.bsf.url));
        }
        if self.retransmit.policy().initial.is_zero()
            || self.retransmit.max_attempts == 0
            || self.retransmit.factor == 0
            || self.retransmit.jitter_permille > 1000
        {
            return bad("retransmit: initial_ms, factor and max_attempts must be at least 1, jitter_permille at most 1000".into());
        }
        let mut groups = BTreeSet::new();
        for g in &self.key_groups {
            check_key_group(&g.def()).map_err(ConfigError::Invalid)?;
            if !groups.insert(g.id) {
                return bad(format!("key group {} defined twice", g.id));
            }
        }
        let mut ids = BTreeSet::new();
        for s in &self.services {
            check_service(&s.def()).map_err(ConfigError::Invalid)?;
            if !ids.insert(s.id.clone()) {
                return bad(format!("service {} defined twice", s.id));
            }
            if let Some(g) = s.key_groups.iter().find(|g| !groups.contains(g)) {
                return bad(format!("service {}: key group {g} is not defined", s.id));
            }
        }
        let mut names = BTreeSet::new();
        for s in &self.sessions {
            if !names.insert(s.name.clone()) {
                return bad(format!("session {} defined twice", s.name));
            }
            if !groups.contains(&s.key_group) {
                return bad(format!(
                    "session {}: key group {} is not defined",
                    s.name, s.key_group
                ));
            }
            if s.mtk_interval == 0 || s.mtk_repeat == 0 || s.scan_interval == 0 {
                return bad(format!(
                    "session {}: mtk_interval, mtk_repeat and scan_interval must be at least 1",
                    s.name
                ));
            }
            match s.kind {
                SessionKind::Streaming => {
                    if s.rtp_listen.is_none()
                        || s.srtp_destinations.is_empty()
                        || s.mtk_destinations.is_empty()
                    {
                        return bad(format!(
                            "streaming session {}: rtp_listen, srtp_destinations and mtk_destinations are required",
                            s.name
                        ));
                    }
                }
                SessionKind::Download => {
                    if s.watch_dir.is_none() || s.out_dir.is_none() {
                        return bad(format!(
                            "download session {}: watch_dir and out_dir are required",
                            s.name
                        ));
                    }
                }
            }
            crate::protection::check(s).map_err(|source| ConfigError::Protection {
                session: s.name.clone(),
                source: Box::new(source),
            })?;
        }
        Ok(())
    }
}

/// Checks a key group definition (configuration or admin API).
pub fn check_key_group(d: &KeyGroupDef) -> Result<(), String> {
    if d.key_group == 0 {
        return Err("key group 0 is not allowed".into());
    }
    if d.window_len == 0 || d.window_len > MAX_WINDOW_LEN {
        return Err(format!(
            "key group {}: window_len must be in 1..={MAX_WINDOW_LEN}",
            d.key_group
        ));
    }
    Ok(())
}

/// Checks a service definition (configuration or admin API).
pub fn check_service(d: &ServiceDef) -> Result<(), String> {
    if d.id.is_empty() || d.id.len() > 1024 || d.id.chars().any(char::is_control) {
        return Err(format!("service ID {:?}", d.id));
    }
    if d.key_groups.is_empty() {
        return Err(format!("service {}: no key group", d.id));
    }
    if d.key_groups.contains(&0) {
        return Err(format!("service {}: key group 0", d.id));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_limits_example_and_validation() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/bmsc.toml");
        let cfg = BmscConfig::load(&path).unwrap();
        // The example spells out the documented defaults.
        assert_eq!(cfg.http, HttpLimits::default());
        let text = std::fs::read_to_string(&path).unwrap();
        let short = text.replace("header_read_timeout = 10", "header_read_timeout = 0.25");
        let cfg = BmscConfig::parse(&short).unwrap();
        assert_eq!(cfg.http.header_read_timeout, Duration::from_millis(250));
        let bad = text.replace("max_connections = 512", "max_connections = 0");
        let e = BmscConfig::parse(&bad).unwrap_err();
        assert!(e.to_string().contains("http.max_connections"), "{e}");
    }
}
