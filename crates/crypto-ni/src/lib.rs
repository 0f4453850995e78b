//! The processor kernels of the MIKEY hot path: SHA-1 with SHA-NI and
//! AES-128-CTR with AES-NI, each with a portable fallback.
//!
//! [`compress_lanes`]: `N` independent SHA-1 compressions (FIPS 180-4
//! 6.1.2, one 64-byte block each) run side by side.
//!
//! The MIKEY PRF of an MBMS message (RFC 3830 4.1.2, three keys of one
//! P_SHA1 block each) and an HMAC key schedule (RFC 2104: the `K XOR ipad`
//! and `K XOR opad` blocks) are chains of SHA-1 compressions, each short
//! and each waiting on the one before. Where a SHA-NI compression is bound
//! by the latency of `sha1rnds4` rather than by the SHA unit's throughput,
//! independent compressions run one after the other leave most of the unit
//! idle: [`compress_lanes`] interleaves the rounds of `N` of them
//! instruction by instruction, so that the processor overlaps them. (On the
//! project's 2-core Xeon, model 207, the unit is throughput-bound: three
//! lanes cost three compressions, no more.)
//!
//! [`hmac_one_block_lanes`] and [`hmac_chain_lanes`] keep an HMAC's inner
//! digest, and the P_SHA1 chain's `A_1`, in registers from one compression
//! to the next; [`compress_blocks`] hashes a text's whole blocks where they
//! are.
//!
//! The SHA-NI path is the `sha1` crate's x86 compression (Intel's reference
//! sequence) with every step repeated for each lane; without SHA-NI (or off
//! x86-64) every lane goes through `sha1::compress` in turn. Both give the
//! same states bit for bit (tests and a property test below).
//!
//! [`aes128_ctr_xor`] is the AES-128-CTR of the same messages' KEMAC with
//! AES-NI (module `aes_ctr`).
//!
//! This is the workspace's one crate with `unsafe` code: the SIMD
//! intrinsics of a `#[target_feature]` function, called only after the
//! processor was found to have the features.

#![deny(missing_docs)]

mod aes_ctr;

pub use aes_ctr::aes128_ctr_xor;

/// A SHA-1 block.
pub const BLOCK: usize = 64;

/// Compress `blocks[i]` into `states[i]` for every lane `i`: the same as
/// `sha1::compress(&mut states[i], &[blocks[i]])` for each, faster when the
/// processor has SHA-NI.
#[inline]
pub fn compress_lanes<const N: usize>(states: &mut [[u32; 5]; N], blocks: &[[u8; BLOCK]; N]) {
    #[cfg(target_arch = "x86_64")]
    {
        if shani::available() {
            // SAFETY: the processor has the features the function enables
            // (checked just above).
            unsafe { shani::compress_lanes(states, blocks) };
            return;
        }
    }
    portable(states, blocks);
}

/// Compress `blocks` one after the other into `state` (one lane, many
/// blocks): the same as `sha1::compress(state, blocks)`, taking the blocks
/// as plain arrays, so that a text's whole blocks are hashed where they are
/// (`<[u8]>::as_chunks`) with no copy. With SHA-NI the state stays in
/// registers from block to block.
#[inline]
pub fn compress_blocks(state: &mut [u32; 5], blocks: &[[u8; BLOCK]]) {
    #[cfg(target_arch = "x86_64")]
    {
        if shani::available() {
            // SAFETY: the processor has the features the function enables
            // (checked just above).
            unsafe { shani::compress_blocks(state, blocks) };
            return;
        }
    }
    for b in blocks {
        sha1::compress(state, core::slice::from_ref(GenericArray::from_slice(b)));
    }
}

/// HMAC-SHA-1 (RFC 2104) of a one-block text in each lane, keyed by a
/// prepared key (its `K XOR ipad` and `K XOR opad` states, RFC 2104 section
/// 4): the inner compression of `blocks[i]` (the text already padded as the
/// second block of the inner hash) from `inner`, then the outer compression
/// of the padded inner digest from `outer`. Returns the MACs as SHA-1
/// states (the digest's five words). With SHA-NI the inner digest goes to
/// the outer compression in registers.
#[inline]
pub fn hmac_one_block_lanes<const N: usize>(
    inner: &[u32; 5],
    outer: &[u32; 5],
    blocks: &[[u8; BLOCK]; N],
) -> [[u32; 5]; N] {
    #[cfg(target_arch = "x86_64")]
    {
        if shani::available() {
            // SAFETY: the processor has the features the function enables
            // (checked just above).
            return unsafe { shani::hmac_one_block_lanes(inner, outer, blocks) };
        }
    }
    let mut states = [*inner; N];
    portable(&mut states, blocks);
    let mut outer_blocks = [[0u8; BLOCK]; N];
    for (b, s) in outer_blocks.iter_mut().zip(&states) {
        *b = outer_block(s);
    }
    let mut out = [*outer; N];
    portable(&mut out, &outer_blocks);
    out
}

/// Two chained HMAC-SHA-1s of one block in each lane, under one prepared
/// key (as [`hmac_one_block_lanes`]): `A = HMAC(first[i])`, then
/// `HMAC(A || text)` where `second[i]` is the padded block of that second
/// text with its first 20 bytes, the place of `A`, ignored. This is one
/// output block of the P_SHA1 of the MIKEY PRF (RFC 3830 4.1.2: `A_1 =
/// HMAC(s, label)`, `HMAC(s, A_1 || label)`). With SHA-NI, `A` and the inner
/// digests never leave the registers.
#[inline]
pub fn hmac_chain_lanes<const N: usize>(
    inner: &[u32; 5],
    outer: &[u32; 5],
    first: &[[u8; BLOCK]; N],
    second: &[[u8; BLOCK]; N],
) -> [[u32; 5]; N] {
    #[cfg(target_arch = "x86_64")]
    {
        if shani::available() {
            // SAFETY: the processor has the features the function enables
            // (checked just above).
            return unsafe { shani::hmac_chain_lanes(inner, outer, first, second) };
        }
    }
    let a = hmac_one_block_lanes(inner, outer, first);
    let mut second = *second;
    for (b, s) in second.iter_mut().zip(&a) {
        for (o, w) in b.chunks_exact_mut(4).zip(s) {
            o.copy_from_slice(&w.to_be_bytes());
        }
    }
    hmac_one_block_lanes(inner, outer, &second)
}

/// The bit length of an HMAC-SHA-1 outer text: the `K XOR opad` block and
/// the 20-byte inner digest (RFC 2104 section 2).
const OUTER_BITS: u32 = (BLOCK as u32 + 20) * 8;

/// The padded block of an HMAC outer hash: the inner digest, 0x80, zeros,
/// the bit length (FIPS 180-4 5.1.1).
fn outer_block(inner: &[u32; 5]) -> [u8; BLOCK] {
    let mut block = [0u8; BLOCK];
    for (o, w) in block.chunks_exact_mut(4).zip(inner) {
        o.copy_from_slice(&w.to_be_bytes());
    }
    block[20] = 0x80;
    block[60..].copy_from_slice(&OUTER_BITS.to_be_bytes());
    block
}

use sha1::digest::generic_array::GenericArray;

/// Every lane through `sha1::compress` in turn.
fn portable<const N: usize>(states: &mut [[u32; 5]; N], blocks: &[[u8; BLOCK]; N]) {
    for (s, b) in states.iter_mut().zip(blocks) {
        sha1::compress(s, core::slice::from_ref(GenericArray::from_slice(b)));
    }
}

#[cfg(target_arch = "x86_64")]
mod shani {
    use core::arch::x86_64::*;

    use super::BLOCK;

    /// Whether the processor has SHA-NI and the SSE levels the rounds use
    /// (cached by the standard library after the first call).
    #[inline]
    pub(super) fn available() -> bool {
        std::is_x86_feature_detected!("sha")
            && std::is_x86_feature_detected!("sse2")
            && std::is_x86_feature_detected!("ssse3")
            && std::is_x86_feature_detected!("sse4.1")
    }

    /// Rounds of every lane: `$h1[l] = sha1rnds4($h0[l], sha1nexte($h1[l], $w[l]), $i)`.
    macro_rules! rounds4 {
        ($h0:ident, $h1:ident, $w:ident, $i:expr) => {
            for l in 0..N {
                $h1[l] = _mm_sha1rnds4_epu32($h0[l], _mm_sha1nexte_epu32($h1[l], $w[l]), $i);
            }
        };
    }

    /// Message schedule then rounds, for every lane.
    macro_rules! schedule_rounds4 {
        ($h0:ident, $h1:ident, $w0:ident, $w1:ident, $w2:ident, $w3:ident, $w4:ident, $i:expr) => {
            for l in 0..N {
                $w4[l] = _mm_sha1msg2_epu32(
                    _mm_xor_si128(_mm_sha1msg1_epu32($w0[l], $w1[l]), $w2[l]),
                    $w3[l],
                );
            }
            rounds4!($h0, $h1, $w4, $i);
        };
    }

    /// The state of a lane as the rounds keep it: `abcd` and `e` (in the
    /// top word).
    #[inline(always)]
    unsafe fn load_state(s: &[u32; 5]) -> (__m128i, __m128i) {
        (
            _mm_set_epi32(s[0] as i32, s[1] as i32, s[2] as i32, s[3] as i32),
            _mm_set_epi32(s[4] as i32, 0, 0, 0),
        )
    }

    #[inline(always)]
    unsafe fn store_state(abcd: __m128i, e: __m128i) -> [u32; 5] {
        [
            _mm_extract_epi32(abcd, 3) as u32,
            _mm_extract_epi32(abcd, 2) as u32,
            _mm_extract_epi32(abcd, 1) as u32,
            _mm_extract_epi32(abcd, 0) as u32,
            _mm_extract_epi32(e, 3) as u32,
        ]
    }

    /// One block per lane on states held in registers; the `sha1` crate's
    /// `digest_blocks` (x86 backend) with every step done for each lane
    /// before the next step.
    #[inline(always)]
    unsafe fn rounds<const N: usize>(
        abcd: &mut [__m128i; N],
        e: &mut [__m128i; N],
        blocks: &[[u8; BLOCK]; N],
    ) {
        rounds_words(abcd, e, &load_words(blocks));
    }

    /// The sixteen big-endian words of each lane's block, four to a
    /// register, the first word in the top lane (as the rounds take them).
    #[inline(always)]
    unsafe fn load_words<const N: usize>(blocks: &[[u8; BLOCK]; N]) -> [[__m128i; 4]; N] {
        let mask = _mm_set_epi64x(0x0001_0203_0405_0607, 0x0809_0A0B_0C0D_0E0F);
        let mut w = [[_mm_setzero_si128(); 4]; N];
        for l in 0..N {
            // Unaligned loads of the 64 bytes of the lane's block.
            let p = blocks[l].as_ptr() as *const __m128i;
            for (i, x) in w[l].iter_mut().enumerate() {
                *x = _mm_shuffle_epi8(_mm_loadu_si128(p.add(i)), mask);
            }
        }
        w
    }

    /// HMAC of one block per lane, given as words: the inner compression
    /// from `inner`, then the outer one from `outer`, whose block is built
    /// from the inner digest in registers: its `abcd` is the block's first
    /// four words as the rounds take them, its `e` (top word; the other
    /// words are 0) the fifth, followed by the padding's 0x80 and, in the
    /// last word, the bit length. Returns the outer `abcd` and `e`.
    #[inline(always)]
    unsafe fn hmac_words<const N: usize>(
        inner: &[u32; 5],
        outer: &[u32; 5],
        w: &[[__m128i; 4]; N],
    ) -> ([__m128i; N], [__m128i; N]) {
        let (ia, ie) = load_state(inner);
        let mut abcd = [ia; N];
        let mut e = [ie; N];
        rounds_words(&mut abcd, &mut e, w);
        let pad = _mm_set_epi32(0, 0x8000_0000u32 as i32, 0, 0);
        let zero = _mm_setzero_si128();
        let len = _mm_set_epi32(0, 0, 0, super::OUTER_BITS as i32);
        let mut ow = [[zero; 4]; N];
        for l in 0..N {
            ow[l] = [abcd[l], _mm_or_si128(e[l], pad), zero, len];
        }
        let (oa, oe) = load_state(outer);
        let mut abcd = [oa; N];
        let mut e = [oe; N];
        rounds_words(&mut abcd, &mut e, &ow);
        (abcd, e)
    }

    /// [`rounds`] of a block already loaded as the rounds take it: its
    /// sixteen words, four to a register, the first word in the top lane.
    #[inline(always)]
    unsafe fn rounds_words<const N: usize>(
        abcd: &mut [__m128i; N],
        e: &mut [__m128i; N],
        w: &[[__m128i; 4]; N],
    ) {
        let zero = _mm_setzero_si128();
        let mut w0 = [zero; N];
        let mut w1 = [zero; N];
        let mut w2 = [zero; N];
        let mut w3 = [zero; N];
        let mut w4 = [zero; N];
        let mut h0 = [zero; N];
        let mut h1 = [zero; N];
        for l in 0..N {
            [w0[l], w1[l], w2[l], w3[l]] = w[l];
            h0[l] = abcd[l];
            h1[l] = _mm_add_epi32(e[l], w0[l]);
        }

        // Rounds 0..20
        for l in 0..N {
            h1[l] = _mm_sha1rnds4_epu32(h0[l], h1[l], 0);
        }
        rounds4!(h1, h0, w1, 0);
        rounds4!(h0, h1, w2, 0);
        rounds4!(h1, h0, w3, 0);
        schedule_rounds4!(h0, h1, w0, w1, w2, w3, w4, 0);

        // Rounds 20..40
        schedule_rounds4!(h1, h0, w1, w2, w3, w4, w0, 1);
        schedule_rounds4!(h0, h1, w2, w3, w4, w0, w1, 1);
        schedule_rounds4!(h1, h0, w3, w4, w0, w1, w2, 1);
        schedule_rounds4!(h0, h1, w4, w0, w1, w2, w3, 1);
        schedule_rounds4!(h1, h0, w0, w1, w2, w3, w4, 1);

        // Rounds 40..60
        schedule_rounds4!(h0, h1, w1, w2, w3, w4, w0, 2);
        schedule_rounds4!(h1, h0, w2, w3, w4, w0, w1, 2);
        schedule_rounds4!(h0, h1, w3, w4, w0, w1, w2, 2);
        schedule_rounds4!(h1, h0, w4, w0, w1, w2, w3, 2);
        schedule_rounds4!(h0, h1, w0, w1, w2, w3, w4, 2);

        // Rounds 60..80
        schedule_rounds4!(h1, h0, w1, w2, w3, w4, w0, 3);
        schedule_rounds4!(h0, h1, w2, w3, w4, w0, w1, 3);
        schedule_rounds4!(h1, h0, w3, w4, w0, w1, w2, 3);
        schedule_rounds4!(h0, h1, w4, w0, w1, w2, w3, 3);
        schedule_rounds4!(h1, h0, w0, w1, w2, w3, w4, 3);

        for l in 0..N {
            abcd[l] = _mm_add_epi32(abcd[l], h0[l]);
            e[l] = _mm_sha1nexte_epu32(h1[l], e[l]);
        }
    }

    /// One block per lane.
    ///
    /// # Safety
    /// The processor must have the enabled features ([`available`]).
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    pub(super) unsafe fn compress_lanes<const N: usize>(
        states: &mut [[u32; 5]; N],
        blocks: &[[u8; BLOCK]; N],
    ) {
        let zero = _mm_setzero_si128();
        let mut abcd = [zero; N];
        let mut e = [zero; N];
        for l in 0..N {
            (abcd[l], e[l]) = load_state(&states[l]);
        }
        rounds(&mut abcd, &mut e, blocks);
        for l in 0..N {
            states[l] = store_state(abcd[l], e[l]);
        }
    }

    /// HMAC of one padded block per lane ([`hmac_words`]).
    ///
    /// # Safety
    /// The processor must have the enabled features ([`available`]).
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    pub(super) unsafe fn hmac_one_block_lanes<const N: usize>(
        inner: &[u32; 5],
        outer: &[u32; 5],
        blocks: &[[u8; BLOCK]; N],
    ) -> [[u32; 5]; N] {
        let (abcd, e) = hmac_words(inner, outer, &load_words(blocks));
        let mut out = [[0u32; 5]; N];
        for l in 0..N {
            out[l] = store_state(abcd[l], e[l]);
        }
        out
    }

    /// `A = HMAC(first)`, then `HMAC(A || second[20..])` per lane, `A`
    /// handed to the second block in registers: its `abcd` as the first
    /// four words, its `e` blended into the top word of the second four.
    ///
    /// # Safety
    /// The processor must have the enabled features ([`available`]).
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    pub(super) unsafe fn hmac_chain_lanes<const N: usize>(
        inner: &[u32; 5],
        outer: &[u32; 5],
        first: &[[u8; BLOCK]; N],
        second: &[[u8; BLOCK]; N],
    ) -> [[u32; 5]; N] {
        let (a, ae) = hmac_words(inner, outer, &load_words(first));
        let mut w = load_words(second);
        for l in 0..N {
            w[l][0] = a[l];
            w[l][1] = _mm_blend_epi16(w[l][1], ae[l], 0xC0);
        }
        let (abcd, e) = hmac_words(inner, outer, &w);
        let mut out = [[0u32; 5]; N];
        for l in 0..N {
            out[l] = store_state(abcd[l], e[l]);
        }
        out
    }

    /// The blocks one after the other into one state, kept in registers.
    ///
    /// # Safety
    /// The processor must have the enabled features ([`available`]).
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    pub(super) unsafe fn compress_blocks(state: &mut [u32; 5], blocks: &[[u8; BLOCK]]) {
        let (abcd, e) = load_state(state);
        let (mut abcd, mut e) = ([abcd], [e]);
        for b in blocks {
            rounds(&mut abcd, &mut e, core::array::from_ref(b));
        }
        *state = store_state(abcd[0], e[0]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const IV: [u32; 5] = [
        0x6745_2301,
        0xefcd_ab89,
        0x98ba_dcfe,
        0x1032_5476,
        0xc3d2_e1f0,
    ];

    fn reference<const N: usize>(
        states: &[[u32; 5]; N],
        blocks: &[[u8; BLOCK]; N],
    ) -> [[u32; 5]; N] {
        let mut s = *states;
        portable(&mut s, blocks);
        s
    }

    /// FIPS 180-4 example "abc" (one padded block): the digest.
    #[test]
    fn abc_in_every_lane() {
        let mut block = [0u8; BLOCK];
        block[..3].copy_from_slice(b"abc");
        block[3] = 0x80;
        block[63] = 24;
        let mut states = [IV; 3];
        compress_lanes(&mut states, &[block; 3]);
        for s in states {
            assert_eq!(
                s,
                [
                    0xa999_3e36,
                    0x4706_816a,
                    0xba3e_2571,
                    0x7850_c26c,
                    0x9cd0_d89d
                ]
            );
        }
    }

    /// Lanes do not leak into each other: different states and blocks give
    /// each lane its own answer, for every lane count the MIKEY code uses.
    #[test]
    fn lanes_are_independent() {
        let mut blocks = [[0u8; BLOCK]; 4];
        let mut states = [IV; 4];
        for (i, (b, s)) in blocks.iter_mut().zip(states.iter_mut()).enumerate() {
            for (j, x) in b.iter_mut().enumerate() {
                *x = (i * 31 + j * 7) as u8;
            }
            s[i % 5] ^= 0x1234_5678 << i;
        }
        let want = reference(&states, &blocks);
        let mut got = states;
        compress_lanes(&mut got, &blocks);
        assert_eq!(got, want);
        let mut two = [states[0], states[1]];
        compress_lanes(&mut two, &[blocks[0], blocks[1]]);
        assert_eq!(two, [want[0], want[1]]);
        let mut one = [states[3]];
        compress_lanes(&mut one, &[blocks[3]]);
        assert_eq!(one, [want[3]]);
    }

    /// Many blocks into one state: the same as `sha1::compress` over them,
    /// for 0 to 5 blocks.
    #[test]
    fn blocks_in_a_row() {
        let mut blocks = [[0u8; BLOCK]; 5];
        for (i, b) in blocks.iter_mut().enumerate() {
            for (j, x) in b.iter_mut().enumerate() {
                *x = (i * 29 + j * 11 + 5) as u8;
            }
        }
        for n in 0..=blocks.len() {
            let mut want = IV;
            for b in &blocks[..n] {
                portable(core::array::from_mut(&mut want), core::array::from_ref(b));
            }
            let mut got = IV;
            compress_blocks(&mut got, &blocks[..n]);
            assert_eq!(got, want, "{n} blocks");
        }
    }

    /// HMAC of one block per lane with the inner digest handed over in
    /// registers: the same states as the two compressions done apart.
    #[test]
    fn hmac_one_block_is_inner_then_outer() {
        let mut blocks = [[0u8; BLOCK]; 3];
        for (i, b) in blocks.iter_mut().enumerate() {
            for (j, x) in b.iter_mut().enumerate() {
                *x = (i * 17 + j * 3 + 1) as u8;
            }
        }
        let (inner, outer) = ([1, 2, 3, 4, 5], [0xdead_beef, 7, 0x8000_0001, 9, 10]);
        let mut want = [inner; 3];
        portable(&mut want, &blocks);
        let ob = want.map(|s| outer_block(&s));
        let mut want_out = [outer; 3];
        portable(&mut want_out, &ob);
        assert_eq!(hmac_one_block_lanes(&inner, &outer, &blocks), want_out);
        assert_eq!(
            hmac_one_block_lanes(&inner, &outer, &[blocks[1]]),
            [want_out[1]]
        );
    }

    /// The chained HMACs: the same as two HMACs with `A` written into the
    /// second block by hand (whatever its first 20 bytes held).
    #[test]
    fn hmac_chain_is_two_hmacs() {
        let mut first = [[0u8; BLOCK]; 3];
        let mut second = [[0u8; BLOCK]; 3];
        for (i, (f, s)) in first.iter_mut().zip(second.iter_mut()).enumerate() {
            for (j, (x, y)) in f.iter_mut().zip(s.iter_mut()).enumerate() {
                *x = (i * 19 + j * 5 + 2) as u8;
                *y = (i * 23 + j * 9 + 4) as u8;
            }
        }
        let (inner, outer) = ([11, 12, 13, 14, 15], [0x0102_0304, 0xffff_fff0, 3, 4, 5]);
        let a = hmac_one_block_lanes(&inner, &outer, &first);
        let mut by_hand = second;
        for (b, s) in by_hand.iter_mut().zip(&a) {
            for (o, w) in b.chunks_exact_mut(4).zip(s) {
                o.copy_from_slice(&w.to_be_bytes());
            }
        }
        let want = hmac_one_block_lanes(&inner, &outer, &by_hand);
        assert_eq!(hmac_chain_lanes(&inner, &outer, &first, &second), want);
        assert_eq!(
            hmac_chain_lanes(&inner, &outer, &[first[2]], &[second[2]]),
            [want[2]]
        );
    }

    proptest! {
        #[test]
        fn equals_sha1_compress(
            seeds in proptest::array::uniform3(any::<[u32; 5]>()),
            bytes in proptest::collection::vec(any::<u8>(), 3 * BLOCK),
        ) {
            let mut blocks = [[0u8; BLOCK]; 3];
            for (b, c) in blocks.iter_mut().zip(bytes.chunks_exact(BLOCK)) {
                b.copy_from_slice(c);
            }
            let want = reference(&seeds, &blocks);
            let mut got = seeds;
            compress_lanes(&mut got, &blocks);
            prop_assert_eq!(got, want);
        }
    }
}
