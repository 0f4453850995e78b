//! MBMS key identifiers (`PROFILE.md` section 1; seed 002 for the Key Domain
//! ID and the MSK ID layout, seed 004 6.5.4 for the MTK ID).

use core::fmt;
use core::str::FromStr;

use crate::profile::{KEY_DOMAIN_ID_LEN, MSK_ID_LEN, MSK_KEY_ID_LEN, MTK_KEY_ID_LEN};
use crate::serial::Serial16;

/// An identifier could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Wrong number of bytes.
    #[error("{what}: expected {expected} bytes, got {got}")]
    Length {
        /// Which identifier.
        what: &'static str,
        /// Required length.
        expected: usize,
        /// Given length.
        got: usize,
    },
    /// Text that is not one of the accepted forms.
    #[error("{what}: cannot parse {text:?}: {why}")]
    Text {
        /// Which identifier.
        what: &'static str,
        /// The text.
        text: String,
        /// Why.
        why: &'static str,
    },
}

fn text_err(what: &'static str, text: &str, why: &'static str) -> IdError {
    IdError::Text {
        what,
        text: text.to_owned(),
        why,
    }
}

/// Key Domain ID: MCC || MNC, 3 bytes in PLMN-identity nibble order
/// (`PROFILE.md` section 1, choice): byte0 = MCC2<<4 | MCC1,
/// byte1 = MNC3<<4 | MCC3 (MNC3 = 0xF for a 2-digit MNC), byte2 = MNC2<<4 | MNC1.
///
/// Text forms: `"MCC-MNC"` (e.g. `"001-01"`) and 6 hex digits (e.g. `"00F110"`).
/// `Display` prints the hex form used in the Ua XML (`PROFILE.md` section 3).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyDomainId(pub [u8; KEY_DOMAIN_ID_LEN]);

impl KeyDomainId {
    /// From MCC and MNC digit strings (MCC 3 digits, MNC 2 or 3 digits).
    pub fn from_mcc_mnc(mcc: &str, mnc: &str) -> Result<Self, IdError> {
        let digits = |s: &str| -> Option<Vec<u8>> {
            s.bytes()
                .map(|b| b.is_ascii_digit().then(|| b - b'0'))
                .collect()
        };
        let text = format!("{mcc}-{mnc}");
        let m = digits(mcc)
            .filter(|d| d.len() == 3)
            .ok_or_else(|| text_err("Key Domain ID", &text, "MCC must be 3 digits"))?;
        let n = digits(mnc)
            .filter(|d| d.len() == 2 || d.len() == 3)
            .ok_or_else(|| text_err("Key Domain ID", &text, "MNC must be 2 or 3 digits"))?;
        let mnc3 = if n.len() == 3 { n[2] } else { 0x0f };
        Ok(KeyDomainId([
            (m[1] << 4) | m[0],
            (mnc3 << 4) | m[2],
            (n[1] << 4) | n[0],
        ]))
    }

    /// From its 3 bytes.
    pub fn from_slice(b: &[u8]) -> Result<Self, IdError> {
        let a: [u8; 3] = b.try_into().map_err(|_| IdError::Length {
            what: "Key Domain ID",
            expected: 3,
            got: b.len(),
        })?;
        Ok(KeyDomainId(a))
    }

    /// The MCC and MNC as text, when the nibbles are digits.
    pub fn mcc_mnc(&self) -> Option<(String, String)> {
        let d = |n: u8| (n <= 9).then(|| char::from(b'0' + n));
        let b = self.0;
        let mcc: String = [d(b[0] & 0x0f)?, d(b[0] >> 4)?, d(b[1] & 0x0f)?]
            .iter()
            .collect();
        let mut mnc: String = [d(b[2] & 0x0f)?, d(b[2] >> 4)?].iter().collect();
        match b[1] >> 4 {
            0x0f => {}
            n => mnc.push(d(n)?),
        }
        Some((mcc, mnc))
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8; 3] {
        &self.0
    }
}

impl fmt::Display for KeyDomainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", hex::encode_upper(self.0))
    }
}

impl fmt::Debug for KeyDomainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.mcc_mnc() {
            Some((mcc, mnc)) => write!(f, "KeyDomainId({self} = {mcc}-{mnc})"),
            None => write!(f, "KeyDomainId({self})"),
        }
    }
}

impl FromStr for KeyDomainId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, IdError> {
        let s = s.trim();
        if let Some((mcc, mnc)) = s.split_once('-') {
            return Self::from_mcc_mnc(mcc, mnc);
        }
        let b = hex::decode(s)
            .map_err(|_| text_err("Key Domain ID", s, "expected MCC-MNC or 6 hex digits"))?;
        Self::from_slice(&b)
    }
}

/// MSK ID: Key Group part (2 bytes) || Key Number part (2 bytes), both
/// big-endian (`PROFILE.md` section 1, seed 002). Key Number 0 means "the
/// current MSK" in requests and solicited pull; real MSKs use 1..=65535.
/// Text form: 8 hex digits (e.g. `"00010002"`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MskId {
    /// Key Group part.
    pub key_group: u16,
    /// Key Number part.
    pub key_number: u16,
}

impl MskId {
    /// An MSK ID.
    pub const fn new(key_group: u16, key_number: u16) -> Self {
        MskId {
            key_group,
            key_number,
        }
    }

    /// "The current MSK of this key group" (Key Number 0).
    pub const fn current(key_group: u16) -> Self {
        MskId {
            key_group,
            key_number: crate::profile::CURRENT_MSK_KEY_NUMBER,
        }
    }

    /// True for Key Number 0 (request of the current MSK / solicited pull).
    pub fn is_current_request(&self) -> bool {
        self.key_number == crate::profile::CURRENT_MSK_KEY_NUMBER
    }

    /// The 4 bytes.
    pub fn to_bytes(&self) -> [u8; MSK_ID_LEN] {
        let g = self.key_group.to_be_bytes();
        let n = self.key_number.to_be_bytes();
        [g[0], g[1], n[0], n[1]]
    }

    /// From 4 bytes.
    pub fn from_slice(b: &[u8]) -> Result<Self, IdError> {
        match b {
            [g0, g1, n0, n1] => Ok(MskId {
                key_group: u16::from_be_bytes([*g0, *g1]),
                key_number: u16::from_be_bytes([*n0, *n1]),
            }),
            _ => Err(IdError::Length {
                what: "MSK ID",
                expected: MSK_ID_LEN,
                got: b.len(),
            }),
        }
    }
}

impl fmt::Display for MskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04X}{:04X}", self.key_group, self.key_number)
    }
}

impl fmt::Debug for MskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "MskId(group {}, number {})",
            self.key_group, self.key_number
        )
    }
}

impl FromStr for MskId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, IdError> {
        let s = s.trim();
        let b = hex::decode(s).map_err(|_| text_err("MSK ID", s, "expected 8 hex digits"))?;
        Self::from_slice(&b)
    }
}

/// The full name of an MSK: Key Domain ID and MSK ID (seed 000 6.3.2.1,
/// `PROFILE.md` section 6: the MSK Key ID is their 7-byte concatenation).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct MskName {
    /// Key Domain ID.
    pub key_domain: KeyDomainId,
    /// MSK ID.
    pub msk_id: MskId,
}

impl MskName {
    /// The 7-byte MSK Key ID (`PROFILE.md` section 6).
    pub fn key_id(&self) -> [u8; MSK_KEY_ID_LEN] {
        let mut k = [0u8; MSK_KEY_ID_LEN];
        k[..3].copy_from_slice(&self.key_domain.0);
        k[3..].copy_from_slice(&self.msk_id.to_bytes());
        k
    }

    /// From a 7-byte MSK Key ID.
    pub fn from_key_id(b: &[u8]) -> Result<Self, IdError> {
        if b.len() != MSK_KEY_ID_LEN {
            return Err(IdError::Length {
                what: "MSK Key ID",
                expected: MSK_KEY_ID_LEN,
                got: b.len(),
            });
        }
        Ok(MskName {
            key_domain: KeyDomainId::from_slice(&b[..3])?,
            msk_id: MskId::from_slice(&b[3..])?,
        })
    }

    /// The key group this MSK belongs to.
    pub fn key_group(&self) -> KeyGroupName {
        KeyGroupName {
            key_domain: self.key_domain,
            key_group: self.msk_id.key_group,
        }
    }
}

impl fmt::Display for MskName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.key_domain, self.msk_id)
    }
}

/// A key group: (Key Domain ID, Key Group part), the unit of the two-MSK
/// limit and of MSK deletion (seed 000 6.3.2.1).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct KeyGroupName {
    /// Key Domain ID.
    pub key_domain: KeyDomainId,
    /// Key Group part.
    pub key_group: u16,
}

impl fmt::Display for KeyGroupName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{:04X}", self.key_domain, self.key_group)
    }
}

/// MTK ID: a 16-bit serial number compared with RFC 1982 arithmetic
/// (`PROFILE.md` section 1, seed 004 6.5.4 "SEQp"). Text form: decimal.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct MtkId(pub Serial16);

impl MtkId {
    /// An MTK ID.
    pub const fn new(v: u16) -> Self {
        MtkId(Serial16(v))
    }

    /// The value.
    pub fn value(&self) -> u16 {
        self.0 .0
    }

    /// The 2-byte MTK Key ID.
    pub fn to_bytes(&self) -> [u8; MTK_KEY_ID_LEN] {
        self.value().to_be_bytes()
    }

    /// From 2 bytes.
    pub fn from_slice(b: &[u8]) -> Result<Self, IdError> {
        match b {
            [a, c] => Ok(MtkId::new(u16::from_be_bytes([*a, *c]))),
            _ => Err(IdError::Length {
                what: "MTK ID",
                expected: MTK_KEY_ID_LEN,
                got: b.len(),
            }),
        }
    }
}

impl PartialOrd for MtkId {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        self.0.partial_cmp(&other.0)
    }
}

impl fmt::Display for MtkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.value())
    }
}

impl FromStr for MtkId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, IdError> {
        let s = s.trim();
        let v = match s.strip_prefix("0x") {
            Some(h) => u16::from_str_radix(h, 16),
            None => s.parse(),
        };
        v.map(MtkId::new)
            .map_err(|_| text_err("MTK ID", s, "expected a number 0..=65535"))
    }
}

/// MUK ID = IDi (the BM-SC FQDN, its NAF identity) + IDr (the B-TID)
/// (`PROFILE.md` section 1). Text form: `"IDi IDr"`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct MukId {
    /// IDi: the BM-SC FQDN.
    pub idi: String,
    /// IDr: the B-TID.
    pub idr: String,
}

impl MukId {
    /// A MUK ID.
    pub fn new(idi: impl Into<String>, idr: impl Into<String>) -> Self {
        MukId {
            idi: idi.into(),
            idr: idr.into(),
        }
    }
}

impl fmt::Display for MukId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.idi, self.idr)
    }
}

impl FromStr for MukId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, IdError> {
        let mut it = s.split_whitespace();
        match (it.next(), it.next(), it.next()) {
            (Some(i), Some(r), None) => Ok(MukId::new(i, r)),
            _ => Err(text_err("MUK ID", s, "expected \"IDi IDr\"")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_domain_forms() {
        let kd: KeyDomainId = "001-01".parse().unwrap();
        assert_eq!(kd.0, [0x00, 0xf1, 0x10]);
        assert_eq!(kd.to_string(), "00F110");
        assert_eq!("00f110".parse::<KeyDomainId>().unwrap(), kd);
        // The PROFILE.md section 3 XML example: 02F810 = MCC 208, MNC 01.
        let kd: KeyDomainId = "02F810".parse().unwrap();
        assert_eq!(kd.mcc_mnc(), Some(("208".into(), "01".into())));
        assert_eq!("208-01".parse::<KeyDomainId>().unwrap(), kd);
        let three: KeyDomainId = "310-410".parse().unwrap();
        assert_eq!(three.0, [0x13, 0x00, 0x14]);
        assert_eq!(three.mcc_mnc(), Some(("310".into(), "410".into())));
        assert!("31-01".parse::<KeyDomainId>().is_err());
        assert!("001-1".parse::<KeyDomainId>().is_err());
        assert!("00F1".parse::<KeyDomainId>().is_err());
    }

    #[test]
    fn msk_and_mtk_ids() {
        let m: MskId = "00010002".parse().unwrap();
        assert_eq!(m, MskId::new(1, 2));
        assert_eq!(m.to_string(), "00010002");
        assert_eq!(m.to_bytes(), [0, 1, 0, 2]);
        assert!(MskId::current(1).is_current_request());
        assert!("0001".parse::<MskId>().is_err());
        let name = MskName {
            key_domain: "001-01".parse().unwrap(),
            msk_id: m,
        };
        assert_eq!(name.key_id(), [0, 0xf1, 0x10, 0, 1, 0, 2]);
        assert_eq!(MskName::from_key_id(&name.key_id()).unwrap(), name);
        assert_eq!("7".parse::<MtkId>().unwrap(), MtkId::new(7));
        assert_eq!("0x10".parse::<MtkId>().unwrap(), MtkId::new(16));
        assert!(MtkId::new(0) > MtkId::new(65535));
        let muk: MukId = "bmsc.home1.net abc==@bsf.home1.net".parse().unwrap();
        assert_eq!(muk.to_string(), "bmsc.home1.net abc==@bsf.home1.net");
    }
}
