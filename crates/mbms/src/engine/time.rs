//! Time as the engine sees it (passed in, never read from a clock) and the
//! retransmission policy of MSK deliveries (seed 004 6.4.2: "start a timer
//! when the message is sent and then resend the message if no ACK is received
//! before the timer expires").

use core::fmt;
use core::time::Duration;

use rand_core::RngCore;

/// A point in time: milliseconds since an epoch that the caller chooses
/// (typically the Unix epoch). The engine never reads a clock; every
/// operation that depends on time takes a `Timestamp`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// From milliseconds since the epoch.
    pub const fn from_millis(ms: u64) -> Self {
        Timestamp(ms)
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// `self + d`, saturating at the end of time.
    pub fn saturating_add(self, d: Duration) -> Self {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(ms))
    }

    /// `self - earlier`, zero if `earlier` is later.
    pub fn saturating_since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ms", self.0)
    }
}

/// When to resend an unacknowledged MSK message and when to give up.
///
/// Attempt `n` (1-based: attempt 1 is the first transmission) waits
/// `base(n) = min(initial * factor^(n-1), max_interval)` for its
/// acknowledgement, scaled by a uniformly random factor in
/// `[1 - jitter, 1 + jitter]` (`jitter = jitter_permille / 1000`), so that
/// many UEs pushed at the same moment do not retransmit in lock-step. After
/// the timer of attempt `max_attempts` expires the delivery is given up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetransmitPolicy {
    /// Timer of the first transmission.
    pub initial: Duration,
    /// Multiplier between consecutive timers (2 = exponential backoff).
    pub factor: u32,
    /// Upper bound of the timer before jitter.
    pub max_interval: Duration,
    /// Transmissions before giving up (at least 1).
    pub max_attempts: u32,
    /// Jitter as a fraction of the timer, in thousandths (0..=1000).
    pub jitter_permille: u32,
}

impl Default for RetransmitPolicy {
    /// 2 s, doubling, at most 60 s, 6 transmissions, +/-10 % jitter: about
    /// 2 minutes from the first transmission to giving up.
    fn default() -> Self {
        RetransmitPolicy {
            initial: Duration::from_secs(2),
            factor: 2,
            max_interval: Duration::from_secs(60),
            max_attempts: 6,
            jitter_permille: 100,
        }
    }
}

impl RetransmitPolicy {
    /// The timer of attempt `attempt` (1-based) before jitter.
    pub fn base_interval(&self, attempt: u32) -> Duration {
        let initial = self.initial.as_millis();
        let max = self.max_interval.as_millis();
        let mut ms = initial;
        for _ in 1..attempt {
            ms = ms.saturating_mul(u128::from(self.factor));
            if ms >= max {
                break;
            }
        }
        Duration::from_millis(u64::try_from(ms.min(max)).unwrap_or(u64::MAX))
    }

    /// The bounds `[low, high]` of the jittered timer of attempt `attempt`.
    pub fn interval_bounds(&self, attempt: u32) -> (Duration, Duration) {
        let base = u64::try_from(self.base_interval(attempt).as_millis()).unwrap_or(u64::MAX);
        let spread = self.spread(base);
        (
            Duration::from_millis(base - spread),
            Duration::from_millis(base.saturating_add(spread)),
        )
    }

    /// The jittered timer of attempt `attempt`, drawn from `rng`.
    pub(crate) fn interval(&self, attempt: u32, rng: &mut impl RngCore) -> Duration {
        let base = u64::try_from(self.base_interval(attempt).as_millis()).unwrap_or(u64::MAX);
        let spread = self.spread(base);
        if spread == 0 {
            return Duration::from_millis(base);
        }
        // Uniform in [0, 2 * spread]; the modulo bias is below 2^-40 for
        // any realistic timer and irrelevant for jitter.
        let offset = rng.next_u64() % (2 * spread + 1);
        Duration::from_millis(base - spread + offset)
    }

    fn spread(&self, base_ms: u64) -> u64 {
        let j = u64::from(self.jitter_permille.min(1000));
        // base * j / 1000, without overflow for any u64 base.
        (base_ms / 1000) * j + (base_ms % 1000) * j / 1000
    }

    /// Check the policy is usable.
    pub(crate) fn validate(&self) -> Result<(), &'static str> {
        if self.max_attempts == 0 {
            return Err("retransmission policy: max_attempts must be at least 1");
        }
        if self.factor == 0 {
            return Err("retransmission policy: factor must be at least 1");
        }
        if self.jitter_permille > 1000 {
            return Err("retransmission policy: jitter_permille must be at most 1000");
        }
        if self.initial.is_zero() {
            return Err("retransmission policy: the initial timer must not be zero");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let p = RetransmitPolicy {
            initial: Duration::from_secs(2),
            factor: 2,
            max_interval: Duration::from_secs(10),
            max_attempts: 5,
            jitter_permille: 0,
        };
        let secs: Vec<u64> = (1..=5).map(|n| p.base_interval(n).as_secs()).collect();
        assert_eq!(secs, [2, 4, 8, 10, 10]);
        assert_eq!(
            p.interval_bounds(2),
            (Duration::from_secs(4), Duration::from_secs(4))
        );
        let p = RetransmitPolicy {
            jitter_permille: 250,
            ..p
        };
        assert_eq!(
            p.interval_bounds(3),
            (Duration::from_secs(6), Duration::from_secs(10))
        );
    }

    #[test]
    fn timestamps_saturate() {
        let t = Timestamp(u64::MAX - 1);
        assert_eq!(
            t.saturating_add(Duration::from_secs(1)),
            Timestamp(u64::MAX)
        );
        assert_eq!(Timestamp(5).saturating_since(Timestamp(9)), Duration::ZERO);
    }
}
