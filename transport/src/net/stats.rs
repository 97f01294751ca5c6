//! An endpoint's counters: what was sent, dropped, received and refused, so
//! an operator (and a test) can see every frame that did not make it, and why.

use std::collections::BTreeMap;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransportStats {
    // sending
    pub frames_sent: u64,
    pub messages_sent: u64,
    pub bytes_sent: u64,
    /// Write calls (several queued frames go out in one).
    pub writes: u64,
    /// Frames not sent, by reason (`queue_full`, `link_down`, `no_address`,
    /// `write_failed`, `shutdown`, `injected_cut`: a link cut by
    /// `crate::injected`).
    pub frames_dropped: BTreeMap<&'static str, u64>,
    pub messages_dropped: u64,
    pub connects: u64,
    pub connect_failures: u64,
    // receiving
    pub connections_accepted: u64,
    pub frames_received: u64,
    pub messages_received: u64,
    pub bytes_received: u64,
    /// Inbound raft connections closed after `idle_timeout` without a frame.
    pub idle_connections_closed: u64,
    /// Inbound connections closed for bad input, by reason (handshake errors,
    /// decode errors, `misrouted`, `unexpected_kind`, `handshake_timeout`, …).
    pub connections_refused: BTreeMap<&'static str, u64>,
    // snapshots
    pub snapshots_sent: u64,
    pub snapshots_send_failed: u64,
    pub snapshots_received: u64,
    pub snapshots_refused: u64,
    pub snapshot_bytes_sent: u64,
}

impl TransportStats {
    pub fn frames_dropped_total(&self) -> u64 {
        self.frames_dropped.values().sum()
    }

    pub fn connections_refused_total(&self) -> u64 {
        self.connections_refused.values().sum()
    }

    pub(crate) fn refused(&mut self, why: &'static str) {
        *self.connections_refused.entry(why).or_default() += 1;
    }

    pub fn messages_per_frame(&self) -> f64 {
        if self.frames_sent == 0 {
            0.0
        } else {
            self.messages_sent as f64 / self.frames_sent as f64
        }
    }
}
