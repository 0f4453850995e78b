//! What the services' TOML configuration files share: the error type of
//! reading and validating one ([`ConfigError`], [`load_toml`],
//! [`parse_toml`]) and the bearer tokens they hold ([`Token`]: Zn, the
//! BM-SC admin API).

use std::fmt;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

/// What [`parse_toml`] names as the path of text that came from no file.
pub const TEXT_SOURCE: &str = "(text)";

/// Errors reading or validating a configuration file (or a UE service
/// description).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The path.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML for the file's schema.
    #[error("invalid configuration {path}")]
    Parse {
        /// The path ([`TEXT_SOURCE`] for text).
        path: String,
        /// The cause.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A value is out of range, malformed or inconsistent.
    #[error("invalid configuration: {0}")]
    Invalid(String),
    /// A session's traffic protection settings are refused (BM-SC).
    #[error("invalid configuration: session {session}: {source}")]
    Protection {
        /// The session.
        session: String,
        /// What is wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

/// Deserializes TOML text (no file: errors name [`TEXT_SOURCE`]).
pub fn parse_toml<T: DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
    parse_toml_named(text, TEXT_SOURCE)
}

/// Reads and deserializes the TOML file at `path` (errors name the path).
pub fn load_toml<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: shown.clone(),
        source,
    })?;
    parse_toml_named(&text, &shown)
}

/// Deserializes TOML text whose errors name it `path`.
pub fn parse_toml_named<T: DeserializeOwned>(text: &str, path: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        source: Box::new(e),
    })
}

/// A bearer token (Zn, PROFILE.md section 5; the BM-SC admin API):
/// zeroized on drop, redacted in `Debug`, compared in constant time.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Token(Zeroizing<String>);

impl Token {
    /// Wraps a token.
    pub fn new(token: impl Into<String>) -> Self {
        Token(Zeroizing::new(token.into()))
    }

    /// Whether `presented` is the token. Both are hashed first so that the
    /// comparison (`subtle`) is constant time whatever their lengths.
    pub fn verify(&self, presented: &str) -> bool {
        let a = Sha256::digest(self.0.as_bytes());
        let b = Sha256::digest(presented.as_bytes());
        bool::from(a.ct_eq(&b))
    }

    /// The text (to present it to a server).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether an `Authorization` header value `Bearer <token>` (scheme
    /// case-insensitive, RFC 6750 2.1) carries this token.
    pub fn check_bearer(&self, header: Option<&str>) -> bool {
        header
            .and_then(|v| {
                let (scheme, t) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| t.trim())
            })
            .is_some_and(|t| self.verify(t))
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens() {
        let t = Token::new("s3cret");
        assert!(t.verify("s3cret"));
        assert!(!t.verify("s3cre"));
        assert!(t.check_bearer(Some("Bearer s3cret")));
        assert!(t.check_bearer(Some("  bearer   s3cret ")));
        assert!(!t.check_bearer(Some("Basic s3cret")));
        assert!(!t.check_bearer(Some("Bearer other")));
        assert!(!t.check_bearer(Some("s3cret")));
        assert!(!t.check_bearer(None));
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
        assert_eq!(t.expose(), "s3cret");
    }

    #[test]
    fn toml_errors_name_the_file() {
        #[derive(Debug, Deserialize)]
        struct C {
            #[allow(dead_code)]
            a: u32,
        }
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.toml");
        match load_toml::<C>(&p) {
            Err(ConfigError::Read { path, .. }) => assert!(path.ends_with("c.toml")),
            other => panic!("{other:?}"),
        }
        std::fs::write(&p, "a = \"x\"").unwrap();
        match load_toml::<C>(&p) {
            Err(e @ ConfigError::Parse { .. }) => {
                assert!(e.to_string().starts_with("invalid configuration "));
                assert!(e.to_string().ends_with("c.toml"));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse_toml::<C>("a = -1"),
            Err(ConfigError::Parse { path, .. }) if path == TEXT_SOURCE
        ));
        assert_eq!(parse_toml::<C>("a = 1").unwrap().a, 1);
    }
}
