//! AES-128 in counter mode (FIPS 197, NIST SP 800-38A 6.5) with AES-NI, for
//! the few blocks of a MIKEY KEMAC (RFC 3830 4.2.3, AES-CM: the counter is
//! the whole 128-bit block, big-endian, as RFC 3711 4.1.1 counts).
//!
//! The key schedule is computed in registers and each counter block is
//! encrypted in the same function, so that the processor runs the rounds
//! of the blocks as soon as their round key is known; nothing is copied and
//! nothing is left in memory: the round keys and key stream that reached
//! the stack are wiped with volatile stores before returning. Without
//! AES-NI [`aes128_ctr_xor`] does nothing and says so; the caller then uses
//! the `aes` and `ctr` crates.

/// Counter blocks encrypted side by side, always all of them (a fixed
/// count keeps the blocks in registers from round to round): the two of
/// the profile's 26-byte MSK key data.
const BATCH: usize = 2;

/// XOR `data` with the AES-128-CTR key stream of `key` from the counter
/// block `iv` (then `iv + 1`, ..., wrapping modulo 2^128). Returns `false`,
/// having done nothing, when the processor lacks AES-NI.
#[inline]
pub fn aes128_ctr_xor(key: &[u8; 16], iv: &[u8; 16], data: &mut [u8]) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        if ni::available() {
            // SAFETY: the processor has the features the function enables
            // (checked just above).
            unsafe { ni::ctr_xor(key, iv, data) };
            return true;
        }
    }
    let _ = (key, iv, data);
    false
}

#[cfg(target_arch = "x86_64")]
mod ni {
    use core::arch::x86_64::*;

    use super::BATCH;

    /// Whether the processor has AES-NI and the SSE levels used here.
    #[inline]
    pub(super) fn available() -> bool {
        std::is_x86_feature_detected!("aes")
            && std::is_x86_feature_detected!("sse2")
            && std::is_x86_feature_detected!("ssse3")
    }

    /// One step of the AES-128 key expansion (FIPS 197 5.2; Intel's AES-NI
    /// white paper, `AES_128_ASSIST`): `assist` is `aeskeygenassist` of
    /// the previous round key with the round constant.
    #[inline(always)]
    unsafe fn expand_step(prev: __m128i, assist: __m128i) -> __m128i {
        let mut k = prev;
        let mut t = _mm_slli_si128(k, 4);
        k = _mm_xor_si128(k, t);
        t = _mm_slli_si128(t, 4);
        k = _mm_xor_si128(k, t);
        t = _mm_slli_si128(t, 4);
        k = _mm_xor_si128(k, t);
        _mm_xor_si128(k, assist)
    }

    /// The `SubWord(RotWord(w3)) XOR Rcon` of FIPS 197 5.2 in every word,
    /// with `aesenclast` (its ShiftRows is moot when the four columns are
    /// equal) instead of `aeskeygenassist`.
    #[inline(always)]
    unsafe fn sub_rot(prev: __m128i, rcon: i32) -> __m128i {
        let rot = _mm_set1_epi32(0x0c0f_0e0d);
        let t = _mm_shuffle_epi8(prev, rot);
        _mm_aesenclast_si128(t, _mm_set1_epi32(rcon))
    }

    macro_rules! round_key {
        ($rk:ident, $i:literal, $rcon:literal) => {
            $rk[$i] = expand_step($rk[$i - 1], sub_rot($rk[$i - 1], $rcon));
        };
    }

    /// # Safety
    /// The processor must have the enabled features ([`available`]).
    #[target_feature(enable = "aes,sse2,ssse3")]
    pub(super) unsafe fn ctr_xor(key: &[u8; 16], iv: &[u8; 16], data: &mut [u8]) {
        let mut rk = [_mm_setzero_si128(); 11];
        rk[0] = _mm_loadu_si128(key.as_ptr() as *const __m128i);
        round_key!(rk, 1, 0x01);
        round_key!(rk, 2, 0x02);
        round_key!(rk, 3, 0x04);
        round_key!(rk, 4, 0x08);
        round_key!(rk, 5, 0x10);
        round_key!(rk, 6, 0x20);
        round_key!(rk, 7, 0x40);
        round_key!(rk, 8, 0x80);
        round_key!(rk, 9, 0x1b);
        round_key!(rk, 10, 0x36);
        let mut counter = u128::from_be_bytes(*iv);
        let mut stream = [[0u8; 16]; BATCH];
        for chunk in data.chunks_mut(BATCH * 16) {
            let mut b = [_mm_setzero_si128(); BATCH];
            for x in b.iter_mut() {
                let c = counter.to_be_bytes();
                *x = _mm_xor_si128(_mm_loadu_si128(c.as_ptr() as *const __m128i), rk[0]);
                counter = counter.wrapping_add(1);
            }
            for k in &rk[1..10] {
                for x in b.iter_mut() {
                    *x = _mm_aesenc_si128(*x, *k);
                }
            }
            for (x, s) in b.iter().zip(stream.iter_mut()) {
                let last = _mm_aesenclast_si128(*x, rk[10]);
                _mm_storeu_si128(s.as_mut_ptr() as *mut __m128i, last);
            }
            for (d, k) in chunk.iter_mut().zip(stream.as_flattened()) {
                *d ^= k;
            }
        }
        // Wipe what may have reached the stack: the round keys and the key
        // stream (volatile, so that the stores are not dropped as dead).
        core::ptr::write_volatile(&mut rk, [_mm_setzero_si128(); 11]);
        core::ptr::write_volatile(&mut stream, [[0u8; 16]; BATCH]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// FIPS 197 appendix C.1 (AES-128): the key stream of one block is the
    /// encryption of the counter block.
    #[test]
    fn fips197_c1() {
        let key: [u8; 16] = core::array::from_fn(|i| i as u8);
        let iv: [u8; 16] = core::array::from_fn(|i| (i as u8) * 0x11);
        let mut data = [0u8; 16];
        if !aes128_ctr_xor(&key, &iv, &mut data) {
            mbms_test_support::skip("no AES-NI");
            return;
        }
        let want = [
            0x69, 0xc4, 0xe0, 0xd8, 0x6a, 0x7b, 0x04, 0x30, 0xd8, 0xcd, 0xb7, 0x80, 0x70, 0xb4,
            0xc5, 0x5a,
        ];
        assert_eq!(data, want);
    }

    /// NIST SP 800-38A F.5.1 (CTR-AES128.Encrypt), all four blocks, fed at
    /// every length so that the batches and the partial last block are
    /// crossed.
    #[test]
    fn sp800_38a_f51() {
        let key = hex16("2b7e151628aed2a6abf7158809cf4f3c");
        let iv = hex16("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff");
        let plain: Vec<u8> = [
            "6bc1bee22e409f96e93d7e117393172a",
            "ae2d8a571e03ac9c9eb76fac45af8e51",
            "30c81c46a35ce411e5fbc1191a0a52ef",
            "f69f2445df4f9b17ad2b417be66c3710",
        ]
        .iter()
        .flat_map(|h| hex16(h))
        .collect();
        let cipher: Vec<u8> = [
            "874d6191b620e3261bef6864990db6ce",
            "9806f66b7970fdff8617187bb9fffdff",
            "5ae4df3edbd5d35e5b4f09020db03eab",
            "1e031dda2fbe03d1792170a0f3009cee",
        ]
        .iter()
        .flat_map(|h| hex16(h))
        .collect();
        for len in 0..=plain.len() {
            let mut data = plain[..len].to_vec();
            if !aes128_ctr_xor(&key, &iv, &mut data) {
                mbms_test_support::skip("no AES-NI");
                return;
            }
            assert_eq!(data, cipher[..len], "len {len}");
        }
    }

    /// The counter wraps modulo 2^128 (SP 800-38A B.1's standard
    /// incrementing function over the whole block).
    #[test]
    fn counter_wraps() {
        let key = [7u8; 16];
        let mut long = [0u8; 32];
        if !aes128_ctr_xor(&key, &[0xff; 16], &mut long) {
            mbms_test_support::skip("no AES-NI");
            return;
        }
        let mut second = [0u8; 16];
        aes128_ctr_xor(&key, &[0; 16], &mut second);
        assert_eq!(long[16..], second);
    }

    fn hex16(h: &str) -> [u8; 16] {
        core::array::from_fn(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap())
    }
}
