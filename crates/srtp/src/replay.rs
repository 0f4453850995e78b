//! The replay list of RFC 3711 3.3.2 as a sliding-window bitmap.
//!
//! The window remembers the highest index received and which of the
//! `size - 1` indices below it were received. An index is fresh if it is
//! above the highest one, or inside the window and not yet marked; it is
//! "too old" if it is at or below `highest - size`. Bits live in a ring
//! indexed by `index mod (64 * words)`: advancing clears the bits of the
//! indices that enter the window, so no shifting of the whole bitmap.

/// Outcome of a replay check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Check {
    /// Not seen, acceptable.
    Fresh,
    /// Already received.
    Replayed,
    /// Behind the window.
    TooOld { highest: u64 },
}

#[derive(Clone, Debug)]
pub(crate) struct ReplayWindow {
    size: u64,
    mask: u64, // ring bits - 1 (ring size is a power of two, >= size)
    highest: Option<u64>,
    bits: Box<[u64]>,
}

impl ReplayWindow {
    /// A window of `size` packets (64..=32768, checked by the caller).
    pub(crate) fn new(size: usize) -> ReplayWindow {
        let ring = size.next_power_of_two().max(64);
        ReplayWindow {
            size: size as u64,
            mask: ring as u64 - 1,
            highest: None,
            bits: vec![0u64; ring / 64].into_boxed_slice(),
        }
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    pub(crate) fn highest(&self) -> Option<u64> {
        self.highest
    }

    #[inline]
    fn bit(&self, index: u64) -> bool {
        let pos = index & self.mask;
        self.bits[(pos >> 6) as usize] & (1u64 << (pos & 63)) != 0
    }

    #[inline]
    fn set(&mut self, index: u64, v: bool) {
        let pos = index & self.mask;
        let w = &mut self.bits[(pos >> 6) as usize];
        if v {
            *w |= 1u64 << (pos & 63);
        } else {
            *w &= !(1u64 << (pos & 63));
        }
    }

    /// Would `index` be accepted?
    #[inline]
    pub(crate) fn check(&self, index: u64) -> Check {
        match self.highest {
            None => Check::Fresh,
            Some(h) if index > h => Check::Fresh,
            Some(h) if h - index >= self.size => Check::TooOld { highest: h },
            Some(_) if self.bit(index) => Check::Replayed,
            Some(_) => Check::Fresh,
        }
    }

    /// Marks `index` as received (after it was authenticated).
    #[inline]
    pub(crate) fn commit(&mut self, index: u64) {
        match self.highest {
            Some(h) if index <= h => {}
            Some(h) => {
                let delta = index - h;
                if delta > self.mask {
                    self.bits.iter_mut().for_each(|w| *w = 0);
                } else {
                    for i in h + 1..index {
                        self.set(i, false);
                    }
                }
                self.highest = Some(index);
            }
            None => {
                self.bits.iter_mut().for_each(|w| *w = 0);
                self.highest = Some(index);
            }
        }
        self.set(index, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_basics() {
        let mut w = ReplayWindow::new(64);
        assert_eq!(w.check(1000), Check::Fresh);
        w.commit(1000);
        assert_eq!(w.check(1000), Check::Replayed);
        assert_eq!(w.check(999), Check::Fresh);
        assert_eq!(w.check(1000 - 63), Check::Fresh);
        assert_eq!(w.check(1000 - 64), Check::TooOld { highest: 1000 });
        w.commit(990);
        assert_eq!(w.check(990), Check::Replayed);
        w.commit(1001);
        assert_eq!(w.check(990), Check::Replayed);
        assert_eq!(w.check(1000), Check::Replayed);
        assert_eq!(w.check(995), Check::Fresh);
        // A jump larger than the ring clears everything.
        w.commit(5000);
        assert_eq!(w.check(4999), Check::Fresh);
        assert_eq!(w.check(5000), Check::Replayed);
        assert_eq!(w.check(1001), Check::TooOld { highest: 5000 });
    }

    #[test]
    fn stale_ring_bits_are_cleared_when_advancing() {
        let mut w = ReplayWindow::new(64);
        for i in 0..64 {
            w.commit(i);
        }
        // Index 64 shares ring position 0 with index 0.
        assert_eq!(w.check(64), Check::Fresh);
        w.commit(70);
        for i in 64..70 {
            assert_eq!(w.check(i), Check::Fresh, "{i}");
        }
        assert_eq!(w.check(6), Check::TooOld { highest: 70 });
        assert_eq!(w.check(7), Check::Replayed);
    }

    #[test]
    fn larger_windows() {
        for size in [64usize, 100, 128, 1000, 32768] {
            let mut w = ReplayWindow::new(size);
            w.commit(100_000);
            let s = size as u64;
            assert_eq!(w.check(100_000 - (s - 1)), Check::Fresh, "{size}");
            assert!(matches!(w.check(100_000 - s), Check::TooOld { .. }));
            w.commit(100_000 - (s - 1));
            assert_eq!(w.check(100_000 - (s - 1)), Check::Replayed);
        }
    }

    /// Model check against a set of all received indices.
    #[test]
    fn agrees_with_a_model() {
        let mut w = ReplayWindow::new(96);
        let mut seen = std::collections::BTreeSet::new();
        let mut x: u64 = 12345;
        let mut highest: Option<u64> = None;
        for _ in 0..20000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let base = highest.unwrap_or(500);
            let idx = (base + (x >> 33) % 200).saturating_sub(150);
            let expected = match highest {
                None => Check::Fresh,
                Some(h) if idx > h => Check::Fresh,
                Some(h) if h - idx >= 96 => Check::TooOld { highest: h },
                Some(_) if seen.contains(&idx) => Check::Replayed,
                Some(_) => Check::Fresh,
            };
            assert_eq!(w.check(idx), expected, "index {idx}");
            if expected == Check::Fresh {
                w.commit(idx);
                seen.insert(idx);
                highest = Some(highest.map_or(idx, |h| h.max(idx)));
            }
        }
    }
}
