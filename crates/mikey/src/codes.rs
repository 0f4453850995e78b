//! Registered MIKEY code points (RFC 3830 section 6, RFC 4563, RFC 4771).
//!
//! Fields whose value does not change how a payload is framed are *open*
//! enumerations: a newtype over the wire integer with named constants, so that
//! an unknown value survives a parse/emit round trip unchanged. Fields whose
//! value decides a length (timestamp type, MAC algorithm, hash function, DH
//! group, key data type, key validity type) are closed Rust enums in the
//! payload modules, because a message with an unknown value there cannot be
//! framed.

macro_rules! open_enum {
    (
        $(#[$meta:meta])*
        $name:ident($ty:ty) {
            $( $(#[$cmeta:meta])* $const:ident = $val:expr => $text:expr, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub $ty);

        impl $name {
            $( $(#[$cmeta])* #[doc = concat!("`", $text, "` (", stringify!($val), ")")] pub const $const: Self = Self($val); )*

            /// The registered name of this value, if it has one.
            pub fn name(self) -> Option<&'static str> {
                match self.0 {
                    $( $val => Some($text), )*
                    _ => None,
                }
            }
        }

        impl core::fmt::Debug for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                match self.name() {
                    Some(n) => write!(f, "{}({})", n, self.0),
                    None => write!(f, "{}({})", stringify!($name), self.0),
                }
            }
        }

        impl core::fmt::Display for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                match self.name() {
                    Some(n) => write!(f, "{} ({})", n, self.0),
                    None => write!(f, "unassigned ({})", self.0),
                }
            }
        }

        impl From<$ty> for $name {
            fn from(v: $ty) -> Self {
                Self(v)
            }
        }
    };
}

/// MIKEY version carried in the common header (RFC 3830 6.1).
pub const MIKEY_VERSION: u8 = 1;

open_enum! {
    /// Common header "data type" (RFC 3830 6.1; 7-10 from RFC 4650 and RFC 4738).
    DataType(u8) {
        /// Initiator's pre-shared key message (I_MESSAGE).
        PSK_INIT = 0 => "Pre-shared",
        /// Verification message of a pre-shared key message.
        PSK_RESP = 1 => "PSK verification",
        PK_INIT = 2 => "Public key",
        PK_RESP = 3 => "PK verification",
        DH_INIT = 4 => "D-H init",
        DH_RESP = 5 => "D-H resp",
        ERROR = 6 => "Error",
        DHHMAC_INIT = 7 => "DHHMAC init",
        DHHMAC_RESP = 8 => "DHHMAC resp",
        RSA_R_INIT = 9 => "RSA-R I_MSG",
        RSA_R_RESP = 10 => "RSA-R R_MSG",
    }
}

open_enum! {
    /// PRF function in the common header, 7 bits (RFC 3830 6.1; RFC 6043).
    PrfFunc(u8) {
        /// The MIKEY-1 PRF of RFC 3830 4.1.2 (the only one this crate computes).
        MIKEY_1 = 0 => "MIKEY-1",
        PRF_HMAC_SHA_256 = 1 => "PRF-HMAC-SHA-256",
    }
}

open_enum! {
    /// "Next payload" values (RFC 3830 6.1, IANA "MIKEY Payload Name Spaces").
    PayloadType(u8) {
        LAST = 0 => "Last payload",
        KEMAC = 1 => "KEMAC",
        PKE = 2 => "PKE",
        DH = 3 => "DH",
        SIGN = 4 => "SIGN",
        T = 5 => "T",
        ID = 6 => "ID",
        CERT = 7 => "CERT",
        CHASH = 8 => "CHASH",
        V = 9 => "V",
        SP = 10 => "SP",
        RAND = 11 => "RAND",
        ERR = 12 => "ERR",
        KEY_DATA = 20 => "Key data",
        GENERAL_EXT = 21 => "General Extension",
    }
}

open_enum! {
    /// KEMAC encryption algorithm (RFC 3830 6.2).
    EncrAlg(u8) {
        NULL = 0 => "NULL",
        AES_CM_128 = 1 => "AES-CM-128",
        AES_KW_128 = 2 => "AES-KW-128",
    }
}

open_enum! {
    /// ID payload type (RFC 3830 6.7).
    IdType(u8) {
        NAI = 0 => "NAI",
        URI = 1 => "URI",
    }
}

open_enum! {
    /// CERT payload type (RFC 3830 6.7).
    CertType(u8) {
        X509V3 = 0 => "X.509v3",
        X509V3_URL = 1 => "X.509v3 URL",
        X509V3_SIGN = 2 => "X.509v3 Sign",
        X509V3_ENCR = 3 => "X.509v3 Encr",
    }
}

open_enum! {
    /// SP payload protocol type (RFC 3830 6.10).
    ProtType(u8) {
        SRTP = 0 => "SRTP",
    }
}

open_enum! {
    /// ERR payload error number (RFC 3830 6.12).
    ErrorCode(u8) {
        AUTH_FAILURE = 0 => "Authentication failure",
        INVALID_TS = 1 => "Invalid timestamp",
        INVALID_PRF = 2 => "PRF function not supported",
        INVALID_MAC = 3 => "MAC algorithm not supported",
        INVALID_EA = 4 => "Encryption algorithm not supported",
        INVALID_HA = 5 => "Hash function not supported",
        INVALID_DH = 6 => "DH group not supported",
        INVALID_ID = 7 => "ID not supported",
        INVALID_CERT = 8 => "Certificate not supported",
        INVALID_SP = 9 => "SP type not supported",
        INVALID_SPPAR = 10 => "SP parameters not supported",
        INVALID_DT = 11 => "Data type not supported",
        UNSPECIFIED = 12 => "Unspecified error",
    }
}

open_enum! {
    /// General Extension payload type (RFC 3830 6.15, RFC 4563 section 4).
    ///
    /// The Key ID value follows `PROFILE.md` section 6 (EXT Type = 2).
    ExtType(u8) {
        VENDOR_ID = 0 => "Vendor ID",
        SDP_IDS = 1 => "SDP IDs",
        /// RFC 4563 Key ID information (`PROFILE.md` section 6: EXT Type = 2).
        KEY_ID = 2 => "Key ID",
    }
}

open_enum! {
    /// RFC 4563 Key ID Type inside a Key ID General Extension.
    ///
    /// Values from `PROFILE.md` section 6: 1 = MSK, 2 = MTK.
    KeyIdType(u8) {
        MUK = 0 => "MUK ID",
        /// MBMS Service Key: Key ID = Key Domain ID || MSK ID (7 bytes).
        MSK = 1 => "MSK ID",
        /// MBMS Traffic Key: Key ID = MTK ID (2 bytes).
        MTK = 2 => "MTK ID",
    }
}

open_enum! {
    /// SRTP policy parameter types (RFC 3830 6.10.1; type 13 from RFC 4771 section 5).
    SrtpParamType(u8) {
        ENCR_ALG = 0 => "Encryption algorithm",
        ENCR_KEY_LEN = 1 => "Session Encr. key length",
        AUTH_ALG = 2 => "Authentication algorithm",
        AUTH_KEY_LEN = 3 => "Session Auth. key length",
        SALT_KEY_LEN = 4 => "Session Salt key length",
        PRF = 5 => "SRTP Pseudo Random Function",
        KEY_DERIVATION_RATE = 6 => "Key derivation rate",
        SRTP_ENCRYPTION = 7 => "SRTP encryption off/on",
        SRTCP_ENCRYPTION = 8 => "SRTCP encryption off/on",
        FEC_ORDER = 9 => "Sender's FEC order",
        SRTP_AUTHENTICATION = 10 => "SRTP authentication off/on",
        AUTH_TAG_LEN = 11 => "Authentication tag length",
        SRTP_PREFIX_LEN = 12 => "SRTP prefix length",
        /// RFC 4771: how often (every R-th packet) the ROC travels in the tag.
        ROC_TRANSMISSION_RATE = 13 => "ROC transmission rate",
    }
}

open_enum! {
    /// SRTP "Authentication algorithm" values (RFC 3830 6.10.1; RCCm1-3 from RFC 4771).
    SrtpAuthAlg(u8) {
        NULL = 0 => "NULL",
        HMAC_SHA1 = 1 => "HMAC-SHA-1",
        RCCM1 = 2 => "RCCm1",
        RCCM2 = 3 => "RCCm2",
        RCCM3 = 4 => "RCCm3",
    }
}

open_enum! {
    /// SRTP "Encryption algorithm" values (RFC 3830 6.10.1).
    SrtpEncrAlg(u8) {
        NULL = 0 => "NULL",
        AES_CM = 1 => "AES-CM",
        AES_F8 = 2 => "AES-F8",
    }
}

/// PRF constants for keys derived from a pre-shared key (RFC 3830 4.1.4).
pub mod psk_constant {
    /// Encryption key (`encr_key`).
    pub const ENCR: u32 = 0x1505_33E1;
    /// Authentication key (`auth_key`).
    pub const AUTH: u32 = 0x2D22_AC75;
    /// Salting key (`salt_key`).
    pub const SALT: u32 = 0x29B8_8916;
}

/// PRF constants for keys derived from a TGK (RFC 3830 4.1.3).
pub mod tgk_constant {
    /// TEK derivation.
    pub const TEK: u32 = 0x2AD0_1C64;
    /// Authentication key derivation.
    pub const AUTH: u32 = 0x1B5C_7973;
    /// Encryption key derivation.
    pub const ENCR: u32 = 0x1579_8CEF;
    /// Salting key derivation.
    pub const SALT: u32 = 0x39A2_C14B;
}

/// The `cs_id` octet used in PSK-derived labels (RFC 3830 4.1.4).
pub const PSK_CS_ID: u8 = 0xFF;

/// Length of `encr_key` for AES-CM-128 (RFC 3830 4.1.4, 4.2.3).
pub const ENCR_KEY_LEN: usize = 16;
/// Length of `auth_key` for HMAC-SHA-1-160 (RFC 3830 4.1.4, 4.2.1).
pub const AUTH_KEY_LEN: usize = 20;
/// Length of `salt_key` (112 bits, RFC 3830 4.1.4, 4.2.3).
pub const SALT_KEY_LEN: usize = 14;
/// HMAC-SHA-1-160 MAC length.
pub const HMAC_SHA1_LEN: usize = 20;

/// The IANA-registered MIKEY port (UDP and TCP).
pub const MIKEY_PORT: u16 = 2269;
