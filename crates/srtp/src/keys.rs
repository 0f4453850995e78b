//! Master keys, MKIs and the RFC 3711 key derivation (section 4.3).

use aes::cipher::{BlockEncrypt, KeyInit};
use aes::Aes128;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::ConfigError;

pub(crate) type HmacSha1 = Hmac<Sha1>;

/// Longest MKI this crate accepts (MBMS uses 6 bytes).
pub const MAX_MKI_LEN: usize = 32;

/// Master key length (AES-128).
pub const MASTER_KEY_LEN: usize = 16;
/// Master salt length.
pub const MASTER_SALT_LEN: usize = 14;
/// Session authentication key length (HMAC-SHA-1, RFC 3711 4.2.1 / 5.2).
pub const AUTH_KEY_LEN: usize = 20;

/// A Master Key Identifier (RFC 3711 3.1): up to [`MAX_MKI_LEN`] bytes,
/// stored inline (no allocation).
///
/// MBMS (PROFILE.md section 8): MKI = MSK ID (4 bytes) || MTK ID (2 bytes),
/// see [`Mki::mbms`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mki {
    len: u8,
    bytes: [u8; MAX_MKI_LEN],
}

impl Mki {
    /// The empty MKI (contexts without MKI).
    pub const EMPTY: Mki = Mki {
        len: 0,
        bytes: [0; MAX_MKI_LEN],
    };

    /// An MKI from bytes; `None` if longer than [`MAX_MKI_LEN`].
    pub fn new(b: &[u8]) -> Option<Mki> {
        if b.len() > MAX_MKI_LEN {
            return None;
        }
        let mut bytes = [0; MAX_MKI_LEN];
        bytes[..b.len()].copy_from_slice(b);
        Some(Mki {
            len: b.len() as u8,
            bytes,
        })
    }

    /// The MBMS MKI (PROFILE.md section 8): MSK ID (big-endian, Key Group
    /// part || Key Number part) followed by the MTK ID (big-endian).
    pub fn mbms(msk_id: u32, mtk_id: u16) -> Mki {
        let mut b = [0u8; 6];
        b[..4].copy_from_slice(&msk_id.to_be_bytes());
        b[4..].copy_from_slice(&mtk_id.to_be_bytes());
        Mki::new(&b).expect("6 bytes fit")
    }

    /// For a 6-byte MKI: (MSK ID, MTK ID) as MBMS lays them out.
    pub fn mbms_parts(&self) -> Option<(u32, u16)> {
        let b = self.as_bytes();
        if b.len() != 6 {
            return None;
        }
        Some((
            u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            u16::from_be_bytes([b[4], b[5]]),
        ))
    }

    /// The MKI bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// True for the empty MKI.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl std::fmt::Display for Mki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_empty() {
            return f.write_str("(none)");
        }
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for Mki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mki({self})")
    }
}

/// An SRTP master key and master salt with its MKI.
///
/// MBMS streaming (seed 004, 6.5.4; PROFILE.md section 2): master key = MTK,
/// master salt = the 14-byte salt of the KEMAC key data. Zeroized on drop;
/// `Debug` prints the MKI only.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct MasterKey {
    key: [u8; MASTER_KEY_LEN],
    salt: [u8; MASTER_SALT_LEN],
    #[zeroize(skip)]
    mki: Mki,
}

impl MasterKey {
    /// A master key with no MKI.
    pub fn new(key: [u8; MASTER_KEY_LEN], salt: [u8; MASTER_SALT_LEN]) -> MasterKey {
        MasterKey {
            key,
            salt,
            mki: Mki::EMPTY,
        }
    }

    /// A master key with an MKI.
    pub fn with_mki(key: [u8; MASTER_KEY_LEN], salt: [u8; MASTER_SALT_LEN], mki: Mki) -> MasterKey {
        MasterKey { key, salt, mki }
    }

    /// From slices (16-byte key, 14-byte salt, MKI of at most
    /// [`MAX_MKI_LEN`] bytes).
    pub fn from_slices(key: &[u8], salt: &[u8], mki: &[u8]) -> Result<MasterKey, ConfigError> {
        let key: [u8; MASTER_KEY_LEN] = key.try_into().map_err(|_| ConfigError::KeyLength {
            what: "SRTP master key",
            expected: MASTER_KEY_LEN,
            got: key.len(),
        })?;
        let salt: [u8; MASTER_SALT_LEN] = salt.try_into().map_err(|_| ConfigError::KeyLength {
            what: "SRTP master salt",
            expected: MASTER_SALT_LEN,
            got: salt.len(),
        })?;
        let mki = Mki::new(mki).ok_or(ConfigError::MkiTooLong(mki.len()))?;
        Ok(MasterKey { key, salt, mki })
    }

    /// The MKI.
    pub fn mki(&self) -> Mki {
        self.mki
    }
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey")
            .field("mki", &self.mki)
            .finish_non_exhaustive()
    }
}

/// The RFC 3711 4.3.1 key derivation labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Label {
    /// 0x00: SRTP encryption key.
    RtpEncryption = 0,
    /// 0x01: SRTP authentication key.
    RtpAuthentication = 1,
    /// 0x02: SRTP salting key.
    RtpSalt = 2,
    /// 0x03: SRTCP encryption key.
    RtcpEncryption = 3,
    /// 0x04: SRTCP authentication key.
    RtcpAuthentication = 4,
    /// 0x05: SRTCP salting key.
    RtcpSalt = 5,
}

/// RFC 3711 4.3.1 / 4.3.3 key derivation with key derivation rate 0
/// (r = 0): `x = (label || 0^48) XOR master_salt`, right-aligned in 112
/// bits; the output is the AES-CM keystream under the master key for the IV
/// `x || 0x0000`, truncated to `out.len()` bytes.
pub fn derive(
    master_key: &[u8; MASTER_KEY_LEN],
    master_salt: &[u8; MASTER_SALT_LEN],
    label: Label,
    out: &mut [u8],
) {
    let aes = Aes128::new(master_key.into());
    let mut iv = [0u8; 16];
    iv[..14].copy_from_slice(master_salt);
    // key_id = label (1 byte) || r (6 bytes) occupies bytes 7..14 of x.
    iv[7] ^= label as u8;
    keystream(&aes, &iv, out);
    iv.zeroize();
}

/// AES-CM keystream (RFC 3711 4.1.1): `E(k, IV) || E(k, IV + 1) || ...`,
/// truncated to `out.len()`. `out` is overwritten.
pub fn aes_cm_keystream(key: &[u8; 16], iv: &[u8; 16], out: &mut [u8]) {
    keystream(&Aes128::new(key.into()), iv, out)
}

fn keystream(aes: &Aes128, iv: &[u8; 16], out: &mut [u8]) {
    let mut ctr = u128::from_be_bytes(*iv);
    for chunk in out.chunks_mut(16) {
        let mut block = aes::Block::from(ctr.to_be_bytes());
        aes.encrypt_block(&mut block);
        chunk.copy_from_slice(&block[..chunk.len()]);
        block.zeroize();
        ctr = ctr.wrapping_add(1);
    }
}

/// Session keys of one direction kind (SRTP or SRTCP): the expanded AES
/// key schedule, the session salt, and the HMAC-SHA-1 state after absorbing
/// the key (ipad/opad), so that a packet costs a stack copy of the state, no
/// key schedule.
///
/// The AES key schedule is zeroized on drop (`aes` crate, `zeroize`
/// feature) and so is the salt; the precomputed HMAC pad states are not
/// (the `hmac` crate offers no zeroization), they are one-way functions of
/// the key.
pub(crate) struct DirectionKeys {
    pub(crate) aes: Aes128,
    pub(crate) salt: [u8; MASTER_SALT_LEN],
    pub(crate) hmac: HmacSha1,
}

impl Drop for DirectionKeys {
    fn drop(&mut self) {
        self.salt.zeroize();
    }
}

impl DirectionKeys {
    fn derive(mk: &MasterKey, enc: Label, auth: Label, salt: Label) -> DirectionKeys {
        let mut k = [0u8; MASTER_KEY_LEN];
        let mut a = [0u8; AUTH_KEY_LEN];
        let mut s = [0u8; MASTER_SALT_LEN];
        derive(&mk.key, &mk.salt, enc, &mut k);
        derive(&mk.key, &mk.salt, auth, &mut a);
        derive(&mk.key, &mk.salt, salt, &mut s);
        let out = DirectionKeys {
            aes: Aes128::new((&k).into()),
            salt: s,
            hmac: <HmacSha1 as Mac>::new_from_slice(&a).expect("HMAC takes any key length"),
        };
        k.zeroize();
        a.zeroize();
        s.zeroize();
        out
    }
}

/// All session keys of one master key (kdr 0: derived once).
pub(crate) struct SessionKeys {
    pub(crate) mki: Mki,
    pub(crate) rtp: DirectionKeys,
    pub(crate) rtcp: DirectionKeys,
}

impl SessionKeys {
    pub(crate) fn derive(mk: &MasterKey) -> SessionKeys {
        SessionKeys {
            mki: mk.mki,
            rtp: DirectionKeys::derive(
                mk,
                Label::RtpEncryption,
                Label::RtpAuthentication,
                Label::RtpSalt,
            ),
            rtcp: DirectionKeys::derive(
                mk,
                Label::RtcpEncryption,
                Label::RtcpAuthentication,
                Label::RtcpSalt,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mki_mbms_layout() {
        let m = Mki::mbms(0x0001_0002, 0x0304);
        assert_eq!(m.as_bytes(), [0, 1, 0, 2, 3, 4]);
        assert_eq!(m.mbms_parts(), Some((0x0001_0002, 0x0304)));
        assert_eq!(m.to_string(), "000100020304");
        assert_eq!(Mki::EMPTY.to_string(), "(none)");
        assert!(Mki::new(&[0; MAX_MKI_LEN + 1]).is_none());
        assert_eq!(Mki::new(&[1, 2]).unwrap().mbms_parts(), None);
    }

    #[test]
    fn master_key_debug_hides_key() {
        let k = MasterKey::with_mki([0xaa; 16], [0xbb; 14], Mki::mbms(1, 2));
        let d = format!("{k:?}");
        assert!(!d.contains("aa") && !d.contains("170"), "{d}");
        assert!(d.contains("000000010002"));
    }

    #[test]
    fn from_slices_checks_lengths() {
        assert!(matches!(
            MasterKey::from_slices(&[0; 15], &[0; 14], &[]),
            Err(ConfigError::KeyLength {
                expected: 16,
                got: 15,
                ..
            })
        ));
        assert!(matches!(
            MasterKey::from_slices(&[0; 16], &[0; 13], &[]),
            Err(ConfigError::KeyLength { expected: 14, .. })
        ));
        assert!(matches!(
            MasterKey::from_slices(&[0; 16], &[0; 14], &[0; 33]),
            Err(ConfigError::MkiTooLong(33))
        ));
    }
}
