//! State-machine snapshots: what one is ([`RegionSnapshot`]), its file
//! format ([`format`]), where its files live ([`files`]) and the seam
//! through which the shard's drivers keep them ([`store`]).
//!
//! A region snapshots itself when the log applied since its last snapshot
//! outgrows a fraction of its state (or the WAL's purge names it as pinning
//! old segments): the shard clones the state machine in O(1) inside its
//! loop, the runtime writes the clone on a blocking thread (file fdatasynced,
//! renamed, directory fsynced), and only then does the shard record the
//! snapshot in the WAL and compact the log up to it. A leader sends the
//! latest snapshot file to a follower whose next entry was compacted away;
//! the follower installs it before the WAL records it. A restart loads the
//! recorded snapshot and replays the WAL after it.

pub mod files;
pub mod format;
pub mod store;

pub use store::SnapshotStore;

use bincode::{Decode, Encode};

use crate::kv::MemKv;
use crate::region::meta::RegionMeta;

/// A region's state machine as of log entry (`index`, `term`), with the
/// membership and meta it had then.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegionSnapshot {
    pub meta: RegionMeta,
    pub index: u64,
    pub term: u64,
    pub conf_state: SnapshotConf,
    pub kv: MemKv,
}

/// raft's ConfState as a snapshot records it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
pub struct SnapshotConf {
    pub voters: Vec<u64>,
    pub learners: Vec<u64>,
    pub voters_outgoing: Vec<u64>,
    pub learners_next: Vec<u64>,
    pub auto_leave: bool,
}

impl SnapshotConf {
    pub fn from_raft(cs: &raft::eraftpb::ConfState) -> SnapshotConf {
        SnapshotConf {
            voters: cs.voters.clone(),
            learners: cs.learners.clone(),
            voters_outgoing: cs.voters_outgoing.clone(),
            learners_next: cs.learners_next.clone(),
            auto_leave: cs.auto_leave,
        }
    }

    pub fn to_raft(&self) -> raft::eraftpb::ConfState {
        raft::eraftpb::ConfState {
            voters: self.voters.clone(),
            learners: self.learners.clone(),
            voters_outgoing: self.voters_outgoing.clone(),
            learners_next: self.learners_next.clone(),
            auto_leave: self.auto_leave,
            ..Default::default()
        }
    }
}

/// Names one snapshot of one region (its file is named after it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnapshotId {
    pub region: u64,
    pub index: u64,
    pub term: u64,
}

impl RegionSnapshot {
    pub fn id(&self) -> SnapshotId {
        SnapshotId { region: self.meta.id, index: self.index, term: self.term }
    }

    /// The snapshot as its file holds it: only its region's range (a split
    /// half's map may still hold the other half's keys). O(rows): for the
    /// simulator, whose files are these values.
    pub fn as_filed(self) -> RegionSnapshot {
        let (start, end) = (&self.meta.start_key, &self.meta.end_key);
        use crate::kv::StateMachine as _;
        let kv = crate::kv::MemKv::from_rows(self.kv.rows_in(start, end).map(|(k, v)| (k, v.to_vec())));
        RegionSnapshot { kv, ..self }
    }
}
