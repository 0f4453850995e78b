//! The UE configuration (`ue.toml`) and the service description file it
//! names (TOML). Every key is described in `docs/ue.md`; `examples/ue.toml`
//! and `examples/news-service.toml` are a working pair.
//!
//! Relative paths are resolved against the directory of the file that
//! contains them.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use zeroize::Zeroizing;

use gba::{Opc, SubscriberKey};
use mbms::{KeyDomainId, KeyGroupName};

/// The default MIKEY port of the UE (`PROFILE.md` section 6: 2269).
pub const DEFAULT_MIKEY_PORT: u16 = mbms::profile::MIKEY_UDP_PORT;

/// Errors reading or validating a configuration or service description
/// (shared by the services).
pub use mbms_service::ConfigError;

/// GBA mode of the simulated UICC (TS 33.246 6.1; `PROFILE.md` section 2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GbaMode {
    /// GBA_ME: MRK and MUK derived from Ks_NAF.
    #[default]
    GbaMe,
    /// GBA_U: MRK = Ks_ext_NAF, MUK = Ks_int_NAF.
    GbaU,
}

/// `[identity]`: the simulated USIM and where its BSF is.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySection {
    /// IMPI, e.g. `user1_private@home1.net`.
    pub impi: String,
    /// K, 32 hex digits.
    pub k: Zeroizing<String>,
    /// OPc, 32 hex digits.
    pub opc: Zeroizing<String>,
    /// SQN_MS of a fresh USIM (used only when the state directory holds no
    /// SQN yet).
    #[serde(default)]
    pub sqn: u64,
    /// `gba_me` (default) or `gba_u`.
    #[serde(default)]
    pub gba: GbaMode,
    /// BSF URL, e.g. `http://127.0.0.1:8080`.
    pub bsf: String,
    /// BSF FQDN (realm of the first Ub request; default `bsf.` + the IMPI
    /// domain).
    #[serde(default)]
    pub bsf_fqdn: Option<String>,
}

impl fmt::Debug for IdentitySection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentitySection")
            .field("impi", &self.impi)
            .field("k", &"<redacted>")
            .field("opc", &"<redacted>")
            .field("sqn", &self.sqn)
            .field("gba", &self.gba)
            .field("bsf", &self.bsf)
            .field("bsf_fqdn", &self.bsf_fqdn)
            .finish()
    }
}

impl IdentitySection {
    /// K.
    pub fn k(&self) -> Result<SubscriberKey, ConfigError> {
        SubscriberKey::from_hex(self.k.trim())
            .map_err(|e| ConfigError::Invalid(format!("identity.k: {e}")))
    }

    /// OPc.
    pub fn opc(&self) -> Result<Opc, ConfigError> {
        Opc::from_hex(self.opc.trim())
            .map_err(|e| ConfigError::Invalid(format!("identity.opc: {e}")))
    }
}

/// The UE configuration file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UeConfig {
    /// State directory: USIM SQN, B-TID and Ks, registrations, MGV-S, MTK
    /// cache, status (created with mode 0700; the key files are 0600).
    pub state_dir: PathBuf,
    /// The service description file.
    pub services: PathBuf,
    /// UDP address of the MIKEY listener (MSK messages, solicited pull);
    /// port 2269 unless configured (`PROFILE.md` section 6). Its port is
    /// sent as the `mikey-port` URI parameter.
    #[serde(default = "default_mikey_listen")]
    pub mikey_listen: SocketAddr,
    /// The port sent as `mikey-port` when it differs from the listener's
    /// (a port mapping between the BM-SC and the UE). Default: the
    /// listener's port.
    #[serde(default)]
    pub mikey_advertised_port: Option<u16>,
    /// Initiation of key management (seed 000 6.3.2.2.2): milliseconds to
    /// wait after registration for pushed MSKs before requesting the
    /// current MSK of each of the service's key groups of which the UE does
    /// not know it holds the current MSK (a next MSK that arrived alone does
    /// not count; seed 002 6.3.2.2.1).
    #[serde(default = "default_initial_wait")]
    pub initial_msk_wait_ms: u64,
    /// Milliseconds to wait for the MIKEY delivery after an MSK request
    /// answered 200 before the request counts as failed.
    #[serde(default = "default_delivery_timeout")]
    pub msk_delivery_timeout_ms: u64,
    /// Missed key update (seed 000 6.3.2.2.3): the MSK request waits a
    /// uniformly random back-off in 0..=this many milliseconds, so that a
    /// population does not hit the BM-SC at once.
    #[serde(default = "default_missed_backoff")]
    pub missed_key_backoff_ms: u64,
    /// Random back-off before answering a solicited pull, milliseconds.
    #[serde(default)]
    pub solicited_pull_backoff_ms: u64,
    /// Attempts of an MSK request (480 answers, transport errors, missing
    /// delivery) before the UE gives up on that key group.
    #[serde(default = "default_attempts")]
    pub msk_request_attempts: u32,
    /// 4-way procedure (seed 004 6.3.2.3.3): milliseconds an MSK may stay
    /// inactive (delivered with SEQs > SEQu, activation not received) while
    /// traffic needs it (an MTK message or an SRTP MKI names it) before the
    /// UE requests that MSK again by its MSK ID; also the wait for the
    /// activation after each such request. After
    /// [`crate::ACTIVATION_REQUESTS`] requests without activation the UE
    /// keeps a still-valid older MSK of the key group or leaves the
    /// services using it (seed 000 6.3.2.2.1). Default 10000; at least 1.
    #[serde(default = "default_activation_timeout")]
    pub activation_timeout_ms: u64,
    /// Re-bootstrap this many seconds before the B-TID expires.
    #[serde(default = "default_margin")]
    pub rebootstrap_margin_s: u64,
    /// Deregister from every service on shutdown (also `--deregister-on-exit`).
    #[serde(default)]
    pub deregister_on_exit: bool,
    /// HTTP timeout of Ub and Ua requests, seconds.
    #[serde(default = "default_http_timeout")]
    pub http_timeout_s: u64,
    /// Local IP address of the UE's HTTP client (Ub and Ua). The BM-SC
    /// sends MIKEY to the source IP of the Ua requests (`PROFILE.md`
    /// section 3), so a UE whose MIKEY listener is bound to one address of a
    /// multi-address host sets the same address here. Default: chosen by
    /// the operating system.
    #[serde(default)]
    pub http_local_address: Option<std::net::IpAddr>,
    /// The identity.
    pub identity: IdentitySection,
    /// The services, read from [`UeConfig::services`] by [`UeConfig::load`].
    #[serde(skip)]
    pub service_list: Vec<Service>,
    /// Start over: discard the state directory's identity (B-TID and Ks,
    /// the MUKs), MSKs, MTKs and registrations, and bootstrap again. Without
    /// it a state directory whose MGV-S (or any other state file) is
    /// missing or damaged refuses to start (`PROFILE.md` section 7). Set by
    /// `mbms ue run --start-over` or by a library user; never read from the
    /// configuration file (a standing "start over" would reset the replay
    /// counters on every start). Default: false.
    #[serde(skip)]
    pub start_over: bool,
}

fn default_mikey_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], DEFAULT_MIKEY_PORT))
}
fn default_initial_wait() -> u64 {
    3000
}
fn default_delivery_timeout() -> u64 {
    5000
}
fn default_missed_backoff() -> u64 {
    2000
}
fn default_attempts() -> u32 {
    3
}
fn default_activation_timeout() -> u64 {
    10_000
}
fn default_margin() -> u64 {
    60
}
fn default_http_timeout() -> u64 {
    30
}

/// Kind of a delivery session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionKind {
    /// SRTP in, plain RTP out.
    Streaming,
    /// Protected objects in, plain files out.
    Download,
}

/// A session of a service (`[[service.session]]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Session {
    /// Name (logs, status, default SDP file name).
    pub name: String,
    /// `streaming` or `download`.
    pub kind: SessionKind,
    /// The key group whose MSKs protect the session's MTKs (default: the
    /// service's first).
    #[serde(default)]
    pub key_group: Option<u16>,
    /// Where the session's MIKEY MTK messages arrive (UDP; a multicast
    /// group is joined). Required for streaming; optional for download
    /// (the `.mikey` file beside each object carries the MTK too).
    #[serde(default)]
    pub mtk_listen: Option<SocketAddr>,
    /// Streaming: where SRTP (and SRTCP) arrives.
    #[serde(default)]
    pub srtp_listen: Option<SocketAddr>,
    /// Streaming: where the plain RTP goes (RTCP to the next port).
    #[serde(default)]
    pub rtp_output: Option<SocketAddr>,
    /// Streaming: SDP media type of the output (`video` or `audio`).
    #[serde(default = "default_media")]
    pub media: String,
    /// Streaming: RTP payload type of the output (default 33, MPEG-TS).
    #[serde(default = "default_pt")]
    pub payload_type: u8,
    /// Streaming: `a=rtpmap` encoding (default `MP2T/90000`).
    #[serde(default = "default_encoding")]
    pub encoding: String,
    /// Streaming: the SDP file to write for the plain RTP output (default
    /// `<state_dir>/<session>.sdp`).
    #[serde(default)]
    pub sdp: Option<PathBuf>,
    /// Streaming: a named suite, `AES_CM_128_HMAC_SHA1_80` (default),
    /// `AES_CM_128_HMAC_SHA1_32`, `NULL_HMAC_SHA1_80`, `NULL_HMAC_SHA1_32`,
    /// `AES_CM_128_NULL_AUTH`, `NULL_CIPHER_NULL_AUTH`; the SP payload of
    /// the MTK message wins.
    #[serde(default)]
    pub srtp_suite: Option<String>,
    /// Download: where protected objects and their `.mikey` files arrive.
    #[serde(default)]
    pub input_dir: Option<PathBuf>,
    /// Download: where the decrypted files go.
    #[serde(default)]
    pub output_dir: Option<PathBuf>,
    /// Download: milliseconds between scans of `input_dir`.
    #[serde(default = "default_scan")]
    pub scan_interval_ms: u64,
}

fn default_media() -> String {
    "video".into()
}
fn default_pt() -> u8 {
    33
}
fn default_encoding() -> String {
    "MP2T/90000".into()
}
fn default_scan() -> u64 {
    500
}

/// A user service (`[[service]]` of the service description file; seed 000
/// 6.3.2.2.2: key management server, confidentiality and integrity on/off,
/// key groups, mapping of the sessions).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    /// MBMS User Service ID, e.g. `urn:mbms:service:news`.
    pub id: String,
    /// The BM-SC key management URI, e.g.
    /// `http://bmsc.home1.net/keymanagement`.
    pub key_management_uri: String,
    /// The BM-SC FQDN: NAF identity for Ks_NAF, IDi of MSK messages, Digest
    /// realm suffix (default: the host of the URI).
    #[serde(default)]
    pub bmsc_fqdn: Option<String>,
    /// Key Domain ID: `MCC-MNC` or 6 hex digits.
    pub key_domain: String,
    /// Key Group parts of the MSKs of the service.
    pub key_groups: Vec<u16>,
    /// Confidentiality protection on/off.
    #[serde(default = "yes")]
    pub confidentiality: bool,
    /// Integrity protection on/off.
    #[serde(default = "yes")]
    pub integrity: bool,
    /// Register and follow the MTK messages even with both protections
    /// off (a session whose SRTP policy is NULL cipher + NULL
    /// authentication still carries MKIs). Default: on when either
    /// protection is.
    #[serde(default)]
    pub key_management: Option<bool>,
    /// The sessions.
    #[serde(default, rename = "session")]
    pub sessions: Vec<Session>,
}

fn yes() -> bool {
    true
}

impl Service {
    /// The Key Domain ID.
    pub fn key_domain_id(&self) -> Result<KeyDomainId, ConfigError> {
        self.key_domain
            .parse()
            .map_err(|e| ConfigError::Invalid(format!("service {}: key_domain: {e}", self.id)))
    }

    /// The key groups, named.
    pub fn key_group_names(&self) -> Vec<KeyGroupName> {
        let kd = self.key_domain_id().unwrap_or(KeyDomainId([0; 3]));
        self.key_groups
            .iter()
            .map(|&g| KeyGroupName {
                key_domain: kd,
                key_group: g,
            })
            .collect()
    }

    /// The BM-SC FQDN (NAF identity).
    pub fn bmsc(&self) -> String {
        self.bmsc_fqdn.clone().unwrap_or_else(|| {
            reqwest::Url::parse(&self.key_management_uri)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_default()
        })
    }

    /// Whether the service uses MBMS key management (registration, MSKs,
    /// MTK messages). Without it (both protections off, `key_management`
    /// not set) the traffic is passed through.
    pub fn protected(&self) -> bool {
        self.key_management
            .unwrap_or(self.confidentiality || self.integrity)
    }

    /// The protections the traffic must have (seed 000 6.3.2.2.2: announced
    /// independently): an MTK message whose SRTP policy lacks one, or a
    /// download object whose header lacks one, is refused.
    pub fn required_protection(&self) -> srtp::download::Protection {
        srtp::download::Protection {
            encryption: self.confidentiality,
            authentication: self.integrity,
        }
    }

    /// The key group of a session.
    pub fn session_key_group(&self, s: &Session) -> KeyGroupName {
        let kd = self.key_domain_id().unwrap_or(KeyDomainId([0; 3]));
        KeyGroupName {
            key_domain: kd,
            key_group: s
                .key_group
                .or(self.key_groups.first().copied())
                .unwrap_or(0),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceFile {
    #[serde(default, rename = "service")]
    services: Vec<Service>,
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_owned()
    } else {
        base.join(p)
    }
}

/// Reads a service description file (paths resolved against its directory).
pub fn load_services(path: &Path) -> Result<Vec<Service>, ConfigError> {
    let f: ServiceFile = mbms_service::config::load_toml(path)?;
    validate_services(&f.services)?;
    let mut services = f.services;
    let base = path.parent().unwrap_or(Path::new("."));
    for s in &mut services {
        for sess in &mut s.sessions {
            for p in [&mut sess.input_dir, &mut sess.output_dir, &mut sess.sdp]
                .into_iter()
                .flatten()
            {
                *p = resolve(base, p);
            }
        }
    }
    Ok(services)
}

/// Parses service description text (paths left as written).
pub fn parse_services(text: &str) -> Result<Vec<Service>, ConfigError> {
    let f: ServiceFile = mbms_service::config::parse_toml_named(text, "(service description)")?;
    validate_services(&f.services)?;
    Ok(f.services)
}

fn validate_services(services: &[Service]) -> Result<(), ConfigError> {
    let bad = |m: String| Err(ConfigError::Invalid(m));
    if services.is_empty() {
        return bad("the service description lists no service".into());
    }
    let mut ids = BTreeSet::new();
    let mut names = BTreeSet::new();
    for s in services {
        // The ID goes into the Ua bodies: XML must carry it (issue 14
        // point 11; `mbms::ua::check_text`).
        if s.id.is_empty()
            || s.id.chars().any(char::is_control)
            || mbms::ua::check_text("serviceId", &s.id).is_err()
        {
            return bad(format!("service ID {:?}", s.id));
        }
        if !ids.insert(s.id.clone()) {
            return bad(format!("service {} listed twice", s.id));
        }
        let uri = reqwest::Url::parse(&s.key_management_uri).map_err(|e| {
            ConfigError::Invalid(format!("service {}: key_management_uri: {e}", s.id))
        })?;
        if !matches!(uri.scheme(), "http" | "https") || !uri.has_host() {
            return bad(format!(
                "service {}: key_management_uri must be an http(s) URL",
                s.id
            ));
        }
        if s.bmsc().is_empty() {
            return bad(format!("service {}: no BM-SC FQDN", s.id));
        }
        s.key_domain_id()?;
        if s.key_groups.is_empty() || s.key_groups.contains(&0) {
            return bad(format!(
                "service {}: key_groups must list Key Group parts 1..=65535",
                s.id
            ));
        }
        if s.key_management == Some(false) && (s.confidentiality || s.integrity) {
            return bad(format!(
                "service {}: key_management = false with confidentiality or integrity on (protection needs the MSKs)",
                s.id
            ));
        }
        for sess in &s.sessions {
            if !names.insert(sess.name.clone()) {
                return bad(format!("session {} defined twice", sess.name));
            }
            if sess.name.is_empty()
                || sess
                    .name
                    .chars()
                    .any(|c| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
            {
                return bad(format!(
                    "session name {:?}: use letters, digits, '-', '_' and '.'",
                    sess.name
                ));
            }
            if let Some(g) = sess.key_group {
                if !s.key_groups.contains(&g) {
                    return bad(format!(
                        "session {}: key group {g} is not a key group of service {}",
                        sess.name, s.id
                    ));
                }
            }
            match sess.kind {
                SessionKind::Streaming => {
                    if sess.srtp_listen.is_none() || sess.rtp_output.is_none() {
                        return bad(format!(
                            "streaming session {}: srtp_listen and rtp_output are required",
                            sess.name
                        ));
                    }
                    if s.protected() && sess.mtk_listen.is_none() {
                        return bad(format!(
                            "streaming session {}: mtk_listen is required",
                            sess.name
                        ));
                    }
                    if !matches!(sess.media.as_str(), "video" | "audio") {
                        return bad(format!(
                            "session {}: media must be video or audio",
                            sess.name
                        ));
                    }
                    if sess.payload_type > 127 {
                        return bad(format!(
                            "session {}: payload_type must be 0..=127",
                            sess.name
                        ));
                    }
                    if sess.encoding.is_empty() || sess.encoding.chars().any(char::is_whitespace) {
                        return bad(format!(
                            "session {}: encoding {:?}",
                            sess.name, sess.encoding
                        ));
                    }
                    srtp_suite(sess.srtp_suite.as_deref())
                        .map_err(|e| ConfigError::Invalid(format!("session {}: {e}", sess.name)))?;
                }
                SessionKind::Download => {
                    if sess.input_dir.is_none() || sess.output_dir.is_none() {
                        return bad(format!(
                            "download session {}: input_dir and output_dir are required",
                            sess.name
                        ));
                    }
                    if sess.scan_interval_ms == 0 {
                        return bad(format!(
                            "download session {}: scan_interval_ms must be at least 1",
                            sess.name
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// The SRTP suite named in a session (default AES_CM_128_HMAC_SHA1_80):
/// the context before the first MTK message, whose SP payload wins.
pub fn srtp_suite(name: Option<&str>) -> Result<srtp::Suite, String> {
    match name.map(str::trim) {
        None => Ok(srtp::Suite::default()),
        Some(n) => srtp::Suite::from_name(n).ok_or_else(|| {
            format!(
                "srtp_suite {n:?} (use one of {})",
                srtp::Suite::NAMED.map(|(n, _)| n).join(", ")
            )
        }),
    }
}

impl UeConfig {
    /// Reads and validates `ue.toml` and the service description it names.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let mut cfg: UeConfig = mbms_service::config::load_toml(path)?;
        cfg.validate_own()?;
        let base = path.parent().unwrap_or(Path::new("."));
        cfg.state_dir = resolve(base, &cfg.state_dir);
        cfg.services = resolve(base, &cfg.services);
        cfg.service_list = load_services(&cfg.services)?;
        Ok(cfg)
    }

    /// Parses `ue.toml` text (the service list stays empty; paths are left
    /// as written).
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let cfg: UeConfig = mbms_service::config::parse_toml(text)?;
        cfg.validate_own()?;
        Ok(cfg)
    }

    fn validate_own(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        self.identity.k()?;
        self.identity.opc()?;
        if self.identity.impi.is_empty() {
            return bad("identity.impi is empty".into());
        }
        if gba::Sqn48::new(self.identity.sqn).is_err() {
            return bad("identity.sqn must fit 48 bits".into());
        }
        if !(self.identity.bsf.starts_with("http://") || self.identity.bsf.starts_with("https://"))
        {
            return bad(format!(
                "identity.bsf {:?} is not an http(s) URL",
                self.identity.bsf
            ));
        }
        if self.msk_request_attempts == 0 || self.http_timeout_s == 0 {
            return bad("msk_request_attempts and http_timeout_s must be at least 1".into());
        }
        if self.activation_timeout_ms == 0 {
            return bad("activation_timeout_ms must be at least 1".into());
        }
        Ok(())
    }

    /// Validates the service list (after setting it programmatically).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_own()?;
        validate_services(&self.service_list)
    }

    /// The HTTP timeout.
    pub fn http_timeout(&self) -> Duration {
        Duration::from_secs(self.http_timeout_s)
    }

    /// How long an inactive MSK that traffic needs may wait for its
    /// activation (and each re-request for its answer).
    pub fn activation_timeout(&self) -> Duration {
        Duration::from_millis(self.activation_timeout_ms)
    }

    /// The SDP file of a streaming session.
    pub fn sdp_path(&self, s: &Session) -> PathBuf {
        s.sdp
            .clone()
            .unwrap_or_else(|| self.state_dir.join(format!("{}.sdp", s.name)))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal UE configuration (also used by the `core` tests).
    pub(crate) const UE: &str = r#"
state_dir = "state"
services = "svc.toml"
mikey_listen = "127.0.0.1:0"
[identity]
impi = "user1_private@home1.net"
k = "465b5ce8b199b49faa5f0a2ee238a6bc"
opc = "cd63cb71954a9f4e48a5994e37a02baf"
bsf = "http://127.0.0.1:8080"
"#;

    const SVC: &str = r#"
[[service]]
id = "urn:mbms:service:news"
key_management_uri = "http://127.0.0.1:8081/keymanagement"
bmsc_fqdn = "bmsc.home1.net"
key_domain = "001-01"
key_groups = [1]

[[service.session]]
name = "video"
kind = "streaming"
mtk_listen = "127.0.0.1:5002"
srtp_listen = "127.0.0.1:5004"
rtp_output = "127.0.0.1:6004"

[[service.session]]
name = "files"
kind = "download"
input_dir = "in"
output_dir = "out"
"#;

    #[test]
    fn parses_and_defaults() {
        let c = UeConfig::parse(UE).unwrap();
        assert_eq!(c.initial_msk_wait_ms, 3000);
        assert_eq!(c.activation_timeout_ms, 10_000);
        assert_eq!(c.identity.gba, GbaMode::GbaMe);
        assert!(!format!("{c:?}").contains("465b5ce8"));
        let s = parse_services(SVC).unwrap();
        assert_eq!(s[0].bmsc(), "bmsc.home1.net");
        assert_eq!(s[0].sessions[0].payload_type, 33);
        assert_eq!(s[0].sessions[0].encoding, "MP2T/90000");
        assert_eq!(s[0].session_key_group(&s[0].sessions[1]).key_group, 1);
    }

    #[test]
    fn refusals() {
        assert!(UeConfig::parse(&UE.replace("465b", "zz5b")).is_err());
        assert!(UeConfig::parse(&format!("{UE}\nbogus = 1")).is_err());
        assert!(UeConfig::parse(&UE.replace(
            "mikey_listen = \"127.0.0.1:0\"",
            "mikey_listen = \"127.0.0.1:0\"\nactivation_timeout_ms = 0"
        ))
        .is_err());
        assert!(parse_services(&SVC.replace("key_groups = [1]", "key_groups = [0]")).is_err());
        // Issue 14 point 11: a service ID goes into Ua XML bodies; one that
        // XML 1.0 cannot carry is refused here, where it comes from.
        for id in ["urn:a\\u0001", "urn:a\\uFFFE", "urn:a\\uFFFF"] {
            let e = parse_services(&SVC.replace("urn:mbms:service:news", id)).unwrap_err();
            assert!(e.to_string().contains("service ID"), "{e}");
        }
        // Seed 000 6.3.2.2.2: confidentiality and integrity independently.
        for (c, i) in [(false, true), (true, false), (false, false)] {
            let s = parse_services(&SVC.replace(
                "key_groups = [1]",
                &format!("key_groups = [1]\nconfidentiality = {c}\nintegrity = {i}"),
            ))
            .unwrap();
            assert_eq!(s[0].protected(), c || i);
            assert_eq!(
                s[0].required_protection(),
                srtp::download::Protection {
                    encryption: c,
                    authentication: i
                }
            );
        }
        let s = parse_services(&SVC.replace(
            "key_groups = [1]",
            "key_groups = [1]\nconfidentiality = false\nintegrity = false\nkey_management = true",
        ))
        .unwrap();
        assert!(s[0].protected());
        assert!(parse_services(&SVC.replace(
            "key_groups = [1]",
            "key_groups = [1]\nkey_management = false"
        ))
        .is_err());
        assert!(parse_services(&SVC.replace(
            "rtp_output = \"127.0.0.1:6004\"",
            "rtp_output = \"127.0.0.1:6004\"\nsrtp_suite = \"F8_128_HMAC_SHA1_80\""
        ))
        .is_err());
        assert!(parse_services(&SVC.replace(
            "rtp_output = \"127.0.0.1:6004\"",
            "rtp_output = \"127.0.0.1:6004\"\nsrtp_suite = \"NULL_HMAC_SHA1_80\""
        ))
        .is_ok());
        assert!(parse_services(&SVC.replace("mtk_listen = \"127.0.0.1:5002\"\n", "")).is_err());
        assert!(parse_services(&SVC.replace("input_dir = \"in\"\n", "")).is_err());
        assert!(parse_services(&SVC.replace("name = \"files\"", "name = \"video\"")).is_err());
        assert!(parse_services("").is_err());
    }
}
