//! Reconnect backoff: after a failed connect or a broken connection the
//! sender waits before trying that destination again, doubling the wait up
//! to a ceiling, so a store that is down costs one connect attempt per
//! `backoff_max`, not one per loop iteration. The jitter is derived from
//! the destination and the attempt (no clock, no global RNG), so two shards
//! that lost the same peer do not reconnect in lockstep, and a simulation
//! replays exactly.

use std::time::Duration;

use crate::seeded::splitmix64;

/// Shortest wait after a failure.
pub const BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest wait between attempts at one destination.
pub const BACKOFF_MAX: Duration = Duration::from_secs(2);

const _: () = assert!(BACKOFF_MIN.as_nanos() > 0 && BACKOFF_MIN.as_nanos() <= BACKOFF_MAX.as_nanos());

/// Exponential backoff for one destination.
#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    /// Failures since the last success.
    failures: u32,
    /// Mixed into the jitter: the destination's identity.
    salt: u64,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration, salt: u64) -> Self {
        assert!(!min.is_zero() && min <= max, "backoff bounds {min:?}..{max:?}");
        Backoff { min, max, failures: 0, salt }
    }

    /// Failures since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// A connection worked: the next failure starts from `min` again.
    pub fn succeeded(&mut self) {
        self.failures = 0;
    }

    /// An attempt failed: how long to wait before the next one. The wait is
    /// `min · 2^(failures-1)` capped at `max`, scaled by a jitter in [0.5, 1).
    pub fn failed(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let exp = (self.failures - 1).min(30);
        let base = self.min.saturating_mul(1u32 << exp).min(self.max);
        let jitter = splitmix64(self.salt ^ u64::from(self.failures)) % 1024;
        base.mul_f64(0.5 + jitter as f64 / 2048.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_ceiling_and_reset_after_a_success() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_millis(300), 42);
        let waits: Vec<Duration> = (0..8).map(|_| b.failed()).collect();
        for (i, w) in waits.iter().enumerate() {
            let base = Duration::from_millis(10 * (1 << i)).min(Duration::from_millis(300));
            assert!(*w >= base / 2 && *w <= base, "wait {i} = {w:?}, base {base:?}");
        }
        assert!(waits[7] >= Duration::from_millis(150), "capped, not reset: {:?}", waits[7]);
        b.succeeded();
        assert!(b.failed() <= Duration::from_millis(10));
    }

    #[test]
    fn jitter_differs_between_destinations_and_is_reproducible() {
        let run = |salt| {
            let mut b = Backoff::new(BACKOFF_MIN, BACKOFF_MAX, salt);
            (0..6).map(|_| b.failed()).collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }
}
