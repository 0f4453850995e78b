//! Key material types.
//!
//! Every secret in this crate lives in a fixed-size newtype that
//!
//! * zeroizes its bytes on drop ([`zeroize::ZeroizeOnDrop`]),
//! * never prints its bytes in `Debug` (it prints `<redacted N bytes>`),
//! * compares in constant time ([`subtle::ConstantTimeEq`], also used by
//!   `PartialEq`).
//!
//! The sizes follow TS 35.206 (K, OP, OPc, CK, IK: 128 bits; RES of Milenage:
//! 64 bits) and TS 33.220 (Ks = CK || IK and every NAF key: 256 bits).

use base64::Engine as _;
use zeroize::Zeroizing;

/// A key could not be built from caller-supplied bytes or text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The input had the wrong number of bytes.
    #[error("{what}: expected {expected} bytes, got {got}")]
    Length {
        /// Name of the key type.
        what: &'static str,
        /// Required length in bytes.
        expected: usize,
        /// Length that was supplied.
        got: usize,
    },
    /// The input was not valid hexadecimal.
    #[error("{what}: invalid hexadecimal")]
    Hex {
        /// Name of the key type.
        what: &'static str,
    },
}

/// Defines a fixed-size secret key newtype: zeroized on drop, `Debug` prints
/// `<redacted N bytes>`, constant-time `PartialEq`, `from_bytes`,
/// `from_slice`, `from_hex` and `as_bytes`. Exported so that the other crates
/// of the workspace name their keys (MSK, MTK, ...) the same way.
#[macro_export]
macro_rules! secret_bytes {
    ($(#[$meta:meta])* $name:ident, $len:expr) => {
        $(#[$meta])*
        #[derive(Clone)]
        pub struct $name([u8; $len]);

        impl $name {
            /// Length of this key in bytes.
            pub const LEN: usize = $len;

            /// Wraps the given bytes.
            pub fn from_bytes(bytes: [u8; $len]) -> Self {
                Self(bytes)
            }

            /// Copies the key out of a slice, which must have exactly
            /// [`Self::LEN`] bytes.
            pub fn from_slice(bytes: &[u8]) -> Result<Self, $crate::keys::KeyError> {
                let arr: [u8; $len] = bytes.try_into().map_err(|_| $crate::keys::KeyError::Length {
                    what: stringify!($name),
                    expected: $len,
                    got: bytes.len(),
                })?;
                Ok(Self(arr))
            }

            /// Parses the key from hexadecimal text (either case).
            pub fn from_hex(text: &str) -> Result<Self, $crate::keys::KeyError> {
                let bytes = $crate::__private::zeroize::Zeroizing::new(
                    $crate::__private::hex::decode(text.trim())
                        .map_err(|_| $crate::keys::KeyError::Hex { what: stringify!($name) })?,
                );
                Self::from_slice(&bytes)
            }

            /// The key bytes.
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }
        }

        impl From<[u8; $len]> for $name {
            fn from(bytes: [u8; $len]) -> Self {
                Self(bytes)
            }
        }

        impl Drop for $name {
            fn drop(&mut self) {
                $crate::__private::zeroize::Zeroize::zeroize(&mut self.0);
            }
        }

        impl $crate::__private::zeroize::ZeroizeOnDrop for $name {}

        impl ::core::fmt::Debug for $name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                write!(f, concat!(stringify!($name), "(<redacted {} bytes>)"), $len)
            }
        }

        impl $crate::__private::subtle::ConstantTimeEq for $name {
            fn ct_eq(&self, other: &Self) -> $crate::__private::subtle::Choice {
                $crate::__private::subtle::ConstantTimeEq::ct_eq(&self.0[..], &other.0[..])
            }
        }

        impl PartialEq for $name {
            fn eq(&self, other: &Self) -> bool {
                bool::from($crate::__private::subtle::ConstantTimeEq::ct_eq(self, other))
            }
        }

        impl Eq for $name {}
    };
}

secret_bytes!(
    /// The subscriber key K (128 bits, TS 35.206 clause 2), shared by the
    /// USIM and the HSS (here: the BSF's subscriber store).
    SubscriberKey,
    16
);
secret_bytes!(
    /// The operator variant algorithm configuration field OP (TS 35.206
    /// clause 2). Only used to compute [`Opc`].
    Op,
    16
);
secret_bytes!(
    /// OPc = E_K(OP) xor OP (TS 35.206 clause 4.1).
    Opc,
    16
);
secret_bytes!(
    /// Cipher key CK = f3_K(RAND) (TS 33.102 6.3.2).
    Ck,
    16
);
secret_bytes!(
    /// Integrity key IK = f4_K(RAND) (TS 33.102 6.3.2).
    Ik,
    16
);
secret_bytes!(
    /// RES / XRES = f2_K(RAND). Milenage produces 64 bits (TS 35.206
    /// clause 4.1). On Ub it is the HTTP Digest password (RFC 3310 3.1).
    Res,
    8
);
secret_bytes!(
    /// The GBA master key Ks = CK || IK (TS 33.220 4.5.2, Annex B.3).
    Ks,
    32
);
secret_bytes!(
    /// A NAF-specific key: Ks_NAF (GBA_ME), Ks_ext_NAF or Ks_int_NAF (GBA_U),
    /// TS 33.220 Annex B.3.
    NafKey,
    32
);
secret_bytes!(
    /// The MBMS Request Key (TS 33.246 6.1; derivation fixed by PROFILE.md
    /// section 2). Its base64 text is the Ua HTTP Digest password
    /// (PROFILE.md section 3).
    Mrk,
    32
);
secret_bytes!(
    /// The MBMS User Key (TS 33.246 6.1; derivation fixed by PROFILE.md
    /// section 2). Used only to protect MIKEY MSK messages.
    Muk,
    32
);

impl Ks {
    /// Ks = CK || IK, CK first (TS 33.220 4.5.2).
    pub fn from_ck_ik(ck: &Ck, ik: &Ik) -> Self {
        let mut ks = [0u8; 32];
        ks[..16].copy_from_slice(ck.as_bytes());
        ks[16..].copy_from_slice(ik.as_bytes());
        Self(ks)
    }
}

impl NafKey {
    /// Standard base64 (with padding) of the key: the Ua Digest password
    /// when the NAF key itself is the password (TS 24.109 5.2.2).
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(self.0))
    }
}

/// Octets of the standard base64 of a 32-octet key (with padding).
pub const KEY_BASE64_LEN: usize = 44;

impl Mrk {
    /// Standard base64 (with padding) of the MRK: the Ua HTTP Digest password
    /// (PROFILE.md section 3).
    pub fn to_base64(&self) -> Zeroizing<String> {
        let password = self.password();
        // Base64 is ASCII.
        Zeroizing::new(String::from_utf8_lossy(&*password).into_owned())
    }

    /// [`Self::to_base64`] as octets on the stack, for a server that checks
    /// a request with it and forgets it.
    pub fn password(&self) -> Zeroizing<[u8; KEY_BASE64_LEN]> {
        let mut out = Zeroizing::new([0u8; KEY_BASE64_LEN]);
        // 44 octets hold the base64 of 32: cannot fail.
        let _ = base64::engine::general_purpose::STANDARD.encode_slice(self.0, &mut *out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mrk_password_is_its_base64() {
        let mrk = Mrk::from([0xfb; 32]);
        let text = base64::engine::general_purpose::STANDARD.encode([0xfb; 32]);
        assert_eq!(&*mrk.password(), text.as_bytes());
        assert_eq!(*mrk.to_base64(), text);
    }

    #[test]
    fn debug_is_redacted() {
        let k = SubscriberKey::from_bytes([0xAB; 16]);
        let s = format!("{k:?}");
        assert_eq!(s, "SubscriberKey(<redacted 16 bytes>)");
        assert!(!s.to_lowercase().contains("ab"));
    }

    #[test]
    fn from_slice_checks_length() {
        assert!(matches!(
            Ck::from_slice(&[0u8; 15]),
            Err(KeyError::Length {
                expected: 16,
                got: 15,
                ..
            })
        ));
        assert!(Ck::from_slice(&[0u8; 16]).is_ok());
    }

    #[test]
    fn from_hex_parses_and_rejects() {
        let k = Opc::from_hex("cd63cb71954a9f4e48a5994e37a02baf").unwrap();
        assert_eq!(k.as_bytes()[0], 0xcd);
        assert!(matches!(Opc::from_hex("zz"), Err(KeyError::Hex { .. })));
        assert!(matches!(Opc::from_hex("00"), Err(KeyError::Length { .. })));
    }

    #[test]
    fn ks_is_ck_then_ik() {
        let ks = Ks::from_ck_ik(&Ck::from_bytes([1; 16]), &Ik::from_bytes([2; 16]));
        assert_eq!(&ks.as_bytes()[..16], &[1; 16]);
        assert_eq!(&ks.as_bytes()[16..], &[2; 16]);
    }

    #[test]
    fn equality_is_by_value() {
        assert_eq!(Res::from_bytes([1; 8]), Res::from_bytes([1; 8]));
        assert_ne!(Res::from_bytes([1; 8]), Res::from_bytes([2; 8]));
    }
}
