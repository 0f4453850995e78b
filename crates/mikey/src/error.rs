//! Typed errors: every parse error names the payload and the byte offset.

use core::fmt;

/// Which part of a message an error refers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PayloadName {
    /// The common header (RFC 3830 6.1).
    CommonHeader,
    /// KEMAC (6.2).
    Kemac,
    /// PKE (6.3).
    Pke,
    /// DH (6.4).
    Dh,
    /// SIGN (6.5).
    Sign,
    /// T (6.6).
    Timestamp,
    /// ID (6.7).
    Id,
    /// CERT (6.7).
    Cert,
    /// CHASH (6.8).
    Chash,
    /// V (6.9).
    Verification,
    /// SP (6.10).
    SecurityPolicy,
    /// RAND (6.11).
    Rand,
    /// ERR (6.12).
    Error,
    /// Key data sub-payload (6.13), inside a KEMAC.
    KeyData,
    /// General Extension (6.15, RFC 4563).
    GeneralExtension,
    /// A payload type this crate does not know.
    Unknown(u8),
}

impl fmt::Display for PayloadName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            PayloadName::CommonHeader => "common header",
            PayloadName::Kemac => "KEMAC",
            PayloadName::Pke => "PKE",
            PayloadName::Dh => "DH",
            PayloadName::Sign => "SIGN",
            PayloadName::Timestamp => "T",
            PayloadName::Id => "ID",
            PayloadName::Cert => "CERT",
            PayloadName::Chash => "CHASH",
            PayloadName::Verification => "V",
            PayloadName::SecurityPolicy => "SP",
            PayloadName::Rand => "RAND",
            PayloadName::Error => "ERR",
            PayloadName::KeyData => "key data sub-payload",
            PayloadName::GeneralExtension => "General Extension",
            PayloadName::Unknown(t) => return write!(f, "payload type {t}"),
        };
        f.write_str(s)
    }
}

/// What was wrong with the bytes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseErrorKind {
    /// The input ended inside a field.
    #[error("truncated: {needed} more byte(s) needed, {available} available")]
    Truncated {
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the input.
        available: usize,
    },
    /// The message is empty.
    #[error("empty input")]
    Empty,
    /// The version is not 1.
    #[error("unsupported MIKEY version {0}")]
    UnsupportedVersion(u8),
    /// A next-payload value names no known payload, so the chain cannot be followed.
    #[error("unknown next-payload type {0}")]
    UnknownPayloadType(u8),
    /// A key data sub-payload (type 20) appears outside a KEMAC, or a KEMAC's
    /// key data chain links to something else.
    #[error("key data sub-payload chain broken: next payload {0}")]
    BadKeyDataChain(u8),
    /// The CS ID map type is unknown, so the header length is unknown.
    #[error("unknown CS ID map type {0}")]
    UnknownCsIdMapType(u8),
    /// Unknown timestamp type.
    #[error("unknown timestamp type {0}")]
    UnknownTimestampType(u8),
    /// Unknown MAC / authentication algorithm (its MAC length is unknown).
    #[error("unknown MAC algorithm {0}")]
    UnknownMacAlgorithm(u8),
    /// Unknown CHASH hash function.
    #[error("unknown hash function {0}")]
    UnknownHashFunction(u8),
    /// Unknown DH group.
    #[error("unknown DH group {0}")]
    UnknownDhGroup(u8),
    /// Key data type outside TGK, TGK+SALT, TEK, TEK+SALT.
    #[error("unknown key data type {0}")]
    UnknownKeyDataType(u8),
    /// Key validity type outside NULL, SPI/MKI, Interval.
    #[error("unknown key validity type {0}")]
    UnknownKeyValidityType(u8),
    /// The data of a Key ID extension does not add up to its length.
    #[error("Key ID information of {declared} byte(s) does not fill the extension data of {actual} byte(s)")]
    KeyIdLengthMismatch {
        /// Bytes the Key ID information declares.
        declared: usize,
        /// Bytes of extension data.
        actual: usize,
    },
    /// SP payload parameters overrun the declared parameter length.
    #[error("policy parameters overrun the declared length")]
    PolicyParamOverrun,
    /// Bytes follow the last payload.
    #[error("{0} byte(s) of trailing data after the last payload")]
    TrailingData(usize),
}

/// A message could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind} (in {payload} at byte offset {offset})")]
pub struct ParseError {
    /// The payload being read.
    pub payload: PayloadName,
    /// Byte offset in the input where the problem was found.
    pub offset: usize,
    /// What was wrong.
    pub kind: ParseErrorKind,
}

/// A message could not be built: some field does not fit its wire encoding or
/// breaks a structural rule of RFC 3830.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// A field is longer than its length field allows.
    #[error("{field} of {payload} is {len} byte(s), at most {max} allowed")]
    TooLong {
        /// Payload the field belongs to.
        payload: PayloadName,
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The largest encodable length.
        max: usize,
    },
    /// A fixed-size field has the wrong length.
    #[error("{field} of {payload} must be {expected} byte(s), got {len}")]
    WrongLength {
        /// Payload the field belongs to.
        payload: PayloadName,
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The required length.
        expected: usize,
    },
    /// A value does not fit in its bit field.
    #[error("{field} of {payload} is {value}, at most {max} allowed")]
    ValueOutOfRange {
        /// Payload the field belongs to.
        payload: PayloadName,
        /// The field.
        field: &'static str,
        /// The value.
        value: u32,
        /// The largest encodable value.
        max: u32,
    },
    /// SIGN has no next-payload field, so it can only be the last payload.
    #[error("the SIGN payload must be the last payload")]
    SignNotLast,
    /// Too many crypto sessions in the SRTP-ID map.
    #[error("{0} crypto sessions in the SRTP-ID map, at most 255 allowed")]
    TooManyCryptoSessions(usize),
}

/// A cryptographic operation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// The MAC does not match: wrong key or tampered message.
    #[error("MAC mismatch")]
    MacMismatch,
    /// The bytes given are not the encoding of the message given.
    #[error("the bytes are not the encoding of the parsed message")]
    EncodingMismatch,
    /// The message has no KEMAC payload.
    #[error("message has no KEMAC payload")]
    NoKemac,
    /// The message has no V payload.
    #[error("message has no V payload")]
    NoVerification,
    /// The message has no T payload (needed for the AES-CM IV).
    #[error("message has no T payload")]
    NoTimestamp,
    /// The MAC algorithm is NULL: the message is not integrity protected.
    #[error("the MAC algorithm is NULL; refusing an unauthenticated message")]
    NullMac,
    /// The encryption algorithm is not implemented here.
    #[error("unsupported KEMAC encryption algorithm {0}")]
    UnsupportedEncryption(u8),
    /// The PRF function is not MIKEY-1.
    #[error("unsupported PRF function {0}")]
    UnsupportedPrf(u8),
    /// The decrypted key data did not parse.
    #[error("decrypted key data is malformed: {0}")]
    KeyData(#[from] ParseError),
    /// The message could not be built.
    #[error(transparent)]
    Build(#[from] BuildError),
}

/// Parsing then opening a protected message failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The bytes are not a well-formed MIKEY message.
    #[error("malformed message: {0}")]
    Parse(#[from] ParseError),
    /// The message is well-formed but failed verification or decryption.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}
