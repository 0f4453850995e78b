//! RFC 1982 serial number arithmetic with SERIAL_BITS = 16, for MTK IDs and
//! the SEQs / SEQu / SEQp comparisons of the MGV-F (seed 004 6.5.4).

use core::cmp::Ordering;
use core::fmt;

/// A 16-bit serial number (RFC 1982). `PartialOrd` follows RFC 1982 section
/// 3.2: two numbers exactly 2^15 apart are neither greater nor less
/// (`partial_cmp` returns `None`), so `<`, `>`, `<=` and `>=` are all false.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Serial16(pub u16);

const HALF: u16 = 1 << 15;

impl Serial16 {
    /// RFC 1982 section 3.1 addition: defined for 0 <= n <= 2^15 - 1.
    pub fn checked_add(self, n: u16) -> Option<Self> {
        (n < HALF).then(|| Serial16(self.0.wrapping_add(n)))
    }

    /// The next serial number (wrapping).
    pub fn next(self) -> Self {
        Serial16(self.0.wrapping_add(1))
    }

    /// `self > other` in RFC 1982 terms.
    pub fn gt(self, other: Self) -> bool {
        self.partial_cmp(&other) == Some(Ordering::Greater)
    }

    /// `self < other` in RFC 1982 terms.
    pub fn lt(self, other: Self) -> bool {
        self.partial_cmp(&other) == Some(Ordering::Less)
    }
}

impl PartialOrd for Serial16 {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        let (a, b) = (self.0, other.0);
        if a == b {
            return Some(Ordering::Equal);
        }
        let d = b.wrapping_sub(a);
        match d.cmp(&HALF) {
            // b is ahead of a by less than half the space: a < b.
            Ordering::Less => Some(Ordering::Less),
            Ordering::Greater => Some(Ordering::Greater),
            Ordering::Equal => None,
        }
    }
}

impl fmt::Debug for Serial16 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Serial16({})", self.0)
    }
}

impl fmt::Display for Serial16 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl From<u16> for Serial16 {
    fn from(v: u16) -> Self {
        Serial16(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_around() {
        assert!(Serial16(0).gt(Serial16(65535)));
        assert!(Serial16(65535).lt(Serial16(0)));
        assert!(Serial16(10).gt(Serial16(65530)));
        let a = Serial16(0);
        let b = Serial16(32768);
        assert_eq!(a.partial_cmp(&b), None);
        assert_eq!([a < b, a > b, a <= b, a >= b], [false; 4]);
        assert_eq!(Serial16(65535).next(), Serial16(0));
        assert_eq!(Serial16(1).checked_add(32767), Some(Serial16(32768)));
        assert_eq!(Serial16(1).checked_add(32768), None);
    }
}
