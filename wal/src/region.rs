//! One region's view of the log: its state (HardState, ConfState, meta,
//! snapshot marker, tombstone, log bounds) and the index of its live entries.
//!
//! The same rules apply a write whether it arrives live (`Wal::append`) or is
//! replayed from disk (recovery), so they live here once.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::format::{RegionCheckpoint, SectionHead};
use crate::{ConfState, HardState, RegionId, RegionWrite, SnapshotMarker, Ticket};

/// `seq` of an entry that is staged but not yet placed in a segment.
pub(crate) const NOT_WRITTEN: u64 = u64::MAX;

/// Where an entry's data lives and what it looked like when written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexEntry {
    pub term: u64,
    /// Ticket of the write that staged it (0 for entries found by recovery).
    pub ticket: Ticket,
    /// Segment holding the data, or `NOT_WRITTEN`.
    pub seq: u64,
    /// Offset of the data in the segment.
    pub offset: u32,
    pub len: u32,
    /// CRC32C of the data, checked again after every read from disk.
    pub crc: u32,
    pub entry_type: u8,
}

/// Why a write does not fit a region's log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    #[error("region {region}: entries start at {first} but the log ends at {last} (gap)")]
    Gap { region: RegionId, first: u64, last: u64 },
    #[error("region {region}: entries start at {first}, below the first index {first_index} (would overwrite compacted entries)")]
    BelowFirst { region: RegionId, first: u64, first_index: u64 },
    #[error("region {region}: compact_to({to}) is past the log's end {last}")]
    CompactPastEnd { region: RegionId, to: u64, last: u64 },
    #[error("region {region}: entries are not consecutive at index {index}")]
    NotConsecutive { region: RegionId, index: u64 },
    #[error("region {region}: only a removed region (a tombstone) is forgotten, and alone in its write")]
    Forget { region: RegionId },
}

#[derive(Debug, Default)]
pub(crate) struct RegionLog {
    /// Latest state, including writes staged but not yet written.
    pub state: RegionCheckpoint,
    /// State as far as it has been encoded into records; checkpoints use it,
    /// so a checkpoint never runs ahead of the records before it.
    pub written: RegionCheckpoint,
    /// Index of the live entries `[state.first_index, last]`.
    pub entries: VecDeque<IndexEntry>,
    /// Data of the newest `cache.len()` entries.
    pub cache: VecDeque<Bytes>,
    /// Sum of the cached data's lengths.
    pub cache_bytes: usize,
    /// Oldest segment still needed by writes the index already forgot (a
    /// compaction, snapshot or tombstone staged but not yet encoded).
    pub extra_pin: u64,
    /// Floor-raising writes staged but not yet encoded.
    pub pending_floor_writes: u32,
}

impl RegionLog {
    pub fn new(region: RegionId) -> Self {
        let cp = RegionCheckpoint { region, first_index: 1, ..Default::default() };
        RegionLog { state: cp.clone(), written: cp, extra_pin: NOT_WRITTEN, ..Default::default() }
    }

    pub fn first_index(&self) -> u64 {
        self.state.first_index
    }

    pub fn last_index(&self) -> u64 {
        self.state.first_index + self.entries.len() as u64 - 1
    }

    /// First index whose data is held in memory.
    pub fn cache_first(&self) -> u64 {
        self.last_index() + 1 - self.cache.len() as u64
    }

    /// Term of entry `i`, for every `i` in `[first_index - 1, last_index]`.
    pub fn term(&self, i: u64) -> Option<u64> {
        if i + 1 == self.state.first_index {
            return Some(self.state.prev_term);
        }
        let pos = i.checked_sub(self.state.first_index)?;
        self.entries.get(pos as usize).map(|e| e.term)
    }

    pub fn get(&self, i: u64) -> Option<&IndexEntry> {
        let pos = i.checked_sub(self.state.first_index)?;
        self.entries.get(pos as usize)
    }

    /// Segment of the first live entry (for purge), `NOT_WRITTEN` if none is on disk.
    pub fn pin(&self) -> u64 {
        let first = self.entries.front().map_or(NOT_WRITTEN, |e| e.seq);
        first.min(self.extra_pin)
    }

    /// Checks that `write` fits this log, without changing anything.
    pub fn check(&self, region: RegionId, write: &RegionWrite) -> Result<(), LogError> {
        if write.forget && (!self.state.tombstone || *write != RegionWrite { forget: true, ..Default::default() }) {
            return Err(LogError::Forget { region });
        }
        let (first_index, last) = match write.snapshot {
            Some(s) => (s.index + 1, s.index),
            None => (self.first_index(), self.last_index()),
        };
        let mut last_after = last;
        if let Some(first) = write.entries.first() {
            if first.index < first_index {
                return Err(LogError::BelowFirst { region, first: first.index, first_index });
            }
            if first.index > last + 1 {
                return Err(LogError::Gap { region, first: first.index, last });
            }
            for (k, e) in write.entries.iter().enumerate() {
                if e.index != first.index + k as u64 {
                    return Err(LogError::NotConsecutive { region, index: e.index });
                }
            }
            last_after = first.index + write.entries.len() as u64 - 1;
        }
        if let Some(to) = write.compact_to {
            if to > last_after + 1 {
                return Err(LogError::CompactPastEnd { region, to, last: last_after });
            }
        }
        Ok(())
    }

    /// Replaces the log from `first` on with `n` entries made by `make(k)`.
    /// The caller has checked the write (`check`) or is replaying disk.
    pub fn put_entries(&mut self, first: u64, n: usize, mut make: impl FnMut(usize) -> IndexEntry) {
        let keep = (first - self.state.first_index) as usize;
        // the cache is a suffix of the entries: keep the part below `first`
        let (len, cached) = (self.entries.len(), self.cache.len());
        let cache_keep = keep.saturating_sub(len - cached).min(cached);
        for d in self.cache.drain(cache_keep..) {
            self.cache_bytes -= d.len();
        }
        self.entries.truncate(keep);
        for k in 0..n {
            self.entries.push_back(make(k));
        }
    }

    /// Drops entries below `to` (a no-op when already compacted past it).
    pub fn compact(&mut self, to: u64, prev_term: u64) {
        if to <= self.state.first_index {
            return;
        }
        let drop = (to - self.state.first_index) as usize;
        let cached_from = self.entries.len() - self.cache.len();
        if drop > cached_from {
            let n = (drop - cached_from).min(self.cache.len());
            for d in self.cache.drain(..n) {
                self.cache_bytes -= d.len();
            }
        }
        self.entries.drain(..drop.min(self.entries.len()));
        self.state.first_index = to;
        self.state.prev_term = prev_term;
    }

    /// Resets the log to start after a snapshot.
    pub fn reset_to_snapshot(&mut self, index: u64, term: u64) {
        self.drop_log();
        self.state.first_index = index + 1;
        self.state.prev_term = term;
    }

    pub fn drop_log(&mut self) {
        self.entries.clear();
        self.cache.clear();
        self.cache_bytes = 0;
    }

    pub fn drop_log_if(&mut self, cond: bool) {
        if cond {
            self.drop_log();
        }
    }

    pub fn cache_push(&mut self, data: Bytes) {
        self.cache_bytes += data.len();
        self.cache.push_back(data);
    }

    pub fn cache_pop_front(&mut self) {
        if let Some(d) = self.cache.pop_front() {
            self.cache_bytes -= d.len();
        }
    }
}

/// The non-entry parts of a write, borrowed: from a live `RegionWrite` or
/// from a decoded section.
#[derive(Clone, Copy)]
pub(crate) struct Head<'a> {
    pub snapshot: Option<SnapshotMarker>,
    /// (new first index, term of the entry before it)
    pub compact: Option<(u64, u64)>,
    pub hard_state: Option<HardState>,
    pub conf_state: Option<&'a ConfState>,
    pub meta: Option<&'a Bytes>,
    pub tombstone: bool,
    pub forget: bool,
}

impl<'a> Head<'a> {
    /// A live write's head, with the term the log looked up for `compact_to`.
    pub fn of_write(write: &'a RegionWrite, compact_prev_term: u64) -> Self {
        Head {
            snapshot: write.snapshot,
            compact: write.compact_to.map(|to| (to, compact_prev_term)),
            hard_state: write.hard_state,
            conf_state: write.conf_state.as_ref(),
            meta: write.meta.as_ref(),
            tombstone: write.tombstone,
            forget: write.forget,
        }
    }

    pub fn of_section(head: &'a SectionHead) -> Self {
        Head {
            snapshot: head.snapshot,
            compact: head.compact,
            hard_state: head.hard_state,
            conf_state: head.conf_state.as_ref(),
            meta: head.meta.as_ref(),
            tombstone: head.tombstone,
            forget: head.forget,
        }
    }
}

/// Applies the non-entry parts of a write to a region's recorded state.
/// `has_entries` revives a tombstoned region; `forget` leaves the state of
/// a region never written.
pub(crate) fn apply_head(cp: &mut RegionCheckpoint, head: Head<'_>, has_entries: bool) {
    if head.forget {
        *cp = RegionCheckpoint { region: cp.region, first_index: 1, ..Default::default() };
        return;
    }
    if let Some(s) = head.snapshot {
        cp.snapshot = Some(s);
        cp.first_index = s.index + 1;
        cp.prev_term = s.term;
    }
    if let Some((to, prev_term)) = head.compact {
        if to > cp.first_index {
            cp.first_index = to;
            cp.prev_term = prev_term;
        }
    }
    if let Some(hs) = head.hard_state {
        cp.hard_state = Some(hs);
    }
    if let Some(cs) = head.conf_state {
        cp.conf_state = Some(cs.clone());
    }
    if let Some(m) = head.meta {
        cp.meta = Some(m.clone());
    }
    if head.snapshot.is_some() || has_entries || head.hard_state.is_some() {
        cp.tombstone = false;
    }
    if head.tombstone {
        cp.tombstone = true;
    }
}

/// Whether a write raises the region's floor (the index forgets entries that
/// the records on disk still hold until the write itself is encoded).
pub(crate) fn raises_floor(write: &RegionWrite) -> bool {
    write.snapshot.is_some() || write.compact_to.is_some() || write.tombstone
}
