//! Fencing a region on this replica. A committed entry that this replica
//! cannot decode — a bug, or bytes damaged in memory after their checksums
//! were verified — must neither stop the store (every other region on it
//! keeps serving; a panic would repeat at every restart) nor be skipped
//! (this replica's state would silently part from its peers'). So the region
//! is fenced here: it applies nothing more, steps down, never campaigns and
//! takes part in no raft exchange (to its peers it is a replica that is
//! down, which raft tolerates), refuses clients, takes no snapshot, and
//! reports itself (an error in the log, the `ringraft_regions_fenced`
//! metric). Nothing about it is written: a restart replays the same entry
//! and fences the region again. A fenced replica is rebuilt by replacing it
//! (PD, or `ringraft ctl remove-peer` then `add-peer`).

use crate::error::RegionError;

use super::{take_client_work, Shard};

impl Shard {
    /// Fences region `id` on this replica: its committed entry `index`
    /// could not be applied (`why`).
    pub(super) fn fence(&mut self, id: u64, index: u64, why: String) {
        let r = self.regions.get_mut(&id).expect("fencing a hosted region");
        tracing::error!(
            region = id,
            peer = r.peer_id,
            index,
            "committed entry does not decode: {why}; region fenced on this replica (it applies, votes and serves \
             nothing more; replace this replica)"
        );
        r.fenced = Some(format!("committed entry {index} does not decode: {why}"));
        if r.is_leader() {
            let term = r.raw.raft.term;
            r.raw.raft.become_follower(term, raft::INVALID_ID);
        }
        let work = take_client_work(r);
        self.answer_client_work(id, work, RegionError::NotLeader { region: id, leader: None });
    }

    /// The regions fenced on this shard.
    pub fn fenced_regions(&self) -> Vec<u64> {
        self.regions.values().filter(|r| r.fenced.is_some()).map(|r| r.id()).collect()
    }

    /// Proposes `data` as it is into region `id`'s log, if this peer leads
    /// it — an entry no client could write. For tests of fencing only.
    #[doc(hidden)]
    pub fn propose_raw_for_tests(&mut self, id: u64, data: Vec<u8>) -> bool {
        let Some(r) = self.regions.get_mut(&id).filter(|r| r.is_leader()) else { return false };
        self.dirty.insert(id);
        r.raw.propose(vec![], data).is_ok()
    }
}
