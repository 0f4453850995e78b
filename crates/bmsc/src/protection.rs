//! How a session protects its traffic (`PROFILE.md` section 8).
//!
//! Confidentiality and integrity are announced independently (seed 000
//! 6.3.2.2.2), so a session chooses each:
//!
//! * streaming: `srtp_suite` (a named suite) or `srtp_encryption`
//!   (`aes-cm-128` | `null`) and `srtp_auth` (`hmac-sha1-80` |
//!   `hmac-sha1-32` | `hmac-sha1-<bits>` | `null`), plus `srtcp_encryption`;
//!   the MTK messages carry the choice in their SP payload
//!   ([`mbms::traffic::srtp_policy`]);
//! * download: `download_encryption` (`aes-128-cbc` | `null`) and
//!   `download_auth` (`hmac-sha1-80` | `null`); each protected object's
//!   header carries the choice ([`srtp::download::Protection`]).
//!
//! Refused at configuration load, with a [`ProtectionError`]: unknown
//! names, a suite and separate choices together, SRTCP encryption with the
//! NULL cipher, keys of the other session kind, and what no protocol
//! defines (a tag over 160 bits).

use srtp::download::Protection;
use srtp::{Auth, Cipher, Suite};

use crate::config::{SessionKind, SessionSection};

/// Default SRTP suite of a streaming session (`PROFILE.md` section 8:
/// AES_CM_128_HMAC_SHA1_80).
pub const DEFAULT_SUITE: Suite = Suite::AES_CM_128_HMAC_SHA1_80;

/// Default protection of download objects (`PROFILE.md` section 8:
/// AES-128-CBC and HMAC-SHA-1-80).
pub const DEFAULT_DOWNLOAD_PROTECTION: Protection = Protection::BOTH;

/// A session's protection settings were refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtectionError {
    /// `srtp_suite` names no known suite.
    #[error("unknown srtp_suite {0:?} (use AES_CM_128_HMAC_SHA1_80, AES_CM_128_HMAC_SHA1_32, NULL_HMAC_SHA1_80, NULL_HMAC_SHA1_32, AES_CM_128_NULL_AUTH or NULL_CIPHER_NULL_AUTH)")]
    UnknownSuite(String),
    /// A value that the key does not accept.
    #[error("{key} = {value:?} (use {expected})")]
    UnknownValue {
        /// The configuration key.
        key: &'static str,
        /// The value found.
        value: String,
        /// What it accepts.
        expected: &'static str,
    },
    /// A named suite and a separate choice of the same thing.
    #[error(
        "srtp_suite and {0} both given: name a suite, or choose srtp_encryption and srtp_auth"
    )]
    Conflict(&'static str),
    /// SRTCP encryption asked for with the NULL cipher.
    #[error("srtcp_encryption = true needs a cipher (srtp_encryption = \"aes-cm-128\")")]
    SrtcpEncryptionWithoutCipher,
    /// A key of the other session kind.
    #[error("{key} applies to {kind} sessions only")]
    WrongKind {
        /// The configuration key.
        key: &'static str,
        /// The kind it is for.
        kind: &'static str,
    },
    /// The combination breaks an SRTP rule (e.g. a tag over 160 bits).
    #[error(transparent)]
    Policy(#[from] mbms::traffic::PolicyRefused),
}

fn unknown(key: &'static str, value: &str, expected: &'static str) -> ProtectionError {
    ProtectionError::UnknownValue {
        key,
        value: value.to_owned(),
        expected,
    }
}

fn no_download_keys(s: &SessionSection) -> Result<(), ProtectionError> {
    for (key, set) in [
        ("download_encryption", s.download_encryption.is_some()),
        ("download_auth", s.download_auth.is_some()),
    ] {
        if set {
            return Err(ProtectionError::WrongKind {
                key,
                kind: "download",
            });
        }
    }
    Ok(())
}

fn no_streaming_keys(s: &SessionSection) -> Result<(), ProtectionError> {
    for (key, set) in [
        ("srtp_suite", s.srtp_suite.is_some()),
        ("srtp_encryption", s.srtp_encryption.is_some()),
        ("srtp_auth", s.srtp_auth.is_some()),
        ("srtcp_encryption", s.srtcp_encryption.is_some()),
    ] {
        if set {
            return Err(ProtectionError::WrongKind {
                key,
                kind: "streaming",
            });
        }
    }
    Ok(())
}

/// The SRTP configuration of a streaming session and the SP payload its
/// MTK messages carry.
pub fn streaming(s: &SessionSection) -> Result<(srtp::Config, mikey::SrtpPolicy), ProtectionError> {
    no_download_keys(s)?;
    let mut suite = DEFAULT_SUITE;
    if let Some(name) = &s.srtp_suite {
        for (key, set) in [
            ("srtp_encryption", s.srtp_encryption.is_some()),
            ("srtp_auth", s.srtp_auth.is_some()),
        ] {
            if set {
                return Err(ProtectionError::Conflict(key));
            }
        }
        suite = Suite::from_name(name.trim())
            .ok_or_else(|| ProtectionError::UnknownSuite(name.clone()))?;
    }
    if let Some(e) = &s.srtp_encryption {
        suite.cipher = match e.trim() {
            "aes-cm-128" => Cipher::AesCm128,
            "null" => Cipher::Null,
            _ => return Err(unknown("srtp_encryption", e, "\"aes-cm-128\" or \"null\"")),
        };
    }
    if let Some(a) = &s.srtp_auth {
        const EXPECTED: &str =
            "\"hmac-sha1-80\", \"hmac-sha1-32\", \"hmac-sha1-<bits>\" (a multiple of 8) or \"null\"";
        let a_ = a.trim();
        (suite.auth, suite.tag_len) = if a_ == "null" {
            (Auth::Null, 0)
        } else {
            let bits: u32 = a_
                .strip_prefix("hmac-sha1-")
                .and_then(|b| b.parse().ok())
                .filter(|b| b % 8 == 0)
                .ok_or_else(|| unknown("srtp_auth", a, EXPECTED))?;
            // Over 160 bits: refused below, with the RFC 3711 reason.
            let tag = u8::try_from(bits / 8).unwrap_or(u8::MAX);
            (Auth::HmacSha1, tag)
        };
    }
    let encrypting = suite.cipher != Cipher::Null;
    let srtcp_encryption = match s.srtcp_encryption {
        Some(true) if !encrypting => return Err(ProtectionError::SrtcpEncryptionWithoutCipher),
        Some(v) => v,
        None => encrypting,
    };
    let cfg = mbms::traffic::canonical(srtp::Config {
        suite,
        srtp_encryption: encrypting,
        srtcp_encryption,
        ..srtp::Config::mbms()
    });
    let policy = mbms::traffic::srtp_policy(&cfg)?;
    Ok((cfg, policy))
}

/// The protection of a download session's objects.
pub fn download(s: &SessionSection) -> Result<Protection, ProtectionError> {
    no_streaming_keys(s)?;
    let mut p = DEFAULT_DOWNLOAD_PROTECTION;
    if let Some(e) = &s.download_encryption {
        p.encryption = match e.trim() {
            "aes-128-cbc" => true,
            "null" => false,
            _ => {
                return Err(unknown(
                    "download_encryption",
                    e,
                    "\"aes-128-cbc\" or \"null\"",
                ))
            }
        };
    }
    if let Some(a) = &s.download_auth {
        p.authentication = match a.trim() {
            "hmac-sha1-80" => true,
            "null" => false,
            _ => return Err(unknown("download_auth", a, "\"hmac-sha1-80\" or \"null\"")),
        };
    }
    Ok(p)
}

/// Checks a session's protection settings (configuration load).
pub fn check(s: &SessionSection) -> Result<(), ProtectionError> {
    match s.kind {
        SessionKind::Streaming => streaming(s).map(|_| ()),
        SessionKind::Download => download(s).map(|_| ()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(kind: &str, extra: &str) -> SessionSection {
        toml::from_str(&format!(
            "name = \"s\"\nkind = \"{kind}\"\nkey_group = 1\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn streaming_choices() {
        let cfg = |extra: &str| streaming(&session("streaming", extra)).map(|(c, _)| c.suite);
        assert_eq!(cfg(""), Ok(Suite::AES_CM_128_HMAC_SHA1_80));
        for (name, s) in Suite::NAMED {
            assert_eq!(cfg(&format!("srtp_suite = \"{name}\"")), Ok(s));
        }
        for (e, a, s) in [
            ("aes-cm-128", "hmac-sha1-80", Suite::AES_CM_128_HMAC_SHA1_80),
            ("null", "hmac-sha1-80", Suite::NULL_HMAC_SHA1_80),
            ("aes-cm-128", "null", Suite::AES_CM_128_NULL_AUTH),
            ("null", "null", Suite::NULL_CIPHER_NULL_AUTH),
            ("null", "hmac-sha1-32", Suite::NULL_HMAC_SHA1_32),
        ] {
            assert_eq!(
                cfg(&format!("srtp_encryption = \"{e}\"\nsrtp_auth = \"{a}\"")),
                Ok(s)
            );
        }
        assert_eq!(
            cfg("srtp_auth = \"hmac-sha1-160\"").map(|s| s.tag_len),
            Ok(20)
        );
        let c = streaming(&session("streaming", "srtcp_encryption = false"))
            .unwrap()
            .0;
        assert!(c.encrypts_rtp() && !c.encrypts_rtcp());
    }

    #[test]
    fn streaming_refusals_are_typed() {
        let err = |extra: &str| streaming(&session("streaming", extra)).unwrap_err();
        assert_eq!(
            err("srtp_auth = \"hmac-sha1-168\""),
            ProtectionError::Policy(mbms::traffic::PolicyRefused::Srtp(
                srtp::ConfigError::TagTooLong { tag_len: 21 }
            ))
        );
        assert!(matches!(
            err("srtp_auth = \"hmac-sha1-33\""),
            ProtectionError::UnknownValue {
                key: "srtp_auth",
                ..
            }
        ));
        assert!(matches!(
            err("srtp_encryption = \"aes-f8\""),
            ProtectionError::UnknownValue {
                key: "srtp_encryption",
                ..
            }
        ));
        assert_eq!(
            err("srtp_suite = \"NULL_HMAC_SHA1_80\"\nsrtp_auth = \"null\""),
            ProtectionError::Conflict("srtp_auth")
        );
        assert_eq!(
            err("srtp_encryption = \"null\"\nsrtcp_encryption = true"),
            ProtectionError::SrtcpEncryptionWithoutCipher
        );
        assert!(matches!(
            err("srtp_suite = \"F8_128_HMAC_SHA1_80\""),
            ProtectionError::UnknownSuite(_)
        ));
        assert_eq!(
            err("download_auth = \"null\""),
            ProtectionError::WrongKind {
                key: "download_auth",
                kind: "download"
            }
        );
    }

    #[test]
    fn download_choices() {
        let p = |extra: &str| download(&session("download", extra));
        assert_eq!(p(""), Ok(Protection::BOTH));
        assert_eq!(
            p("download_encryption = \"null\""),
            Ok(Protection {
                encryption: false,
                authentication: true
            })
        );
        assert_eq!(
            p("download_auth = \"null\""),
            Ok(Protection {
                encryption: true,
                authentication: false
            })
        );
        assert_eq!(
            p("download_encryption = \"null\"\ndownload_auth = \"null\""),
            Ok(Protection::NONE)
        );
        assert!(matches!(
            p("download_auth = \"hmac-sha1-32\""),
            Err(ProtectionError::UnknownValue { .. })
        ));
        assert_eq!(
            p("srtp_suite = \"NULL_HMAC_SHA1_80\""),
            Err(ProtectionError::WrongKind {
                key: "srtp_suite",
                kind: "streaming"
            })
        );
    }
}
