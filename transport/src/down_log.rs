//! When to log that a peer is down. A link to a store that is down fails
//! at every reconnect attempt (every `BACKOFF_MAX` at most, per shard and
//! destination); logging each attempt buries everything else in an
//! operator's log. [`DownLog`] is fed what happened to one destination and
//! says what is worth a line: the change of state (up → down, down → up),
//! and while it stays down at most one reminder per [`DOWN_LOG_INTERVAL`],
//! with the attempts that failed since it went down. Sans-IO: the caller
//! passes the time.

use std::time::{Duration, Instant};

use crate::backoff::BACKOFF_MAX;

/// Least time between two lines about a destination that stays down.
pub const DOWN_LOG_INTERVAL: Duration = Duration::from_secs(5);

const _: () =
    assert!(DOWN_LOG_INTERVAL.as_nanos() > BACKOFF_MAX.as_nanos(), "otherwise every attempt is logged anyway");

/// What happened to a destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerEvent {
    /// A connection was made (handshake done).
    Connected,
    /// A connect, a handshake or a write failed.
    Failed,
}

/// A line worth logging.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DownNote {
    /// It was up (or never tried) and an attempt failed.
    WentDown,
    /// A reminder: still down after `down_for`, `failures` attempts since it went down.
    StillDown { failures: u32, down_for: Duration },
    /// Connected again after `down_for` and `failures` failed attempts.
    CameBack { failures: u32, down_for: Duration },
}

#[derive(Clone, Copy, Debug)]
enum State {
    Up,
    Down { since: Instant, logged: Instant, failures: u32 },
}

/// The log state of one destination.
#[derive(Clone, Debug)]
pub struct DownLog {
    state: State,
}

impl Default for DownLog {
    fn default() -> Self {
        DownLog { state: State::Up }
    }
}

impl DownLog {
    /// Takes `event` at `now`; returns what to log, if anything.
    pub fn on(&mut self, now: Instant, event: PeerEvent) -> Option<DownNote> {
        match (self.state, event) {
            (State::Up, PeerEvent::Connected) => None,
            (State::Up, PeerEvent::Failed) => {
                self.state = State::Down { since: now, logged: now, failures: 1 };
                Some(DownNote::WentDown)
            }
            (State::Down { since, logged, failures }, PeerEvent::Failed) => {
                let failures = failures.saturating_add(1);
                let due = now.saturating_duration_since(logged) >= DOWN_LOG_INTERVAL;
                let logged = if due { now } else { logged };
                self.state = State::Down { since, logged, failures };
                due.then(|| DownNote::StillDown { failures, down_for: now.saturating_duration_since(since) })
            }
            (State::Down { since, failures, .. }, PeerEvent::Connected) => {
                self.state = State::Up;
                Some(DownNote::CameBack { failures, down_for: now.saturating_duration_since(since) })
            }
        }
    }

    /// Whether the destination is down (its last event was a failure).
    pub fn is_down(&self) -> bool {
        matches!(self.state, State::Down { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_that_stays_down_is_logged_when_it_goes_down_then_once_per_interval_not_per_attempt() {
        let t0 = Instant::now();
        let mut log = DownLog::default();
        assert_eq!(log.on(t0, PeerEvent::Failed), Some(DownNote::WentDown));
        assert!(log.is_down());
        // attempts every BACKOFF_MAX for a minute
        let mut lines = vec![];
        let mut t = t0;
        while t < t0 + Duration::from_secs(60) {
            t += BACKOFF_MAX;
            lines.extend(log.on(t, PeerEvent::Failed).map(|note| (t, note)));
        }
        let attempts = (60 / BACKOFF_MAX.as_secs()) as usize;
        assert!(
            lines.len() <= 60 / DOWN_LOG_INTERVAL.as_secs() as usize,
            "{} lines for {attempts} attempts",
            lines.len()
        );
        assert!(
            lines.len() >= 60 / DOWN_LOG_INTERVAL.as_secs() as usize / 2,
            "a reminder at least every other interval"
        );
        let mut last = t0;
        for (at, note) in &lines {
            assert!(*at - last >= DOWN_LOG_INTERVAL, "two lines {:?} apart", *at - last);
            let DownNote::StillDown { failures, down_for } = note else { panic!("{note:?} while down") };
            assert_eq!(*down_for, *at - t0);
            assert_eq!(*failures as u128, 1 + (*at - t0).as_nanos() / BACKOFF_MAX.as_nanos());
            last = *at;
        }
    }

    #[test]
    fn a_peer_that_comes_back_is_logged_once_with_how_long_it_was_down_and_a_new_outage_logs_at_once() {
        let t0 = Instant::now();
        let mut log = DownLog::default();
        assert_eq!(log.on(t0, PeerEvent::Failed), Some(DownNote::WentDown));
        assert_eq!(log.on(t0 + Duration::from_secs(1), PeerEvent::Failed), None);
        let back = t0 + Duration::from_secs(2);
        assert_eq!(
            log.on(back, PeerEvent::Connected),
            Some(DownNote::CameBack { failures: 2, down_for: Duration::from_secs(2) })
        );
        assert!(!log.is_down());
        assert_eq!(log.on(back, PeerEvent::Connected), None, "a reconnect while up is not news");
        // the next outage is news at once, however soon it comes
        assert_eq!(log.on(back + Duration::from_millis(1), PeerEvent::Failed), Some(DownNote::WentDown));
    }

    #[test]
    fn a_peer_that_was_never_down_logs_nothing_when_it_connects() {
        let mut log = DownLog::default();
        let t0 = Instant::now();
        for i in 0..10 {
            assert_eq!(log.on(t0 + Duration::from_secs(i), PeerEvent::Connected), None);
        }
    }
}
