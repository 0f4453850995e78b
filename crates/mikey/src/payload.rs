//! The RFC 3830 payloads (section 6), the RFC 4563 Key ID extension and the
//! RFC 4771 SRTP policy parameters.
//!
//! Every payload type is one struct whose byte fields are `Cow<'a, [u8]>`:
//! parsing borrows from the input (no copies), builders own their data, and
//! [`Payload::into_owned`] detaches a parsed payload from its input. Length and
//! next-payload fields are never stored: they are computed when emitting.

use std::borrow::Cow;

use crate::codes::*;
use crate::error::{BuildError, ParseError, ParseErrorKind, PayloadName};
use crate::reader::Reader;
use crate::secret::SecretBytes;

/// Borrowed-or-owned bytes.
pub type Bytes<'a> = Cow<'a, [u8]>;

pub(crate) fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub(crate) fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn owned(b: Bytes<'_>) -> Bytes<'static> {
    Cow::Owned(b.into_owned())
}

fn check_len(
    payload: PayloadName,
    field: &'static str,
    len: usize,
    max: usize,
) -> Result<(), BuildError> {
    if len > max {
        Err(BuildError::TooLong {
            payload,
            field,
            len,
            max,
        })
    } else {
        Ok(())
    }
}

fn check_exact(
    payload: PayloadName,
    field: &'static str,
    len: usize,
    expected: usize,
) -> Result<(), BuildError> {
    if len != expected {
        Err(BuildError::WrongLength {
            payload,
            field,
            len,
            expected,
        })
    } else {
        Ok(())
    }
}

fn check_value(
    payload: PayloadName,
    field: &'static str,
    value: u32,
    max: u32,
) -> Result<(), BuildError> {
    if value > max {
        Err(BuildError::ValueOutOfRange {
            payload,
            field,
            value,
            max,
        })
    } else {
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Common header (RFC 3830 6.1, RFC 4563 section 5)

/// One crypto session of an SRTP-ID map (RFC 3830 6.1.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SrtpIdEntry {
    /// The SP payload (policy number) this crypto session uses.
    pub policy_no: u8,
    /// The stream's SSRC.
    pub ssrc: u32,
    /// The rollover counter of the stream.
    pub roc: u32,
}

/// The CS ID map of the common header.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CsIdMap {
    /// Map type 0: one entry per crypto session; `#CS` = number of entries.
    SrtpId(Vec<SrtpIdEntry>),
    /// Map type 1, the empty map of RFC 4563 section 5: no map info; `#CS`
    /// is carried as is (MBMS uses 0).
    Empty {
        /// The `#CS` field.
        cs_count: u8,
    },
}

impl CsIdMap {
    /// CS ID map type value for SRTP-ID (RFC 3830 6.1).
    pub const TYPE_SRTP_ID: u8 = 0;
    /// CS ID map type value for the empty map (RFC 4563 section 5).
    pub const TYPE_EMPTY: u8 = 1;

    /// The map type byte.
    pub fn map_type(&self) -> u8 {
        match self {
            CsIdMap::SrtpId(_) => Self::TYPE_SRTP_ID,
            CsIdMap::Empty { .. } => Self::TYPE_EMPTY,
        }
    }

    /// The `#CS` byte (number of crypto sessions).
    pub fn cs_count(&self) -> usize {
        match self {
            CsIdMap::SrtpId(v) => v.len(),
            CsIdMap::Empty { cs_count } => *cs_count as usize,
        }
    }
}

/// The MIKEY common header (RFC 3830 6.1). The version is always 1; the
/// next-payload field and `#CS` (for SRTP-ID maps) are computed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CommonHeader {
    /// Message data type.
    pub data_type: DataType,
    /// The V flag: a verification message is requested.
    pub v: bool,
    /// PRF function (7 bits).
    pub prf: PrfFunc,
    /// Crypto Session Bundle ID.
    pub csb_id: u32,
    /// The CS ID map.
    pub cs_id_map: CsIdMap,
}

impl CommonHeader {
    /// A header with V = 0, MIKEY-1 PRF and an empty map with `#CS` = 0.
    pub fn new(data_type: DataType, csb_id: u32) -> Self {
        CommonHeader {
            data_type,
            v: false,
            prf: PrfFunc::MIKEY_1,
            csb_id,
            cs_id_map: CsIdMap::Empty { cs_count: 0 },
        }
    }

    /// Encoded length in bytes (10 plus 9 per SRTP-ID map entry).
    pub fn encoded_len(&self) -> usize {
        10 + match &self.cs_id_map {
            CsIdMap::SrtpId(v) => 9 * v.len(),
            CsIdMap::Empty { .. } => 0,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), BuildError> {
        check_value(
            PayloadName::CommonHeader,
            "PRF func",
            self.prf.0 as u32,
            0x7f,
        )?;
        if let CsIdMap::SrtpId(v) = &self.cs_id_map {
            if v.len() > 255 {
                return Err(BuildError::TooManyCryptoSessions(v.len()));
            }
        }
        Ok(())
    }

    pub(crate) fn emit(&self, next: u8, out: &mut Vec<u8>) {
        out.push(MIKEY_VERSION);
        out.push(self.data_type.0);
        out.push(next);
        out.push(((self.v as u8) << 7) | (self.prf.0 & 0x7f));
        put_u32(out, self.csb_id);
        out.push(self.cs_id_map.cs_count() as u8);
        out.push(self.cs_id_map.map_type());
        if let CsIdMap::SrtpId(v) = &self.cs_id_map {
            for e in v {
                out.push(e.policy_no);
                put_u32(out, e.ssrc);
                put_u32(out, e.roc);
            }
        }
    }

    /// Decode the header; returns it and the first next-payload value.
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<(Self, u8), ParseError> {
        if r.is_empty() {
            return Err(r.error(ParseErrorKind::Empty));
        }
        let at = r.offset();
        let version = r.u8()?;
        if version != MIKEY_VERSION {
            return Err(r.error_at(at, ParseErrorKind::UnsupportedVersion(version)));
        }
        let data_type = DataType(r.u8()?);
        let next = r.u8()?;
        let vp = r.u8()?;
        let csb_id = r.u32()?;
        let cs_count = r.u8()?;
        let map_at = r.offset();
        let map_type = r.u8()?;
        let cs_id_map = match map_type {
            CsIdMap::TYPE_SRTP_ID => {
                let mut v = Vec::with_capacity((cs_count as usize).min(r.remaining() / 9));
                for _ in 0..cs_count {
                    let policy_no = r.u8()?;
                    let ssrc = r.u32()?;
                    let roc = r.u32()?;
                    v.push(SrtpIdEntry {
                        policy_no,
                        ssrc,
                        roc,
                    });
                }
                CsIdMap::SrtpId(v)
            }
            CsIdMap::TYPE_EMPTY => CsIdMap::Empty { cs_count },
            other => return Err(r.error_at(map_at, ParseErrorKind::UnknownCsIdMapType(other))),
        };
        Ok((
            CommonHeader {
                data_type,
                v: vp & 0x80 != 0,
                prf: PrfFunc(vp & 0x7f),
                csb_id,
                cs_id_map,
            },
            next,
        ))
    }
}

// ---------------------------------------------------------------------------
// MAC algorithms shared by KEMAC and V

/// MAC / authentication algorithm of KEMAC and V (RFC 3830 6.2, 6.9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MacAlg {
    /// No MAC (0 bytes).
    Null,
    /// HMAC-SHA-1-160 (20 bytes).
    HmacSha1_160,
}

impl MacAlg {
    /// Wire value.
    pub fn code(self) -> u8 {
        match self {
            MacAlg::Null => 0,
            MacAlg::HmacSha1_160 => 1,
        }
    }

    /// MAC length in bytes.
    pub fn mac_len(self) -> usize {
        match self {
            MacAlg::Null => 0,
            MacAlg::HmacSha1_160 => HMAC_SHA1_LEN,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        match c {
            0 => Some(MacAlg::Null),
            1 => Some(MacAlg::HmacSha1_160),
            _ => None,
        }
    }

    /// Registered name.
    pub fn name(self) -> &'static str {
        match self {
            MacAlg::Null => "NULL",
            MacAlg::HmacSha1_160 => "HMAC-SHA-1-160",
        }
    }
}

fn read_mac_alg(r: &mut Reader<'_>) -> Result<MacAlg, ParseError> {
    let at = r.offset();
    let c = r.u8()?;
    MacAlg::from_code(c).ok_or_else(|| r.error_at(at, ParseErrorKind::UnknownMacAlgorithm(c)))
}

// ---------------------------------------------------------------------------
// KEMAC (6.2)

/// KEMAC: the encrypted key data sub-payloads and the message MAC.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Kemac<'a> {
    /// Encryption algorithm.
    pub encr_alg: EncrAlg,
    /// Encrypted key data sub-payloads (plain for NULL encryption).
    pub encr_data: Bytes<'a>,
    /// MAC algorithm.
    pub mac_alg: MacAlg,
    /// The MAC (length fixed by `mac_alg`).
    pub mac: Bytes<'a>,
}

// ---------------------------------------------------------------------------
// PKE (6.3)

/// PKE: the envelope key encrypted with the responder's public key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Pke<'a> {
    /// Cache indicator C (2 bits): 0 no cache, 1 cache, 2 cache for CSB.
    pub cache: u8,
    /// Encrypted envelope key (14-bit length).
    pub data: Bytes<'a>,
}

// ---------------------------------------------------------------------------
// DH (6.4)

/// Diffie-Hellman group of the DH payload (RFC 3830 6.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DhGroup {
    /// OAKLEY 5 (1536-bit MODP).
    Oakley5,
    /// OAKLEY 1 (768-bit MODP).
    Oakley1,
    /// OAKLEY 2 (1024-bit MODP).
    Oakley2,
}

impl DhGroup {
    /// Wire value.
    pub fn code(self) -> u8 {
        match self {
            DhGroup::Oakley5 => 0,
            DhGroup::Oakley1 => 1,
            DhGroup::Oakley2 => 2,
        }
    }

    /// Length of the DH value in bytes.
    pub fn value_len(self) -> usize {
        match self {
            DhGroup::Oakley5 => 192,
            DhGroup::Oakley1 => 96,
            DhGroup::Oakley2 => 128,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        match c {
            0 => Some(DhGroup::Oakley5),
            1 => Some(DhGroup::Oakley1),
            2 => Some(DhGroup::Oakley2),
            _ => None,
        }
    }
}

/// DH: a Diffie-Hellman public value and its key validity.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Dh<'a> {
    /// The group.
    pub group: DhGroup,
    /// The public value (length fixed by the group).
    pub value: Bytes<'a>,
    /// The 4 reserved bits, kept for exact re-emission.
    pub reserved: u8,
    /// Key validity.
    pub validity: KeyValidity<'a>,
}

// ---------------------------------------------------------------------------
// SIGN (6.5)

/// SIGN: a signature over the message. It has no next-payload field and is
/// always the last payload.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Sign<'a> {
    /// Signature type (4 bits): 0 RSA/PKCS#1/1.5, 1 RSA/PSS.
    pub s_type: u8,
    /// The signature (12-bit length).
    pub signature: Bytes<'a>,
}

// ---------------------------------------------------------------------------
// T (6.6)

/// T: the timestamp (RFC 3830 6.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Timestamp {
    /// NTP-UTC, 64 bits.
    NtpUtc(u64),
    /// NTP, 64 bits.
    Ntp(u64),
    /// COUNTER, 32 bits (the MBMS replay counter).
    Counter(u32),
}

impl Timestamp {
    /// TS type value.
    pub fn ts_type(&self) -> u8 {
        match self {
            Timestamp::NtpUtc(_) => 0,
            Timestamp::Ntp(_) => 1,
            Timestamp::Counter(_) => 2,
        }
    }

    /// The TS value field as on the wire (8 or 4 bytes), e.g. for the
    /// verification MAC of RFC 3830 5.2.
    pub fn value_bytes(&self) -> Vec<u8> {
        match self {
            Timestamp::NtpUtc(v) | Timestamp::Ntp(v) => v.to_be_bytes().to_vec(),
            Timestamp::Counter(c) => c.to_be_bytes().to_vec(),
        }
    }

    /// Registered name of the TS type.
    pub fn type_name(&self) -> &'static str {
        match self {
            Timestamp::NtpUtc(_) => "NTP-UTC",
            Timestamp::Ntp(_) => "NTP",
            Timestamp::Counter(_) => "COUNTER",
        }
    }
}

// ---------------------------------------------------------------------------
// ID and CERT (6.7), CHASH (6.8)

/// ID: an identity (IDi or IDr by position).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Id<'a> {
    /// ID type.
    pub id_type: IdType,
    /// ID data.
    pub data: Bytes<'a>,
}

impl<'a> Id<'a> {
    /// An owned ID.
    pub fn new(id_type: IdType, data: impl Into<Vec<u8>>) -> Id<'static> {
        Id {
            id_type,
            data: Cow::Owned(data.into()),
        }
    }
}

/// CERT: a certificate.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Cert<'a> {
    /// Certificate type.
    pub cert_type: CertType,
    /// Certificate data.
    pub data: Bytes<'a>,
}

/// Hash function of CHASH (RFC 3830 6.8).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HashFunc {
    /// SHA-1, 20 bytes.
    Sha1,
    /// MD5, 16 bytes.
    Md5,
}

impl HashFunc {
    /// Wire value.
    pub fn code(self) -> u8 {
        match self {
            HashFunc::Sha1 => 0,
            HashFunc::Md5 => 1,
        }
    }

    /// Hash length in bytes.
    pub fn hash_len(self) -> usize {
        match self {
            HashFunc::Sha1 => 20,
            HashFunc::Md5 => 16,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        match c {
            0 => Some(HashFunc::Sha1),
            1 => Some(HashFunc::Md5),
            _ => None,
        }
    }
}

/// CHASH: a certificate hash.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Chash<'a> {
    /// The hash function.
    pub hash_func: HashFunc,
    /// The hash (length fixed by the function).
    pub hash: Bytes<'a>,
}

// ---------------------------------------------------------------------------
// V (6.9)

/// V: the verification payload of a response message.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Verification<'a> {
    /// Authentication algorithm.
    pub auth_alg: MacAlg,
    /// The MAC (length fixed by the algorithm).
    pub mac: Bytes<'a>,
}

// ---------------------------------------------------------------------------
// SP (6.10)

/// One policy parameter: type, 8-bit length, value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PolicyParam<'a> {
    /// Parameter type (for SRTP see [`SrtpParamType`]).
    pub param_type: u8,
    /// Parameter value (at most 255 bytes).
    pub value: Bytes<'a>,
}

/// SP: a security policy. The parameters are kept in wire order so that a
/// parsed policy re-emits byte for byte; [`crate::SrtpPolicy`] is the typed
/// view of an SRTP policy.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SecurityPolicy<'a> {
    /// Policy number (referenced by the CS ID map).
    pub policy_no: u8,
    /// Security protocol.
    pub prot_type: ProtType,
    /// Parameters in wire order.
    pub params: Vec<PolicyParam<'a>>,
}

// ---------------------------------------------------------------------------
// RAND (6.11), ERR (6.12)

/// RAND: fresh random bytes (8-bit length).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Rand<'a> {
    /// The random value.
    pub value: Bytes<'a>,
}

/// ERR: an error indication.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ErrorPayload {
    /// Error number.
    pub code: ErrorCode,
    /// The 16 reserved bits, kept for exact re-emission.
    pub reserved: u16,
}

// ---------------------------------------------------------------------------
// General Extension (6.15) and RFC 4563 Key ID

/// RFC 4563 Key ID information: Key ID Type (1 byte), Key ID length (2 bytes),
/// Key ID (`PROFILE.md` section 6).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KeyIdInfo<'a> {
    /// Which kind of key the ID names.
    pub key_id_type: KeyIdType,
    /// The Key ID.
    pub key_id: Bytes<'a>,
}

/// General Extension payload.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum GeneralExtension<'a> {
    /// Type 0: vendor ID (opaque).
    VendorId(Bytes<'a>),
    /// Type 1: SDP IDs (opaque).
    SdpIds(Bytes<'a>),
    /// Type 2 (RFC 4563): Key ID information.
    KeyId(KeyIdInfo<'a>),
    /// Any other type, kept opaque and re-emitted unchanged.
    Unknown {
        /// Extension type.
        ext_type: ExtType,
        /// Extension data.
        data: Bytes<'a>,
    },
}

impl GeneralExtension<'_> {
    /// The EXT type byte.
    pub fn ext_type(&self) -> ExtType {
        match self {
            GeneralExtension::VendorId(_) => ExtType::VENDOR_ID,
            GeneralExtension::SdpIds(_) => ExtType::SDP_IDS,
            GeneralExtension::KeyId(_) => ExtType::KEY_ID,
            GeneralExtension::Unknown { ext_type, .. } => *ext_type,
        }
    }

    /// An owned Key ID extension.
    pub fn key_id(key_id_type: KeyIdType, key_id: impl Into<Vec<u8>>) -> GeneralExtension<'static> {
        GeneralExtension::KeyId(KeyIdInfo {
            key_id_type,
            key_id: Cow::Owned(key_id.into()),
        })
    }

    fn data_len(&self) -> usize {
        match self {
            GeneralExtension::VendorId(d) | GeneralExtension::SdpIds(d) => d.len(),
            GeneralExtension::KeyId(k) => 3 + k.key_id.len(),
            GeneralExtension::Unknown { data, .. } => data.len(),
        }
    }
}

// ---------------------------------------------------------------------------
// Key validity and key data sub-payload (6.13, 6.14)

/// Key validity data (RFC 3830 6.14).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KeyValidity<'a> {
    /// KV NULL: no validity data.
    Null,
    /// KV SPI/MKI: an SPI or MKI (8-bit length).
    SpiMki(Bytes<'a>),
    /// KV Interval: Valid From and Valid To (8-bit lengths each).
    Interval {
        /// Valid From (VF).
        from: Bytes<'a>,
        /// Valid To (VT).
        to: Bytes<'a>,
    },
}

impl KeyValidity<'_> {
    /// KV type value.
    pub fn kv_type(&self) -> u8 {
        match self {
            KeyValidity::Null => 0,
            KeyValidity::SpiMki(_) => 1,
            KeyValidity::Interval { .. } => 2,
        }
    }

    /// Registered name of the KV type.
    pub fn type_name(&self) -> &'static str {
        match self {
            KeyValidity::Null => "NULL",
            KeyValidity::SpiMki(_) => "SPI/MKI",
            KeyValidity::Interval { .. } => "Interval",
        }
    }

    fn encoded_len(&self) -> usize {
        match self {
            KeyValidity::Null => 0,
            KeyValidity::SpiMki(s) => 1 + s.len(),
            KeyValidity::Interval { from, to } => 2 + from.len() + to.len(),
        }
    }

    fn validate(&self, payload: PayloadName) -> Result<(), BuildError> {
        match self {
            KeyValidity::Null => Ok(()),
            KeyValidity::SpiMki(s) => check_len(payload, "SPI/MKI", s.len(), 255),
            KeyValidity::Interval { from, to } => {
                check_len(payload, "Valid From", from.len(), 255)?;
                check_len(payload, "Valid To", to.len(), 255)
            }
        }
    }

    fn emit(&self, out: &mut Vec<u8>) {
        match self {
            KeyValidity::Null => {}
            KeyValidity::SpiMki(s) => {
                out.push(s.len() as u8);
                out.extend_from_slice(s);
            }
            KeyValidity::Interval { from, to } => {
                out.push(from.len() as u8);
                out.extend_from_slice(from);
                out.push(to.len() as u8);
                out.extend_from_slice(to);
            }
        }
    }

    fn decode<'a>(r: &mut Reader<'a>, kv: u8, at: usize) -> Result<KeyValidity<'a>, ParseError> {
        Ok(match kv {
            0 => KeyValidity::Null,
            1 => {
                let n = r.u8()? as usize;
                KeyValidity::SpiMki(Cow::Borrowed(r.take(n)?))
            }
            2 => {
                let n = r.u8()? as usize;
                let from = Cow::Borrowed(r.take(n)?);
                let n = r.u8()? as usize;
                let to = Cow::Borrowed(r.take(n)?);
                KeyValidity::Interval { from, to }
            }
            other => return Err(r.error_at(at, ParseErrorKind::UnknownKeyValidityType(other))),
        })
    }

    /// Detach from the input.
    pub fn into_owned(self) -> KeyValidity<'static> {
        match self {
            KeyValidity::Null => KeyValidity::Null,
            KeyValidity::SpiMki(s) => KeyValidity::SpiMki(owned(s)),
            KeyValidity::Interval { from, to } => KeyValidity::Interval {
                from: owned(from),
                to: owned(to),
            },
        }
    }
}

/// Whether a key data sub-payload carries a TGK or a TEK (RFC 3830 6.13).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// TEK Generation Key.
    Tgk,
    /// Traffic Encrypting Key.
    Tek,
}

/// A key data sub-payload (RFC 3830 6.13), in the clear. The Type field is
/// computed from `kind` and whether a salt is present (TGK 0, TGK+SALT 1,
/// TEK 2, TEK+SALT 3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyData {
    /// TGK or TEK.
    pub kind: KeyKind,
    /// The key.
    pub key: SecretBytes,
    /// The salt (present for the +SALT types; may be empty).
    pub salt: Option<SecretBytes>,
    /// Key validity data.
    pub validity: KeyValidity<'static>,
}

impl KeyData {
    /// The Type field value.
    pub fn type_code(&self) -> u8 {
        match (self.kind, self.salt.is_some()) {
            (KeyKind::Tgk, false) => 0,
            (KeyKind::Tgk, true) => 1,
            (KeyKind::Tek, false) => 2,
            (KeyKind::Tek, true) => 3,
        }
    }

    /// Registered name of the Type field.
    pub fn type_name(&self) -> &'static str {
        match self.type_code() {
            0 => "TGK",
            1 => "TGK+SALT",
            2 => "TEK",
            _ => "TEK+SALT",
        }
    }

    /// Borrow as a [`KeyDataRef`].
    pub fn as_ref(&self) -> KeyDataRef<'_> {
        KeyDataRef {
            kind: self.kind,
            key: self.key.expose(),
            salt: self.salt.as_ref().map(SecretBytes::expose),
            validity: match &self.validity {
                KeyValidity::Null => KeyValidity::Null,
                KeyValidity::SpiMki(s) => KeyValidity::SpiMki(Cow::Borrowed(s)),
                KeyValidity::Interval { from, to } => KeyValidity::Interval {
                    from: Cow::Borrowed(from),
                    to: Cow::Borrowed(to),
                },
            },
        }
    }

    pub(crate) fn validate(&self) -> Result<(), BuildError> {
        self.as_ref().validate()
    }

    pub(crate) fn emit(&self, next: u8, out: &mut Vec<u8>) {
        self.as_ref().emit(next, out)
    }

    /// Encode a list of key data sub-payloads as the plaintext of a KEMAC
    /// (each links to the next with payload type 20, the last with 0).
    pub fn emit_list(list: &[KeyData], out: &mut Vec<u8>) -> Result<(), BuildError> {
        for kd in list {
            kd.validate()?;
        }
        for (i, kd) in list.iter().enumerate() {
            kd.emit(next_key_data(i, list.len()), out);
        }
        Ok(())
    }

    /// Parse the plaintext of a KEMAC: a chain of key data sub-payloads.
    /// `base` is the absolute offset of `plain[0]`, used in errors. An empty
    /// input is an empty list (a KEMAC with Encr data len 0).
    pub fn parse_list(plain: &[u8], base: usize) -> Result<Vec<KeyData>, ParseError> {
        KeyDataRef::parse_list(plain, base)
            .map(|k| k.map(|k| k.to_owned()))
            .collect()
    }
}

/// The next-payload value of key data sub-payload `i` of `n`.
fn next_key_data(i: usize, n: usize) -> u8 {
    if i + 1 < n {
        PayloadType::KEY_DATA.0
    } else {
        PayloadType::LAST.0
    }
}

/// A key data sub-payload (RFC 3830 6.13) borrowing its key, salt and
/// validity: what the zero-copy writer emits and the zero-copy reader yields
/// (from a buffer the caller owns and wipes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyDataRef<'a> {
    /// TGK or TEK.
    pub kind: KeyKind,
    /// The key.
    pub key: &'a [u8],
    /// The salt (present for the +SALT types; may be empty).
    pub salt: Option<&'a [u8]>,
    /// Key validity data.
    pub validity: KeyValidity<'a>,
}

impl<'a> KeyDataRef<'a> {
    /// The Type field value.
    pub fn type_code(&self) -> u8 {
        match (self.kind, self.salt.is_some()) {
            (KeyKind::Tgk, false) => 0,
            (KeyKind::Tgk, true) => 1,
            (KeyKind::Tek, false) => 2,
            (KeyKind::Tek, true) => 3,
        }
    }

    /// Registered name of the Type field.
    pub fn type_name(&self) -> &'static str {
        match self.type_code() {
            0 => "TGK",
            1 => "TGK+SALT",
            2 => "TEK",
            _ => "TEK+SALT",
        }
    }

    /// Encoded length in bytes.
    pub fn encoded_len(&self) -> usize {
        4 + self.key.len() + self.salt.map_or(0, |s| 2 + s.len()) + self.validity.encoded_len()
    }

    /// Check that every field fits its encoding.
    pub fn validate(&self) -> Result<(), BuildError> {
        check_len(PayloadName::KeyData, "key data", self.key.len(), 0xffff)?;
        if let Some(s) = self.salt {
            check_len(PayloadName::KeyData, "salt", s.len(), 0xffff)?;
        }
        self.validity.validate(PayloadName::KeyData)
    }

    /// Append the encoding with `next` as the next-payload value (the
    /// sub-payload must have passed [`KeyDataRef::validate`]: lengths that
    /// do not fit are cut to 8 or 16 bits).
    pub fn emit(&self, next: u8, out: &mut Vec<u8>) {
        out.push(next);
        out.push((self.type_code() << 4) | self.validity.kv_type());
        put_u16(out, self.key.len() as u16);
        out.extend_from_slice(self.key);
        if let Some(s) = self.salt {
            put_u16(out, s.len() as u16);
            out.extend_from_slice(s);
        }
        self.validity.emit(out);
    }

    /// Append a list as the plaintext of a KEMAC (the writer's path).
    pub(crate) fn emit_list(list: &[KeyDataRef<'_>], out: &mut Vec<u8>) -> Result<(), BuildError> {
        for kd in list {
            kd.validate()?;
        }
        for (i, kd) in list.iter().enumerate() {
            kd.emit(next_key_data(i, list.len()), out);
        }
        Ok(())
    }

    /// Copy into an owned [`KeyData`].
    pub fn to_owned(&self) -> KeyData {
        KeyData {
            kind: self.kind,
            key: SecretBytes::from_slice(self.key),
            salt: self.salt.map(SecretBytes::from_slice),
            validity: self.validity.clone().into_owned(),
        }
    }

    /// Walk the plaintext of a KEMAC without copying: one item per key data
    /// sub-payload, then `None`; an error ends the walk. `base` is the
    /// absolute offset of `plain[0]`, used in errors.
    pub fn parse_list(plain: &'a [u8], base: usize) -> KeyDataIter<'a> {
        KeyDataIter {
            r: Reader::new(plain, base, PayloadName::KeyData),
            done: false,
        }
    }
}

/// The key data sub-payloads of a KEMAC plaintext ([`KeyDataRef::parse_list`]).
#[derive(Clone, Debug)]
pub struct KeyDataIter<'a> {
    r: Reader<'a>,
    done: bool,
}

impl<'a> KeyDataIter<'a> {
    fn next_one(&mut self) -> Result<KeyDataRef<'a>, ParseError> {
        let r = &mut self.r;
        let at = r.offset();
        let next = r.u8()?;
        let tk = r.u8()?;
        let kv = tk & 0x0f;
        let (kind, salted) = match tk >> 4 {
            0 => (KeyKind::Tgk, false),
            1 => (KeyKind::Tgk, true),
            2 => (KeyKind::Tek, false),
            3 => (KeyKind::Tek, true),
            other => return Err(r.error_at(at + 1, ParseErrorKind::UnknownKeyDataType(other))),
        };
        let n = r.u16()? as usize;
        let key = r.take(n)?;
        let salt = if salted {
            let n = r.u16()? as usize;
            Some(r.take(n)?)
        } else {
            None
        };
        let validity = KeyValidity::decode(r, kv, at + 1)?;
        match next {
            0 => {
                if !r.is_empty() {
                    return Err(r.error(ParseErrorKind::TrailingData(r.remaining())));
                }
            }
            20 => {
                if r.is_empty() {
                    return Err(r.error(ParseErrorKind::Truncated {
                        needed: 4,
                        available: 0,
                    }));
                }
            }
            other => return Err(r.error_at(at, ParseErrorKind::BadKeyDataChain(other))),
        }
        Ok(KeyDataRef {
            kind,
            key,
            salt,
            validity,
        })
    }
}

impl<'a> Iterator for KeyDataIter<'a> {
    type Item = Result<KeyDataRef<'a>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.r.is_empty() {
            return None;
        }
        let item = self.next_one();
        if item.is_err() {
            self.done = true;
        }
        Some(item)
    }
}

// ---------------------------------------------------------------------------
// The payload enum

/// Any payload that may follow the common header.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Payload<'a> {
    /// KEMAC (6.2).
    Kemac(Kemac<'a>),
    /// PKE (6.3).
    Pke(Pke<'a>),
    /// DH (6.4).
    Dh(Dh<'a>),
    /// SIGN (6.5).
    Sign(Sign<'a>),
    /// T (6.6).
    Timestamp(Timestamp),
    /// ID (6.7).
    Id(Id<'a>),
    /// CERT (6.7).
    Cert(Cert<'a>),
    /// CHASH (6.8).
    Chash(Chash<'a>),
    /// V (6.9).
    Verification(Verification<'a>),
    /// SP (6.10).
    SecurityPolicy(SecurityPolicy<'a>),
    /// RAND (6.11).
    Rand(Rand<'a>),
    /// ERR (6.12).
    Error(ErrorPayload),
    /// General Extension (6.15).
    GeneralExtension(GeneralExtension<'a>),
}

impl<'a> Payload<'a> {
    /// The payload type (the value the previous payload's next-payload field holds).
    pub fn payload_type(&self) -> PayloadType {
        match self {
            Payload::Kemac(_) => PayloadType::KEMAC,
            Payload::Pke(_) => PayloadType::PKE,
            Payload::Dh(_) => PayloadType::DH,
            Payload::Sign(_) => PayloadType::SIGN,
            Payload::Timestamp(_) => PayloadType::T,
            Payload::Id(_) => PayloadType::ID,
            Payload::Cert(_) => PayloadType::CERT,
            Payload::Chash(_) => PayloadType::CHASH,
            Payload::Verification(_) => PayloadType::V,
            Payload::SecurityPolicy(_) => PayloadType::SP,
            Payload::Rand(_) => PayloadType::RAND,
            Payload::Error(_) => PayloadType::ERR,
            Payload::GeneralExtension(_) => PayloadType::GENERAL_EXT,
        }
    }

    /// The name used in errors.
    pub fn name(&self) -> PayloadName {
        name_of(self.payload_type().0)
    }

    /// Encoded length in bytes, including the next-payload field.
    pub fn encoded_len(&self) -> usize {
        match self {
            Payload::Kemac(k) => 4 + k.encr_data.len() + 1 + k.mac.len(),
            Payload::Pke(p) => 3 + p.data.len(),
            Payload::Dh(d) => 2 + d.value.len() + 1 + d.validity.encoded_len(),
            Payload::Sign(s) => 2 + s.signature.len(),
            Payload::Timestamp(t) => {
                2 + if matches!(t, Timestamp::Counter(_)) {
                    4
                } else {
                    8
                }
            }
            Payload::Id(i) => 4 + i.data.len(),
            Payload::Cert(c) => 4 + c.data.len(),
            Payload::Chash(c) => 2 + c.hash.len(),
            Payload::Verification(v) => 2 + v.mac.len(),
            Payload::SecurityPolicy(sp) => {
                5 + sp.params.iter().map(|p| 2 + p.value.len()).sum::<usize>()
            }
            Payload::Rand(r) => 2 + r.value.len(),
            Payload::Error(_) => 4,
            Payload::GeneralExtension(e) => 4 + e.data_len(),
        }
    }

    /// Check that every field fits its wire encoding.
    pub fn validate(&self) -> Result<(), BuildError> {
        let n = self.name();
        match self {
            Payload::Kemac(k) => {
                check_len(n, "Encr data", k.encr_data.len(), 0xffff)?;
                check_exact(n, "MAC", k.mac.len(), k.mac_alg.mac_len())
            }
            Payload::Pke(p) => {
                check_value(n, "C", p.cache as u32, 3)?;
                check_len(n, "Data", p.data.len(), 0x3fff)
            }
            Payload::Dh(d) => {
                check_exact(n, "DH-value", d.value.len(), d.group.value_len())?;
                check_value(n, "Reserved", d.reserved as u32, 0xf)?;
                d.validity.validate(n)
            }
            Payload::Sign(s) => {
                check_value(n, "S type", s.s_type as u32, 0xf)?;
                check_len(n, "Signature", s.signature.len(), 0xfff)
            }
            Payload::Timestamp(_) | Payload::Error(_) => Ok(()),
            Payload::Id(i) => check_len(n, "ID data", i.data.len(), 0xffff),
            Payload::Cert(c) => check_len(n, "Cert data", c.data.len(), 0xffff),
            Payload::Chash(c) => check_exact(n, "Hash", c.hash.len(), c.hash_func.hash_len()),
            Payload::Verification(v) => {
                check_exact(n, "Ver data", v.mac.len(), v.auth_alg.mac_len())
            }
            Payload::SecurityPolicy(sp) => {
                let mut total = 0usize;
                for p in &sp.params {
                    check_len(n, "Policy param value", p.value.len(), 0xff)?;
                    total += 2 + p.value.len();
                }
                check_len(n, "Policy param", total, 0xffff)
            }
            Payload::Rand(r) => check_len(n, "RAND", r.value.len(), 0xff),
            Payload::GeneralExtension(e) => {
                if let GeneralExtension::KeyId(k) = e {
                    check_len(n, "Key ID", k.key_id.len(), 0xffff - 3)?;
                }
                check_len(n, "Data", e.data_len(), 0xffff)
            }
        }
    }

    /// Append the encoding, with `next` as the next-payload value.
    /// The payload must have passed [`Payload::validate`].
    pub(crate) fn emit(&self, next: u8, out: &mut Vec<u8>) {
        match self {
            Payload::Kemac(k) => {
                out.push(next);
                out.push(k.encr_alg.0);
                put_u16(out, k.encr_data.len() as u16);
                out.extend_from_slice(&k.encr_data);
                out.push(k.mac_alg.code());
                out.extend_from_slice(&k.mac);
            }
            Payload::Pke(p) => {
                out.push(next);
                put_u16(out, ((p.cache as u16) << 14) | p.data.len() as u16);
                out.extend_from_slice(&p.data);
            }
            Payload::Dh(d) => {
                out.push(next);
                out.push(d.group.code());
                out.extend_from_slice(&d.value);
                out.push((d.reserved << 4) | d.validity.kv_type());
                d.validity.emit(out);
            }
            Payload::Sign(s) => {
                put_u16(out, ((s.s_type as u16) << 12) | s.signature.len() as u16);
                out.extend_from_slice(&s.signature);
            }
            Payload::Timestamp(t) => {
                out.push(next);
                out.push(t.ts_type());
                match t {
                    Timestamp::NtpUtc(v) | Timestamp::Ntp(v) => {
                        out.extend_from_slice(&v.to_be_bytes())
                    }
                    Timestamp::Counter(c) => put_u32(out, *c),
                }
            }
            Payload::Id(i) => {
                out.push(next);
                out.push(i.id_type.0);
                put_u16(out, i.data.len() as u16);
                out.extend_from_slice(&i.data);
            }
            Payload::Cert(c) => {
                out.push(next);
                out.push(c.cert_type.0);
                put_u16(out, c.data.len() as u16);
                out.extend_from_slice(&c.data);
            }
            Payload::Chash(c) => {
                out.push(next);
                out.push(c.hash_func.code());
                out.extend_from_slice(&c.hash);
            }
            Payload::Verification(v) => {
                out.push(next);
                out.push(v.auth_alg.code());
                out.extend_from_slice(&v.mac);
            }
            Payload::SecurityPolicy(sp) => {
                out.push(next);
                out.push(sp.policy_no);
                out.push(sp.prot_type.0);
                let total: usize = sp.params.iter().map(|p| 2 + p.value.len()).sum();
                put_u16(out, total as u16);
                for p in &sp.params {
                    out.push(p.param_type);
                    out.push(p.value.len() as u8);
                    out.extend_from_slice(&p.value);
                }
            }
            Payload::Rand(r) => {
                out.push(next);
                out.push(r.value.len() as u8);
                out.extend_from_slice(&r.value);
            }
            Payload::Error(e) => {
                out.push(next);
                out.push(e.code.0);
                put_u16(out, e.reserved);
            }
            Payload::GeneralExtension(e) => {
                out.push(next);
                out.push(e.ext_type().0);
                put_u16(out, e.data_len() as u16);
                match e {
                    GeneralExtension::VendorId(d) | GeneralExtension::SdpIds(d) => {
                        out.extend_from_slice(d)
                    }
                    GeneralExtension::KeyId(k) => {
                        out.push(k.key_id_type.0);
                        put_u16(out, k.key_id.len() as u16);
                        out.extend_from_slice(&k.key_id);
                    }
                    GeneralExtension::Unknown { data, .. } => out.extend_from_slice(data),
                }
            }
        }
    }

    /// Decode one payload of type `ptype` at the reader's position. Returns
    /// the payload and its next-payload value (0 for SIGN, which has none).
    pub(crate) fn decode(ptype: u8, r: &mut Reader<'a>) -> Result<(Payload<'a>, u8), ParseError> {
        r.set_payload(name_of(ptype));
        let start = r.offset();
        if ptype == PayloadType::SIGN.0 {
            let v = r.u16()?;
            let sig = r.take((v & 0x0fff) as usize)?;
            return Ok((
                Payload::Sign(Sign {
                    s_type: (v >> 12) as u8,
                    signature: Cow::Borrowed(sig),
                }),
                PayloadType::LAST.0,
            ));
        }
        let next = r.u8()?;
        let p = match ptype {
            1 => {
                let encr_alg = EncrAlg(r.u8()?);
                let n = r.u16()? as usize;
                let encr_data = Cow::Borrowed(r.take(n)?);
                let mac_alg = read_mac_alg(r)?;
                let mac = Cow::Borrowed(r.take(mac_alg.mac_len())?);
                Payload::Kemac(Kemac {
                    encr_alg,
                    encr_data,
                    mac_alg,
                    mac,
                })
            }
            2 => {
                let v = r.u16()?;
                let data = Cow::Borrowed(r.take((v & 0x3fff) as usize)?);
                Payload::Pke(Pke {
                    cache: (v >> 14) as u8,
                    data,
                })
            }
            3 => {
                let at = r.offset();
                let g = r.u8()?;
                let group = DhGroup::from_code(g)
                    .ok_or_else(|| r.error_at(at, ParseErrorKind::UnknownDhGroup(g)))?;
                let value = Cow::Borrowed(r.take(group.value_len())?);
                let kv_at = r.offset();
                let rk = r.u8()?;
                let validity = KeyValidity::decode(r, rk & 0x0f, kv_at)?;
                Payload::Dh(Dh {
                    group,
                    value,
                    reserved: rk >> 4,
                    validity,
                })
            }
            5 => {
                let at = r.offset();
                let t = r.u8()?;
                let ts = match t {
                    0 => Timestamp::NtpUtc(r.u64()?),
                    1 => Timestamp::Ntp(r.u64()?),
                    2 => Timestamp::Counter(r.u32()?),
                    other => {
                        return Err(r.error_at(at, ParseErrorKind::UnknownTimestampType(other)))
                    }
                };
                Payload::Timestamp(ts)
            }
            6 => {
                let id_type = IdType(r.u8()?);
                let n = r.u16()? as usize;
                Payload::Id(Id {
                    id_type,
                    data: Cow::Borrowed(r.take(n)?),
                })
            }
            7 => {
                let cert_type = CertType(r.u8()?);
                let n = r.u16()? as usize;
                Payload::Cert(Cert {
                    cert_type,
                    data: Cow::Borrowed(r.take(n)?),
                })
            }
            8 => {
                let at = r.offset();
                let h = r.u8()?;
                let hash_func = HashFunc::from_code(h)
                    .ok_or_else(|| r.error_at(at, ParseErrorKind::UnknownHashFunction(h)))?;
                Payload::Chash(Chash {
                    hash_func,
                    hash: Cow::Borrowed(r.take(hash_func.hash_len())?),
                })
            }
            9 => {
                let auth_alg = read_mac_alg(r)?;
                Payload::Verification(Verification {
                    auth_alg,
                    mac: Cow::Borrowed(r.take(auth_alg.mac_len())?),
                })
            }
            10 => {
                let policy_no = r.u8()?;
                let prot_type = ProtType(r.u8()?);
                let n = r.u16()? as usize;
                let params_at = r.offset();
                let body = r.take(n)?;
                let mut pr = Reader::new(body, params_at, PayloadName::SecurityPolicy);
                let mut params = Vec::new();
                while !pr.is_empty() {
                    let param_type = pr.u8()?;
                    let len = pr.u8()? as usize;
                    let value = pr.take(len).map_err(|e| ParseError {
                        kind: ParseErrorKind::PolicyParamOverrun,
                        ..e
                    })?;
                    params.push(PolicyParam {
                        param_type,
                        value: Cow::Borrowed(value),
                    });
                }
                Payload::SecurityPolicy(SecurityPolicy {
                    policy_no,
                    prot_type,
                    params,
                })
            }
            11 => {
                let n = r.u8()? as usize;
                Payload::Rand(Rand {
                    value: Cow::Borrowed(r.take(n)?),
                })
            }
            12 => {
                let code = ErrorCode(r.u8()?);
                let reserved = r.u16()?;
                Payload::Error(ErrorPayload { code, reserved })
            }
            21 => {
                let ext_type = ExtType(r.u8()?);
                let n = r.u16()? as usize;
                let data_at = r.offset();
                let data = r.take(n)?;
                let ext = match ext_type {
                    ExtType::VENDOR_ID => GeneralExtension::VendorId(Cow::Borrowed(data)),
                    ExtType::SDP_IDS => GeneralExtension::SdpIds(Cow::Borrowed(data)),
                    ExtType::KEY_ID => {
                        let mut kr = Reader::new(data, data_at, PayloadName::GeneralExtension);
                        let key_id_type = KeyIdType(kr.u8()?);
                        let len = kr.u16()? as usize;
                        if 3 + len != data.len() {
                            return Err(r.error_at(
                                data_at,
                                ParseErrorKind::KeyIdLengthMismatch {
                                    declared: 3 + len,
                                    actual: data.len(),
                                },
                            ));
                        }
                        GeneralExtension::KeyId(KeyIdInfo {
                            key_id_type,
                            key_id: Cow::Borrowed(kr.take(len)?),
                        })
                    }
                    other => GeneralExtension::Unknown {
                        ext_type: other,
                        data: Cow::Borrowed(data),
                    },
                };
                Payload::GeneralExtension(ext)
            }
            20 => return Err(r.error_at(start, ParseErrorKind::BadKeyDataChain(20))),
            other => return Err(r.error_at(start, ParseErrorKind::UnknownPayloadType(other))),
        };
        Ok((p, next))
    }

    /// Detach from the input.
    pub fn into_owned(self) -> Payload<'static> {
        match self {
            Payload::Kemac(k) => Payload::Kemac(Kemac {
                encr_alg: k.encr_alg,
                encr_data: owned(k.encr_data),
                mac_alg: k.mac_alg,
                mac: owned(k.mac),
            }),
            Payload::Pke(p) => Payload::Pke(Pke {
                cache: p.cache,
                data: owned(p.data),
            }),
            Payload::Dh(d) => Payload::Dh(Dh {
                group: d.group,
                value: owned(d.value),
                reserved: d.reserved,
                validity: d.validity.into_owned(),
            }),
            Payload::Sign(s) => Payload::Sign(Sign {
                s_type: s.s_type,
                signature: owned(s.signature),
            }),
            Payload::Timestamp(t) => Payload::Timestamp(t),
            Payload::Id(i) => Payload::Id(Id {
                id_type: i.id_type,
                data: owned(i.data),
            }),
            Payload::Cert(c) => Payload::Cert(Cert {
                cert_type: c.cert_type,
                data: owned(c.data),
            }),
            Payload::Chash(c) => Payload::Chash(Chash {
                hash_func: c.hash_func,
                hash: owned(c.hash),
            }),
            Payload::Verification(v) => Payload::Verification(Verification {
                auth_alg: v.auth_alg,
                mac: owned(v.mac),
            }),
            Payload::SecurityPolicy(sp) => Payload::SecurityPolicy(SecurityPolicy {
                policy_no: sp.policy_no,
                prot_type: sp.prot_type,
                params: sp
                    .params
                    .into_iter()
                    .map(|p| PolicyParam {
                        param_type: p.param_type,
                        value: owned(p.value),
                    })
                    .collect(),
            }),
            Payload::Rand(r) => Payload::Rand(Rand {
                value: owned(r.value),
            }),
            Payload::Error(e) => Payload::Error(e),
            Payload::GeneralExtension(e) => Payload::GeneralExtension(match e {
                GeneralExtension::VendorId(d) => GeneralExtension::VendorId(owned(d)),
                GeneralExtension::SdpIds(d) => GeneralExtension::SdpIds(owned(d)),
                GeneralExtension::KeyId(k) => GeneralExtension::KeyId(KeyIdInfo {
                    key_id_type: k.key_id_type,
                    key_id: owned(k.key_id),
                }),
                GeneralExtension::Unknown { ext_type, data } => GeneralExtension::Unknown {
                    ext_type,
                    data: owned(data),
                },
            }),
        }
    }
}

/// The error name of a payload type value.
pub(crate) fn name_of(ptype: u8) -> PayloadName {
    match ptype {
        1 => PayloadName::Kemac,
        2 => PayloadName::Pke,
        3 => PayloadName::Dh,
        4 => PayloadName::Sign,
        5 => PayloadName::Timestamp,
        6 => PayloadName::Id,
        7 => PayloadName::Cert,
        8 => PayloadName::Chash,
        9 => PayloadName::Verification,
        10 => PayloadName::SecurityPolicy,
        11 => PayloadName::Rand,
        12 => PayloadName::Error,
        20 => PayloadName::KeyData,
        21 => PayloadName::GeneralExtension,
        other => PayloadName::Unknown(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kd(kind: KeyKind, salt: Option<&[u8]>, validity: KeyValidity<'static>) -> KeyData {
        KeyData {
            kind,
            key: SecretBytes::new(vec![0xaa; 16]),
            salt: salt.map(SecretBytes::from_slice),
            validity,
        }
    }

    #[test]
    fn key_data_types_and_layout() {
        let mtk = kd(
            KeyKind::Tek,
            Some(&[0xbb; 14]),
            KeyValidity::SpiMki(vec![0, 1, 0, 2, 0, 3].into()),
        );
        assert_eq!(mtk.type_code(), 3);
        let mut out = Vec::new();
        KeyData::emit_list(std::slice::from_ref(&mtk), &mut out).unwrap();
        assert_eq!(&out[..4], &[0, 0x31, 0, 16]);
        assert_eq!(&out[20..22], &[0, 14]);
        assert_eq!(&out[36..], &[6, 0, 1, 0, 2, 0, 3]);
        assert_eq!(KeyData::parse_list(&out, 0).unwrap(), vec![mtk]);
        assert_eq!(kd(KeyKind::Tgk, None, KeyValidity::Null).type_code(), 0);
        assert_eq!(
            kd(KeyKind::Tgk, Some(&[]), KeyValidity::Null).type_code(),
            1
        );
        assert_eq!(kd(KeyKind::Tek, None, KeyValidity::Null).type_code(), 2);
    }

    #[test]
    fn key_data_chain_of_two() {
        let list = vec![
            kd(KeyKind::Tgk, None, KeyValidity::Null),
            kd(
                KeyKind::Tek,
                None,
                KeyValidity::Interval {
                    from: vec![1].into(),
                    to: vec![2, 3].into(),
                },
            ),
        ];
        let mut out = Vec::new();
        KeyData::emit_list(&list, &mut out).unwrap();
        assert_eq!(out[0], 20);
        assert_eq!(KeyData::parse_list(&out, 0).unwrap(), list);
    }

    #[test]
    fn key_data_errors() {
        let mut out = Vec::new();
        KeyData::emit_list(&[kd(KeyKind::Tgk, None, KeyValidity::Null)], &mut out).unwrap();
        let mut bad = out.clone();
        bad[1] = 0x40;
        let e = KeyData::parse_list(&bad, 100).unwrap_err();
        assert_eq!(
            (e.kind, e.offset),
            (ParseErrorKind::UnknownKeyDataType(4), 101)
        );
        let mut bad = out.clone();
        bad[1] = 0x03;
        assert_eq!(
            KeyData::parse_list(&bad, 0).unwrap_err().kind,
            ParseErrorKind::UnknownKeyValidityType(3)
        );
        let mut bad = out.clone();
        bad[0] = 5;
        assert_eq!(
            KeyData::parse_list(&bad, 0).unwrap_err().kind,
            ParseErrorKind::BadKeyDataChain(5)
        );
        let mut bad = out.clone();
        bad[0] = 20; // promises another sub-payload that is not there
        assert!(KeyData::parse_list(&bad, 0).is_err());
        let mut bad = out.clone();
        bad.push(0);
        assert_eq!(
            KeyData::parse_list(&bad, 0).unwrap_err().kind,
            ParseErrorKind::TrailingData(1)
        );
        assert!(KeyData::parse_list(&out[..10], 0).is_err());
        assert_eq!(KeyData::parse_list(&[], 0).unwrap(), vec![]);
    }

    #[test]
    fn every_fixed_length_is_enforced_when_building() {
        let dh = Payload::Dh(Dh {
            group: DhGroup::Oakley1,
            value: vec![0; 95].into(),
            reserved: 0,
            validity: KeyValidity::Null,
        });
        assert!(matches!(
            dh.validate(),
            Err(BuildError::WrongLength { expected: 96, .. })
        ));
        let v = Payload::Verification(Verification {
            auth_alg: MacAlg::HmacSha1_160,
            mac: vec![0; 19].into(),
        });
        assert!(matches!(
            v.validate(),
            Err(BuildError::WrongLength { expected: 20, .. })
        ));
        let c = Payload::Chash(Chash {
            hash_func: HashFunc::Md5,
            hash: vec![0; 20].into(),
        });
        assert!(matches!(
            c.validate(),
            Err(BuildError::WrongLength { expected: 16, .. })
        ));
        let pke = Payload::Pke(Pke {
            cache: 4,
            data: vec![].into(),
        });
        assert!(matches!(
            pke.validate(),
            Err(BuildError::ValueOutOfRange { max: 3, .. })
        ));
        let sign = Payload::Sign(Sign {
            s_type: 0,
            signature: vec![0; 4096].into(),
        });
        assert!(matches!(
            sign.validate(),
            Err(BuildError::TooLong { max: 4095, .. })
        ));
    }
}
