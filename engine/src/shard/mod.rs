//! A shard: the regions one core owns, driven in batched loop iterations,
//! sans-IO. One `step` is one loop iteration (docs/design.md, "The shard
//! loop"), for every region of the shard at once:
//!
//! 1. take the inputs: ticks, client requests, raft messages, finished persists;
//! 2. every region's writes of this iteration become **one** proposal;
//! 3. every region with a Ready: messages to the outboxes (a leader may
//!    replicate before its own fsync), committed entries applied, entries and
//!    HardState staged into the shard's one persist batch, persisted messages
//!    held until that batch is durable, `advance_append_async`;
//! 4. flush the outboxes (first flush point);
//! 5. once the batch before is on disk (`Written`), issue the staged batch
//!    (batch N+1 is written only after N; its record is what makes the WAL
//!    acknowledge N);
//! 6. on `Persisted` (durable, acknowledged): `on_persist_ready`, release
//!    the held messages, flush again (second flush point), and handle what
//!    that made ready.
//!
//! The logic lives in files by operation, as a peer's does in TiKV's
//! raftstore-v2 — find a behaviour by its path:
//!
//! | file | what |
//! |---|---|
//! | `step.rs` | one iteration: inputs dispatched, ticks, raft messages stepped |
//! | `admission.rs` | client requests checked and queued (store, region, key, epoch, limits) |
//! | `propose.rs` | a region's queued writes → one entry; reads → one ReadIndex |
//! | `ready.rs` | raft's Readies: messages out, entries and HardState staged |
//! | `persist.rs` | the persist batch: staged, issued, made durable, readies released |
//! | `apply.rs` | committed entries applied (epoch checked at apply time), reads served |
//! | `fence.rs` | a region whose committed entry does not decode, fenced on this replica |
//! | `catch_up.rs` | a replica whose WAL lost records: no vote, no campaign until a leader caught it up |
//! | `membership.rs` | region creation (bootstrap, recovery, a leader's message), conf changes, removal, tombstones |
//! | `removal.rs` | a removed peer goes only once a voter of the new configuration durably has the change |
//! | `stale.rs` | a peer no leader speaks to asks PD whether it is still a member |
//! | `vouched.rs` | a peer created for a vote request once PD names it (a split child no leader's message reaches) |
//! | `tombstone.rs` | what is kept of a removed peer, and when PD's word lets it go |
//! | `split.rs` | a region split in two: proposed, applied, the child created, recorded, trimmed |
//! | `snapshot.rs` | snapshots taken, sent, received and installed; which snapshot files may go |
//! | `boot.rs` | a shard built from its WAL (or its initial regions): the one boot path of both drivers |
//! | `recover.rs` | the regions a WAL holds, read back |
//!
//! The glommio runtime (`crate::runtime`) and the simulator (`crate::sim`)
//! are the shard's two drivers; `io.rs` is what passes between them and it.

mod admission;
mod apply;
pub mod boot;
mod catch_up;
mod fence;
pub mod io;
mod limits;
mod membership;
mod persist;
mod propose;
mod ready;
pub mod recover;
mod removal;
mod snapshot;
mod split;
mod stale;
mod step;
mod tombstone;
mod vouched;

use std::collections::{BTreeMap, BTreeSet};

use transport::{Outboxes, SeededRng};

use crate::error::RegionError;
use crate::kv::StateMachine as _;
use crate::region::meta::{PeerMeta, RegionMeta};
use crate::region::peer::{Region, ELECTION_TICKS};

pub use io::{Input, Output, Query, Response, SplitKeyJob, SplitRequest};
pub use limits::*;
use membership::is_healthy;
pub use membership::RegionInit;
use persist::{Awaiting, Staged};
pub use snapshot::regions_to_compact;
use snapshot::SnapshotFiles;
pub use split::{EARLY_VOTES_MAX, SPLIT_SNAPSHOT_HOLD_TICKS, SPLIT_TRIM_KEYS_PER_ITERATION};
pub use stale::STALE_PEER_CHECK_TICKS;
pub use tombstone::TOMBSTONE_GC_TICKS;

/// A leader's account of its region, for PD.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderReport {
    pub meta: RegionMeta,
    pub leader: PeerMeta,
    pub term: u64,
    pub approximate_bytes: u64,
    pub approximate_keys: u64,
    /// Entry bytes the leader's peer applied in its life (PD's write rate comes from its growth).
    pub applied_bytes_total: u64,
    /// Peers the leader has not heard from lately or does not replicate to yet.
    pub pending_peers: Vec<u64>,
}

pub struct Shard {
    pub store_id: u64,
    pub shard: u16,
    limits: ShardLimits,
    ticks: u64,
    /// Memory in use at the start of this iteration (logs and state machines).
    memory_bytes: usize,
    /// The WAL waits for disk space (`Input::DiskFull`).
    disk_full: bool,
    regions: BTreeMap<u64, Region>,
    outboxes: Outboxes,
    rng: SeededRng,
    /// The batch being staged (issued when none is in flight).
    staged: Staged,
    next_batch: u64,
    /// The batch issued whose writes are not on disk yet: the next waits.
    unwritten: Option<u64>,
    /// Every batch up to this one is durable (`Input::Persisted`).
    persisted_upto: u64,
    awaiting: std::collections::VecDeque<Awaiting>,
    next_read_ctx: u64,
    outputs: Vec<Output>,
    stats: ShardStats,
    /// Which snapshot files are being written, sent, installed, or may go.
    snapshot_files: SnapshotFiles,
    /// Regions removed from this shard, with the peer that was removed: a
    /// message to that peer id or an older one is a late one and must not
    /// recreate the region (peer ids are never reused). Collected once no
    /// member can send to them (`tombstone.rs`).
    tombstones: BTreeMap<u64, tombstone::Tombstone>,
    next_incarnation: u64,
    /// Every region's (term, vote) as the last persist batch recorded it in
    /// the vote table (`crate::votes`): a batch that changes one carries the
    /// table.
    votes: crate::votes::VoteTable,
    /// Regions an iteration must look at: those its inputs touched, those
    /// left with work by the last one, every region on a tick. The rest are
    /// not visited at all — with thousands of mostly idle regions, walking
    /// all of them every iteration was a large part of the loop's cost.
    dirty: BTreeSet<u64>,
    all_dirty: bool,
    /// The WAL's needs-catch-up flag is set and some region has not caught
    /// up yet (`catch_up.rs`).
    needs_catch_up: bool,
    /// Split children recovery found with a log but no meta: their initial
    /// state was not durable, and replaying their parent's split creates
    /// them again with this log and vote (`split.rs`).
    pending_children: BTreeMap<u64, crate::region::RegionStorage>,
    /// Vote requests for children this shard has not split off yet.
    early_votes: BTreeMap<u64, Vec<transport::Envelope>>,
    /// Vote requests for peers not here that PD is asked to vouch for, with
    /// the tick they were asked (`vouched.rs`).
    vouching: BTreeMap<u64, (transport::Envelope, u64)>,
    /// Regions whose state machines still hold a split's other side.
    untrimmed: BTreeSet<u64>,
    /// Split children whose first snapshot's record is staged, with the
    /// persist batch that carries it once issued.
    children_recording: BTreeMap<u64, (u64, Option<u64>)>,
    /// Regions created during this iteration (split children): the next walks them.
    created: Vec<u64>,
    /// A split applied where this shard leads: leader reports are due now.
    report_wanted: bool,
    /// Metas in issued persist batches, durable once they are (`removal.rs`).
    metas_issued: removal::MetasIssued,
}

impl Shard {
    /// An empty shard; regions come from `create_region` (bootstrap or
    /// recovery: `boot::boot` does both).
    pub fn new(store_id: u64, shard: u16, seed: u64, limits: ShardLimits) -> Shard {
        Shard {
            store_id,
            shard,
            limits,
            ticks: 0,
            memory_bytes: 0,
            disk_full: false,
            regions: BTreeMap::new(),
            outboxes: Outboxes::new(),
            rng: SeededRng::new(seed),
            staged: Staged::default(),
            next_batch: 1,
            unwritten: None,
            persisted_upto: 0,
            awaiting: Default::default(),
            next_read_ctx: 1,
            outputs: vec![],
            stats: ShardStats::default(),
            snapshot_files: SnapshotFiles::default(),
            tombstones: BTreeMap::new(),
            next_incarnation: 1,
            votes: Default::default(),
            dirty: BTreeSet::new(),
            all_dirty: false,
            needs_catch_up: false,
            pending_children: BTreeMap::new(),
            early_votes: BTreeMap::new(),
            vouching: BTreeMap::new(),
            untrimmed: BTreeSet::new(),
            children_recording: BTreeMap::new(),
            created: vec![],
            report_wanted: false,
            metas_issued: Default::default(),
        }
    }

    pub fn region(&self, id: u64) -> Option<&Region> {
        self.regions.get(&id)
    }

    pub fn regions(&self) -> impl Iterator<Item = &Region> {
        self.regions.values()
    }

    /// What this shard's leaders tell PD of their regions.
    pub fn leader_reports(&self) -> Vec<LeaderReport> {
        self.regions
            .values()
            // (a split child still campaigning where its parent led: reported
            // with it, so PD's routing has no gap between the halves)
            .filter(|r| r.is_leader() || (r.born_leading && r.raw.raft.leader_id == raft::INVALID_ID))
            // (PD's word removes peers: it must be a meta that is durable here, `removal.rs`)
            .filter(|r| r.conf_ver_durable >= r.meta.conf_ver)
            .map(|r| LeaderReport {
                meta: r.meta.clone(),
                leader: r.meta.peer(r.peer_id).copied().unwrap_or(PeerMeta::voter(
                    r.peer_id,
                    self.store_id,
                    self.shard,
                )),
                term: r.term(),
                approximate_bytes: r.kv.bytes() as u64,
                approximate_keys: r.kv.keys() as u64,
                applied_bytes_total: r.applied_bytes_total,
                pending_peers: r
                    .meta
                    .peers
                    .iter()
                    .map(|p| p.peer_id)
                    .filter(|id| !is_healthy(r, *id, self.ticks))
                    .collect(),
            })
            .collect()
    }

    /// Whether a split applied where this shard leads since the last call:
    /// the driver tells PD of both halves at once.
    pub fn take_report_wanted(&mut self) -> bool {
        std::mem::take(&mut self.report_wanted)
    }

    /// Changes the memory limit (an operator's flag; tests).
    pub fn set_memory_limit(&mut self, bytes: usize) {
        self.limits.memory_bytes_max = bytes;
    }

    /// Memory in use as of the last iteration (logs and state machines).
    pub fn memory_bytes(&self) -> usize {
        self.memory_bytes
    }

    pub fn stats(&self) -> &ShardStats {
        &self.stats
    }

    /// Whether some region has work for another `step` even without new input
    /// (the runtime steps again at once rather than waiting).
    pub fn has_ready(&self) -> bool {
        // (only a region the last iteration left dirty can have become ready
        // without input; split halves are trimmed a budget per iteration)
        !self.untrimmed.is_empty()
            || self.dirty.iter().any(|id| self.regions.get(id).is_some_and(|r| r.raw.has_ready()))
    }

    /// Whether nothing is in flight: no client work waiting, nothing staged
    /// or being persisted. A settled simulation must reach it (liveness).
    pub fn is_quiet(&self) -> bool {
        self.staged.is_empty()
            && self.persisted_upto + 1 == self.next_batch
            && self.awaiting.is_empty()
            && self.regions.values().all(|r| {
                r.pending_writes.is_empty()
                    && r.pending_reads.is_empty()
                    && r.proposals.is_empty()
                    && r.read_batches.is_empty()
                    && r.ready_reads.is_empty()
                    && r.snapshot_taking.is_none()
            })
    }

    /// What keeps the shard from being quiet (for a failing test's message).
    pub fn busy(&self) -> String {
        let mut out = format!(
            "staged {} unwritten {:?} persisted up to {} of {} awaiting {}",
            self.staged.len(),
            self.unwritten,
            self.persisted_upto,
            self.next_batch - 1,
            self.awaiting.len()
        );
        for r in self.regions.values() {
            let counts = [
                r.pending_writes.len(),
                r.pending_reads.len(),
                r.proposals.len(),
                r.read_batches.len(),
                r.ready_reads.len(),
                r.snapshot_taking.is_some() as usize,
            ];
            if counts.iter().any(|c| *c > 0) {
                out += &format!(
                    "; region {} (peer {}, leader {}, term {}, conf_ver {}): writes/reads/proposals/read batches/ready reads/snapshot {counts:?}",
                    r.id(),
                    r.peer_id,
                    r.is_leader(),
                    r.term(),
                    r.meta.conf_ver
                );
            }
        }
        out
    }

    /// Takes back the outputs of the last `step`, emptied by the caller, so
    /// the next step fills the same memory (thousands of replies an iteration
    /// would otherwise grow a fresh vector, page by page, every time).
    pub fn recycle_outputs(&mut self, mut outputs: Vec<Output>) {
        outputs.clear();
        if self.outputs.is_empty() && outputs.capacity() > self.outputs.capacity() {
            outputs.shrink_to(OUTPUTS_KEPT_MAX);
            self.outputs = outputs;
        }
    }

    /// Takes back buffers of frames the transport wrote: the next frames are
    /// built in them.
    pub fn recycle_frame_buffers(&mut self, buffers: Vec<Vec<u8>>) {
        buffers.into_iter().for_each(|b| self.outboxes.recycle(b));
    }

    /// Marks a region for this iteration's walk.
    fn touch(&mut self, region: u64) {
        self.dirty.insert(region);
    }

    /// The regions this iteration walks, in id order (deterministic).
    fn walk(&self) -> Vec<u64> {
        if self.all_dirty {
            self.regions.keys().copied().collect()
        } else {
            self.dirty.iter().copied().filter(|id| self.regions.contains_key(id)).collect()
        }
    }

    fn reply(&mut self, request: u64, mut result: Result<Response, RegionError>) {
        if let Err(RegionError::EpochNotMatch { current, split_off }) = &mut result {
            if split_off.is_empty() {
                *split_off = self.split_off(current.id);
            }
        }
        self.outputs.push(Output::Reply { request, result });
    }
}

/// Takes a region's client work out of it, for a region that will serve it
/// no more (removed, fenced): the requests queued (never proposed, so
/// definitely not applied) and those of its proposals (they may still
/// commit elsewhere: their outcome is unknown).
fn take_client_work(r: &mut Region) -> (Vec<u64>, Vec<u64>) {
    let mut queued: Vec<u64> = std::mem::take(&mut r.pending_writes).into_iter().map(|(q, _)| q).collect();
    r.pending_write_bytes = 0;
    queued.extend(std::mem::take(&mut r.pending_reads).into_iter().map(|(q, _)| q));
    queued.extend(std::mem::take(&mut r.read_batches).into_values().flat_map(|b| b.reads.into_iter().map(|(q, _)| q)));
    r.ready_reads.clear();
    let proposed = std::mem::take(&mut r.proposals).into_values().flat_map(|p| p.requests).collect();
    (queued, proposed)
}

impl Shard {
    /// Answers the client work taken out of region `id` (`take_client_work`):
    /// the queued requests with `not_here`, the proposed ones as ambiguous.
    fn answer_client_work(&mut self, id: u64, (queued, proposed): (Vec<u64>, Vec<u64>), not_here: RegionError) {
        for q in queued {
            self.reply(q, Err(not_here.clone()));
        }
        for q in proposed {
            self.reply(q, Err(RegionError::Ambiguous { region: id }));
        }
    }
}

/// Sets a region's election timeout from the shard's seeded RNG. raft-rs
/// draws a new one from `thread_rng` whenever it resets (a new term, a role
/// change, an election timeout passing): replacing it keeps a simulation's
/// seed replaying exactly. The range stays raft's [election, 2·election):
/// equal timeouts on every peer could split votes forever.
fn redraw_election_timeout(rng: &mut SeededRng, r: &mut Region) {
    let t = rng.between(ELECTION_TICKS as u64, 2 * ELECTION_TICKS as u64 - 1) as usize;
    r.raw.raft.set_randomized_election_timeout(t);
}
