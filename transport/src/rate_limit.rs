//! A token bucket for the snapshot stream: a snapshot of hundreds of MiB
//! must not fill the network (or the receiver's disk queue) ahead of
//! heartbeats and appends. Sans-IO: the caller passes the time and sleeps
//! for the wait it is told.

use std::time::{Duration, Instant};

/// Byte-rate limiter. `bytes_per_sec == 0` means unlimited.
#[derive(Clone, Debug)]
pub struct RateLimiter {
    bytes_per_sec: u64,
    burst_bytes: u64,
    /// Tokens available at `at` (may be negative after a large take: debt).
    tokens: i64,
    at: Instant,
}

impl RateLimiter {
    pub fn new(bytes_per_sec: u64, burst_bytes: u64, now: Instant) -> Self {
        RateLimiter { bytes_per_sec, burst_bytes, tokens: burst_bytes as i64, at: now }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at);
        self.at = now;
        let add = (elapsed.as_nanos() * u128::from(self.bytes_per_sec) / 1_000_000_000) as i64;
        self.tokens = (self.tokens.saturating_add(add)).min(self.burst_bytes as i64);
    }

    /// Takes `bytes` and says how long to wait before sending them (zero if
    /// they may go now). Never refuses: a chunk larger than the burst is
    /// allowed and paid for afterwards.
    pub fn take(&mut self, bytes: u64, now: Instant) -> Duration {
        if self.bytes_per_sec == 0 {
            return Duration::ZERO;
        }
        self.refill(now);
        self.tokens -= bytes as i64;
        if self.tokens >= 0 {
            Duration::ZERO
        } else {
            Duration::from_nanos(((-self.tokens) as u128 * 1_000_000_000 / u128::from(self.bytes_per_sec)) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_stream_is_held_to_the_rate() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(1_000_000, 100_000, t0);
        // simulate a sender that sleeps exactly as told: 10 MB at 1 MB/s takes ~9.9 s (the first burst is free)
        let mut now = t0;
        for _ in 0..100 {
            now += r.take(100_000, now);
        }
        let took = now - t0;
        assert!(took >= Duration::from_millis(9_800) && took <= Duration::from_millis(10_000), "{took:?}");
    }

    #[test]
    fn zero_means_unlimited_and_idle_time_refills_only_up_to_the_burst() {
        let t0 = Instant::now();
        assert_eq!(RateLimiter::new(0, 0, t0).take(u64::MAX / 2, t0), Duration::ZERO);
        let mut r = RateLimiter::new(1_000, 1_000, t0);
        assert_eq!(r.take(1_000, t0), Duration::ZERO);
        let later = t0 + Duration::from_secs(100);
        assert_eq!(r.take(1_000, later), Duration::ZERO, "refilled to the burst");
        assert_eq!(r.take(500, later), Duration::from_millis(500), "but not beyond it");
    }
}
