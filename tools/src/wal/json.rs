//! JSON shapes of `wal` values that several commands print.
//!
//! The `wal` crate stays free of serde; these mirrors fix the field names
//! scripts rely on (snake_case, stable across releases), and their
//! `Display` is the text form, so text and JSON say the same thing.

use std::fmt;

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct HardState {
    pub term: u64,
    pub vote: u64,
    pub commit: u64,
}

impl From<wal::HardState> for HardState {
    fn from(h: wal::HardState) -> Self {
        HardState { term: h.term, vote: h.vote, commit: h.commit }
    }
}

impl fmt::Display for HardState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "term={} vote={} commit={}", self.term, self.vote, self.commit)
    }
}

/// A bad record at the very end of the log: a write that never completed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TornTail {
    pub segment: u64,
    pub offset: u64,
    pub reason: String,
}

impl From<&wal::recovery::TornTail> for TornTail {
    fn from(t: &wal::recovery::TornTail) -> Self {
        TornTail { segment: t.seq, offset: t.offset, reason: t.reason.clone() }
    }
}

impl fmt::Display for TornTail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "torn tail at segment {:016x} offset {} ({}): a write that never completed; the log cuts it off when next opened",
            self.segment, self.offset, self.reason
        )
    }
}

/// Bytes a tolerant recovery skipped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Dropped {
    pub segment: u64,
    pub offset: u64,
    pub bytes: u64,
    pub reason: String,
}

impl From<&wal::recovery::Dropped> for Dropped {
    fn from(d: &wal::recovery::Dropped) -> Self {
        Dropped { segment: d.seq, offset: d.offset, bytes: d.bytes, reason: d.reason.clone() }
    }
}

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "DROPPED {} bytes at segment {:016x} offset {} ({})",
            self.bytes, self.segment, self.offset, self.reason
        )
    }
}

/// Name of a raft-rs entry type byte.
pub fn entry_type_name(t: u8) -> &'static str {
    match t {
        0 => "normal",
        1 => "conf_change",
        2 => "conf_change_v2",
        _ => "unknown",
    }
}

/// Membership of a region as raft sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ConfState {
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    pub voters_outgoing: Vec<u64>,
    pub learners_next: Vec<u64>,
    pub auto_leave: bool,
}

impl From<&wal::ConfState> for ConfState {
    fn from(c: &wal::ConfState) -> Self {
        ConfState {
            voters: c.voters.clone(),
            learners: c.learners.clone(),
            voters_outgoing: c.voters_outgoing.clone(),
            learners_next: c.learners_next.clone(),
            auto_leave: c.auto_leave,
        }
    }
}

impl fmt::Display for ConfState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids = |l: &[u64]| l.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
        write!(f, "voters:[{}]", ids(&self.voters))?;
        for (name, list) in [
            ("learners", &self.learners),
            ("voters_outgoing", &self.voters_outgoing),
            ("learners_next", &self.learners_next),
        ] {
            if !list.is_empty() {
                write!(f, ",{name}:[{}]", ids(list))?;
            }
        }
        if self.auto_leave {
            write!(f, ",auto_leave")?;
        }
        Ok(())
    }
}

/// The snapshot a region's log starts after.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    pub index: u64,
    pub term: u64,
}

impl From<wal::SnapshotMarker> for Snapshot {
    fn from(s: wal::SnapshotMarker) -> Self {
        Snapshot { index: s.index, term: s.term }
    }
}
