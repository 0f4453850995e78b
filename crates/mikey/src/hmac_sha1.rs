//! HMAC-SHA-1 (RFC 2104) over the SHA-1 compression function of the `sha1`
//! crate, with the key schedule computed once per key.
//!
//! RFC 2104 section 4 ("Implementation note"): the intermediate results of
//! the compression function on the `K XOR ipad` and `K XOR opad` blocks can
//! be precomputed once per key; each MAC then costs only the compressions of
//! the text and of the outer digest. [`HmacSha1Key`] holds those two states
//! (40 bytes, zeroized on drop); a MAC over a short text (at most 55 bytes,
//! such as every block of the MIKEY PRF) then costs two compressions.
//! Nothing here allocates.
//!
//! What is wiped: the key-equivalent states (in [`HmacSha1Key`]) and the
//! pad blocks that held key bytes. The working states after a compression
//! and the text buffers are not (as in the RustCrypto `hmac` crate): the
//! compression function is one-way, and the texts MIKEY MACs are the
//! message on the wire and the PRF labels; the PRF wipes its own outputs.

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::codes::HMAC_SHA1_LEN;

/// The SHA-1 block size in bytes.
const BLOCK: usize = 64;
/// Bytes of the final block taken by the 64-bit message length.
const LEN_FIELD: usize = 8;
/// The SHA-1 initial hash value (FIPS 180-4 5.3.1).
const IV: [u32; 5] = [
    0x6745_2301,
    0xefcd_ab89,
    0x98ba_dcfe,
    0x1032_5476,
    0xc3d2_e1f0,
];

/// One SHA-1 compression.
fn compress(state: &mut [u32; 5], block: &[u8; BLOCK]) {
    mbms_crypto_ni::compress_blocks(state, core::slice::from_ref(block));
}

fn digest_bytes(state: &[u32; 5]) -> [u8; HMAC_SHA1_LEN] {
    let mut out = [0u8; HMAC_SHA1_LEN];
    for (o, w) in out.chunks_exact_mut(4).zip(state) {
        o.copy_from_slice(&w.to_be_bytes());
    }
    out
}

/// SHA-1 of a key longer than one block (RFC 2104 section 2: such keys are
/// hashed first).
fn sha1_long_key(key: &[u8]) -> [u8; HMAC_SHA1_LEN] {
    let mut h = Sha1Stream {
        state: IV,
        buf: [0; BLOCK],
        buf_len: 0,
        total: 0,
    };
    h.update(key);
    h.finish();
    digest_bytes(&h.state)
}

/// A streaming SHA-1 from a given state; `total` counts every byte hashed
/// into the state, the `K XOR ipad` block included.
struct Sha1Stream {
    state: [u32; 5],
    buf: [u8; BLOCK],
    buf_len: usize,
    total: u64,
}

impl Sha1Stream {
    fn update(&mut self, mut data: &[u8]) {
        self.total += data.len() as u64;
        if self.buf_len > 0 {
            let n = (BLOCK - self.buf_len).min(data.len());
            self.buf[self.buf_len..self.buf_len + n].copy_from_slice(&data[..n]);
            self.buf_len += n;
            data = &data[n..];
            if self.buf_len < BLOCK {
                return;
            }
            compress(&mut self.state, &self.buf);
            self.buf_len = 0;
        }
        let (whole, rest) = data.as_chunks::<BLOCK>();
        mbms_crypto_ni::compress_blocks(&mut self.state, whole);
        self.buf[..rest.len()].copy_from_slice(rest);
        self.buf_len = rest.len();
    }

    /// Pad (FIPS 180-4 5.1.1) and compress the last block(s); the digest
    /// is then `state`.
    fn finish(&mut self) {
        let bits = self.total.wrapping_mul(8);
        let n = self.buf_len;
        self.buf[n] = 0x80;
        self.buf[n + 1..].fill(0);
        if n + 1 > BLOCK - LEN_FIELD {
            compress(&mut self.state, &self.buf);
            self.buf.fill(0);
        }
        self.buf[BLOCK - LEN_FIELD..].copy_from_slice(&bits.to_be_bytes());
        compress(&mut self.state, &self.buf);
    }
}

/// The longest text an HMAC inner hash takes in one block.
pub(crate) const ONE_BLOCK_TEXT: usize = BLOCK - LEN_FIELD - 1;

/// Pad `block`, whose first `len` bytes (at most [`ONE_BLOCK_TEXT`]) are
/// the text and the rest zeros, as the single block of an HMAC inner hash.
pub(crate) fn pad_one_block(block: &mut [u8; BLOCK], len: usize) {
    block[len] = 0x80;
    block[BLOCK - LEN_FIELD..].copy_from_slice(&(((BLOCK + len) as u64) * 8).to_be_bytes());
}

/// An HMAC-SHA-1 key with its inner and outer compression states computed
/// once (RFC 2104 section 4). Cloning copies 40 bytes; dropping zeroizes.
#[derive(Clone)]
pub struct HmacSha1Key {
    inner: [u32; 5],
    outer: [u32; 5],
}

impl Zeroize for HmacSha1Key {
    fn zeroize(&mut self) {
        // As slices: one store sequence and a barrier (`zeroize`'s slice
        // path), where an array is wiped word by word with volatile stores.
        self.inner.as_mut_slice().zeroize();
        self.outer.as_mut_slice().zeroize();
    }
}

impl Drop for HmacSha1Key {
    fn drop(&mut self) {
        self.zeroize();
    }
}

impl ZeroizeOnDrop for HmacSha1Key {}

impl HmacSha1Key {
    /// Compute the key schedule for `key` (any length; keys longer than 64
    /// bytes are hashed first, RFC 2104 section 2): two compressions.
    pub fn new(key: &[u8]) -> Self {
        if key.len() > BLOCK {
            let mut d = sha1_long_key(key);
            let k = Self::new(&d);
            d.as_mut_slice().zeroize();
            return k;
        }
        // K XOR ipad, then turned into K XOR opad in place; only the bytes
        // that held key material need wiping afterwards.
        // The two compressions are independent: run side by side.
        let mut pads = [[0x36u8; BLOCK], [0x5cu8; BLOCK]];
        for (i, b) in key.iter().enumerate() {
            pads[0][i] ^= b;
            pads[1][i] ^= b;
        }
        let mut states = [IV; 2];
        mbms_crypto_ni::compress_lanes(&mut states, &pads);
        for p in pads.iter_mut() {
            p[..key.len()].zeroize();
        }
        let [inner, outer] = states;
        HmacSha1Key { inner, outer }
    }

    /// Whether two keys have the same schedule (hence the same key), in
    /// constant time.
    pub fn ct_eq(&self, other: &HmacSha1Key) -> bool {
        use subtle::ConstantTimeEq as _;
        let a = self.inner.iter().chain(&self.outer);
        let b = other.inner.iter().chain(&other.outer);
        a.zip(b)
            .fold(subtle::Choice::from(1), |acc, (x, y)| acc & x.ct_eq(y))
            .into()
    }

    /// Start a MAC computation.
    pub fn start(&self) -> HmacSha1<'_> {
        HmacSha1 {
            inner: Sha1Stream {
                state: self.inner,
                buf: [0; BLOCK],
                buf_len: 0,
                total: BLOCK as u64,
            },
            key: self,
        }
    }

    /// HMAC-SHA-1 of the concatenation of `parts`. A text of at most 55
    /// bytes is one block: two compressions and no buffering.
    pub fn mac(&self, parts: &[&[u8]]) -> [u8; HMAC_SHA1_LEN] {
        self.mac_with_prefix(&[], parts)
    }

    /// HMAC-SHA-1 of `prefix` followed by the concatenation of `parts`.
    pub fn mac_with_prefix(&self, prefix: &[u8], parts: &[&[u8]]) -> [u8; HMAC_SHA1_LEN] {
        let len = prefix.len() + parts.iter().map(|p| p.len()).sum::<usize>();
        if len <= ONE_BLOCK_TEXT {
            let mut block = [0u8; BLOCK];
            let mut n = 0;
            for p in core::iter::once(&prefix).chain(parts) {
                block[n..n + p.len()].copy_from_slice(p);
                n += p.len();
            }
            pad_one_block(&mut block, n);
            return self.mac_one_block(&block);
        }
        let mut m = self.start();
        m.update(prefix);
        for p in parts {
            m.update(p);
        }
        m.finalize()
    }

    /// HMAC-SHA-1 of one contiguous text: its whole blocks are compressed
    /// where they are, in one call (the SHA-1 state stays in registers from
    /// block to block), and only the tail is copied, with the padding, into
    /// one or two stack blocks.
    pub fn mac_contiguous(&self, text: &[u8]) -> [u8; HMAC_SHA1_LEN] {
        let mut state = self.inner;
        let (whole, tail) = text.as_chunks::<BLOCK>();
        mbms_crypto_ni::compress_blocks(&mut state, whole);
        let mut last = [[0u8; BLOCK]; 2];
        last[0][..tail.len()].copy_from_slice(tail);
        last[0][tail.len()] = 0x80;
        let n = if tail.len() < BLOCK - LEN_FIELD { 1 } else { 2 };
        let bits = ((BLOCK + text.len()) as u64).wrapping_mul(8);
        last[n - 1][BLOCK - LEN_FIELD..].copy_from_slice(&bits.to_be_bytes());
        mbms_crypto_ni::compress_blocks(&mut state, &last[..n]);
        self.outer_hash(&state)
    }

    /// HMAC-SHA-1 of a text of `len` bytes (at most 55) already laid out in
    /// `block` and padded with [`pad_one_block`]: two compressions.
    pub(crate) fn mac_one_block(&self, block: &[u8; BLOCK]) -> [u8; HMAC_SHA1_LEN] {
        let [mac] = self.mac_one_block_n(core::array::from_ref(block));
        mac
    }

    /// [`Self::mac_one_block`] of `N` independent texts, stage by stage (the
    /// `N` inner compressions, then the `N` outer ones, the inner digests
    /// handed over in registers), so that the processor can overlap the
    /// independent compressions.
    pub(crate) fn mac_one_block_n<const N: usize>(
        &self,
        blocks: &[[u8; BLOCK]; N],
    ) -> [[u8; HMAC_SHA1_LEN]; N] {
        mbms_crypto_ni::hmac_one_block_lanes(&self.inner, &self.outer, blocks)
            .map(|s| digest_bytes(&s))
    }

    /// `A = HMAC(first[i])`, then `HMAC(A || second[i][20..])` for each
    /// lane `i` (texts of at most 55 bytes, laid out and padded with
    /// [`pad_one_block`]; the first 20 bytes of `second[i]` are the place of
    /// `A` and ignored): one output block of the MIKEY PRF's P_SHA1 (RFC
    /// 3830 4.1.2). The digests, as the five words of their SHA-1 states.
    pub(crate) fn mac_chain_n<const N: usize>(
        &self,
        first: &[[u8; BLOCK]; N],
        second: &[[u8; BLOCK]; N],
    ) -> [[u32; 5]; N] {
        mbms_crypto_ni::hmac_chain_lanes(&self.inner, &self.outer, first, second)
    }

    /// The block of the outer hash: the inner digest, padded.
    fn outer_block(inner: &[u32; 5]) -> [u8; BLOCK] {
        // Written as whole 16-byte lanes, as the compression reads them.
        let lane0 = (u128::from(inner[0]) << 96)
            | (u128::from(inner[1]) << 64)
            | (u128::from(inner[2]) << 32)
            | u128::from(inner[3]);
        let lane1 = (u128::from(inner[4]) << 96) | (0x80 << 88);
        let lane3 = ((BLOCK + HMAC_SHA1_LEN) as u128) * 8;
        let mut block = [0u8; BLOCK];
        block[..16].copy_from_slice(&lane0.to_be_bytes());
        block[16..32].copy_from_slice(&lane1.to_be_bytes());
        block[48..].copy_from_slice(&lane3.to_be_bytes());
        block
    }

    /// The outer hash: H(K XOR opad || inner digest), one block.
    fn outer_hash(&self, inner: &[u32; 5]) -> [u8; HMAC_SHA1_LEN] {
        let block = Self::outer_block(inner);
        let mut state = self.outer;
        compress(&mut state, &block);
        digest_bytes(&state)
    }
}

impl core::fmt::Debug for HmacSha1Key {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("HmacSha1Key(<redacted>)")
    }
}

/// One HMAC-SHA-1 computation in progress ([`HmacSha1Key::start`]).
pub struct HmacSha1<'k> {
    inner: Sha1Stream,
    key: &'k HmacSha1Key,
}

impl HmacSha1<'_> {
    /// Feed more text.
    pub fn update(&mut self, data: &[u8]) {
        self.inner.update(data);
    }

    /// The 20-byte MAC.
    pub fn finalize(mut self) -> [u8; HMAC_SHA1_LEN] {
        self.inner.finish();
        self.key.outer_hash(&self.inner.state)
    }
}

impl core::fmt::Debug for HmacSha1<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("HmacSha1(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{Hmac, Mac};

    fn reference(key: &[u8], data: &[u8]) -> [u8; 20] {
        let mut m = <Hmac<sha1::Sha1> as Mac>::new_from_slice(key).unwrap();
        m.update(data);
        m.finalize().into_bytes().into()
    }

    /// `mac_contiguous` for every tail length (the padding in one block or
    /// two) and long texts: the same MAC as the `hmac` crate.
    #[test]
    fn mac_contiguous_every_tail() {
        let bytes: Vec<u8> = (0..700u32).map(|i| (i * 13 + 1) as u8).collect();
        let key = &bytes[..32];
        let k = HmacSha1Key::new(key);
        for len in (0..300).chain([500, 640, 700]) {
            let data = &bytes[..len];
            assert_eq!(k.mac_contiguous(data), reference(key, data), "len {len}");
        }
    }

    /// RFC 2202 section 3, test cases 1, 2 and 6 (a key longer than a block).
    #[test]
    fn rfc2202_vectors() {
        let cases: [(&[u8], &[u8], &str); 3] = [
            (
                &[0x0b; 20],
                b"Hi There",
                "b617318655057264e28bc0b6fb378c8ef146be00",
            ),
            (
                b"Jefe",
                b"what do ya want for nothing?",
                "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79",
            ),
            (
                &[0xaa; 80],
                b"Test Using Larger Than Block-Size Key - Hash Key First",
                "aa4ae5e15272d00e95705637ce8a3b55ed402112",
            ),
        ];
        for (key, data, mac) in cases {
            assert_eq!(hex::encode(HmacSha1Key::new(key).mac(&[data])), mac);
        }
    }

    /// Every key length around the block size, every text length across
    /// the padding boundaries, fed in uneven pieces: the same MAC as the
    /// `hmac` crate.
    #[test]
    fn agrees_with_the_hmac_crate() {
        let bytes: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for key_len in [0, 1, 20, 32, 63, 64, 65, 100] {
            let key = &bytes[..key_len];
            let k = HmacSha1Key::new(key);
            for len in 0..200 {
                let data = &bytes[50..50 + len];
                let cut = len / 3;
                let mut m = k.start();
                m.update(&data[..cut]);
                m.update(&data[cut..]);
                assert_eq!(
                    m.finalize(),
                    reference(key, data),
                    "key {key_len} len {len}"
                );
                assert_eq!(k.mac(&[data]), reference(key, data));
                assert_eq!(k.mac_contiguous(data), reference(key, data));
                let parts: [&[u8]; 2] = [
                    &data[cut..cut + (len - cut) / 2],
                    &data[cut + (len - cut) / 2..],
                ];
                assert_eq!(
                    k.mac_with_prefix(&data[..cut], &parts),
                    reference(key, data)
                );
            }
        }
    }
}
