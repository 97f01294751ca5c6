//! raft-rs's view of one region's log: every live entry in memory (the WAL
//! holds them durably; raft reads are synchronous and the shard thread must
//! never wait on a disk read), the HardState, the ConfState, and the point
//! the log starts after (a snapshot or the initial state).
//!
//! The shard appends here *before* `advance_append_async` (raft must read
//! what it just handed out) and stages the same entries into the WAL batch.

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};

#[derive(Default)]
pub struct RegionStorage {
    hard_state: HardState,
    conf_state: ConfState,
    /// The log starts after (index, term): a snapshot's, or (0, 0).
    base_index: u64,
    base_term: u64,
    /// Entries `base_index + 1 ..`.
    entries: Vec<Entry>,
    entry_bytes: usize,
    /// The latest snapshot whose file is durable: what a follower whose next
    /// entry was compacted away is sent. (0, 0) = none.
    snapshot_index: u64,
    snapshot_term: u64,
    snapshot_conf: ConfState,
    /// raft asked for a snapshot the latest one cannot be (it predates the
    /// follower's membership): the shard takes a new one at once.
    snapshot_wanted: std::cell::Cell<bool>,
    /// No snapshot is handed out (a new split child gives its followers
    /// time to split themselves first).
    snapshots_held: bool,
}

impl RegionStorage {
    /// A region's log as the WAL recovered it (or as bootstrap made it).
    pub fn new(hard_state: HardState, conf_state: ConfState, base: (u64, u64), entries: Vec<Entry>) -> Self {
        let mut s =
            RegionStorage { hard_state, conf_state, base_index: base.0, base_term: base.1, ..Default::default() };
        s.append(&entries);
        s
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn set_hard_state(&mut self, hs: HardState) {
        self.hard_state = hs;
    }

    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    pub fn set_conf_state(&mut self, cs: ConfState) {
        self.conf_state = cs;
    }

    pub fn entry_bytes(&self) -> usize {
        self.entry_bytes
    }

    /// A snapshot's file became durable: it is what raft sends from now on.
    pub fn set_snapshot(&mut self, index: u64, term: u64, conf: ConfState) {
        assert!(index >= self.snapshot_index, "snapshot {index} older than {}", self.snapshot_index);
        (self.snapshot_index, self.snapshot_term, self.snapshot_conf) = (index, term, conf);
    }

    /// Holds (or releases) every snapshot raft asks for: raft tries again later.
    pub fn hold_snapshots(&mut self, held: bool) {
        self.snapshots_held = held;
    }

    /// Whether raft asked for a newer snapshot than there is (cleared).
    pub fn take_snapshot_wanted(&self) -> bool {
        self.snapshot_wanted.replace(false)
    }

    /// First index still in the log.
    pub fn first(&self) -> u64 {
        self.base_index + 1
    }

    /// Drops the entries up to `index`; never past the durable snapshot (the
    /// state machine lives in memory: the snapshot is all that survives of them).
    pub fn compact_to(&mut self, index: u64) {
        assert!(index <= self.snapshot_index, "compacting to {index} past the snapshot at {}", self.snapshot_index);
        if index <= self.base_index {
            return;
        }
        assert!(index <= self.last(), "compacting to {index} past the log's end {}", self.last());
        let term = self.entries[(index - self.base_index - 1) as usize].term;
        for e in self.entries.drain(..(index - self.base_index) as usize) {
            self.entry_bytes -= e.data.len();
        }
        (self.base_index, self.base_term) = (index, term);
    }

    /// A received snapshot replaces the whole log (raft found it does not match).
    pub fn restore(&mut self, index: u64, term: u64, conf: ConfState) {
        self.entries.clear();
        self.entry_bytes = 0;
        (self.base_index, self.base_term) = (index, term);
        self.conf_state = conf.clone();
        self.set_snapshot(index, term, conf);
    }

    fn last(&self) -> u64 {
        self.base_index + self.entries.len() as u64
    }

    /// Appends entries raft handed out; an entry at an index the log already
    /// has truncates the log from there (a new leader overwrote the tail).
    pub fn append(&mut self, ents: &[Entry]) {
        let Some(first) = ents.first() else { return };
        assert!(
            first.index > self.base_index,
            "appending at {} behind the log's base {}",
            first.index,
            self.base_index
        );
        assert!(first.index <= self.last() + 1, "log gap: appending {} after {}", first.index, self.last());
        let keep = (first.index - self.base_index - 1) as usize;
        for e in self.entries.drain(keep..) {
            self.entry_bytes -= e.data.len();
        }
        for e in ents {
            self.entry_bytes += e.data.len();
            self.entries.push(e.clone());
        }
    }

    fn slice_range(&self, low: u64, high: u64) -> &[Entry] {
        &self.entries[(low - self.base_index - 1) as usize..(high - self.base_index - 1) as usize]
    }
}

fn unavailable() -> raft::Error {
    raft::Error::Store(StorageError::Unavailable)
}

impl raft::Storage for RegionStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(self.hard_state.clone(), self.conf_state.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.base_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 {
            return Err(unavailable());
        }
        let mut out = Vec::new();
        let max = max_size.into().unwrap_or(u64::MAX);
        let mut size = 0u64;
        for e in self.slice_range(low, high) {
            size += (e.data.len() + e.context.len() + 16) as u64;
            if !out.is_empty() && size > max {
                break;
            }
            out.push(e.clone());
        }
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.base_index {
            return Ok(self.base_term);
        }
        if idx < self.base_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.last() {
            return Err(unavailable());
        }
        Ok(self.entries[(idx - self.base_index - 1) as usize].term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.base_index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    /// The latest durable snapshot's metadata; its data travels as a file on
    /// the transport's snapshot stream (the shard sends it when it sees the
    /// `MsgSnapshot`), so the message itself carries none.
    fn snapshot(&self, _request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let c = &self.snapshot_conf;
        let member = [&c.voters, &c.learners, &c.voters_outgoing, &c.learners_next].iter().any(|ids| ids.contains(&to));
        if self.snapshots_held {
            return Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable));
        }
        if self.snapshot_index == 0 || !member {
            // a peer added after the latest snapshot would refuse it (raft
            // checks that it is in the snapshot's membership): ask the shard
            // for a new one; raft tries again on its next probe
            self.snapshot_wanted.set(true);
            return Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable));
        }
        let mut s = Snapshot::default();
        let mut m = SnapshotMetadata { index: self.snapshot_index, term: self.snapshot_term, ..Default::default() };
        m.set_conf_state(self.snapshot_conf.clone());
        s.set_metadata(m);
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage;

    fn entry(index: u64, term: u64) -> Entry {
        Entry { index, term, data: vec![index as u8; 10].into(), ..Default::default() }
    }

    #[test]
    fn an_overlapping_append_truncates_the_tail_and_terms_are_always_known() {
        let mut s = RegionStorage::new(HardState::default(), ConfState::default(), (5, 2), vec![]);
        s.append(&[entry(6, 2), entry(7, 2), entry(8, 2)]);
        s.append(&[entry(7, 3)]);
        assert_eq!(s.last_index().unwrap(), 7);
        assert_eq!(s.term(5).unwrap(), 2);
        assert_eq!(s.term(7).unwrap(), 3);
        assert_eq!(s.entry_bytes(), 20);
        assert!(s.term(4).is_err() && s.term(8).is_err());
        let got = s.entries(6, 8, None, GetEntriesContext::empty(false)).unwrap();
        assert_eq!(got.iter().map(|e| (e.index, e.term)).collect::<Vec<_>>(), vec![(6, 2), (7, 3)]);
        let one = s.entries(6, 8, 1, GetEntriesContext::empty(false)).unwrap();
        assert_eq!(one.len(), 1, "max_size still returns at least one entry");
    }

    #[test]
    fn compaction_keeps_the_term_before_the_first_entry_and_never_passes_the_snapshot() {
        let mut s = RegionStorage::new(HardState::default(), ConfState::default(), (0, 0), vec![]);
        s.append(&[entry(1, 1), entry(2, 1), entry(3, 2), entry(4, 2)]);
        assert!(s.snapshot(0, 1).is_err(), "no snapshot yet");
        assert!(s.take_snapshot_wanted() && !s.take_snapshot_wanted());
        s.set_snapshot(3, 2, ConfState { voters: vec![1], ..Default::default() });
        assert!(s.snapshot(0, 2).is_err() && s.take_snapshot_wanted(), "peer 2 is not in the snapshot's membership");
        s.compact_to(2);
        assert_eq!((s.first_index().unwrap(), s.term(2).unwrap(), s.entry_bytes()), (3, 1, 20));
        assert!(matches!(
            s.entries(2, 4, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        assert_eq!(s.snapshot(0, 1).unwrap().get_metadata().index, 3);
        let past = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| s.compact_to(4)));
        assert!(past.is_err(), "compacting past the durable snapshot is a bug");
        s.restore(9, 4, ConfState::default());
        assert_eq!((s.first_index().unwrap(), s.last_index().unwrap(), s.term(9).unwrap()), (10, 9, 4));
    }
}
