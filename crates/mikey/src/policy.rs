//! The typed view of an SRTP security policy (RFC 3830 6.10.1, with the RFC
//! 4771 ROC transmission parameters).

use std::borrow::Cow;

use crate::codes::{ProtType, SrtpAuthAlg, SrtpEncrAlg, SrtpParamType};
use crate::payload::{PolicyParam, SecurityPolicy};

/// An SP payload's SRTP parameters could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The SP payload is not for SRTP.
    #[error("protocol type {0} is not SRTP")]
    NotSrtp(u8),
    /// A parameter value has the wrong length.
    #[error("SRTP policy parameter {param_type} has {len} byte(s), expected {expected}")]
    BadLength {
        /// Parameter type.
        param_type: u8,
        /// Its length.
        len: usize,
        /// What was expected.
        expected: &'static str,
    },
    /// A parameter appears twice.
    #[error("SRTP policy parameter {0} appears more than once")]
    Duplicate(u8),
}

/// The SRTP policy parameters of an SP payload. `None` means "absent": the
/// RFC 3830 default applies (see [`SrtpPolicy::effective`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SrtpPolicy {
    /// Type 0: encryption algorithm.
    pub encr_alg: Option<SrtpEncrAlg>,
    /// Type 1: session encryption key length (bytes).
    pub encr_key_len: Option<u8>,
    /// Type 2: authentication algorithm (RCCm1-3 of RFC 4771 included).
    pub auth_alg: Option<SrtpAuthAlg>,
    /// Type 3: session authentication key length (bytes).
    pub auth_key_len: Option<u8>,
    /// Type 4: session salt key length (bytes).
    pub salt_key_len: Option<u8>,
    /// Type 5: SRTP PRF (0 = AES-CM).
    pub prf: Option<u8>,
    /// Type 6: key derivation rate (1 to 4 bytes, big-endian; emitted as 4).
    pub key_derivation_rate: Option<u32>,
    /// Type 7: SRTP encryption on/off.
    pub srtp_encryption: Option<bool>,
    /// Type 8: SRTCP encryption on/off.
    pub srtcp_encryption: Option<bool>,
    /// Type 9: sender's FEC order (0 = FEC-SRTP).
    pub fec_order: Option<u8>,
    /// Type 10: SRTP authentication on/off.
    pub srtp_authentication: Option<bool>,
    /// Type 11: authentication tag length (bytes).
    pub auth_tag_len: Option<u8>,
    /// Type 12: SRTP prefix length.
    pub srtp_prefix_len: Option<u8>,
    /// Type 13 (RFC 4771): ROC transmission rate R.
    pub roc_transmission_rate: Option<u8>,
    /// Parameters of other types, in wire order.
    pub other: Vec<(u8, Vec<u8>)>,
}

/// An SRTP policy with every default filled in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EffectiveSrtpPolicy {
    /// Encryption algorithm.
    pub encr_alg: SrtpEncrAlg,
    /// Session encryption key length.
    pub encr_key_len: u8,
    /// Authentication algorithm.
    pub auth_alg: SrtpAuthAlg,
    /// Session authentication key length.
    pub auth_key_len: u8,
    /// Session salt key length.
    pub salt_key_len: u8,
    /// SRTP PRF.
    pub prf: u8,
    /// Key derivation rate.
    pub key_derivation_rate: u32,
    /// SRTP encryption.
    pub srtp_encryption: bool,
    /// SRTCP encryption.
    pub srtcp_encryption: bool,
    /// FEC order.
    pub fec_order: u8,
    /// SRTP authentication.
    pub srtp_authentication: bool,
    /// Authentication tag length.
    pub auth_tag_len: u8,
    /// SRTP prefix length.
    pub srtp_prefix_len: u8,
    /// ROC transmission rate (RFC 4771); 1 when absent.
    pub roc_transmission_rate: u8,
}

fn one_byte(t: u8, v: &[u8]) -> Result<u8, PolicyError> {
    match v {
        [b] => Ok(*b),
        _ => Err(PolicyError::BadLength {
            param_type: t,
            len: v.len(),
            expected: "1",
        }),
    }
}

fn set<T>(slot: &mut Option<T>, t: u8, v: T) -> Result<(), PolicyError> {
    if slot.is_some() {
        return Err(PolicyError::Duplicate(t));
    }
    *slot = Some(v);
    Ok(())
}

impl SrtpPolicy {
    /// Read the parameters of an SRTP SP payload.
    pub fn from_payload(sp: &SecurityPolicy<'_>) -> Result<Self, PolicyError> {
        if sp.prot_type != ProtType::SRTP {
            return Err(PolicyError::NotSrtp(sp.prot_type.0));
        }
        Self::from_params(&sp.params)
    }

    /// Read SRTP policy parameters.
    pub fn from_params(params: &[PolicyParam<'_>]) -> Result<Self, PolicyError> {
        let mut p = SrtpPolicy::default();
        for param in params {
            let t = param.param_type;
            let v: &[u8] = &param.value;
            match SrtpParamType(t) {
                SrtpParamType::ENCR_ALG => set(&mut p.encr_alg, t, SrtpEncrAlg(one_byte(t, v)?))?,
                SrtpParamType::ENCR_KEY_LEN => set(&mut p.encr_key_len, t, one_byte(t, v)?)?,
                SrtpParamType::AUTH_ALG => set(&mut p.auth_alg, t, SrtpAuthAlg(one_byte(t, v)?))?,
                SrtpParamType::AUTH_KEY_LEN => set(&mut p.auth_key_len, t, one_byte(t, v)?)?,
                SrtpParamType::SALT_KEY_LEN => set(&mut p.salt_key_len, t, one_byte(t, v)?)?,
                SrtpParamType::PRF => set(&mut p.prf, t, one_byte(t, v)?)?,
                SrtpParamType::KEY_DERIVATION_RATE => {
                    if v.is_empty() || v.len() > 4 {
                        return Err(PolicyError::BadLength {
                            param_type: t,
                            len: v.len(),
                            expected: "1 to 4",
                        });
                    }
                    let kdr = v.iter().fold(0u32, |a, b| (a << 8) | u32::from(*b));
                    set(&mut p.key_derivation_rate, t, kdr)?
                }
                SrtpParamType::SRTP_ENCRYPTION => {
                    set(&mut p.srtp_encryption, t, one_byte(t, v)? != 0)?
                }
                SrtpParamType::SRTCP_ENCRYPTION => {
                    set(&mut p.srtcp_encryption, t, one_byte(t, v)? != 0)?
                }
                SrtpParamType::FEC_ORDER => set(&mut p.fec_order, t, one_byte(t, v)?)?,
                SrtpParamType::SRTP_AUTHENTICATION => {
                    set(&mut p.srtp_authentication, t, one_byte(t, v)? != 0)?
                }
                SrtpParamType::AUTH_TAG_LEN => set(&mut p.auth_tag_len, t, one_byte(t, v)?)?,
                SrtpParamType::SRTP_PREFIX_LEN => set(&mut p.srtp_prefix_len, t, one_byte(t, v)?)?,
                SrtpParamType::ROC_TRANSMISSION_RATE => {
                    set(&mut p.roc_transmission_rate, t, one_byte(t, v)?)?
                }
                _ => p.other.push((t, v.to_vec())),
            }
        }
        Ok(p)
    }

    /// The parameters, in type order, for an SP payload.
    pub fn to_params(&self) -> Vec<PolicyParam<'static>> {
        let mut out = Vec::new();
        let mut push = |t: SrtpParamType, v: Vec<u8>| {
            out.push(PolicyParam {
                param_type: t.0,
                value: Cow::Owned(v),
            })
        };
        if let Some(v) = self.encr_alg {
            push(SrtpParamType::ENCR_ALG, vec![v.0]);
        }
        if let Some(v) = self.encr_key_len {
            push(SrtpParamType::ENCR_KEY_LEN, vec![v]);
        }
        if let Some(v) = self.auth_alg {
            push(SrtpParamType::AUTH_ALG, vec![v.0]);
        }
        if let Some(v) = self.auth_key_len {
            push(SrtpParamType::AUTH_KEY_LEN, vec![v]);
        }
        if let Some(v) = self.salt_key_len {
            push(SrtpParamType::SALT_KEY_LEN, vec![v]);
        }
        if let Some(v) = self.prf {
            push(SrtpParamType::PRF, vec![v]);
        }
        if let Some(v) = self.key_derivation_rate {
            push(SrtpParamType::KEY_DERIVATION_RATE, v.to_be_bytes().to_vec());
        }
        if let Some(v) = self.srtp_encryption {
            push(SrtpParamType::SRTP_ENCRYPTION, vec![v as u8]);
        }
        if let Some(v) = self.srtcp_encryption {
            push(SrtpParamType::SRTCP_ENCRYPTION, vec![v as u8]);
        }
        if let Some(v) = self.fec_order {
            push(SrtpParamType::FEC_ORDER, vec![v]);
        }
        if let Some(v) = self.srtp_authentication {
            push(SrtpParamType::SRTP_AUTHENTICATION, vec![v as u8]);
        }
        if let Some(v) = self.auth_tag_len {
            push(SrtpParamType::AUTH_TAG_LEN, vec![v]);
        }
        if let Some(v) = self.srtp_prefix_len {
            push(SrtpParamType::SRTP_PREFIX_LEN, vec![v]);
        }
        if let Some(v) = self.roc_transmission_rate {
            push(SrtpParamType::ROC_TRANSMISSION_RATE, vec![v]);
        }
        for (t, v) in &self.other {
            out.push(PolicyParam {
                param_type: *t,
                value: Cow::Owned(v.clone()),
            });
        }
        out
    }

    /// An SP payload for SRTP with these parameters.
    pub fn to_payload(&self, policy_no: u8) -> SecurityPolicy<'static> {
        SecurityPolicy {
            policy_no,
            prot_type: ProtType::SRTP,
            params: self.to_params(),
        }
    }

    /// The policy with the RFC 3830 6.10.1 defaults filled in: AES-CM with a
    /// 16-byte key, HMAC-SHA-1 with a 20-byte key, 14-byte salt, AES-CM PRF,
    /// key derivation rate 0, SRTP and SRTCP encryption on, FEC-SRTP,
    /// authentication on, 10-byte tag, prefix 0; ROC rate 1 (RFC 4771).
    pub fn effective(&self) -> EffectiveSrtpPolicy {
        EffectiveSrtpPolicy {
            encr_alg: self.encr_alg.unwrap_or(SrtpEncrAlg::AES_CM),
            encr_key_len: self.encr_key_len.unwrap_or(16),
            auth_alg: self.auth_alg.unwrap_or(SrtpAuthAlg::HMAC_SHA1),
            auth_key_len: self.auth_key_len.unwrap_or(20),
            salt_key_len: self.salt_key_len.unwrap_or(14),
            prf: self.prf.unwrap_or(0),
            key_derivation_rate: self.key_derivation_rate.unwrap_or(0),
            srtp_encryption: self.srtp_encryption.unwrap_or(true),
            srtcp_encryption: self.srtcp_encryption.unwrap_or(true),
            fec_order: self.fec_order.unwrap_or(0),
            srtp_authentication: self.srtp_authentication.unwrap_or(true),
            auth_tag_len: self.auth_tag_len.unwrap_or(10),
            srtp_prefix_len: self.srtp_prefix_len.unwrap_or(0),
            roc_transmission_rate: self.roc_transmission_rate.unwrap_or(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Message;

    #[test]
    fn srtp_policy_round_trip_with_rfc4771_parameters() {
        let p = SrtpPolicy {
            encr_alg: Some(SrtpEncrAlg::AES_CM),
            encr_key_len: Some(16),
            auth_alg: Some(SrtpAuthAlg::RCCM3),
            auth_tag_len: Some(4),
            key_derivation_rate: Some(0),
            roc_transmission_rate: Some(10),
            other: vec![(99, vec![1, 2])],
            ..Default::default()
        };
        let sp = p.to_payload(0);
        let m = crate::MessageBuilder::new(crate::DataType::PSK_INIT)
            .security_policy(sp.clone())
            .build()
            .unwrap();
        let b = m.to_bytes();
        let parsed = Message::parse(&b).unwrap();
        let back = SrtpPolicy::from_payload(parsed.security_policies().next().unwrap()).unwrap();
        assert_eq!(back, p);
        let e = back.effective();
        assert_eq!(e.auth_alg, SrtpAuthAlg::RCCM3);
        assert_eq!(e.roc_transmission_rate, 10);
        assert_eq!(e.salt_key_len, 14);
        assert!(e.srtcp_encryption);
    }

    #[test]
    fn srtp_policy_errors() {
        let dup = vec![
            PolicyParam {
                param_type: 0,
                value: vec![1].into(),
            },
            PolicyParam {
                param_type: 0,
                value: vec![1].into(),
            },
        ];
        assert_eq!(
            SrtpPolicy::from_params(&dup),
            Err(PolicyError::Duplicate(0))
        );
        let bad = vec![PolicyParam {
            param_type: 11,
            value: vec![0, 10].into(),
        }];
        assert!(matches!(
            SrtpPolicy::from_params(&bad),
            Err(PolicyError::BadLength { .. })
        ));
        let sp = SecurityPolicy {
            policy_no: 0,
            prot_type: ProtType(5),
            params: vec![],
        };
        assert_eq!(SrtpPolicy::from_payload(&sp), Err(PolicyError::NotSrtp(5)));
        assert_eq!(SrtpPolicy::default().effective().auth_tag_len, 10);
    }
}
