//! GBA key derivation: the generic KDF of TS 33.220 Annex B, the NAF keys
//! of TS 33.220 Annex B.3, the B-TID (TS 33.220 4.5.2) and the MBMS keys MRK
//! and MUK (TS 33.246 6.1; exact derivation fixed by PROFILE.md section 2).
//!
//! ```text
//! S   = FC || P0 || L0 || P1 || L1 || ... || Pn || Ln     (TS 33.220 B.2.1)
//! Li  = length of Pi in octets, 2 octets big-endian
//! key = HMAC-SHA-256(Key, S)                               (TS 33.220 B.2.2)
//!
//! Ks_NAF = Ks_ext_NAF = KDF(Ks, 0x01, "gba-me", RAND, IMPI, NAF_Id)   (B.3)
//! Ks_int_NAF          = KDF(Ks, 0x01, "gba-u",  RAND, IMPI, NAF_Id)
//! MRK = KDF(Ks_NAF, 0x01, "mbms-mrk")                      (PROFILE.md 2)
//! MUK = KDF(Ks_NAF, 0x01, "mbms-muk")                      (PROFILE.md 2)
//! ```
//!
//! Character strings (IMPI, NAF FQDN) are converted to UTF-8 after NFKC
//! normalisation (TS 33.220 B.2.1.2); for ASCII input this is the identity.

use core::fmt;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use unicode_normalization::UnicodeNormalization;
use zeroize::Zeroizing;

use crate::aka::Rand;
use crate::keys::{Ks, Mrk, Muk, NafKey};

/// FC value for the derivation of NAF-specific keys (TS 33.220 Annex B.3).
pub const FC_NAF_KEY: u8 = 0x01;

/// P0 for Ks_NAF (GBA_ME) and Ks_ext_NAF (GBA_U), TS 33.220 Annex B.3.
pub const GBA_ME_LABEL: &[u8] = b"gba-me";

/// P0 for Ks_int_NAF (GBA_U), TS 33.220 Annex B.3.
pub const GBA_U_LABEL: &[u8] = b"gba-u";

/// The Ua security protocol identifier of MBMS, appended to the BM-SC FQDN
/// to form NAF_Id (TS 33.220 Annex H; PROFILE.md section 1: "NAF_Id = BM-SC
/// FQDN (UTF-8) || 0x01 0x00 0x00 0x00 0x01").
pub const UA_PROTOCOL_ID_MBMS: [u8; 5] = [0x01, 0x00, 0x00, 0x00, 0x01];

/// FC used for the MRK and MUK derivations from Ks_NAF (choice of
/// PROFILE.md section 2: "MRK = KDF(Ks_NAF, FC 0x01, P0 = "mbms-mrk")").
pub const FC_MBMS_KEY: u8 = 0x01;

/// P0 of the MRK derivation in GBA_ME mode: `MRK = KDF(Ks_NAF, FC 0x01,
/// P0 = "mbms-mrk")` (choice of PROFILE.md section 2; key separation required
/// by TS 33.220 H.3).
pub const MBMS_MRK_LABEL: &[u8; 8] = b"mbms-mrk";

/// P0 of the MUK derivation in GBA_ME mode: `MUK = KDF(Ks_NAF, FC 0x01,
/// P0 = "mbms-muk")` (choice of PROFILE.md section 2; key separation required
/// by TS 33.220 H.3).
pub const MBMS_MUK_LABEL: &[u8; 8] = b"mbms-muk";

/// Errors of the key derivation helpers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KdfError {
    /// A KDF input parameter exceeds the 65535 octets that its 2-octet
    /// length field can express (TS 33.220 B.2.1).
    #[error("KDF parameter P{index} is {len} octets long (at most 65535 allowed)")]
    ParameterTooLong {
        /// Index i of Pi.
        index: usize,
        /// Its length.
        len: usize,
    },
    /// A B-TID string was malformed.
    #[error("invalid B-TID: {0}")]
    InvalidBtid(&'static str),
}

/// HMAC-SHA-256, total for every key length (keys longer than the block are
/// hashed first, shorter keys are zero-padded, exactly as RFC 2104 defines).
pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut block = Zeroizing::new([0u8; 64]);
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut mac = <Hmac<Sha256> as hmac::digest::KeyInit>::new(&(*block).into());
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// Builds the KDF input string S = FC || P0 || L0 || ... || Pn || Ln
/// (TS 33.220 B.2.1) for a one-octet FC.
pub fn kdf_input(fc: u8, params: &[&[u8]]) -> Result<Vec<u8>, KdfError> {
    let total: usize = params.iter().map(|p| p.len() + 2).sum();
    let mut s = Vec::with_capacity(1 + total);
    s.push(fc);
    for (index, p) in params.iter().enumerate() {
        let len = u16::try_from(p.len()).map_err(|_| KdfError::ParameterTooLong {
            index,
            len: p.len(),
        })?;
        s.extend_from_slice(p);
        s.extend_from_slice(&len.to_be_bytes());
    }
    Ok(s)
}

/// The generic KDF of TS 33.220 Annex B.2: HMAC-SHA-256(key, S).
pub fn kdf(key: &[u8], fc: u8, params: &[&[u8]]) -> Result<Zeroizing<[u8; 32]>, KdfError> {
    let s = Zeroizing::new(kdf_input(fc, params)?);
    Ok(Zeroizing::new(hmac_sha256(key, &[&s])))
}

fn nfkc(s: &str) -> String {
    s.nfkc().collect()
}

/// NAF_Id = FQDN of the NAF || Ua security protocol identifier
/// (TS 33.220 Annex B.3 and Annex H).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct NafId {
    fqdn: String,
    ua_protocol_id: [u8; 5],
    bytes: Vec<u8>,
}

impl NafId {
    /// NAF_Id for an arbitrary Ua protocol. The FQDN is NFKC-normalised.
    pub fn new(fqdn: &str, ua_protocol_id: [u8; 5]) -> Self {
        let fqdn = nfkc(fqdn);
        let mut bytes = Vec::with_capacity(fqdn.len() + 5);
        bytes.extend_from_slice(fqdn.as_bytes());
        bytes.extend_from_slice(&ua_protocol_id);
        Self {
            fqdn,
            ua_protocol_id,
            bytes,
        }
    }

    /// NAF_Id of a BM-SC: FQDN || [`UA_PROTOCOL_ID_MBMS`] (PROFILE.md
    /// section 1).
    pub fn mbms(bmsc_fqdn: &str) -> Self {
        Self::new(bmsc_fqdn, UA_PROTOCOL_ID_MBMS)
    }

    /// The NAF FQDN part.
    pub fn fqdn(&self) -> &str {
        &self.fqdn
    }

    /// The Ua security protocol identifier part.
    pub fn ua_protocol_id(&self) -> [u8; 5] {
        self.ua_protocol_id
    }

    /// The octets FQDN || Ua protocol id, as used in the KDF and on Zn.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl fmt::Debug for NafId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "NafId({:?} || {})",
            self.fqdn,
            hex::encode(self.ua_protocol_id)
        )
    }
}

/// The S string of a NAF key derivation (TS 33.220 Annex B.3):
/// `0x01 || label || L || RAND || 0x0010 || IMPI || L || NAF_Id || L`.
pub fn naf_kdf_input(
    label: &[u8],
    rand: &Rand,
    impi: &str,
    naf_id: &NafId,
) -> Result<Vec<u8>, KdfError> {
    let impi = nfkc(impi);
    kdf_input(
        FC_NAF_KEY,
        &[label, rand, impi.as_bytes(), naf_id.as_bytes()],
    )
}

fn derive_naf(
    label: &[u8],
    ks: &Ks,
    rand: &Rand,
    impi: &str,
    naf_id: &NafId,
) -> Result<NafKey, KdfError> {
    let s = Zeroizing::new(naf_kdf_input(label, rand, impi, naf_id)?);
    Ok(NafKey::from_bytes(hmac_sha256(ks.as_bytes(), &[&s])))
}

/// Ks_NAF (GBA_ME) = KDF(Ks, "gba-me", RAND, IMPI, NAF_Id), TS 33.220 B.3.
pub fn derive_ks_naf(ks: &Ks, rand: &Rand, impi: &str, naf_id: &NafId) -> Result<NafKey, KdfError> {
    derive_naf(GBA_ME_LABEL, ks, rand, impi, naf_id)
}

/// Ks_ext_NAF (GBA_U) = KDF(Ks, "gba-me", RAND, IMPI, NAF_Id), TS 33.220
/// B.3 (same inputs as Ks_NAF; the Ks is the one held by the UICC).
pub fn derive_ks_ext_naf(
    ks: &Ks,
    rand: &Rand,
    impi: &str,
    naf_id: &NafId,
) -> Result<NafKey, KdfError> {
    derive_naf(GBA_ME_LABEL, ks, rand, impi, naf_id)
}

/// Ks_int_NAF (GBA_U) = KDF(Ks, "gba-u", RAND, IMPI, NAF_Id), TS 33.220 B.3.
pub fn derive_ks_int_naf(
    ks: &Ks,
    rand: &Rand,
    impi: &str,
    naf_id: &NafId,
) -> Result<NafKey, KdfError> {
    derive_naf(GBA_U_LABEL, ks, rand, impi, naf_id)
}

/// S = FC || P0 || L0 for a single 8-octet P0 (TS 33.220 B.2.1), built at
/// compile time so that the MRK / MUK derivations cannot fail.
const fn single_label_input(fc: u8, label: &[u8; 8]) -> [u8; 11] {
    let mut s = [0u8; 11];
    s[0] = fc;
    let mut i = 0;
    while i < 8 {
        s[1 + i] = label[i];
        i += 1;
    }
    s[9] = 0x00;
    s[10] = 0x08;
    s
}

/// MRK = KDF(Ks_NAF, FC 0x01, P0 = "mbms-mrk") (GBA_ME; PROFILE.md
/// section 2).
pub fn derive_mrk(ks_naf: &NafKey) -> Mrk {
    const S: [u8; 11] = single_label_input(FC_MBMS_KEY, MBMS_MRK_LABEL);
    Mrk::from_bytes(hmac_sha256(ks_naf.as_bytes(), &[&S]))
}

/// MUK = KDF(Ks_NAF, FC 0x01, P0 = "mbms-muk") (GBA_ME; PROFILE.md
/// section 2).
pub fn derive_muk(ks_naf: &NafKey) -> Muk {
    const S: [u8; 11] = single_label_input(FC_MBMS_KEY, MBMS_MUK_LABEL);
    Muk::from_bytes(hmac_sha256(ks_naf.as_bytes(), &[&S]))
}

/// The pair of MBMS keys bound to one (B-TID, BM-SC) (TS 33.246 6.1).
#[derive(Clone, PartialEq, Eq)]
pub struct MbmsKeys {
    /// MBMS Request Key: the Ua Digest password (as base64) and MIKEY
    /// verification-message key.
    pub mrk: Mrk,
    /// MBMS User Key: protects MIKEY MSK messages.
    pub muk: Muk,
}

impl fmt::Debug for MbmsKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MbmsKeys { mrk: <redacted>, muk: <redacted> }")
    }
}

impl MbmsKeys {
    /// GBA_ME: MRK and MUK derived from Ks_NAF (PROFILE.md section 2).
    pub fn gba_me(ks_naf: &NafKey) -> Self {
        Self {
            mrk: derive_mrk(ks_naf),
            muk: derive_muk(ks_naf),
        }
    }

    /// GBA_U: MRK = Ks_ext_NAF, MUK = Ks_int_NAF (TS 33.246 6.1;
    /// PROFILE.md section 2).
    pub fn gba_u(ks_ext_naf: &NafKey, ks_int_naf: &NafKey) -> Self {
        Self {
            mrk: Mrk::from_bytes(*ks_ext_naf.as_bytes()),
            muk: Muk::from_bytes(*ks_int_naf.as_bytes()),
        }
    }
}

/// The Bootstrapping Transaction Identifier, `base64(RAND) "@" BSF FQDN`
/// (TS 33.220 4.5.2 / TS 24.109; PROFILE.md section 1).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct BTid {
    text: String,
    rand: Rand,
}

impl BTid {
    /// B-TID = base64(RAND) "@" BSF FQDN.
    pub fn new(rand: &Rand, bsf_fqdn: &str) -> Self {
        let mut text = base64::engine::general_purpose::STANDARD.encode(rand);
        text.push('@');
        text.push_str(bsf_fqdn);
        Self { text, rand: *rand }
    }

    /// Parses a B-TID: the part before the first `@` must be the standard
    /// base64 of 16 octets and the part after it must be non-empty.
    pub fn parse(text: &str) -> Result<Self, KdfError> {
        let (b64, fqdn) = text
            .split_once('@')
            .ok_or(KdfError::InvalidBtid("missing '@'"))?;
        if fqdn.is_empty() {
            return Err(KdfError::InvalidBtid("empty BSF FQDN"));
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| KdfError::InvalidBtid("RAND part is not base64"))?;
        let rand: Rand = raw
            .as_slice()
            .try_into()
            .map_err(|_| KdfError::InvalidBtid("RAND part is not 16 octets"))?;
        Ok(Self {
            text: text.to_owned(),
            rand,
        })
    }

    /// The B-TID text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The RAND it was built from.
    pub fn rand(&self) -> &Rand {
        &self.rand
    }

    /// The BSF FQDN part (after the first `@`).
    pub fn bsf_fqdn(&self) -> &str {
        self.text.split_once('@').map(|(_, f)| f).unwrap_or("")
    }
}

impl fmt::Display for BTid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for BTid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BTid({:?})", self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kdf_input_layout() {
        let s = kdf_input(0x01, &[b"ab", b""]).unwrap();
        assert_eq!(s, [0x01, b'a', b'b', 0x00, 0x02, 0x00, 0x00]);
        let big = vec![0u8; 65536];
        assert_eq!(
            kdf_input(0x01, &[b"x", &big]),
            Err(KdfError::ParameterTooLong {
                index: 1,
                len: 65536
            })
        );
        assert!(kdf_input(0x01, &[&big[..65535]]).is_ok());
    }

    #[test]
    fn hmac_matches_rfc4231_case_1_and_6() {
        // RFC 4231 test case 1 (short key) and 6 (131-octet key).
        let out = hmac_sha256(&[0x0b; 20], &[b"Hi There"]);
        assert_eq!(
            hex::encode(out),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        let out = hmac_sha256(
            &[0xaa; 131],
            &[b"Test Using Larger Than Block-Size Key - Hash Key First"],
        );
        assert_eq!(
            hex::encode(out),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn mrk_muk_use_generic_kdf() {
        let ks_naf = NafKey::from_bytes([0x42; 32]);
        let mrk = derive_mrk(&ks_naf);
        let muk = derive_muk(&ks_naf);
        assert_eq!(
            mrk.as_bytes(),
            &*kdf(ks_naf.as_bytes(), FC_MBMS_KEY, &[&MBMS_MRK_LABEL[..]]).unwrap()
        );
        assert_eq!(
            muk.as_bytes(),
            &*kdf(ks_naf.as_bytes(), FC_MBMS_KEY, &[&MBMS_MUK_LABEL[..]]).unwrap()
        );
        assert_ne!(mrk.as_bytes(), muk.as_bytes());
        let keys = MbmsKeys::gba_me(&ks_naf);
        assert_eq!(keys.mrk, mrk);
        assert_eq!(
            format!("{keys:?}"),
            "MbmsKeys { mrk: <redacted>, muk: <redacted> }"
        );
        let u = MbmsKeys::gba_u(&NafKey::from_bytes([1; 32]), &NafKey::from_bytes([2; 32]));
        assert_eq!(u.mrk.as_bytes(), &[1; 32]);
        assert_eq!(u.muk.as_bytes(), &[2; 32]);
    }

    #[test]
    fn naf_id_mbms() {
        let id = NafId::mbms("bmsc.home1.net");
        assert_eq!(id.as_bytes(), b"bmsc.home1.net\x01\x00\x00\x00\x01");
        assert_eq!(id.fqdn(), "bmsc.home1.net");
        // NFKC: fullwidth letters fold to ASCII.
        assert_eq!(NafId::mbms("ｂｍｓｃ.net").fqdn(), "bmsc.net");
    }

    #[test]
    fn btid_round_trip_and_errors() {
        let rand = [0x23u8; 16];
        let b = BTid::new(&rand, "bsf.example");
        let p = BTid::parse(b.as_str()).unwrap();
        assert_eq!(p, b);
        assert_eq!(p.rand(), &rand);
        assert_eq!(p.bsf_fqdn(), "bsf.example");
        assert!(BTid::parse("nope").is_err());
        assert!(BTid::parse("AAAA@x").is_err());
        assert!(BTid::parse("I1U8vpY3qJ0hiuZNrke/NQ==@").is_err());
        assert!(BTid::parse("%%@x").is_err());
    }
}
