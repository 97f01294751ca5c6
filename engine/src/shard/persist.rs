//! The persist batch: every region write of the shard (entries, HardState,
//! meta, snapshot markers, tombstones) is staged into one batch, issued as
//! `Output::Persist` once the batch before is on disk (`Input::Written`) —
//! one WAL write and one fdatasync for every region of the core — and a
//! ready counts as persisted once its batch is durable, acknowledged by the
//! WAL (`Input::Persisted`): then raft hears of it
//! (`on_persist_ready`) and the messages it held (votes, append answers)
//! leave, at the loop's second flush point.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;

use raft::eraftpb;

use crate::region::peer::Region;
use crate::region::wal_convert::hard_state_to_wal;
use crate::snapshot::SnapshotId;

use super::apply::advance_raft_applied;
use super::{Output, Shard, ENTRY_OVERHEAD_BYTES};

/// The region writes of the next persist batch, and the bytes they count
/// against `STAGED_BYTES_MAX`.
#[derive(Default)]
pub(super) struct Staged {
    writes: Vec<(u64, wal::RegionWrite)>,
    bytes: usize,
}

impl Staged {
    /// Adds a region's write to the batch (after the region's earlier ones:
    /// a region's writes reach the WAL in the order they were staged).
    pub(super) fn push(&mut self, region: u64, write: wal::RegionWrite) {
        self.bytes += staged_size(&write);
        self.writes.push((region, write));
    }

    pub(super) fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    pub(super) fn len(&self) -> usize {
        self.writes.len()
    }

    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    fn take(&mut self) -> Vec<(u64, wal::RegionWrite)> {
        self.bytes = 0;
        std::mem::take(&mut self.writes)
    }

    /// Takes region `region`'s writes, leaving the others staged.
    fn take_region(&mut self, region: u64) -> Vec<(u64, wal::RegionWrite)> {
        let (mine, rest): (Vec<_>, Vec<_>) = self.take().into_iter().partition(|(r, _)| *r == region);
        rest.into_iter().for_each(|(r, w)| self.push(r, w));
        mine
    }

    fn regions(&self) -> BTreeSet<u64> {
        self.writes.iter().map(|(r, _)| *r).collect()
    }
}

/// Bytes a staged region write counts against `STAGED_BYTES_MAX`.
fn staged_size(w: &wal::RegionWrite) -> usize {
    w.entries.iter().map(|e| e.data.len() + ENTRY_OVERHEAD_BYTES).sum::<usize>() + 64
}

/// Puts the region's HardState into `w` if it moved since it was last
/// staged (a HardState `w` carries already — a snapshot's — keeps the
/// higher commit index).
///
/// A ready whose HardState moved only by its commit index stages nothing
/// (raft-rs: no `must_sync`; etcd and TiKV do the same): a commit index
/// that lags on disk only means a restart replays less and learns the rest
/// from its leader, and a follower's answer to a commit-only append (or a
/// heartbeat) then leaves without waiting for an fdatasync. Before this, at
/// one write in flight each write cost every store a second batch — write,
/// fdatasync and seal — for its commit index alone. The HardState rides on
/// the region's next write: its next entries, snapshot, term or vote, and
/// any meta a committed entry's apply stages (a membership change or a
/// split: a restart must replay the entry that wrote it, `removal.rs` and
/// `split.rs` rely on that), or its own removal's (which stages no meta:
/// a restart applies the removal again and waits, as before it).
pub(super) fn stage_hard_state(r: &mut Region, w: &mut wal::RegionWrite) {
    if !std::mem::take(&mut r.hard_state_unstaged) {
        return;
    }
    let hs = hard_state_to_wal(r.raw.store().hard_state());
    let commit = w.hard_state.as_ref().map_or(0, |staged| staged.commit);
    w.hard_state = Some(wal::HardState { commit: hs.commit.max(commit), ..hs });
}

/// A ready whose durability rides on persist batch `batch`.
pub(super) struct Awaiting {
    batch: u64,
    region: u64,
    incarnation: u64,
    number: u64,
    /// Its `persisted_messages`, sent once the batch is durable.
    messages: Vec<eraftpb::Message>,
}

impl Shard {
    /// Stages a ready's writes; the ready is persisted once they are durable
    /// — or at once, with its held messages sent, when it has none and
    /// nothing earlier of its region is waiting for a disk.
    pub(super) fn persist_ready(
        &mut self,
        id: u64,
        writes: Vec<wal::RegionWrite>,
        number: u64,
        messages: Vec<eraftpb::Message>,
    ) {
        // a ready is durable once its own writes are, and (raft acknowledges
        // readies in order) once every earlier ready of the region is
        let has_writes = writes.iter().any(|w| !w.is_empty());
        for w in writes.into_iter().filter(|w| !w.is_empty()) {
            self.staged.push(id, w);
        }
        let r = self.regions.get_mut(&id).expect("listed");
        let batch = if has_writes {
            Some(self.next_batch)
        } else if r.readies_awaiting > 0 {
            Some(if self.staged.is_empty() {
                // (the newest batch issued: its region's earlier ready rides on it or before)
                assert!(self.next_batch - 1 > self.persisted_upto, "an awaited ready rides on a batch");
                self.next_batch - 1
            } else {
                self.next_batch
            })
        } else {
            None
        };
        match batch {
            Some(batch) => {
                r.readies_awaiting += 1;
                self.awaiting.push_back(Awaiting { batch, region: id, incarnation: r.incarnation, number, messages })
            }
            None => {
                // nothing of this region is waiting for a disk: persisted at once
                r.raw.on_persist_ready(number);
                self.send(id, messages);
            }
        }
    }

    /// Persist batch `batch`'s writes are on disk (and every earlier
    /// batch's): the next batch may be issued.
    pub(super) fn on_written(&mut self, batch: u64) {
        if self.unwritten.is_some_and(|b| b <= batch) {
            self.unwritten = None;
        }
    }

    /// Persist batch `batch` is durable: its readies (and every earlier
    /// one) are persisted, their held messages leave, and the snapshot
    /// files it made obsolete may go.
    pub(super) fn on_persisted(&mut self, batch: u64) {
        // (in staging order, which is each region's order; without batching a
        // later batch can come first in the queue)
        let (done, waiting): (VecDeque<_>, VecDeque<_>) =
            std::mem::take(&mut self.awaiting).into_iter().partition(|a| a.batch <= batch);
        self.awaiting = waiting;
        for a in done {
            // (durable now: raft may commit, apply and send — this iteration walks it)
            self.dirty.insert(a.region);
            let Some(r) = self.regions.get_mut(&a.region).filter(|r| r.incarnation == a.incarnation) else {
                continue; // removed since: its messages no longer matter
            };
            r.readies_awaiting -= 1;
            r.raw.on_persist_ready(a.number);
            // an installed snapshot counts as applied for raft once it is durable
            advance_raft_applied(r);
            self.send(a.region, a.messages);
            self.check_caught_up(a.region);
        }
        // (a suspect region removed meanwhile no longer holds the flag)
        self.end_catch_up_if_done();
        self.children_recorded(batch);
        self.metas_persisted(batch);
        // the batch recorded newer snapshots: the files they replaced can go
        let removable = self.snapshot_files.persisted(batch);
        self.outputs.extend(removable.into_iter().map(Output::RemoveSnapshot));
        // second flush point: votes and append responses leave as soon as they are durable
        self.flush_outboxes();
    }

    /// Issues the staged batch, unless the one before is not on disk yet
    /// (batch N+1 is written only after N is: a crash can only tear the
    /// tail). It need not wait for N to be acknowledged: N+1's record is
    /// what acknowledges N, so the WAL writes no seal between busy batches.
    pub(super) fn issue_persist(&mut self) {
        if self.unwritten.is_some() || self.staged.is_empty() {
            return;
        }
        let batch = self.next_batch;
        self.next_batch += 1;
        self.unwritten = Some(batch);
        let (writes, installs) = if self.limits.batching {
            (self.staged.take(), self.snapshot_files.take_installs())
        } else {
            self.take_one_region(batch)
        };
        self.stats.persist_batches += 1;
        self.stats.region_writes_persisted += writes.len() as u64;
        self.stats.regions_persisted += writes.iter().map(|(r, _)| *r).collect::<BTreeSet<_>>().len() as u64;
        let votes = self.votes_changed_by(&writes);
        self.note_recording_issued(batch, &writes);
        self.note_metas_issued(batch, &writes);
        self.outputs.push(Output::Persist { batch, writes, installs, votes });
    }

    /// The vote table to make durable with `writes`, if they change a
    /// region's (term, vote) (a commit index moving does not), or remove a
    /// region (its tombstone).
    fn votes_changed_by(&mut self, writes: &[(u64, wal::RegionWrite)]) -> Option<crate::votes::VoteTable> {
        let mut changed = false;
        for (region, w) in writes {
            if w.tombstone {
                changed |= self.votes.votes.remove(region).is_some();
            } else if let Some(hs) = &w.hard_state {
                changed |= self.votes.votes.insert(*region, (hs.term, hs.vote)) != Some((hs.term, hs.vote));
            }
        }
        changed.then(|| {
            self.votes.generation += 1;
            self.votes.clone()
        })
    }

    /// The vote table as boot found it: every region's (term, vote) now, at
    /// the generation of the newest table written (later ones count on).
    /// A region the table has and the WAL lost entirely (neither hosted nor
    /// a tombstone: its records were dropped) keeps its entry: a peer of it
    /// created later starts suspect at that term (`catch_up.rs`).
    pub fn init_votes(&mut self, recorded: &crate::votes::VoteTable) {
        let mut votes: BTreeMap<u64, (u64, u64)> = recorded
            .votes
            .iter()
            .filter(|(id, _)| !self.tombstones.contains_key(id))
            .map(|(&id, &v)| (id, v))
            .collect();
        for r in self.regions.values() {
            let hs = r.raw.store().hard_state();
            votes.insert(r.id(), (hs.term, hs.vote));
        }
        self.votes = crate::votes::VoteTable { generation: recorded.generation, votes };
    }

    /// Without batching: batch `batch` carries one region's staged writes;
    /// what else was staged for it (readies, replaced snapshot files) moves
    /// to the next batch, so nothing counts as durable before its write is.
    #[allow(clippy::type_complexity)]
    fn take_one_region(&mut self, batch: u64) -> (Vec<(u64, wal::RegionWrite)>, Vec<(PathBuf, SnapshotId)>) {
        let mine = self.staged.take_region(self.staged.writes[0].0);
        let region = mine[0].0;
        let installs = self.snapshot_files.take_installs_of(region);
        // (a region with nothing left staged rode on writes already issued: it stays)
        let later = self.staged.regions();
        for a in self.awaiting.iter_mut().filter(|a| a.batch == batch && later.contains(&a.region)) {
            a.batch = batch + 1;
        }
        self.snapshot_files.defer_obsolete(batch, &later);
        (mine, installs)
    }
}
