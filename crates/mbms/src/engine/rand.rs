//! The RAND of an MSK message, recomputable from what the engine keeps.
//!
//! RFC 3830 3.1/5.1 asks for a fresh (pseudo-)random RAND per message; its
//! role is freshness of the derived keys. The engine takes it from a keyed
//! pseudo-random permutation (AES-128 under a key drawn from the caller's
//! CSPRNG when the engine first sends) of (UE, counter, MSK): the input never
//! repeats (a UE's counters never do), so neither does RAND, and without the
//! key it is unpredictable. When an acknowledgement arrives the engine
//! recomputes the RAND, hence the auth_key, of the message it acknowledges
//! instead of keeping a copy per attempt: per-UE state stays fixed-size.

use aes::cipher::{BlockEncrypt, KeyInit};
use aes::Aes128;
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::ids::MskName;
use crate::profile::RAND_LEN;

use super::delivery::Handle;

/// The RAND key of one engine run (kept only in memory: delivery state does
/// not survive a restart either).
pub(crate) struct RandSource {
    cipher: Aes128,
}

impl RandSource {
    pub(crate) fn new(rng: &mut (impl RngCore + CryptoRng)) -> Self {
        let mut key = Zeroizing::new([0u8; 16]);
        rng.fill_bytes(&mut key[..]);
        RandSource {
            cipher: Aes128::new((&*key).into()),
        }
    }

    /// The RAND of the message with `counter` for `msk` to UE `handle`.
    pub(crate) fn rand(&self, handle: Handle, counter: u32, msk: &MskName) -> [u8; RAND_LEN] {
        let mut block = [0u8; 16];
        block[..4].copy_from_slice(&handle.to_be_bytes());
        block[4..8].copy_from_slice(&counter.to_be_bytes());
        block[8..11].copy_from_slice(&msk.key_domain.0);
        block[11..13].copy_from_slice(&msk.msk_id.key_group.to_be_bytes());
        block[13..15].copy_from_slice(&msk.msk_id.key_number.to_be_bytes());
        let mut b = block.into();
        self.cipher.encrypt_block(&mut b);
        b.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{KeyDomainId, MskId};

    struct Counting(u8);
    impl RngCore for Counting {
        fn next_u32(&mut self) -> u32 {
            0
        }
        fn next_u64(&mut self) -> u64 {
            0
        }
        fn fill_bytes(&mut self, d: &mut [u8]) {
            for b in d {
                self.0 = self.0.wrapping_add(1);
                *b = self.0;
            }
        }
        fn try_fill_bytes(&mut self, d: &mut [u8]) -> Result<(), rand_core::Error> {
            self.fill_bytes(d);
            Ok(())
        }
    }
    impl CryptoRng for Counting {}

    #[test]
    fn rand_is_a_function_of_ue_counter_and_msk_and_differs_per_input() {
        let s = RandSource::new(&mut Counting(0));
        let m = MskName {
            key_domain: KeyDomainId([0x12, 0xf3, 0x45]),
            msk_id: MskId {
                key_group: 1,
                key_number: 2,
            },
        };
        let mut n = m;
        n.msk_id.key_number = 3;
        let a = s.rand(7, 100, &m);
        assert_eq!(a, s.rand(7, 100, &m));
        assert_ne!(a, s.rand(7, 101, &m));
        assert_ne!(a, s.rand(8, 100, &m));
        assert_ne!(a, s.rand(7, 100, &n));
        // Another key, another RAND.
        assert_ne!(a, RandSource::new(&mut Counting(9)).rand(7, 100, &m));
    }
}
