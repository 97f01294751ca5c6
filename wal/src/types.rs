//! The values a region hands to the log and gets back from it.
//!
//! These mirror raft-rs's `Entry`, `HardState` and `ConfState` but carry no
//! protobuf: the log is independent of the consensus library, and the engine
//! converts at its boundary.

use bytes::Bytes;

/// Identifies a raft group ("region") within one shard's log.
pub type RegionId = u64;

/// Monotonic number the log gives every staged write; a write is durable once
/// the log reports a durable ticket at or past it.
pub type Ticket = u64;

/// The ticket that stands for everything recovery found: durable once the
/// first record after open is on disk (see `Wal::durable_ticket`). Writes
/// staged after open get later tickets.
pub const RECOVERED_TICKET: Ticket = 1;

/// One raft log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub index: u64,
    pub term: u64,
    /// raft-rs `EntryType` as a byte (normal, conf change, conf change v2).
    pub entry_type: u8,
    pub data: Bytes,
}

/// raft's durable vote record. Losing it lets two leaders win one term.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HardState {
    pub term: u64,
    pub vote: u64,
    pub commit: u64,
}

/// Membership of a region as raft sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfState {
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    pub voters_outgoing: Vec<u64>,
    pub learners_next: Vec<u64>,
    pub auto_leave: bool,
}

impl ConfState {
    pub(crate) fn peer_count(&self) -> usize {
        self.voters.len() + self.learners.len() + self.voters_outgoing.len() + self.learners_next.len()
    }
}

/// The state-machine snapshot a region's log now starts after: entries up to
/// `index` are gone and `term` is the term of `index`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotMarker {
    pub index: u64,
    pub term: u64,
}

/// Everything one region asks the log to make durable in one go. All parts
/// land in the same record, so they become durable together (raft needs its
/// entries and the HardState that commits them to be atomic).
///
/// Parts are applied in this order: `snapshot` (resets the log), `entries`
/// (an entry at an index the log already has truncates the log from there),
/// `compact_to`, `hard_state`, `conf_state`, `meta`, `tombstone`, `forget`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegionWrite {
    pub snapshot: Option<SnapshotMarker>,
    /// Consecutive entries; the first may overwrite the log's tail.
    pub entries: Vec<Entry>,
    /// New first index: entries below it are no longer needed.
    pub compact_to: Option<u64>,
    pub hard_state: Option<HardState>,
    pub conf_state: Option<ConfState>,
    /// The engine's region meta (key range, epoch, peers), opaque to the log.
    pub meta: Option<Bytes>,
    /// The region was removed from this shard. Its log is dropped; the
    /// tombstone (with the last meta) survives every purge so a late message
    /// cannot resurrect the region. A later write with entries, a snapshot or
    /// a HardState revives it.
    pub tombstone: bool,
    /// The tombstone is collected: the log forgets the region entirely, and
    /// no checkpoint names it again. Only for a region that is a tombstone,
    /// alone in its write (`LogError::Forget` otherwise).
    pub forget: bool,
}

impl RegionWrite {
    pub fn is_empty(&self) -> bool {
        self.snapshot.is_none()
            && self.entries.is_empty()
            && self.compact_to.is_none()
            && self.hard_state.is_none()
            && self.conf_state.is_none()
            && self.meta.is_none()
            && !self.tombstone
            && !self.forget
    }
}
