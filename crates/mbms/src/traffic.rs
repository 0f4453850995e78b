//! Traffic protection parameters (`PROFILE.md` section 8): the SRTP policy
//! of a streaming MTK message (the RFC 3830 6.10.1 SP payload) and the SRTP
//! configuration of the BM-SC's sender and the UE's receiver.
//!
//! Confidentiality and integrity are announced independently (seed 000
//! 6.3.2.2.2), so every combination the SP payload can express is mapped:
//! encryption algorithm NULL or AES-CM, SRTP and SRTCP encryption on/off,
//! authentication algorithm NULL, HMAC-SHA-1 or an RFC 4771 RCC mode, SRTP
//! authentication on/off, any HMAC-SHA-1 tag length up to 20 bytes.
//! Refused, with a [`PolicyRefused`] naming the parameter, are values no
//! protocol defines (a tag over 20 bytes or a tag without authentication,
//! RFC 4771 without SRTP authentication, undefined codes) and the few the
//! profile fixes otherwise (key and salt lengths of the MTK, key derivation
//! rate 0) or this implementation lacks (AES-F8).
//!
//! [`srtp_policy`] (BM-SC) and [`srtp_config`] (UE) are inverse:
//! `srtp_config(&srtp_policy(&c)?)? == c` for every valid MBMS `c` in
//! canonical form ([`canonical`]: encryption flags off with the NULL
//! cipher).

use mikey::{SrtpAuthAlg, SrtpEncrAlg, SrtpPolicy};
use srtp::{Auth, Cipher, Rcc, RccMode, Suite};

use crate::profile::{MKI_LEN, MTK_LEN, MTK_SALT_LEN};

/// Session authentication key length of HMAC-SHA-1 in SRTP: 160 bits (RFC
/// 3711 4.2.1 / 8.2 default, the only one the `srtp` crate derives).
pub const SRTP_AUTH_KEY_LEN: u8 = 20;

/// An SRTP policy (SP payload) that cannot drive an SRTP context.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyRefused {
    /// A parameter value that RFC 3830 6.10.1 / RFC 4771 do not define.
    #[error("SRTP policy parameter {param} = {value} is not defined (RFC 3830 6.10.1, RFC 4771)")]
    Undefined {
        /// The parameter.
        param: &'static str,
        /// Its value.
        value: u32,
    },
    /// A defined value that the profile or this implementation does not
    /// support.
    #[error("SRTP policy parameter {param} = {value} is not supported: {why}")]
    Unsupported {
        /// The parameter.
        param: &'static str,
        /// Its value.
        value: u32,
        /// Why.
        why: &'static str,
    },
    /// An RFC 4771 mode with SRTP authentication switched off: the RCC
    /// modes are integrity transforms.
    #[error("SRTP policy: RFC 4771 {0:?} with SRTP authentication off (the RCC modes need authentication)")]
    RccWithoutAuthentication(RccMode),
    /// The policy lacks a protection that the service announcement
    /// promises (seed 000 6.3.2.2.2): `confidentiality` or `integrity`.
    #[error("SRTP policy lacks the {0} the service announces (seed 000 6.3.2.2.2)")]
    MissingProtection(&'static str),
    /// The combination breaks an RFC 3711 / RFC 4771 rule (tag length,
    /// RCC without HMAC-SHA-1, ROC rate 0, ...).
    #[error("SRTP policy: {0}")]
    Srtp(#[from] srtp::ConfigError),
}

fn unsupported(param: &'static str, value: impl Into<u32>, why: &'static str) -> PolicyRefused {
    PolicyRefused::Unsupported {
        param,
        value: value.into(),
        why,
    }
}

/// `c` in canonical form: with the NULL cipher the SRTP and SRTCP
/// encryption flags are off (they have no effect then).
pub fn canonical(mut c: srtp::Config) -> srtp::Config {
    if c.suite.cipher == Cipher::Null {
        c.srtp_encryption = false;
        c.srtcp_encryption = false;
    }
    c
}

/// The SRTP configuration an SP payload asks for (MBMS: the 6-byte MKI of
/// `PROFILE.md` section 8), checked.
pub fn srtp_config(policy: &SrtpPolicy) -> Result<srtp::Config, PolicyRefused> {
    let e = policy.effective();
    if e.prf != 0 {
        return Err(PolicyRefused::Undefined {
            param: "SRTP PRF",
            value: e.prf.into(),
        });
    }
    if e.fec_order != 0 {
        return Err(PolicyRefused::Undefined {
            param: "FEC order",
            value: e.fec_order.into(),
        });
    }
    if e.srtp_prefix_len != 0 {
        return Err(unsupported(
            "SRTP prefix length",
            e.srtp_prefix_len,
            "RFC 3711 4.1: the keystream prefix is 0 for AES-CM and NULL",
        ));
    }
    if e.key_derivation_rate != 0 {
        return Err(unsupported(
            "key derivation rate",
            e.key_derivation_rate,
            "PROFILE.md section 8: key derivation rate 0",
        ));
    }
    if usize::from(e.salt_key_len) != MTK_SALT_LEN {
        return Err(unsupported(
            "session salt key length",
            e.salt_key_len,
            "the master salt is the 14-byte MTK salt (PROFILE.md section 2)",
        ));
    }
    let cipher = match e.encr_alg {
        SrtpEncrAlg::NULL => Cipher::Null,
        SrtpEncrAlg::AES_CM => {
            if usize::from(e.encr_key_len) != MTK_LEN {
                return Err(unsupported(
                    "session encryption key length",
                    e.encr_key_len,
                    "AES-CM-128 only: the master key is the 16-byte MTK (PROFILE.md section 2)",
                ));
            }
            Cipher::AesCm128
        }
        SrtpEncrAlg::AES_F8 => {
            return Err(unsupported(
                "encryption algorithm",
                e.encr_alg.0,
                "AES-F8 is not implemented (use AES-CM or NULL)",
            ))
        }
        other => {
            return Err(PolicyRefused::Undefined {
                param: "encryption algorithm",
                value: other.0.into(),
            })
        }
    };
    let (auth, rcc_mode) = match e.auth_alg {
        SrtpAuthAlg::NULL => (Auth::Null, None),
        SrtpAuthAlg::HMAC_SHA1 => (Auth::HmacSha1, None),
        SrtpAuthAlg::RCCM1 => (Auth::HmacSha1, Some(RccMode::Rccm1)),
        SrtpAuthAlg::RCCM2 => (Auth::HmacSha1, Some(RccMode::Rccm2)),
        SrtpAuthAlg::RCCM3 => (Auth::HmacSha1, Some(RccMode::Rccm3)),
        other => {
            return Err(PolicyRefused::Undefined {
                param: "authentication algorithm",
                value: other.0.into(),
            })
        }
    };
    let tag_len = match auth {
        // No default tag with NULL authentication; an explicit one is
        // refused by Suite::validate.
        Auth::Null => policy.auth_tag_len.unwrap_or(0),
        Auth::HmacSha1 => {
            if e.auth_key_len != SRTP_AUTH_KEY_LEN {
                return Err(unsupported(
                    "session authentication key length",
                    e.auth_key_len,
                    "HMAC-SHA-1 session keys are 160 bits (RFC 3711 4.2.1)",
                ));
            }
            if !e.srtp_authentication {
                if let Some(mode) = rcc_mode {
                    return Err(PolicyRefused::RccWithoutAuthentication(mode));
                }
                // SRTP authentication off: SRTP packets carry no tag,
                // SRTCP keeps its (RFC 3711 3.4: RTCP authentication is
                // mandatory whenever there is an authentication transform).
                0
            } else {
                e.auth_tag_len
            }
        }
    };
    let cfg = srtp::Config {
        suite: Suite {
            cipher,
            auth,
            tag_len,
        },
        // Canonical form: with the NULL cipher the flags are off.
        srtp_encryption: e.srtp_encryption && cipher != Cipher::Null,
        srtcp_encryption: e.srtcp_encryption && cipher != Cipher::Null,
        rcc: rcc_mode.map(|mode| Rcc {
            mode,
            rate: e.roc_transmission_rate.into(),
        }),
        ..srtp::Config::mbms()
    };
    debug_assert_eq!(cfg.mki_len, MKI_LEN);
    cfg.validate()?;
    Ok(cfg)
}

/// Whether an SRTP configuration gives what the service announcement
/// promises (seed 000 6.3.2.2.2; the UE refuses an MTK message whose policy
/// gives less): confidentiality = SRTP payloads encrypted; integrity =
/// every SRTP packet authenticated (HMAC-SHA-1 with a tag, not RFC 4771
/// RCCm1/RCCm3, which leave packets unauthenticated). More than announced
/// is fine.
pub fn meets_announcement(
    cfg: &srtp::Config,
    confidentiality: bool,
    integrity: bool,
) -> Result<(), PolicyRefused> {
    if confidentiality && !cfg.encrypts_rtp() {
        return Err(PolicyRefused::MissingProtection("confidentiality"));
    }
    let every_packet_authenticated = cfg.suite.rtp_tag_len() > 0
        && !matches!(
            cfg.rcc.map(|r| r.mode),
            Some(RccMode::Rccm1) | Some(RccMode::Rccm3)
        );
    if integrity && !every_packet_authenticated {
        return Err(PolicyRefused::MissingProtection("integrity"));
    }
    Ok(())
}

/// The SP payload parameters announcing `cfg` (BM-SC). Parameters at their
/// RFC 3830 default are left out (so AES_CM_128_HMAC_SHA1_80 is the empty
/// policy, as before), except that NULL transforms also switch the matching
/// on/off flags off, for receivers that only read those.
pub fn srtp_policy(cfg: &srtp::Config) -> Result<SrtpPolicy, PolicyRefused> {
    cfg.validate()?;
    let mut p = SrtpPolicy::default();
    match cfg.suite.cipher {
        Cipher::Null => {
            p.encr_alg = Some(SrtpEncrAlg::NULL);
            p.srtp_encryption = Some(false);
            p.srtcp_encryption = Some(false);
        }
        Cipher::AesCm128 => {
            p.srtp_encryption = (!cfg.srtp_encryption).then_some(false);
            p.srtcp_encryption = (!cfg.srtcp_encryption).then_some(false);
        }
    }
    match cfg.suite.auth {
        Auth::Null => {
            p.auth_alg = Some(SrtpAuthAlg::NULL);
            p.srtp_authentication = Some(false);
            p.auth_tag_len = Some(0);
        }
        Auth::HmacSha1 => {
            if let Some(rcc) = cfg.rcc {
                p.auth_alg = Some(match rcc.mode {
                    RccMode::Rccm1 => SrtpAuthAlg::RCCM1,
                    RccMode::Rccm2 => SrtpAuthAlg::RCCM2,
                    RccMode::Rccm3 => SrtpAuthAlg::RCCM3,
                });
                p.roc_transmission_rate = Some(u8::try_from(rcc.rate).map_err(|_| {
                    unsupported(
                        "ROC transmission rate",
                        rcc.rate,
                        "the SP parameter has one byte (RFC 4771 5)",
                    )
                })?);
            }
            match cfg.suite.tag_len {
                // (RCCm3 may run with a 0-byte tag: SRTP authentication
                // stays on, the tag length says it.)
                0 if cfg.rcc.is_none() => p.srtp_authentication = Some(false),
                10 => {}
                t => p.auth_tag_len = Some(t),
            }
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(suite: Suite) -> srtp::Config {
        canonical(srtp::Config {
            suite,
            ..srtp::Config::mbms()
        })
    }

    #[test]
    fn named_suites_map_both_ways_and_the_default_is_the_empty_policy() {
        assert_eq!(
            srtp_policy(&srtp::Config::mbms()).unwrap(),
            SrtpPolicy::default()
        );
        assert_eq!(
            srtp_config(&SrtpPolicy::default()).unwrap(),
            srtp::Config::mbms()
        );
        for (name, s) in Suite::NAMED {
            let p = srtp_policy(&cfg(s)).unwrap();
            assert_eq!(srtp_config(&p).unwrap(), cfg(s), "{name}");
        }
        let p = srtp_policy(&cfg(Suite::NULL_HMAC_SHA1_80)).unwrap();
        assert_eq!(p.encr_alg, Some(SrtpEncrAlg::NULL));
        assert_eq!(p.srtp_encryption, Some(false));
        let p = srtp_policy(&cfg(Suite::AES_CM_128_NULL_AUTH)).unwrap();
        assert_eq!(p.auth_alg, Some(SrtpAuthAlg::NULL));
        assert_eq!(p.auth_tag_len, Some(0));
    }

    #[test]
    fn announcement_is_a_minimum() {
        let ok = |s: Suite, c, i| meets_announcement(&cfg(s), c, i);
        for (_, s) in Suite::NAMED {
            assert_eq!(ok(s, false, false), Ok(()));
        }
        assert_eq!(ok(Suite::AES_CM_128_HMAC_SHA1_32, true, true), Ok(()));
        assert_eq!(ok(Suite::NULL_HMAC_SHA1_80, false, true), Ok(()));
        assert_eq!(ok(Suite::AES_CM_128_NULL_AUTH, true, false), Ok(()));
        assert_eq!(
            ok(Suite::NULL_HMAC_SHA1_80, true, true),
            Err(PolicyRefused::MissingProtection("confidentiality"))
        );
        assert_eq!(
            ok(Suite::AES_CM_128_NULL_AUTH, true, true),
            Err(PolicyRefused::MissingProtection("integrity"))
        );
        let mut c = cfg(Suite::AES_CM_128_HMAC_SHA1_80);
        c.rcc = Some(Rcc {
            mode: RccMode::Rccm3,
            rate: 1,
        });
        assert!(meets_announcement(&c, true, true).is_err());
        c.rcc = Some(Rcc {
            mode: RccMode::Rccm2,
            rate: 1,
        });
        assert!(meets_announcement(&c, true, true).is_ok());
    }

    #[test]
    fn flags_of_the_sp_payload_are_followed() {
        // AES-CM with SRTP encryption off and SRTCP encryption on.
        let c = srtp_config(&SrtpPolicy {
            srtp_encryption: Some(false),
            ..Default::default()
        })
        .unwrap();
        assert!(!c.encrypts_rtp() && c.encrypts_rtcp());
        // HMAC-SHA-1 with SRTP authentication off: no SRTP tag, SRTCP tag.
        let c = srtp_config(&SrtpPolicy {
            srtp_authentication: Some(false),
            ..Default::default()
        })
        .unwrap();
        assert_eq!((c.suite.rtp_tag_len(), c.suite.rtcp_tag_len()), (0, 10));
        // NULL authentication: no tag at all, whatever the flag says.
        let c = srtp_config(&SrtpPolicy {
            auth_alg: Some(SrtpAuthAlg::NULL),
            ..Default::default()
        })
        .unwrap();
        assert_eq!((c.suite.rtp_tag_len(), c.suite.rtcp_tag_len()), (0, 0));
        // Any HMAC tag length up to 20.
        for t in 0..=20 {
            let c = srtp_config(&SrtpPolicy {
                auth_tag_len: Some(t),
                ..Default::default()
            })
            .unwrap();
            assert_eq!(c.suite.rtp_tag_len(), usize::from(t));
        }
    }

    #[test]
    fn only_what_no_protocol_defines_is_refused_with_the_parameter_named() {
        let refused = |p: SrtpPolicy| srtp_config(&p).unwrap_err();
        assert_eq!(
            refused(SrtpPolicy {
                auth_tag_len: Some(21),
                ..Default::default()
            }),
            PolicyRefused::Srtp(srtp::ConfigError::TagTooLong { tag_len: 21 })
        );
        assert_eq!(
            refused(SrtpPolicy {
                auth_alg: Some(SrtpAuthAlg::NULL),
                auth_tag_len: Some(4),
                ..Default::default()
            }),
            PolicyRefused::Srtp(srtp::ConfigError::TagWithoutAuthentication { tag_len: 4 })
        );
        assert_eq!(
            refused(SrtpPolicy {
                auth_alg: Some(SrtpAuthAlg::RCCM2),
                srtp_authentication: Some(false),
                ..Default::default()
            }),
            PolicyRefused::RccWithoutAuthentication(RccMode::Rccm2)
        );
        assert_eq!(
            refused(SrtpPolicy {
                auth_alg: Some(SrtpAuthAlg::RCCM1),
                auth_tag_len: Some(4),
                ..Default::default()
            }),
            PolicyRefused::Srtp(srtp::ConfigError::RccTagTooShort {
                mode: RccMode::Rccm1,
                tag_len: 4
            })
        );
        assert_eq!(
            refused(SrtpPolicy {
                auth_alg: Some(SrtpAuthAlg::RCCM3),
                roc_transmission_rate: Some(0),
                ..Default::default()
            }),
            PolicyRefused::Srtp(srtp::ConfigError::ZeroRate)
        );
        assert!(matches!(
            refused(SrtpPolicy {
                encr_alg: Some(SrtpEncrAlg::AES_F8),
                ..Default::default()
            }),
            PolicyRefused::Unsupported {
                param: "encryption algorithm",
                value: 2,
                ..
            }
        ));
        assert_eq!(
            refused(SrtpPolicy {
                encr_alg: Some(SrtpEncrAlg(9)),
                ..Default::default()
            }),
            PolicyRefused::Undefined {
                param: "encryption algorithm",
                value: 9
            }
        );
        assert_eq!(
            refused(SrtpPolicy {
                auth_alg: Some(SrtpAuthAlg(5)),
                ..Default::default()
            }),
            PolicyRefused::Undefined {
                param: "authentication algorithm",
                value: 5
            }
        );
        for p in [
            SrtpPolicy {
                encr_key_len: Some(32),
                ..Default::default()
            },
            SrtpPolicy {
                salt_key_len: Some(12),
                ..Default::default()
            },
            SrtpPolicy {
                key_derivation_rate: Some(1 << 16),
                ..Default::default()
            },
            SrtpPolicy {
                auth_key_len: Some(32),
                ..Default::default()
            },
            SrtpPolicy {
                srtp_prefix_len: Some(4),
                ..Default::default()
            },
        ] {
            assert!(matches!(refused(p), PolicyRefused::Unsupported { .. }));
        }
        // With the NULL cipher the encryption key length does not matter.
        assert!(srtp_config(&SrtpPolicy {
            encr_alg: Some(SrtpEncrAlg::NULL),
            encr_key_len: Some(0),
            ..Default::default()
        })
        .is_ok());
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    fn config() -> impl Strategy<Value = srtp::Config> {
        (
            any::<bool>(),
            any::<bool>(),
            0u8..=20,
            any::<bool>(),
            any::<bool>(),
            prop::option::of((0u8..3, 1u16..=255)),
        )
            .prop_map(|(aes, hmac, tag, rtp_enc, rtcp_enc, rcc)| {
                canonical(srtp::Config {
                    suite: Suite {
                        cipher: if aes { Cipher::AesCm128 } else { Cipher::Null },
                        auth: if hmac { Auth::HmacSha1 } else { Auth::Null },
                        tag_len: if hmac { tag } else { 0 },
                    },
                    srtp_encryption: rtp_enc,
                    srtcp_encryption: rtcp_enc,
                    rcc: rcc.map(|(m, rate)| Rcc {
                        mode: [RccMode::Rccm1, RccMode::Rccm2, RccMode::Rccm3][m as usize],
                        rate,
                    }),
                    ..srtp::Config::mbms()
                })
            })
    }

    proptest! {
        /// BM-SC config -> SP payload -> MIKEY bytes -> SP payload -> UE
        /// config is the identity on every valid configuration, and an
        /// invalid one is refused on the way out.
        #[test]
        fn config_to_policy_to_config_is_the_identity(c in config()) {
            match srtp_policy(&c) {
                Ok(p) => {
                    let sp = p.to_payload(0);
                    let m = mikey::MessageBuilder::new(mikey::DataType::PSK_INIT)
                        .security_policy(sp)
                        .build()
                        .unwrap();
                    let b = m.to_bytes();
                    let parsed = mikey::Message::parse(&b).unwrap();
                    let back = SrtpPolicy::from_payload(parsed.security_policies().next().unwrap()).unwrap();
                    prop_assert_eq!(&back, &p);
                    prop_assert_eq!(srtp_config(&back).unwrap(), c);
                }
                Err(_) => prop_assert!(c.validate().is_err()),
            }
        }
    }
}
