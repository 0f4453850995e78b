//! Criterion benchmarks measured in the CPU time of the benchmark thread.
//!
//! On a machine shared with other work, the wall clock counts the time the
//! benchmark thread waits for a core; the thread's CPU time
//! (`CLOCK_THREAD_CPUTIME_ID`) does not. [`bench_main!`](crate::bench_main)
//! builds a bench's `main` that measures with [`ThreadCpuTime`] when the
//! environment variable [`CPU_TIME_VAR`] is set, with criterion's wall clock
//! otherwise.

use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use nix::time::{clock_gettime, ClockId};

/// The environment variable that selects CPU-time measurement.
pub const CPU_TIME_VAR: &str = "MBMS_BENCH_CPU_TIME";

/// True when [`CPU_TIME_VAR`] is set.
pub fn enabled() -> bool {
    std::env::var_os(CPU_TIME_VAR).is_some()
}

/// The CPU time of the calling thread (`CLOCK_THREAD_CPUTIME_ID`).
pub fn thread_cpu_time() -> Duration {
    let ts = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .expect("clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec() as u64, ts.tv_nsec() as u32)
}

/// Criterion measurement: the CPU time of the benchmark thread, shown in
/// the wall clock's units.
#[derive(Clone, Copy, Debug, Default)]
pub struct ThreadCpuTime;

static WALL_TIME: WallTime = WallTime;

impl Measurement for ThreadCpuTime {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        thread_cpu_time()
    }
    fn end(&self, start: Duration) -> Duration {
        thread_cpu_time().saturating_sub(start)
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, v: &Duration) -> f64 {
        v.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        WALL_TIME.formatter()
    }
}

/// The `main` of a criterion bench (`harness = false`) whose benchmarks are
/// the generic function `$benches<M: Measurement + 'static>(&mut
/// Criterion<M>)`: with [`CPU_TIME_VAR`] set they measure [`ThreadCpuTime`],
/// otherwise the wall clock. Command-line arguments are criterion's.
#[macro_export]
macro_rules! bench_main {
    ($benches:path) => {
        fn main() {
            use $crate::cpu_time::criterion::Criterion;
            if $crate::cpu_time::enabled() {
                let mut c = Criterion::default()
                    .with_measurement($crate::cpu_time::ThreadCpuTime)
                    .configure_from_args();
                $benches(&mut c);
                c.final_summary();
            } else {
                let mut c = Criterion::default().configure_from_args();
                $benches(&mut c);
                c.final_summary();
            }
        }
    };
}

#[doc(hidden)]
pub use criterion;

#[cfg(test)]
mod tests {
    use super::*;

    /// The thread's CPU time advances with work done on it.
    #[test]
    fn cpu_time_advances_with_work() {
        let start = thread_cpu_time();
        let mut x = 1u64;
        while thread_cpu_time() == start {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let m = ThreadCpuTime;
        assert!(m.end(start) > Duration::ZERO);
        assert_eq!(m.add(&m.zero(), &Duration::from_nanos(5)).as_nanos(), 5);
    }
}
