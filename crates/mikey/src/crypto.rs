//! MIKEY cryptography: the MIKEY-1 PRF (RFC 3830 4.1.2), key derivation from
//! a pre-shared key (4.1.4) and from a TGK (4.1.3), KEMAC encryption with
//! AES-CM-128 or NULL (4.2.3), the KEMAC MAC (4.2.1, 5.2) and the
//! verification message MAC (5.2).
//!
//! MACs are compared in constant time; derived keys are zeroized on drop.

use core::fmt;

use aes::cipher::{KeyIvInit, StreamCipher};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::codes::{
    self, EncrAlg, PrfFunc, AUTH_KEY_LEN, ENCR_KEY_LEN, HMAC_SHA1_LEN, SALT_KEY_LEN,
};
use crate::error::{CryptoError, OpenError};
use crate::message::Message;
use crate::payload::{KeyData, MacAlg, Timestamp};
use crate::secret::SecretBytes;

use crate::hmac_sha1::{pad_one_block, ONE_BLOCK_TEXT};
pub use crate::hmac_sha1::{HmacSha1, HmacSha1Key};

/// AES-128 in counter mode; CTR only ever encrypts, so only the encryption
/// key schedule is computed.
type Aes128Ctr = ctr::Ctr128BE<aes::Aes128Enc>;

/// Size of one PRF input-key piece: 256 bits (RFC 3830 4.1.2).
const PRF_PIECE: usize = 32;

/// The MIKEY-1 PRF of RFC 3830 4.1.2, with the HMAC key schedule of each
/// 256-bit input-key piece computed once and reused for every block, every
/// label and every message: prepare it once per pre-shared key (a MUK, an
/// MSK) and derive the keys of each message with
/// [`PskKeys::derive_prepared`].
///
/// ```text
/// P(s, label, m) = HMAC(s, A_1 || label) || ... || HMAC(s, A_m || label)
///     A_0 = label, A_i = HMAC(s, A_{i-1})
/// PRF(inkey, label) = P(s_1, label, m) XOR ... XOR P(s_n, label, m)
///     s_1..s_n: inkey cut into 256-bit pieces, the last one possibly shorter
///     m = ceil(outkey_len / 160 bits)
/// ```
/// An input key of exactly 32 bytes is one piece (n = ceil(256/256) = 1).
/// An empty input key is treated as one empty piece. The prepared states
/// are zeroized on drop.
#[derive(Clone)]
pub struct Prf {
    pieces: Pieces,
}

/// The prepared pieces: inline for a key of at most 256 bits (every MUK and
/// MSK of the MBMS profile: no allocation, 48 bytes per prepared key).
#[derive(Clone)]
enum Pieces {
    One(HmacSha1Key),
    Many(Box<[HmacSha1Key]>),
}

impl Pieces {
    fn as_slice(&self) -> &[HmacSha1Key] {
        match self {
            Pieces::One(k) => core::slice::from_ref(k),
            Pieces::Many(v) => v,
        }
    }
}

impl Prf {
    /// Prepare the PRF for `inkey` (two SHA-1 compressions per piece).
    pub fn new(inkey: &[u8]) -> Self {
        let pieces = if inkey.len() <= PRF_PIECE {
            Pieces::One(HmacSha1Key::new(inkey))
        } else {
            Pieces::Many(inkey.chunks(PRF_PIECE).map(HmacSha1Key::new).collect())
        };
        Prf { pieces }
    }

    /// Whether two PRFs were prepared from the same input key, in constant
    /// time (the number of pieces, i.e. the key length, is public).
    pub fn ct_eq(&self, other: &Prf) -> bool {
        let (a, b) = (self.pieces.as_slice(), other.pieces.as_slice());
        a.len() == b.len() && a.iter().zip(b).fold(true, |acc, (a, b)| acc & a.ct_eq(b))
    }

    /// Fill `out` with PRF(inkey, label).
    pub fn derive_into(&self, label: &[u8], out: &mut [u8]) {
        self.derive_parts_into(&[label], out);
    }

    /// Fill `out` with PRF(inkey, label) where the label is the
    /// concatenation of `label` (no buffer is assembled).
    pub fn derive_parts_into(&self, label: &[&[u8]], out: &mut [u8]) {
        out.fill(0);
        for s in self.pieces.as_slice() {
            // A_0 = label; A_i = HMAC(s, A_{i-1}).
            let mut a = [0u8; HMAC_SHA1_LEN];
            for (i, chunk) in out.chunks_mut(HMAC_SHA1_LEN).enumerate() {
                a = if i == 0 { s.mac(label) } else { s.mac(&[&a]) };
                let mut block = s.mac_with_prefix(&a, label);
                for (o, b) in chunk.iter_mut().zip(block.iter()) {
                    *o ^= *b;
                }
                block.as_mut_slice().zeroize();
            }
            a.as_mut_slice().zeroize();
        }
    }

    /// PRF(inkey, label) of `len` bytes.
    pub fn derive(&self, label: &[u8], len: usize) -> SecretBytes {
        let mut out = vec![0u8; len];
        self.derive_into(label, &mut out);
        SecretBytes::new(out)
    }
}

impl fmt::Debug for Prf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Prf(<{} piece(s) redacted>)",
            self.pieces.as_slice().len()
        )
    }
}

/// One-shot MIKEY-1 PRF.
pub fn prf(inkey: &[u8], label: &[u8], len: usize) -> SecretBytes {
    Prf::new(inkey).derive(label, len)
}

/// The PRF label `constant || cs_id || CSB ID || RAND` of RFC 3830 4.1.3/4.1.4.
pub fn prf_label(constant: u32, cs_id: u8, csb_id: u32, rand: &[u8]) -> Vec<u8> {
    let mut l = Vec::with_capacity(9 + rand.len());
    l.extend_from_slice(&constant.to_be_bytes());
    l.push(cs_id);
    l.extend_from_slice(&csb_id.to_be_bytes());
    l.extend_from_slice(rand);
    l
}

/// The keys that protect a pre-shared-key message (RFC 3830 4.1.4):
/// `encr_key`, `auth_key` and `salt_key`, each `PRF(psk, constant || 0xFF ||
/// CSB ID || RAND)`.
#[derive(Clone)]
pub struct PskKeys {
    /// Encryption key (AES-CM-128), 16 bytes.
    pub encr_key: [u8; ENCR_KEY_LEN],
    /// Authentication key (HMAC-SHA-1-160), 20 bytes.
    pub auth_key: [u8; AUTH_KEY_LEN],
    /// Salting key (AES-CM IV), 14 bytes.
    pub salt_key: [u8; SALT_KEY_LEN],
}

impl Zeroize for PskKeys {
    fn zeroize(&mut self) {
        // As slices: `zeroize` wipes a slice with one store sequence and a
        // barrier, an array byte by byte with volatile stores.
        self.encr_key.as_mut_slice().zeroize();
        self.auth_key.as_mut_slice().zeroize();
        self.salt_key.as_mut_slice().zeroize();
    }
}

impl Drop for PskKeys {
    fn drop(&mut self) {
        self.zeroize();
    }
}

impl ZeroizeOnDrop for PskKeys {}

impl PskKeys {
    /// Derive the three keys. `rand` is the RAND payload of the message
    /// (empty if the message has none).
    pub fn derive(psk: &[u8], csb_id: u32, rand: &[u8]) -> Self {
        Self::derive_prepared(&Prf::new(psk), csb_id, rand)
    }

    /// Derive the three keys with the PRF of the pre-shared key prepared
    /// once ([`Prf::new`]): six HMACs of one block each for a key of at
    /// most 32 bytes.
    pub fn derive_prepared(prf: &Prf, csb_id: u32, rand: &[u8]) -> Self {
        let cs_id = [codes::PSK_CS_ID];
        let csb = csb_id.to_be_bytes();
        let mut k = PskKeys {
            encr_key: [0; ENCR_KEY_LEN],
            auth_key: [0; AUTH_KEY_LEN],
            salt_key: [0; SALT_KEY_LEN],
        };
        let label_len = 4 + 1 + 4 + rand.len();
        if let [s] = prf.pieces.as_slice() {
            if HMAC_SHA1_LEN + label_len <= ONE_BLOCK_TEXT {
                // One piece, one PRF block per key (every key is at most 20
                // bytes), every HMAC text one SHA-1 block: lay the blocks
                // out once, and run the three keys' HMACs side by side
                // (they are independent).
                let constants = [
                    codes::psk_constant::ENCR,
                    codes::psk_constant::AUTH,
                    codes::psk_constant::SALT,
                ];
                let mut b1 = [0u8; 64];
                b1[4] = codes::PSK_CS_ID;
                b1[5..9].copy_from_slice(&csb);
                b1[9..label_len].copy_from_slice(rand);
                let mut b2 = [0u8; 64];
                b2[HMAC_SHA1_LEN..HMAC_SHA1_LEN + label_len].copy_from_slice(&b1[..label_len]);
                pad_one_block(&mut b1, label_len);
                pad_one_block(&mut b2, HMAC_SHA1_LEN + label_len);
                let mut b1s = [b1; 3];
                let mut b2s = [b2; 3];
                for ((x, y), c) in b1s.iter_mut().zip(b2s.iter_mut()).zip(constants) {
                    x[..4].copy_from_slice(&c.to_be_bytes());
                    y[HMAC_SHA1_LEN..HMAC_SHA1_LEN + 4].copy_from_slice(&c.to_be_bytes());
                }
                // A_1 = HMAC(s, label); block = HMAC(s, A_1 || label);
                // A_1 stays in registers (b2s's first 20 bytes are its
                // place, left zero).
                let mut blocks = s.mac_chain_n(&b1s, &b2s);
                let out = [
                    &mut k.encr_key[..],
                    &mut k.auth_key[..],
                    &mut k.salt_key[..],
                ];
                for (key, words) in out.into_iter().zip(&blocks) {
                    for (o, w) in key.chunks_mut(4).zip(words) {
                        o.copy_from_slice(&w.to_be_bytes()[..o.len()]);
                    }
                }
                blocks.as_flattened_mut().zeroize();
                return k;
            }
        }
        let one = |constant: u32, out: &mut [u8]| {
            prf.derive_parts_into(&[&constant.to_be_bytes(), &cs_id, &csb, rand], out);
        };
        one(codes::psk_constant::ENCR, &mut k.encr_key);
        one(codes::psk_constant::AUTH, &mut k.auth_key);
        one(codes::psk_constant::SALT, &mut k.salt_key);
        k
    }

    /// Only the `auth_key` of a pre-shared-key message (RFC 3830 4.1.4,
    /// constant [`codes::psk_constant::AUTH`]), as its HMAC key schedule:
    /// what verifying the message's verification message (RFC 3830 5.2)
    /// needs. Four SHA-1 compressions for the key (a 32-byte PSK and a
    /// 16-byte RAND), two for its schedule, where deriving all three keys
    /// costs twelve.
    pub fn derive_auth_key_prepared(prf: &Prf, csb_id: u32, rand: &[u8]) -> HmacSha1Key {
        let mut auth_key = [0u8; AUTH_KEY_LEN];
        prf.derive_parts_into(
            &[
                &codes::psk_constant::AUTH.to_be_bytes(),
                &[codes::PSK_CS_ID],
                &csb_id.to_be_bytes(),
                rand,
            ],
            &mut auth_key,
        );
        let key = HmacSha1Key::new(&auth_key);
        auth_key.as_mut_slice().zeroize();
        key
    }

    /// Derive the keys for `message` from its CSB ID and RAND (RFC 3830 4.1.4).
    pub fn for_message(psk: &[u8], message: &Message<'_>) -> Self {
        Self::derive(psk, message.header().csb_id, message.rand().unwrap_or(&[]))
    }

    /// The key schedule of `auth_key`, which MACs the message and its
    /// verification message (RFC 3830 5.2).
    pub fn mac_key(&self) -> HmacSha1Key {
        HmacSha1Key::new(&self.auth_key)
    }
}

impl fmt::Debug for PskKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PskKeys(<redacted>)")
    }
}

/// Which key to derive from a TGK (RFC 3830 4.1.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TgkKey {
    /// The TEK (constant 0x2AD01C64).
    Tek,
    /// An encryption key (0x15798CEF).
    Encryption,
    /// An authentication key (0x1B5C7973).
    Authentication,
    /// A salting key (0x39A2C14B).
    Salt,
}

impl TgkKey {
    /// The PRF constant.
    pub fn constant(self) -> u32 {
        match self {
            TgkKey::Tek => codes::tgk_constant::TEK,
            TgkKey::Encryption => codes::tgk_constant::ENCR,
            TgkKey::Authentication => codes::tgk_constant::AUTH,
            TgkKey::Salt => codes::tgk_constant::SALT,
        }
    }
}

/// Derive a key of `len` bytes from a TGK: `PRF(TGK, constant || cs_id ||
/// CSB ID || RAND)` (RFC 3830 4.1.3).
pub fn derive_from_tgk(
    tgk: &[u8],
    which: TgkKey,
    cs_id: u8,
    csb_id: u32,
    rand: &[u8],
    len: usize,
) -> SecretBytes {
    prf(tgk, &prf_label(which.constant(), cs_id, csb_id, rand), len)
}

/// The 64-bit T of the AES-CM IV (RFC 3830 4.2.3) for a timestamp.
///
/// `PROFILE.md` section 6 (choice): a 32-bit COUNTER is left-padded with
/// zeros to 64 bits; NTP and NTP-UTC are used as they are.
pub fn iv_timestamp(ts: &Timestamp) -> u64 {
    match *ts {
        Timestamp::NtpUtc(v) | Timestamp::Ntp(v) => v,
        Timestamp::Counter(c) => u64::from(c),
    }
}

/// The AES-CM IV of RFC 3830 4.2.3:
/// `(salt_key XOR (0x0000 || CSB ID || T)) || 0x0000`.
pub fn aes_cm_iv(salt_key: &[u8; SALT_KEY_LEN], csb_id: u32, t: u64) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[2..6].copy_from_slice(&csb_id.to_be_bytes());
    iv[6..14].copy_from_slice(&t.to_be_bytes());
    for (i, s) in salt_key.iter().enumerate() {
        iv[i] ^= s;
    }
    iv
}

/// Encrypt or decrypt (the same operation) KEMAC data in place with
/// AES-CM-128 (RFC 3830 4.2.3: AES in counter mode from the IV, the whole
/// block a big-endian counter). With AES-NI the key schedule stays in
/// registers (`mbms_crypto_ni::aes128_ctr_xor`); otherwise the `aes` and
/// `ctr` crates.
pub fn aes_cm_apply(keys: &PskKeys, csb_id: u32, t: u64, data: &mut [u8]) {
    let iv = aes_cm_iv(&keys.salt_key, csb_id, t);
    if !mbms_crypto_ni::aes128_ctr_xor(&keys.encr_key, &iv, data) {
        let mut c = Aes128Ctr::new((&keys.encr_key).into(), (&iv).into());
        c.apply_keystream(data);
    }
}

fn hmac_excluding(
    key: &HmacSha1Key,
    bytes: &[u8],
    skip: core::ops::Range<usize>,
    extra: &[&[u8]],
) -> [u8; HMAC_SHA1_LEN] {
    let mut m = key.start();
    m.update(&bytes[..skip.start]);
    m.update(&bytes[skip.end..]);
    for e in extra {
        m.update(e);
    }
    m.finalize()
}

/// Constant-time equality of two MACs (`subtle`); lengths are public.
///
/// The byte differences are OR-ed together with no early exit and the
/// result tested once with `subtle` (one optimisation barrier per
/// comparison rather than one per byte).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y));
    bool::from(diff.ct_eq(&0))
}

fn check_encoding(bytes: &[u8], message: &Message<'_>) -> Result<(), CryptoError> {
    // `bytes` must be the encoding of `message` (emit(parse(b)) == b); a
    // length check catches passing the wrong buffer.
    if bytes.len() != message.encoded_len() {
        return Err(CryptoError::EncodingMismatch);
    }
    Ok(())
}

/// Verify the KEMAC MAC: HMAC-SHA-1-160 keyed with `auth_key` over the whole
/// message except the MAC field (RFC 3830 5.2; `PROFILE.md` section 6: with
/// the KEMAC last this is "up to and including the MAC alg byte").
/// `bytes` must be the encoding `message` was parsed from.
pub fn verify_kemac_mac(
    bytes: &[u8],
    message: &Message<'_>,
    auth_key: &[u8],
) -> Result<(), CryptoError> {
    let k = message.kemac().ok_or(CryptoError::NoKemac)?;
    if k.mac_alg == MacAlg::Null {
        return Err(CryptoError::NullMac);
    }
    check_encoding(bytes, message)?;
    let range = message.kemac_mac_range().ok_or(CryptoError::NoKemac)?;
    let mac = hmac_excluding(&HmacSha1Key::new(auth_key), bytes, range, &[]);
    if ct_eq(&mac, &k.mac) {
        Ok(())
    } else {
        Err(CryptoError::MacMismatch)
    }
}

/// Decrypt the KEMAC of an (already verified) message and parse its key data
/// sub-payloads.
pub fn decrypt_kemac(message: &Message<'_>, keys: &PskKeys) -> Result<Vec<KeyData>, CryptoError> {
    let k = message.kemac().ok_or(CryptoError::NoKemac)?;
    let base = message.kemac_data_range().map_or(0, |r| r.start);
    let mut plain = SecretBytes::from_slice(&k.encr_data);
    match k.encr_alg {
        EncrAlg::NULL => {}
        EncrAlg::AES_CM_128 => {
            let t = message.timestamp().ok_or(CryptoError::NoTimestamp)?;
            let mut buf = plain.expose().to_vec();
            aes_cm_apply(keys, message.header().csb_id, iv_timestamp(t), &mut buf);
            plain = SecretBytes::new(buf);
        }
        other => return Err(CryptoError::UnsupportedEncryption(other.0)),
    }
    Ok(KeyData::parse_list(plain.expose(), base)?)
}

/// A verified and decrypted pre-shared-key message.
#[derive(Debug)]
pub struct Opened<'a> {
    /// The parsed message.
    pub message: Message<'a>,
    /// The decrypted key data sub-payloads (empty for Encr data len 0).
    pub key_data: Vec<KeyData>,
    /// The keys that protected it (needed for the verification message).
    pub keys: PskKeys,
}

/// Parse a pre-shared-key message, derive its keys from `psk`, verify the
/// KEMAC MAC and only then decrypt the key data (RFC 3830 5.2, `PROFILE.md`
/// section 6).
pub fn open_psk<'a>(bytes: &'a [u8], psk: &[u8]) -> Result<Opened<'a>, OpenError> {
    let message = Message::parse(bytes)?;
    let keys = open_check(bytes, &message, psk)?;
    let key_data = decrypt_kemac(&message, &keys)?;
    Ok(Opened {
        message,
        key_data,
        keys,
    })
}

/// Verify the MAC of a parsed message with `psk` and return its keys.
pub fn open_check(bytes: &[u8], message: &Message<'_>, psk: &[u8]) -> Result<PskKeys, CryptoError> {
    if message.header().prf != PrfFunc::MIKEY_1 {
        return Err(CryptoError::UnsupportedPrf(message.header().prf.0));
    }
    let keys = PskKeys::for_message(psk, message);
    verify_kemac_mac(bytes, message, &keys.auth_key)?;
    Ok(keys)
}

/// The fields of an initiator message that a verification MAC covers
/// (RFC 3830 5.2): the IDi data, the IDr data and the T value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InitiatorFields {
    /// Data of the first ID payload (IDi), empty if absent.
    pub idi: Vec<u8>,
    /// Data of the second ID payload (IDr), empty if absent.
    pub idr: Vec<u8>,
    /// The TS value bytes, empty if absent.
    pub t: Vec<u8>,
}

/// The fields of an initiator message that a verification MAC covers,
/// borrowed (RFC 3830 5.2): from the message bytes on the UE, from the
/// BM-SC's own records on the BM-SC; nothing is copied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InitiatorRef<'a> {
    /// Data of the first ID payload (IDi), empty if absent.
    pub idi: &'a [u8],
    /// Data of the second ID payload (IDr), empty if absent.
    pub idr: &'a [u8],
    /// The TS value bytes (4 for COUNTER, 8 for NTP), empty if absent.
    pub t: &'a [u8],
}

impl InitiatorRef<'_> {
    /// Copy the fields.
    pub fn to_owned(&self) -> InitiatorFields {
        InitiatorFields {
            idi: self.idi.to_vec(),
            idr: self.idr.to_vec(),
            t: self.t.to_vec(),
        }
    }
}

impl InitiatorFields {
    /// Borrow the fields.
    pub fn as_ref(&self) -> InitiatorRef<'_> {
        InitiatorRef {
            idi: &self.idi,
            idr: &self.idr,
            t: &self.t,
        }
    }

    /// Take the fields from an initiator message.
    pub fn of(initiator: &Message<'_>) -> Self {
        let mut ids = initiator.ids();
        InitiatorFields {
            idi: ids.next().map(|i| i.data.to_vec()).unwrap_or_default(),
            idr: ids.next().map(|i| i.data.to_vec()).unwrap_or_default(),
            t: initiator
                .timestamp()
                .map(Timestamp::value_bytes)
                .unwrap_or_default(),
        }
    }
}

/// Verify the MAC of a verification message (RFC 3830 5.2, `PROFILE.md`
/// section 6): `HMAC-SHA-1(auth_key, message-without-MAC || IDi || IDr || T)`
/// where IDi, IDr and T come from the acknowledged initiator message and
/// `auth_key` is the one that protected it.
pub fn verify_verification_mac(
    bytes: &[u8],
    message: &Message<'_>,
    auth_key: &[u8],
    initiator: &InitiatorFields,
) -> Result<(), CryptoError> {
    let v = message.verification().ok_or(CryptoError::NoVerification)?;
    if v.auth_alg == MacAlg::Null {
        return Err(CryptoError::NullMac);
    }
    check_encoding(bytes, message)?;
    let range = message
        .verification_mac_range()
        .ok_or(CryptoError::NoVerification)?;
    let mac = hmac_excluding(
        &HmacSha1Key::new(auth_key),
        bytes,
        range,
        &[&initiator.idi, &initiator.idr, &initiator.t],
    );
    if ct_eq(&mac, &v.mac) {
        Ok(())
    } else {
        Err(CryptoError::MacMismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codes::*;
    use crate::payload::{KeyKind, KeyValidity};
    use crate::MessageBuilder;

    const MUK: [u8; 32] = [0x5a; 32];

    #[test]
    fn a_prepared_prf_of_one_piece_is_inline_and_compares_by_key() {
        assert!(core::mem::size_of::<Prf>() <= 48);
        let a = Prf::new(&MUK);
        assert!(a.ct_eq(&Prf::new(&MUK)));
        assert!(!a.ct_eq(&Prf::new(&[0x5b; 32])));
        assert!(!a.ct_eq(&Prf::new(&[0x5a; 33])), "one piece against two");
        let long = Prf::new(&[0x5a; 40]);
        assert!(long.ct_eq(&Prf::new(&[0x5a; 40])));
        // Inline or not, the PRF is the same function of its pieces.
        let mut two = [0u8; 20];
        long.derive_into(b"label", &mut two);
        let mut one = [0u8; 20];
        a.derive_into(b"label", &mut one);
        let mut tail = [0u8; 20];
        Prf::new(&[0x5a; 8]).derive_into(b"label", &mut tail);
        let xored: Vec<u8> = one.iter().zip(&tail).map(|(x, y)| x ^ y).collect();
        assert_eq!(two.to_vec(), xored);
    }

    /// AES-CM: the same key stream as the `ctr` crate's AES-128-CTR from
    /// the RFC 3830 4.2.3 IV, for every length across the batch and block
    /// edges.
    #[test]
    fn aes_cm_is_aes_ctr_from_the_iv() {
        let keys = PskKeys {
            encr_key: core::array::from_fn(|i| (i * 7 + 1) as u8),
            auth_key: [0; AUTH_KEY_LEN],
            salt_key: core::array::from_fn(|i| (i * 13 + 200) as u8),
        };
        let text: Vec<u8> = (0..200u32).map(|i| (i * 31 + 5) as u8).collect();
        for len in 0..text.len() {
            let mut got = text[..len].to_vec();
            aes_cm_apply(&keys, 7, 0x0102_0304_0506_0708, &mut got);
            let iv = aes_cm_iv(&keys.salt_key, 7, 0x0102_0304_0506_0708);
            let mut want = text[..len].to_vec();
            Aes128Ctr::new((&keys.encr_key).into(), (&iv).into()).apply_keystream(&mut want);
            assert_eq!(got, want, "len {len}");
        }
    }

    fn msk() -> KeyData {
        KeyData {
            kind: KeyKind::Tgk,
            key: SecretBytes::new(vec![0x11; 16]),
            salt: None,
            validity: KeyValidity::Interval {
                from: vec![0, 1].into(),
                to: vec![0, 9].into(),
            },
        }
    }

    fn msk_message(encr: EncrAlg, keys: &[KeyData]) -> crate::Protected {
        MessageBuilder::new(DataType::PSK_INIT)
            .verification_requested(true)
            .timestamp(Timestamp::Counter(42))
            .rand([0x33; 16])
            .id(IdType::URI, "bmsc.home1.net")
            .id(IdType::NAI, "btid@bsf.home1.net")
            .key_id(KeyIdType::MSK, [0, 0xf1, 0x10, 0, 1, 0, 2])
            .protect(&MUK, encr, keys)
            .unwrap()
    }

    /// The one-block fast path of `derive_prepared` and the general PRF
    /// agree for every key length and RAND length around its limits.
    #[test]
    fn psk_keys_equal_the_general_prf() {
        let bytes: Vec<u8> = (0..100u8).map(|i| i.wrapping_mul(29) ^ 0x5a).collect();
        for key_len in [0, 1, 16, 20, 32, 33, 64, 65] {
            for rand_len in [0, 8, 16, 26, 27, 40] {
                let (psk, rand) = (&bytes[..key_len], &bytes[30..30 + rand_len]);
                let k = PskKeys::derive(psk, 0x0102_0304, rand);
                let p =
                    |c: u32, len: usize| prf(psk, &prf_label(c, PSK_CS_ID, 0x0102_0304, rand), len);
                assert_eq!(&k.encr_key[..], p(psk_constant::ENCR, 16).expose());
                assert_eq!(&k.auth_key[..], p(psk_constant::AUTH, 20).expose());
                assert_eq!(&k.salt_key[..], p(psk_constant::SALT, 14).expose());
            }
        }
    }

    /// The auth_key alone is the one of the three keys, for every key and
    /// RAND length around the one-block limits.
    #[test]
    fn auth_key_alone_equals_the_one_of_the_three() {
        let bytes: Vec<u8> = (0..100u8).map(|i| i.wrapping_mul(31) ^ 0xa5).collect();
        for key_len in [0, 16, 32, 33, 65] {
            for rand_len in [0, 16, 27, 40] {
                let (psk, rand) = (&bytes[..key_len], &bytes[30..30 + rand_len]);
                let prf = Prf::new(psk);
                let all = PskKeys::derive_prepared(&prf, 7, rand);
                let auth = PskKeys::derive_auth_key_prepared(&prf, 7, rand);
                assert_eq!(auth.mac(&[b"text"]), all.mac_key().mac(&[b"text"]));
                let other = PskKeys::derive_auth_key_prepared(&prf, 8, rand);
                assert_ne!(other.mac(&[b"text"]), all.mac_key().mac(&[b"text"]));
            }
        }
    }

    #[test]
    fn ct_eq_compares_every_byte_and_the_length() {
        let a = [0x5au8; 20];
        assert!(ct_eq(&a, &a));
        for i in 0..20 {
            for bit in 0..8 {
                let mut b = a;
                b[i] ^= 1 << bit;
                assert!(!ct_eq(&a, &b), "byte {i} bit {bit}");
            }
        }
        assert!(!ct_eq(&a, &a[..19]));
        assert!(ct_eq(&[], &[]));
    }

    #[test]
    fn iv_follows_rfc3830_4_2_3() {
        let salt = [0xffu8; 14];
        let iv = aes_cm_iv(&salt, 0x0102_0304, 0x0000_0000_0a0b_0c0d);
        let mut expected = [0xffu8; 16];
        for (i, b) in [0u8, 0, 1, 2, 3, 4, 0, 0, 0, 0, 0x0a, 0x0b, 0x0c, 0x0d]
            .iter()
            .enumerate()
        {
            expected[i] ^= b;
        }
        expected[14] = 0;
        expected[15] = 0;
        assert_eq!(iv, expected);
        assert_eq!(iv_timestamp(&Timestamp::Counter(0xdead_beef)), 0xdead_beef);
    }

    #[test]
    fn aes_cm_and_null_round_trip_and_differ_on_the_wire() {
        let a = msk_message(EncrAlg::AES_CM_128, &[msk()]);
        let n = msk_message(EncrAlg::NULL, &[msk()]);
        let ka = a.message().kemac().unwrap();
        let kn = n.message().kemac().unwrap();
        assert_eq!(ka.encr_data.len(), kn.encr_data.len());
        assert_ne!(ka.encr_data, kn.encr_data);
        // NULL: the key data is in the clear.
        assert_eq!(&kn.encr_data[4..20], &[0x11; 16]);
        for p in [a, n] {
            let o = open_psk(p.bytes(), &MUK).unwrap();
            assert_eq!(o.key_data, vec![msk()]);
        }
    }

    #[test]
    fn any_bit_flip_is_detected() {
        let p = msk_message(EncrAlg::AES_CM_128, &[msk()]);
        for i in 0..p.bytes().len() * 8 {
            let mut b = p.bytes().to_vec();
            b[i / 8] ^= 1 << (i % 8);
            assert!(open_psk(&b, &MUK).is_err(), "bit {i} flipped undetected");
        }
    }

    #[test]
    fn solicited_pull_has_a_mac_and_no_key() {
        // Seed 002/003: Encr data len 0, only the MAC.
        let p = msk_message(EncrAlg::AES_CM_128, &[]);
        assert_eq!(p.message().kemac().unwrap().encr_data.len(), 0);
        let o = open_psk(p.bytes(), &MUK).unwrap();
        assert!(o.key_data.is_empty());
        assert!(matches!(
            open_psk(p.bytes(), &[0u8; 32]).unwrap_err(),
            OpenError::Crypto(CryptoError::MacMismatch)
        ));
    }

    #[test]
    fn acknowledgement_mac_binds_the_acknowledged_message() {
        // PROFILE.md section 6: HDR(type 1, CSB copied) · T(copied) · IDr ·
        // EXT(Key ID MSK) · V; MAC over ack || IDi || IDr || T of the MSK message.
        let p = msk_message(EncrAlg::AES_CM_128, &[msk()]);
        let opened = open_psk(p.bytes(), &MUK).unwrap();
        let init = InitiatorFields::of(&opened.message);
        assert_eq!(init.idi, b"bmsc.home1.net");
        assert_eq!(init.idr, b"btid@bsf.home1.net");
        assert_eq!(init.t, 42u32.to_be_bytes());
        let ack = MessageBuilder::new(DataType::PSK_RESP)
            .csb_id(opened.message.header().csb_id)
            .timestamp(Timestamp::Counter(42))
            .id(IdType::NAI, "btid@bsf.home1.net")
            .key_id(KeyIdType::MSK, [0, 0xf1, 0x10, 0, 1, 0, 2])
            .sign_verification(&opened.keys.auth_key, &init)
            .unwrap();
        let parsed = Message::parse(ack.bytes()).unwrap();
        assert_eq!(parsed.header().data_type, DataType::PSK_RESP);
        verify_verification_mac(ack.bytes(), &parsed, &opened.keys.auth_key, &init).unwrap();
        // Another initiator counter, or another key: refused.
        let mut other = init.clone();
        other.t = 43u32.to_be_bytes().to_vec();
        assert_eq!(
            verify_verification_mac(ack.bytes(), &parsed, &opened.keys.auth_key, &other),
            Err(CryptoError::MacMismatch)
        );
        assert_eq!(
            verify_verification_mac(ack.bytes(), &parsed, &[0u8; 20], &init),
            Err(CryptoError::MacMismatch)
        );
        // The MAC is the last 20 bytes, over everything before it plus the fields.
        let b = ack.bytes();
        let auth = HmacSha1Key::new(&opened.keys.auth_key);
        let mut m = auth.start();
        m.update(&b[..b.len() - 20]);
        m.update(b"bmsc.home1.net");
        m.update(b"btid@bsf.home1.net");
        m.update(&42u32.to_be_bytes());
        assert_eq!(&m.finalize()[..], &b[b.len() - 20..]);
    }

    #[test]
    fn kemac_mac_covers_everything_up_to_the_mac_alg_byte() {
        let p = msk_message(EncrAlg::AES_CM_128, &[msk()]);
        let b = p.bytes();
        let keys = PskKeys::derive(&MUK, 0, &[0x33; 16]);
        let auth = HmacSha1Key::new(&keys.auth_key);
        let mut m = auth.start();
        m.update(&b[..b.len() - 20]);
        assert_eq!(&m.finalize()[..], &b[b.len() - 20..]);
        assert_eq!(b[b.len() - 21], 1, "MAC alg byte HMAC-SHA-1-160");
    }

    #[test]
    fn refusals() {
        // AES-KW-128 is parsed but not implemented.
        let e = MessageBuilder::new(DataType::PSK_INIT)
            .timestamp(Timestamp::Counter(1))
            .protect(&MUK, EncrAlg::AES_KW_128, &[msk()])
            .unwrap_err();
        assert_eq!(e, CryptoError::UnsupportedEncryption(2));
        // AES-CM needs a timestamp for its IV.
        let e = MessageBuilder::new(DataType::PSK_INIT)
            .protect(&MUK, EncrAlg::AES_CM_128, &[msk()])
            .unwrap_err();
        assert_eq!(e, CryptoError::NoTimestamp);
        // A KEMAC with a NULL MAC is never accepted.
        let mut h = crate::CommonHeader::new(DataType::PSK_INIT, 0);
        h.v = false;
        let m = Message::new(
            h,
            vec![crate::Payload::Kemac(crate::Kemac {
                encr_alg: EncrAlg::NULL,
                encr_data: vec![].into(),
                mac_alg: MacAlg::Null,
                mac: vec![].into(),
            })],
        )
        .unwrap();
        let b = m.to_bytes();
        assert_eq!(
            open_psk(&b, &MUK).unwrap_err(),
            OpenError::Crypto(CryptoError::NullMac)
        );
        // The bytes must be the message's own encoding.
        let p = msk_message(EncrAlg::AES_CM_128, &[msk()]);
        let keys = PskKeys::derive(&MUK, 0, &[0x33; 16]);
        assert_eq!(
            verify_kemac_mac(&p.bytes()[1..], p.message(), &keys.auth_key),
            Err(CryptoError::EncodingMismatch)
        );
        // Other PRFs are refused.
        let e = MessageBuilder::new(DataType::PSK_INIT)
            .prf(PrfFunc::PRF_HMAC_SHA_256)
            .timestamp(Timestamp::Counter(1))
            .protect(&MUK, EncrAlg::AES_CM_128, &[msk()])
            .unwrap_err();
        assert_eq!(e, CryptoError::UnsupportedPrf(1));
    }

    #[test]
    fn debug_output_hides_keys() {
        let keys = PskKeys::derive(&MUK, 0, &[]);
        assert_eq!(format!("{keys:?}"), "PskKeys(<redacted>)");
        let s = format!("{:?}", msk());
        assert!(!s.contains("17, 17"), "{s}");
        assert!(s.contains("redacted"));
    }
}
