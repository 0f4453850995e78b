//! `N` independent SHA-1 compressions (FIPS 180-4 6.1.2, one 64-byte block
//! each) run side by side.
//!
//! The MIKEY PRF of an MBMS message (RFC 3830 4.1.2, three keys of one
//! P_SHA1 block each) and an HMAC key schedule (RFC 2104: the `K XOR ipad`
//! and `K XOR opad` blocks) are chains of SHA-1 compressions, each short
//! and each waiting on the one before. A SHA-NI compression is bound by the
//! latency of `sha1rnds4`, not by the processor's throughput: run one after
//! the other, independent compressions leave most of the SHA unit idle.
//! [`compress_lanes`] interleaves the rounds of `N` of them instruction by
//! instruction, so that the processor overlaps them (about 1.4 times the
//! time of one compression for three, against three times).
//!
//! The SHA-NI path is the `sha1` crate's x86 compression (Intel's reference
//! sequence) with every step repeated for each lane; without SHA-NI (or off
//! x86-64) every lane goes through `sha1::compress` in turn. Both give the
//! same states bit for bit (tests and a property test below).
//!
//! This is the workspace's one crate with `unsafe` code: the SIMD
//! intrinsics of a `#[target_feature]` function, called only after the
//! processor was found to have the features.

#![deny(missing_docs)]

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

    /// One block per lane; the `sha1` crate's `digest_blocks` (x86 backend)
    /// with every step done for each lane before the next step.
    ///
    /// # Safety
    /// The processor must have the enabled features ([`available`]).
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    pub(super) unsafe fn compress_lanes<const N: usize>(
        states: &mut [[u32; 5]; N],
        blocks: &[[u8; BLOCK]; N],
    ) {
        let mask = _mm_set_epi64x(0x0001_0203_0405_0607, 0x0809_0A0B_0C0D_0E0F);
        let zero = _mm_setzero_si128();
        let mut abcd = [zero; N];
        let mut e = [zero; N];
        let mut w0 = [zero; N];
        let mut w1 = [zero; N];
        let mut w2 = [zero; N];
        let mut w3 = [zero; N];
        let mut w4 = [zero; N];
        let mut h0 = [zero; N];
        let mut h1 = [zero; N];
        for l in 0..N {
            let s = &states[l];
            abcd[l] = _mm_set_epi32(s[0] as i32, s[1] as i32, s[2] as i32, s[3] as i32);
            e[l] = _mm_set_epi32(s[4] as i32, 0, 0, 0);
            // Unaligned loads of the 64 bytes of the lane's block.
            let p = blocks[l].as_ptr() as *const __m128i;
            w0[l] = _mm_shuffle_epi8(_mm_loadu_si128(p), mask);
            w1[l] = _mm_shuffle_epi8(_mm_loadu_si128(p.add(1)), mask);
            w2[l] = _mm_shuffle_epi8(_mm_loadu_si128(p.add(2)), mask);
            w3[l] = _mm_shuffle_epi8(_mm_loadu_si128(p.add(3)), mask);
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
            let abcd = _mm_add_epi32(abcd[l], h0[l]);
            let e = _mm_sha1nexte_epu32(h1[l], e[l]);
            states[l] = [
                _mm_extract_epi32(abcd, 3) as u32,
                _mm_extract_epi32(abcd, 2) as u32,
                _mm_extract_epi32(abcd, 1) as u32,
                _mm_extract_epi32(abcd, 0) as u32,
                _mm_extract_epi32(e, 3) as u32,
            ];
        }
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
