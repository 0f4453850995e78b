//! The BSF configuration file (TOML) and its validation.
//!
//! ```toml
//! fqdn = "bsf.home1.net"          # realm on Ub and the B-TID suffix
//! listen = "127.0.0.1:8080"
//! db = "bsf.db"                   # relative to the working directory
//! session_lifetime = 3600         # seconds (TS 33.220 4.5.2 key lifetime)
//! nonce_lifetime = 300            # seconds a Ub challenge stays valid
//! purge_interval = 60             # seconds between purges of expired sessions
//! zn_token = "zn-demo-token"      # bearer token of Zn (PROFILE.md section 5)
//!
//! [http]                          # HTTP limits (mbms_service::HttpLimits), seconds
//! header_read_timeout = 10
//! body_read_timeout = 30
//! idle_timeout = 60
//! max_connections = 512
//! shutdown_timeout = 10
//!
//! [[subscriber]]                  # provisioned at start if absent
//! impi = "user1_private@home1.net"
//! k = "465b5ce8b199b49faa5f0a2ee238a6bc"
//! opc = "cd63cb71954a9f4e48a5994e37a02baf"
//! sqn = 0
//! amf = "8000"
//! gba_type = "gba_me"
//! ```

use core::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use zeroize::Zeroizing;

use gba::aka::Amf;
use gba::{Opc, Sqn48, SubscriberKey};
use mbms_service::HttpLimits;

use crate::server::Settings;
use crate::store::{GbaType, Subscriber};

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default database path.
pub const DEFAULT_DB: &str = "bsf.db";
/// Default bootstrapping session (key) lifetime, seconds (TS 33.220 4.5.2
/// leaves the value to the operator).
pub const DEFAULT_SESSION_LIFETIME_SECS: u64 = 3600;
/// Default purge interval for expired sessions, seconds.
pub const DEFAULT_PURGE_INTERVAL_SECS: u64 = 60;
/// Default AMF of a subscriber (TS 33.102 Annex F: the separation bit set).
pub const DEFAULT_AMF: Amf = [0x80, 0x00];

/// Characters refused in `fqdn`: they cannot stand in a host name, and the
/// FQDN is written unescaped into the Digest realm and the B-TID
/// (`<btid>` of the Ub body, TS 24.109 Annex A; XML 1.0 section 2.4 for
/// `<`, `&` and `>`).
const FQDN_REFUSED: [char; 8] = ['@', '"', '/', ' ', '<', '>', '&', '\''];

/// Errors reading or validating the configuration (shared by the
/// services).
pub use mbms_service::ConfigError;

/// The Zn bearer token (PROFILE.md section 5). Zeroized on drop, redacted in
/// `Debug`, compared in constant time.
pub type ZnToken = mbms_service::Token;

/// A subscriber in the configuration file (provisioned at start if absent).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriberConfig {
    /// IMPI.
    pub impi: String,
    /// K, 32 hex digits.
    pub k: Zeroizing<String>,
    /// OPc, 32 hex digits.
    pub opc: Zeroizing<String>,
    /// Initial SQN_HE (default 0: the first vector uses SQN 1).
    #[serde(default)]
    pub sqn: u64,
    /// AMF, 4 hex digits (default 8000).
    #[serde(default)]
    pub amf: Option<String>,
    /// `gba_me` (default) or `gba_u`.
    #[serde(default)]
    pub gba_type: GbaType,
}

impl fmt::Debug for SubscriberConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriberConfig")
            .field("impi", &self.impi)
            .field("k", &"<redacted>")
            .field("opc", &"<redacted>")
            .field("sqn", &self.sqn)
            .field("amf", &self.amf)
            .field("gba_type", &self.gba_type)
            .finish()
    }
}

/// Parses the textual form of a subscriber (config file, CSV import and
/// command line share it).
pub fn parse_subscriber(
    impi: &str,
    k: &str,
    opc: &str,
    sqn: u64,
    amf: Option<&str>,
    gba_type: GbaType,
) -> Result<Subscriber, String> {
    let impi = impi.trim();
    if impi.is_empty() {
        return Err("empty IMPI".into());
    }
    if impi
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == ',')
    {
        return Err(format!(
            "IMPI {impi:?} contains spaces, commas or control characters"
        ));
    }
    let k = SubscriberKey::from_hex(k.trim()).map_err(|e| format!("{impi}: K: {e}"))?;
    let opc = Opc::from_hex(opc.trim()).map_err(|e| format!("{impi}: OPc: {e}"))?;
    let sqn = Sqn48::new(sqn).map_err(|e| format!("{impi}: SQN: {e}"))?;
    let amf = match amf.map(str::trim) {
        None | Some("") => DEFAULT_AMF,
        Some(text) => {
            let bytes = hex::decode(text).map_err(|_| format!("{impi}: AMF {text:?}: not hex"))?;
            bytes
                .try_into()
                .map_err(|_| format!("{impi}: AMF {text:?}: expected 4 hex digits"))?
        }
    };
    Ok(Subscriber {
        impi: impi.to_owned(),
        k,
        opc,
        sqn,
        amf,
        gba_type,
    })
}

fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN.parse().expect("valid default address")
}
fn default_db() -> PathBuf {
    PathBuf::from(DEFAULT_DB)
}
fn default_session_lifetime() -> u64 {
    DEFAULT_SESSION_LIFETIME_SECS
}
fn default_nonce_lifetime() -> u64 {
    gba::digest::server::DEFAULT_NONCE_LIFETIME_SECS
}
fn default_purge_interval() -> u64 {
    DEFAULT_PURGE_INTERVAL_SECS
}

/// The BSF configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BsfConfig {
    /// The BSF FQDN: the Digest realm on Ub and the suffix of B-TIDs
    /// (TS 24.109 A.3; PROFILE.md section 1).
    pub fqdn: String,
    /// Listen address.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// SQLite database path (relative paths are relative to the working
    /// directory).
    #[serde(default = "default_db")]
    pub db: PathBuf,
    /// Key lifetime of a bootstrapping session, seconds.
    #[serde(default = "default_session_lifetime")]
    pub session_lifetime: u64,
    /// Lifetime of a Ub challenge (Digest nonce), seconds.
    #[serde(default = "default_nonce_lifetime")]
    pub nonce_lifetime: u64,
    /// Seconds between purges of expired sessions.
    #[serde(default = "default_purge_interval")]
    pub purge_interval: u64,
    /// The Zn bearer token.
    pub zn_token: ZnToken,
    /// HTTP limits: header, body and idle timeouts, connection limit,
    /// shutdown bound (the `[http]` table).
    #[serde(default)]
    pub http: HttpLimits,
    /// Subscribers to provision at start (existing ones are left alone).
    #[serde(default, rename = "subscriber")]
    pub subscribers: Vec<SubscriberConfig>,
}

impl BsfConfig {
    /// Reads and validates a TOML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let cfg: Self = mbms_service::config::load_toml(path)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// A minimal configuration (used by tests and as a programmatic start).
    pub fn new(fqdn: impl Into<String>, zn_token: ZnToken) -> Self {
        Self {
            fqdn: fqdn.into(),
            listen: default_listen(),
            db: default_db(),
            session_lifetime: DEFAULT_SESSION_LIFETIME_SECS,
            nonce_lifetime: default_nonce_lifetime(),
            purge_interval: DEFAULT_PURGE_INTERVAL_SECS,
            zn_token,
            http: HttpLimits::default(),
            subscribers: Vec::new(),
        }
    }

    /// Checks ranges and parses the provisioned subscribers.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fqdn = self.fqdn.trim();
        if fqdn.is_empty()
            || fqdn != self.fqdn
            || fqdn.contains(FQDN_REFUSED)
            || fqdn.chars().any(char::is_control)
        {
            return Err(ConfigError::Invalid(format!(
                "fqdn {:?} is not a host name",
                self.fqdn
            )));
        }
        for (name, v) in [
            ("session_lifetime", self.session_lifetime),
            ("nonce_lifetime", self.nonce_lifetime),
            ("purge_interval", self.purge_interval),
        ] {
            if v == 0 {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be at least 1 second"
                )));
            }
        }
        if self.zn_token.expose().is_empty() {
            return Err(ConfigError::Invalid("zn_token must not be empty".into()));
        }
        self.http.validate().map_err(ConfigError::Invalid)?;
        self.provisioned_subscribers()?;
        Ok(())
    }

    /// The `[[subscriber]]` entries, parsed.
    pub fn provisioned_subscribers(&self) -> Result<Vec<Subscriber>, ConfigError> {
        self.subscribers
            .iter()
            .map(|s| {
                parse_subscriber(&s.impi, &s.k, &s.opc, s.sqn, s.amf.as_deref(), s.gba_type)
                    .map_err(|e| ConfigError::Invalid(format!("subscriber: {e}")))
            })
            .collect()
    }

    /// The server settings.
    pub fn settings(&self) -> Settings {
        Settings {
            fqdn: self.fqdn.clone(),
            session_lifetime: self.session_lifetime,
            nonce_lifetime: self.nonce_lifetime,
            purge_interval: Duration::from_secs(self.purge_interval),
            zn_token: self.zn_token.clone(),
            http: self.http.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_file_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/bsf.toml");
        let cfg = BsfConfig::load(&path).unwrap();
        assert_eq!(cfg.fqdn, "bsf.home1.net");
        // The example spells out the documented defaults.
        assert_eq!(cfg.http, HttpLimits::default());
        assert!(cfg.zn_token.verify("zn-demo-token"));
        let subs = cfg.provisioned_subscribers().unwrap();
        assert_eq!(subs[0].impi, "user1_private@home1.net");
        assert!(!format!("{cfg:?}").contains("zn-demo-token"));
        assert!(!format!("{cfg:?}").contains("465b5ce8"));
    }

    #[test]
    fn bad_values_are_refused() {
        let base = "fqdn = \"bsf.x\"\nzn_token = \"t\"\n";
        assert!(toml::from_str::<BsfConfig>(base)
            .unwrap()
            .validate()
            .is_ok());
        let bad = format!("{base}session_lifetime = 0\n");
        assert!(toml::from_str::<BsfConfig>(&bad)
            .unwrap()
            .validate()
            .is_err());
        let bad = format!("{base}[[subscriber]]\nimpi = \"a@x\"\nk = \"00\"\nopc = \"00\"\n");
        assert!(toml::from_str::<BsfConfig>(&bad)
            .unwrap()
            .validate()
            .is_err());
        assert!(toml::from_str::<BsfConfig>("fqdn = \"x\"\nzn_token = \"t\"\nbogus = 1").is_err());
        // Issue 14 point 11: the FQDN is written unescaped into the B-TID of
        // the Ub XML body: markup characters are refused.
        for fqdn in ["bsf<x", "bsf&x", "bsf>x", "bsf'x", "bsf\\u0001x"] {
            let bad = base.replace("bsf.x", fqdn);
            let e = toml::from_str::<BsfConfig>(&bad)
                .unwrap()
                .validate()
                .unwrap_err();
            assert!(e.to_string().contains("not a host name"), "{fqdn}: {e}");
        }
        let bad = format!("{base}[http]\nidle_timeout = 0\n");
        let e = toml::from_str::<BsfConfig>(&bad)
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("http.idle_timeout"), "{e}");
        let short = format!("{base}[http]\nheader_read_timeout = 0.5\nmax_connections = 4\n");
        let cfg = toml::from_str::<BsfConfig>(&short).unwrap();
        cfg.validate().unwrap();
        assert_eq!(
            cfg.settings().http.header_read_timeout,
            Duration::from_millis(500)
        );
        assert_eq!(cfg.settings().http.max_connections, 4);
    }

    #[test]
    fn token_compare() {
        let t = ZnToken::new("secret");
        assert!(t.verify("secret"));
        assert!(!t.verify("secreT"));
        assert!(!t.verify(""));
    }
}
