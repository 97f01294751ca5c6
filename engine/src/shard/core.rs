//! The shard's logic, sans-IO: one `step` is one loop iteration of
//! DESIGN.md §3, for every region of the shard at once.
//!
//! 1. take the inputs: ticks, client requests, raft messages, finished persists;
//! 2. every region's writes of this iteration become **one** proposal;
//! 3. every region with a Ready: messages to the outboxes (a leader may
//!    replicate before its own fsync), committed entries applied, entries and
//!    HardState staged into the shard's one persist batch, persisted messages
//!    held until that batch is durable, `advance_append_async`;
//! 4. flush the outboxes (first flush point);
//! 5. if no persist is in flight, issue the staged batch (at most one in
//!    flight: batch N+1 is written only after N is durable);
//! 6. on `Persisted`: `on_persist_ready`, release the held messages, flush
//!    again (second flush point), and handle what that made ready.
//!
//! Snapshots (see the `snapshot` module): a region whose applied log
//! outgrew a fraction of its state asks for its state machine to be written
//! (`Output::WriteSnapshot`, an O(1) clone); once the file is durable
//! (`Input::SnapshotWritten`) the WAL records it and the log is compacted up
//! to it. A `MsgSnapshot` raft sends becomes `Output::SendSnapshot` (the
//! file goes on the transport's snapshot stream); a received one
//! (`Input::Snapshot`, already read and checked) is installed when raft
//! takes it, its file moved into place before the batch that records it.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;

use protobuf::Message as _;
use raft::eraftpb::{self, EntryType, MessageType};
use transport::{Destination, Envelope, Outboxes, Peer, SeededRng, Target};

use crate::error::RegionError;
use crate::kv::{Applied, Command, MemKv, StateMachine, WriteBatch, WriteBatchRef, ENTRY_BYTES_MAX};
use crate::region::meta::PEERS_MAX;
use crate::region::meta::{PeerChange, PeerMeta, RegionLocalState, RegionMeta};
use crate::region::peer::{Proposal, ReadBatch, Region, ELECTION_TICKS, PENDING_WRITES_MAX, PROPOSALS_MAX};
use crate::region::wal_convert::{conf_state_to_wal, entry_to_wal, hard_state_to_wal};
use crate::region::RegionStorage;
use crate::shard::io::{Input, Output, Query, Response};
use crate::snapshot::{RegionSnapshot, SnapshotConf, SnapshotId};

/// How long a client should wait before retrying a busy region.
const BUSY_BACKOFF_MS: u64 = 10;
/// Bytes staged for the next persist batch past which client writes are
/// refused (ServerIsBusy) until the disk catches up.
pub const STAGED_BYTES_MAX: usize = 64 << 20;
/// Outputs' capacity a shard keeps between iterations (`recycle_outputs`).
const OUTPUTS_KEPT_MAX: usize = 64 << 10;
/// Ticks a ReadIndex may stay unanswered before its reads are failed (the
/// leader may have lost its lease of the term without noticing yet).
pub const READ_TIMEOUT_TICKS: u64 = 2 * ELECTION_TICKS as u64;
pub use crate::client::protocol::SCAN_ROWS_MAX;
/// Default memory limit of one shard.
pub const MEMORY_BYTES_DEFAULT: usize = 4 << 30;
/// Bytes a WAL record needs beyond a region write's entry data (record and
/// section headers, per-entry headers are counted per entry).
const RECORD_OVERHEAD_BYTES: usize = 4096;
const ENTRY_OVERHEAD_BYTES: usize = 32;
/// A region snapshots once the entries it applied since its last snapshot
/// reach this many bytes and 1/SNAPSHOT_STATE_DIVISOR of its state's size
/// (small regions do not snapshot on every write; large ones not too often).
pub const SNAPSHOT_LOG_BYTES_MIN_DEFAULT: usize = 4 << 20;
pub const SNAPSHOT_STATE_DIVISOR: usize = 2;
/// Snapshots one shard writes at a time (the others wait for a later iteration).
pub const SNAPSHOT_WRITES_IN_FLIGHT_MAX: usize = 2;
/// Entries a leader keeps below its snapshot for followers that are only a
/// little behind (so they get appends, not a whole snapshot).
pub const COMPACT_LAG_ENTRIES_MAX: u64 = 1024;
/// Every region starts from a snapshot of the empty state at this index and
/// term (as TiKV's do), never from an empty log: a peer added later, which
/// knows nothing of the region, is then always sent a snapshot first — it
/// never replays membership changes onto a meta it does not have.
pub const RAFT_INIT_INDEX: u64 = 5;
pub const RAFT_INIT_TERM: u64 = 5;
/// Regions (live and tombstoned) one shard tracks; messages that would
/// create more are dropped (the WAL holds at most this many).
pub const SHARD_REGIONS_MAX: usize = wal::options::REGIONS_MAX;

/// Ticks a region waits after a failed snapshot write before it tries again.
pub const SNAPSHOT_RETRY_TICKS: u64 = 4 * ELECTION_TICKS as u64;

/// A region whose oldest needed WAL entry lies this many segments or more
/// behind the one being written is asked to snapshot and compact, so that
/// idle or slow regions do not keep the WAL from being purged.
pub const COMPACT_PIN_SEGMENTS_MAX: u64 = 2;

/// The regions of a purge's `blocking` list (region, segment it pins) to ask
/// for a compaction, given the segment being written.
pub fn regions_to_compact(blocking: &[(u64, u64)], active_seq: u64) -> Vec<u64> {
    blocking.iter().filter(|(_, pin)| pin + COMPACT_PIN_SEGMENTS_MAX <= active_seq).map(|(r, _)| *r).collect()
}

/// Sizes the shard keeps under so that everything it stages fits its WAL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardLimits {
    /// Largest entry payload a region proposes.
    pub entry_bytes_max: usize,
    /// Largest region write (entries and HardState) handed to the WAL in one piece.
    pub write_bytes_max: usize,
    /// Memory (every region's in-memory log and state) past which writes are refused.
    pub memory_bytes_max: usize,
    /// Applied log bytes below which a region does not snapshot.
    pub snapshot_log_bytes_min: usize,
    /// `false` only to measure what batching buys (`--no-batching`): one
    /// fdatasync per region ready and one frame per message.
    pub batching: bool,
}

impl ShardLimits {
    /// The limits that fit a WAL opened with `opts`.
    pub fn for_wal(opts: &wal::WalOptions) -> ShardLimits {
        let write_bytes_max = opts.batch_bytes_max - RECORD_OVERHEAD_BYTES;
        let entry_bytes_max = ENTRY_BYTES_MAX.min(write_bytes_max - ENTRY_OVERHEAD_BYTES);
        ShardLimits {
            entry_bytes_max,
            write_bytes_max,
            memory_bytes_max: MEMORY_BYTES_DEFAULT,
            snapshot_log_bytes_min: SNAPSHOT_LOG_BYTES_MIN_DEFAULT,
            batching: true,
        }
    }

    pub fn with_batching(self, batching: bool) -> ShardLimits {
        ShardLimits { batching, ..self }
    }

    pub fn with_memory_limit(self, memory_bytes_max: usize) -> ShardLimits {
        ShardLimits { memory_bytes_max, ..self }
    }

    pub fn with_snapshot_log_min(self, snapshot_log_bytes_min: usize) -> ShardLimits {
        ShardLimits { snapshot_log_bytes_min, ..self }
    }
}

/// A ready whose durability rides on persist batch `batch`.
struct Awaiting {
    batch: u64,
    region: u64,
    incarnation: u64,
    number: u64,
    /// Its `persisted_messages`, sent once the batch is durable.
    messages: Vec<eraftpb::Message>,
}

/// Counters of the shard's batching (for metrics and benchmarks).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardStats {
    pub iterations: u64,
    pub proposals: u64,
    pub writes_proposed: u64,
    pub persist_batches: u64,
    pub region_writes_persisted: u64,
    /// Distinct regions in each persist batch, summed (÷ batches: regions per fsync).
    pub regions_persisted: u64,
    pub entries_applied: u64,
    pub snapshots_taken: u64,
    pub snapshots_sent: u64,
    pub snapshots_installed: u64,
    pub regions_created: u64,
    pub regions_removed: u64,
}

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

/// A region as the shard starts it: from bootstrap (fresh) or as recovery found it.
pub struct RegionInit {
    pub meta: RegionMeta,
    pub storage: RegionStorage,
    /// The snapshot its state restarts from (`None`: the empty state at index 0).
    pub snapshot: Option<RegionSnapshot>,
    /// A new region: its meta and membership are persisted with the next batch.
    pub fresh: bool,
}

impl RegionInit {
    /// A region of the initial layout: its peers are voters, its state is
    /// the empty snapshot at `RAFT_INIT_INDEX`, whose file the caller makes
    /// durable before the shard's first batch records it.
    pub fn bootstrap(meta: RegionMeta) -> (RegionInit, RegionSnapshot) {
        let cs = eraftpb::ConfState { voters: meta.peers.iter().map(|p| p.peer_id).collect(), ..Default::default() };
        let hs = eraftpb::HardState { term: RAFT_INIT_TERM, vote: 0, commit: RAFT_INIT_INDEX, ..Default::default() };
        let snap = RegionSnapshot {
            meta: meta.clone(),
            index: RAFT_INIT_INDEX,
            term: RAFT_INIT_TERM,
            conf_state: SnapshotConf::from_raft(&cs),
            kv: MemKv::default(),
        };
        let storage = RegionStorage::new(hs, cs, (RAFT_INIT_INDEX, RAFT_INIT_TERM), vec![]);
        (RegionInit { meta, storage, snapshot: Some(snap.clone()), fresh: true }, snap)
    }

    /// A peer this store was just added as, created by the first message its
    /// leader sends: it knows only itself and the sender until the leader's
    /// snapshot gives it the region's state and meta.
    fn uninitialized(envelope: &Envelope) -> RegionInit {
        let meta = RegionMeta {
            id: envelope.region_id,
            start_key: envelope.start_key.to_vec(),
            end_key: envelope.end_key.to_vec(),
            conf_ver: 0,
            version: 0,
            peers: vec![
                PeerMeta { peer_id: envelope.to.peer_id, store_id: envelope.to.store_id, shard: envelope.to.shard },
                PeerMeta {
                    peer_id: envelope.from.peer_id,
                    store_id: envelope.from.store_id,
                    shard: envelope.from.shard,
                },
            ],
            max_peer_id: 0,
        };
        let storage = RegionStorage::new(Default::default(), Default::default(), (0, 0), vec![]);
        RegionInit { meta, storage, snapshot: None, fresh: true }
    }
}

pub struct Shard {
    pub store_id: u64,
    pub shard: u16,
    limits: ShardLimits,
    ticks: u64,
    staged_bytes: usize,
    /// Memory in use at the start of this iteration (logs and state machines).
    memory_bytes: usize,
    regions: BTreeMap<u64, Region>,
    outboxes: Outboxes,
    rng: SeededRng,
    /// The batch being staged (issued when none is in flight).
    staged: Vec<(u64, wal::RegionWrite)>,
    next_batch: u64,
    in_flight: Option<u64>,
    awaiting: VecDeque<Awaiting>,
    next_read_ctx: u64,
    outputs: Vec<Output>,
    stats: ShardStats,
    /// Received snapshot files to move into place before the staged batch is written.
    staged_installs: Vec<(PathBuf, SnapshotId)>,
    /// Snapshots replaced by a newer one, removable once batch `.0` is durable.
    obsolete: VecDeque<(u64, SnapshotId)>,
    snapshots_writing: usize,
    /// Snapshots being sent, by (region, follower): their files stay until
    /// the send ends, even when a newer snapshot replaced them.
    sending: BTreeMap<(u64, u64), VecDeque<SnapshotId>>,
    /// Replaced snapshots whose removal waits for a send.
    removals_waiting: Vec<SnapshotId>,
    /// Regions removed from this shard, with the peer that was removed: a
    /// message to that peer id or an older one is a late one and must not
    /// recreate the region (peer ids are never reused).
    tombstones: BTreeMap<u64, u64>,
    next_incarnation: u64,
    /// Regions an iteration must look at: those its inputs touched, those
    /// left with work by the last one, every region on a tick. The rest are
    /// not visited at all — with thousands of mostly idle regions, walking
    /// all of them every iteration was a large part of the loop's cost.
    dirty: std::collections::BTreeSet<u64>,
    all_dirty: bool,
}

impl Shard {
    /// An empty shard; regions come from `create_region` (bootstrap or recovery).
    pub fn new(store_id: u64, shard: u16, seed: u64, limits: ShardLimits) -> Shard {
        Shard {
            store_id,
            shard,
            limits,
            ticks: 0,
            staged_bytes: 0,
            memory_bytes: 0,
            regions: BTreeMap::new(),
            outboxes: Outboxes::new(),
            rng: SeededRng::new(seed),
            staged: vec![],
            next_batch: 1,
            in_flight: None,
            awaiting: VecDeque::new(),
            next_read_ctx: 1,
            outputs: vec![],
            stats: ShardStats::default(),
            staged_installs: vec![],
            obsolete: VecDeque::new(),
            snapshots_writing: 0,
            sending: BTreeMap::new(),
            removals_waiting: vec![],
            tombstones: BTreeMap::new(),
            next_incarnation: 1,
            dirty: std::collections::BTreeSet::new(),
            all_dirty: false,
        }
    }

    /// Adds a region this shard hosts.
    pub fn create_region(&mut self, init: RegionInit) {
        let RegionInit { meta, mut storage, snapshot, fresh } = init;
        let peer = *meta
            .peer_on(self.store_id)
            .unwrap_or_else(|| panic!("region {} has no peer on store {}", meta.id, self.store_id));
        assert_eq!(peer.shard, self.shard, "region {} belongs to shard {} of this store", meta.id, peer.shard);
        let id = meta.id;
        if fresh {
            // (the HardState also revives a region the WAL holds as a tombstone)
            let at = snapshot.as_ref().map(|s| (s.index, s.term));
            let write = wal::RegionWrite {
                snapshot: at.map(|(index, term)| wal::SnapshotMarker { index, term }),
                hard_state: Some(hard_state_to_wal(storage.hard_state())),
                meta: Some(RegionLocalState { meta: meta.clone(), snapshot: at, removed_peer: None }.encode()),
                conf_state: Some(conf_state_to_wal(storage.conf_state())),
                ..Default::default()
            };
            self.stage(id, write);
            self.tombstones.remove(&id);
        }
        let (applied, kv, snapshot_id) = match snapshot {
            None => (0, MemKv::default(), None),
            Some(s) => {
                assert_eq!(s.meta.id, id, "region {id} restored from another region's snapshot");
                assert!(
                    storage.first() <= s.index + 1,
                    "region {id}: the log starts at {} after the snapshot at {}: entries lost",
                    storage.first(),
                    s.index
                );
                storage.set_snapshot(s.index, s.term, s.conf_state.to_raft());
                (s.index, s.kv.clone(), Some(s.id()))
            }
        };
        let mut region = Region::new(meta, peer.peer_id, storage, applied, kv).expect("a valid raft config");
        region.snapshot = snapshot_id;
        self.dirty.insert(id);
        region.incarnation = self.next_incarnation;
        self.next_incarnation += 1;
        let t = self.rng.between(ELECTION_TICKS as u64, 2 * ELECTION_TICKS as u64 - 1) as usize;
        region.raw.raft.set_randomized_election_timeout(t);
        region.timeout_term = region.term();
        assert!(self.regions.insert(id, region).is_none(), "region {id} created twice");
    }

    /// A region the WAL holds as removed (recovery), with the peer removed.
    pub fn add_tombstone(&mut self, region: u64, removed_peer: u64) {
        self.tombstones.insert(region, removed_peer);
    }

    pub fn is_tombstone(&self, region: u64) -> bool {
        self.tombstones.contains_key(&region)
    }

    pub fn region(&self, id: u64) -> Option<&Region> {
        self.regions.get(&id)
    }

    /// What this shard's leaders tell PD of their regions.
    pub fn leader_reports(&self) -> Vec<LeaderReport> {
        self.regions
            .values()
            .filter(|r| r.is_leader())
            .map(|r| LeaderReport {
                meta: r.meta.clone(),
                leader: r.meta.peer(r.peer_id).copied().unwrap_or(PeerMeta {
                    peer_id: r.peer_id,
                    store_id: self.store_id,
                    shard: self.shard,
                }),
                term: r.term(),
                approximate_bytes: r.kv.bytes() as u64,
                approximate_keys: r.kv.keys() as u64,
                applied_bytes_total: r.applied_bytes_total,
                pending_peers: r.meta.peers.iter().map(|p| p.peer_id).filter(|id| !is_healthy(r, *id)).collect(),
            })
            .collect()
    }

    pub fn regions(&self) -> impl Iterator<Item = &Region> {
        self.regions.values()
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
        // (only a region the last iteration left dirty can have become ready without input)
        self.dirty.iter().any(|id| self.regions.get(id).is_some_and(|r| r.raw.has_ready()))
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

    fn stage(&mut self, region: u64, write: wal::RegionWrite) {
        self.staged_bytes += staged_size(&write);
        self.staged.push((region, write));
    }

    /// Whether nothing is in flight: no client work waiting, nothing staged
    /// or being persisted. A settled simulation must reach it (liveness).
    pub fn is_quiet(&self) -> bool {
        self.staged.is_empty()
            && self.in_flight.is_none()
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
        let mut out =
            format!("staged {} in_flight {:?} awaiting {}", self.staged.len(), self.in_flight, self.awaiting.len());
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

    /// One loop iteration.
    pub fn step(&mut self, inputs: impl IntoIterator<Item = Input>) -> Vec<Output> {
        self.stats.iterations += 1;
        let mut persisted = None;
        for input in inputs {
            match &input {
                Input::Tick => self.all_dirty = true,
                Input::Write { region, .. }
                | Input::Read { region, .. }
                | Input::Scan { region, .. }
                | Input::TransferLeader { region, .. }
                | Input::ChangePeer { region, .. }
                | Input::SnapshotSent { region, .. } => self.touch(*region),
                Input::Raft(e) | Input::Snapshot { envelope: e, .. } => self.touch(e.region_id),
                Input::SnapshotWritten { id, .. } => self.touch(id.region),
                Input::CompactRequested { regions } | Input::Unreachable { regions, .. } => {
                    for r in regions {
                        self.touch(*r);
                    }
                }
                Input::DescribeRegion { .. } | Input::Persisted { .. } => {}
            }
            match input {
                Input::Tick => self.tick(),
                Input::Write { request, region, epoch, command } => self.on_write(request, region, epoch, command),
                Input::Read { request, region, key } => self.on_read(request, region, Query::Get(key)),
                Input::Scan { request, region, start, end, limit } => {
                    self.on_read(request, region, Query::Scan { start, end, limit: limit.min(SCAN_ROWS_MAX) })
                }
                Input::TransferLeader { request, region, to_peer } => self.on_transfer_leader(request, region, to_peer),
                Input::DescribeRegion { request, region } => {
                    let result = match self.regions.get(&region) {
                        None => Err(RegionError::RegionNotFound { region }),
                        Some(r) if !r.is_leader() => Err(RegionError::NotLeader { region, leader: r.leader() }),
                        Some(r) => Ok(Response::Region(Box::new(r.meta.clone()))),
                    };
                    self.reply(request, result);
                }
                Input::ChangePeer { request, region, epoch, change } => {
                    self.on_change_peer(request, region, epoch, change)
                }
                Input::Raft(envelope) => self.on_raft(envelope),
                Input::Persisted { batch } => {
                    assert_eq!(self.in_flight, Some(batch), "persist batch {batch} completed out of order");
                    self.in_flight = None;
                    persisted = Some(batch);
                }
                Input::SnapshotWritten { id, result } => self.on_snapshot_written(id, result),
                Input::Snapshot { envelope, snapshot, file } => self.on_snapshot(envelope, snapshot, file),
                Input::SnapshotSent { region, to_peer, ok } => {
                    if let Some(r) = self.regions.get_mut(&region) {
                        let status = if ok { raft::SnapshotStatus::Finish } else { raft::SnapshotStatus::Failure };
                        r.raw.report_snapshot(to_peer, status);
                    }
                    // (sends to one follower end in the order they started)
                    if let Some(q) = self.sending.get_mut(&(region, to_peer)) {
                        q.pop_front();
                        if q.is_empty() {
                            self.sending.remove(&(region, to_peer));
                        }
                    }
                    let sending = &self.sending;
                    let (now, later) =
                        self.removals_waiting.drain(..).partition(|id| !sending.values().flatten().any(|s| s == id));
                    self.removals_waiting = later;
                    self.outputs.extend(now.into_iter().map(Output::RemoveSnapshot));
                }
                Input::CompactRequested { regions } => {
                    for id in regions {
                        if let Some(r) = self.regions.get_mut(&id) {
                            r.compact_wanted = true;
                        }
                    }
                }
                Input::Unreachable { regions, store_id } => {
                    for id in regions {
                        if let Some(r) = self.regions.get_mut(&id) {
                            if let Some(p) = r.meta.peer_on(store_id).copied() {
                                r.raw.report_unreachable(p.peer_id);
                            }
                        }
                    }
                }
            }
        }
        if let Some(batch) = persisted {
            self.on_persisted(batch);
        }
        let walk = self.walk();
        self.propose(&walk);
        self.handle_readies(&walk);
        self.discard_stale_snapshots(&walk);
        self.take_snapshots(&walk);
        self.flush_outboxes();
        self.issue_persist();
        // what still has work is looked at again next time (reads waiting for
        // the leader's first commit, a ready raft made while handling another)
        // (the walk covers every region marked this iteration: marks come from inputs)
        self.all_dirty = false;
        self.dirty.clear();
        let left: Vec<u64> = walk
            .into_iter()
            .filter(|id| {
                self.regions
                    .get(id)
                    .is_some_and(|r| r.raw.has_ready() || !r.pending_reads.is_empty() || !r.pending_writes.is_empty())
            })
            .collect();
        self.dirty.extend(left);
        std::mem::take(&mut self.outputs)
    }

    fn tick(&mut self) {
        self.ticks += 1;
        // (once a tick: the memory limit's figure; every region is walked now anyway)
        self.memory_bytes = self.regions.values().map(|r| r.raw.store().entry_bytes() + r.kv.bytes()).sum();
        let mut failed = vec![];
        for r in self.regions.values_mut() {
            // raft-rs draws a new election timeout from thread_rng whenever it resets
            // (elapsed back to 0): replace it from the shard's seed so a simulation replays
            if r.raw.raft.election_elapsed == 0 {
                let t = self.rng.between(ELECTION_TICKS as u64, 2 * ELECTION_TICKS as u64 - 1) as usize;
                r.raw.raft.set_randomized_election_timeout(t);
            }
            r.raw.tick();
            // a ReadIndex that is not answered in time was dropped (a leader that
            // has not committed in its term, or lost it without noticing yet)
            let expired: Vec<u64> = r
                .read_batches
                .iter()
                .filter(|(ctx, b)| {
                    self.ticks - b.issued_tick > READ_TIMEOUT_TICKS && !r.ready_reads.iter().any(|(c, _)| c == *ctx)
                })
                .map(|(ctx, _)| *ctx)
                .collect();
            for ctx in expired {
                let err = RegionError::NotLeader { region: r.id(), leader: None };
                failed
                    .extend(r.read_batches.remove(&ctx).unwrap().reads.into_iter().map(|(q, _)| (q, Err(err.clone()))));
            }
        }
        for (q, res) in failed {
            self.reply(q, res);
        }
    }

    fn reply(&mut self, request: u64, result: Result<Response, RegionError>) {
        self.outputs.push(Output::Reply { request, result });
    }

    fn check_request(&self, region: u64, key: &[u8]) -> Result<&Region, RegionError> {
        let r = self.regions.get(&region).ok_or(RegionError::RegionNotFound { region })?;
        if !r.meta.contains(key) {
            return Err(RegionError::KeyNotInRegion {
                key: key.to_vec(),
                region,
                start: r.meta.start_key.clone(),
                end: r.meta.end_key.clone(),
            });
        }
        if !r.is_leader() {
            return Err(RegionError::NotLeader { region, leader: r.leader() });
        }
        Ok(r)
    }

    fn on_write(&mut self, request: u64, region: u64, epoch: transport::Epoch, command: Command) {
        let (entry_max, staged_full) = (self.limits.entry_bytes_max, self.staged_bytes > STAGED_BYTES_MAX);
        let (used_bytes, limit_bytes) = (self.memory_bytes, self.limits.memory_bytes_max);
        let checked = self.check_request(region, command.key()).and_then(|r| {
            if used_bytes >= limit_bytes && !matches!(command, Command::Delete { .. }) {
                return Err(RegionError::MemoryFull { used_bytes, limit_bytes });
            }
            if epoch != r.meta.epoch() {
                return Err(RegionError::EpochNotMatch { current: Box::new(r.meta.clone()) });
            }
            let alone = WriteBatch::size_bound(std::slice::from_ref(&command));
            if alone > entry_max {
                return Err(RegionError::TooLarge { region, bytes: alone, max: entry_max });
            }
            let full = r.pending_write_bytes + command.size() > entry_max;
            if full || staged_full || r.pending_writes.len() >= PENDING_WRITES_MAX || r.proposals.len() >= PROPOSALS_MAX
            {
                return Err(RegionError::ServerIsBusy { region, backoff_ms: BUSY_BACKOFF_MS });
            }
            Ok(())
        });
        match checked {
            Err(e) => self.reply(request, Err(e)),
            Ok(()) => {
                let r = self.regions.get_mut(&region).expect("checked");
                if r.pending_writes.is_empty() {
                    r.pending_write_bytes = crate::kv::command::BATCH_OVERHEAD_BYTES_MAX;
                }
                r.pending_write_bytes += command.size();
                r.pending_writes.push((request, command));
            }
        }
    }

    fn on_read(&mut self, request: u64, region: u64, query: Query) {
        let key = match &query {
            Query::Get(key) => key,
            Query::Scan { start, .. } => start,
        };
        match self.check_request(region, key) {
            Err(e) => self.reply(request, Err(e)),
            Ok(_) => self.regions.get_mut(&region).expect("checked").pending_reads.push((request, query)),
        }
    }

    fn on_transfer_leader(&mut self, request: u64, region: u64, to_peer: u64) {
        let result = match self.regions.get_mut(&region) {
            None => Err(RegionError::RegionNotFound { region }),
            Some(r) if !r.is_leader() => Err(RegionError::NotLeader { region, leader: r.leader() }),
            Some(r) if r.meta.peer(to_peer).is_none() => {
                Err(RegionError::EpochNotMatch { current: Box::new(r.meta.clone()) })
            }
            Some(r) => {
                r.raw.transfer_leader(to_peer);
                Ok(Response::Done)
            }
        };
        self.reply(request, result);
    }

    fn on_raft(&mut self, envelope: Envelope) {
        if envelope.message.is_empty() {
            return self.on_removal_notice(envelope);
        }
        let here = (envelope.to.store_id, envelope.to.shard) == (self.store_id, self.shard);
        if let Some(r) = self.regions.get(&envelope.region_id).filter(|_| here) {
            if envelope.to.peer_id > r.peer_id && envelope.epoch.conf_ver > r.meta.conf_ver {
                // a newer peer of the region on this store: ours was removed
                // while it could not hear of it (peer ids only grow)
                tracing::info!(
                    region = r.id(),
                    stale = r.peer_id,
                    new = envelope.to.peer_id,
                    "replacing a removed peer"
                );
                self.destroy_region(envelope.region_id);
            }
        }
        if !self.regions.contains_key(&envelope.region_id) && !self.create_peer(&envelope) {
            return;
        }
        let r = self.regions.get_mut(&envelope.region_id).expect("hosted or just created");
        if envelope.to.peer_id != r.peer_id {
            tracing::debug!(region = r.id(), to = envelope.to.peer_id, "message for another peer of the region");
            return;
        }
        if r.meta.conf_ver == 0 && r.meta.peer(envelope.from.peer_id).is_none() && r.meta.peers.len() < PEERS_MAX {
            // not yet filled by a snapshot: it knows its peers only as they
            // write to it (a new leader must be answered too)
            let f = envelope.from;
            r.meta.peers.push(PeerMeta { peer_id: f.peer_id, store_id: f.store_id, shard: f.shard });
        }
        if r.meta.peer(envelope.from.peer_id).is_none() && envelope.epoch.conf_ver < r.meta.conf_ver {
            // a peer removed under an epoch we have applied (it was away when
            // it happened): it must not disturb the region, and is told so
            tracing::debug!(region = r.id(), from = envelope.from.peer_id, "message from a removed peer dropped");
            let notice = Envelope {
                region_id: r.id(),
                start_key: r.key_range.0.clone(),
                end_key: r.key_range.1.clone(),
                epoch: r.meta.epoch(),
                from: transport::Peer { peer_id: r.peer_id, store_id: self.store_id, shard: self.shard },
                to: Target {
                    peer_id: envelope.from.peer_id,
                    store_id: envelope.from.store_id,
                    shard: envelope.from.shard,
                },
                message: bytes::Bytes::new(),
            };
            let dest = Destination { store_id: envelope.from.store_id, shard: envelope.from.shard };
            if let Err(e) = self.outboxes.push(dest, &notice) {
                tracing::warn!(region = notice.region_id, "removal notice dropped: {e}");
            }
            return;
        }
        let msg = match eraftpb::Message::parse_from_carllerche_bytes(&envelope.message) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(region = r.id(), from = envelope.from.store_id, "undecodable raft message: {e}");
                return;
            }
        };
        if msg.get_msg_type() == MessageType::MsgSnapshot {
            // a snapshot's data comes on the snapshot stream, as `Input::Snapshot`
            tracing::warn!(region = r.id(), from = envelope.from.store_id, "snapshot message without its data dropped");
            return;
        }
        if let Err(e) = r.raw.step(msg) {
            tracing::debug!(region = r.id(), "step: {e}");
        }
    }

    /// A member of the region, under a newer epoch that does not include this
    /// peer, says it was removed (it was away when the change applied, and
    /// no one sends it the log anymore): remove it here too. Safe: a
    /// conf_ver never comes back, and a peer added again has a new id.
    fn on_removal_notice(&mut self, notice: Envelope) {
        let Some(r) = self.regions.get(&notice.region_id) else { return };
        if r.peer_id == notice.to.peer_id && notice.epoch.conf_ver > r.meta.conf_ver {
            tracing::info!(region = r.id(), peer = r.peer_id, "told by a member that this peer was removed");
            self.destroy_region(notice.region_id);
        }
    }

    /// Creates the peer a message from a leader addresses on this shard, for
    /// a region the shard does not host: this store was added to it. Never
    /// for a late message to a peer removed since (its tombstone's epoch).
    fn create_peer(&mut self, envelope: &Envelope) -> bool {
        let id = envelope.region_id;
        let refuse = |why: &str| {
            tracing::debug!(region = id, from = envelope.from.store_id, "message for a region not hosted here: {why}");
            false
        };
        if (envelope.to.store_id, envelope.to.shard) != (self.store_id, self.shard) {
            return refuse("addressed to another shard");
        }
        if self.tombstones.get(&id).is_some_and(|removed| envelope.to.peer_id <= *removed) {
            return refuse("a late message to a peer removed from this store");
        }
        if self.regions.len() + self.tombstones.len() >= SHARD_REGIONS_MAX {
            return refuse("the shard hosts SHARD_REGIONS_MAX regions");
        }
        let kind = eraftpb::Message::parse_from_carllerche_bytes(&envelope.message).map(|m| m.get_msg_type());
        if !matches!(kind, Ok(MessageType::MsgHeartbeat | MessageType::MsgAppend | MessageType::MsgSnapshot)) {
            return refuse("only a leader's message creates a peer");
        }
        tracing::info!(region = id, peer = envelope.to.peer_id, "creating the peer this store was added as");
        self.create_region(RegionInit::uninitialized(envelope));
        self.stats.regions_created += 1;
        true
    }

    /// A membership change: the leader checks it against the region as it is
    /// and proposes it; it is answered when applied.
    fn on_change_peer(&mut self, request: u64, region: u64, epoch: transport::Epoch, change: PeerChange) {
        let proposed = (|| {
            let r = self.regions.get_mut(&region).ok_or(RegionError::RegionNotFound { region })?;
            if !r.is_leader() {
                return Err(RegionError::NotLeader { region, leader: r.leader() });
            }
            if epoch != r.meta.epoch() {
                return Err(RegionError::EpochNotMatch { current: Box::new(r.meta.clone()) });
            }
            let refused = |reason: String| RegionError::Refused { region, reason };
            if r.raw.raft.has_pending_conf() {
                return Err(refused("another membership change is not applied yet".into()));
            }
            let (change_type, peer) = match change {
                PeerChange::AddVoter(p) => (eraftpb::ConfChangeType::AddNode, p),
                PeerChange::RemoveVoter(p) if p.peer_id == r.peer_id => {
                    return Err(refused("the leader cannot remove itself: transfer leadership first".into()))
                }
                PeerChange::RemoveVoter(p) => (eraftpb::ConfChangeType::RemoveNode, p),
            };
            let next = r.meta.changed(change).map_err(refused)?;
            // never leave the region without a quorum of voters that are up
            // and keeping up (a new peer counts as neither until it caught up)
            let healthy = next.peers.iter().filter(|p| is_healthy(r, p.peer_id)).count();
            if healthy < next.peers.len() / 2 + 1 {
                return Err(refused(format!(
                    "after the change only {healthy} of {} voters would be up and keeping up: not a quorum",
                    next.peers.len()
                )));
            }
            let mut cc = eraftpb::ConfChange { node_id: peer.peer_id, context: next.encode(), ..Default::default() };
            cc.set_change_type(change_type);
            let last_before = r.raw.raft.raft_log.last_index();
            r.raw.propose_conf_change(vec![], cc).map_err(|e| refused(format!("raft refused the change: {e}")))?;
            let index = r.raw.raft.raft_log.last_index();
            assert_eq!(index, last_before + 1, "region {region}: one proposal, one entry");
            let stale = r.proposals.insert(index, Proposal { term: r.term(), requests: vec![request] });
            assert!(stale.is_none(), "region {region}: a leader's new entry at {index} had a proposal of its own");
            Ok(())
        })();
        if let Err(e) = proposed {
            self.reply(request, Err(e));
        }
    }

    /// Removes a region whose own peer a membership change removed: its log
    /// is dropped, a tombstone (with the final meta) stays in the WAL and in
    /// memory so that late messages cannot recreate it, and its client work
    /// is answered.
    fn destroy_region(&mut self, id: u64) {
        let r = self.regions.remove(&id).expect("destroying a hosted region");
        let gone = RegionError::RegionNotFound { region: id };
        let mut requests: Vec<u64> = r.pending_writes.iter().map(|(q, _)| *q).collect();
        requests.extend(r.pending_reads.iter().map(|(q, _)| *q));
        requests.extend(r.read_batches.values().flat_map(|b| b.reads.iter().map(|(q, _)| *q)));
        for q in requests {
            self.reply(q, Err(gone.clone()));
        }
        // proposed when this peer led, maybe committed by a later leader: unknown
        for q in r.proposals.values().flat_map(|p| p.requests.iter().copied()).collect::<Vec<_>>() {
            self.reply(q, Err(RegionError::Ambiguous { region: id }));
        }
        // one record: the membership that removed it (if it applied it) and
        // the tombstone naming the removed peer land together or not at all
        let state = RegionLocalState { meta: r.meta.clone(), snapshot: None, removed_peer: Some(r.peer_id) };
        let write = wal::RegionWrite {
            tombstone: true,
            conf_state: Some(conf_state_to_wal(r.raw.store().conf_state())),
            meta: Some(state.encode()),
            ..Default::default()
        };
        self.stage(id, write);
        if let Some(old) = r.snapshot {
            self.obsolete.push_back((self.next_batch, old));
        }
        if let Some((_, file)) = r.receiving {
            self.outputs.push(Output::DiscardIncoming(file));
        }
        self.tombstones.insert(id, r.peer_id);
        self.stats.regions_removed += 1;
        tracing::info!(region = id, conf_ver = r.meta.conf_ver, "peer removed from this store; tombstone kept");
    }

    /// A region's own snapshot file is durable: record it in the WAL and
    /// compact the log up to it (the record and the compaction are one write).
    fn on_snapshot_written(&mut self, id: SnapshotId, result: Result<u64, String>) {
        self.snapshots_writing -= 1;
        let Some(r) = self.regions.get_mut(&id.region) else {
            self.outputs.push(Output::RemoveSnapshot(id));
            return;
        };
        if r.snapshot_taking.as_ref().is_none_or(|t| t.0 != id) {
            // taken by an earlier life of the region (removed and created again since)
            tracing::debug!(region = id.region, "snapshot {id:?} of a removed peer finished");
            self.outputs.push(Output::RemoveSnapshot(id));
            return;
        }
        let (_, conf, bytes) = r.snapshot_taking.take().expect("checked");
        if let Err(e) = result {
            // not fatal: the log is kept, and the region tries again a little later
            tracing::warn!(region = id.region, index = id.index, "writing a snapshot failed: {e}");
            r.applied_bytes_since_snapshot += bytes;
            r.snapshot_retry_tick = self.ticks + SNAPSHOT_RETRY_TICKS;
            self.outputs.push(Output::RemoveSnapshot(id));
            return;
        }
        if r.snapshot.is_some_and(|s| s.index >= id.index) {
            // a received snapshot was installed meanwhile: this one is older
            self.outputs.push(Output::RemoveSnapshot(id));
            return;
        }
        self.stats.snapshots_taken += 1;
        let replaced = r.snapshot.replace(id);
        r.raw.mut_store().set_snapshot(id.index, id.term, conf);
        let keep_from = compact_point(r, id.index);
        let first = r.raw.store().first();
        r.raw.mut_store().compact_to(keep_from);
        let write = wal::RegionWrite {
            compact_to: (keep_from + 1 > first).then_some(keep_from + 1),
            hard_state: Some(hard_state_covering(r, id.index)),
            meta: Some(local_state(r)),
            ..Default::default()
        };
        self.stage(id.region, write);
        if let Some(old) = replaced {
            self.obsolete.push_back((self.next_batch, old));
        }
    }

    /// A snapshot received from a leader, its file durable and its contents
    /// checked: step its `MsgSnapshot` into raft, which installs it (in this
    /// iteration's ready) unless it is stale.
    fn on_snapshot(&mut self, envelope: Envelope, snapshot: Box<RegionSnapshot>, file: PathBuf) {
        let discard = |outputs: &mut Vec<Output>, why: &str| {
            tracing::info!(region = envelope.region_id, file = %file.display(), "received snapshot not used: {why}");
            outputs.push(Output::DiscardIncoming(file.clone()));
        };
        if !self.regions.contains_key(&envelope.region_id) && !self.create_peer(&envelope) {
            return discard(&mut self.outputs, "the region is not on this shard");
        }
        let r = self.regions.get_mut(&envelope.region_id).expect("hosted or just created");
        if envelope.to.peer_id != r.peer_id || r.receiving.is_some() {
            return discard(&mut self.outputs, "another peer's, or one is already being installed");
        }
        let msg = match eraftpb::Message::parse_from_carllerche_bytes(&envelope.message) {
            Ok(m) if m.get_msg_type() == MessageType::MsgSnapshot => m,
            _ => return discard(&mut self.outputs, "its message is not a MsgSnapshot"),
        };
        let m = msg.get_snapshot().get_metadata();
        if (m.index, m.term, envelope.region_id) != (snapshot.index, snapshot.term, snapshot.meta.id) {
            return discard(&mut self.outputs, "the file is not the snapshot its message names");
        }
        r.receiving = Some((snapshot, file));
        if let Err(e) = r.raw.step(msg) {
            tracing::debug!(region = r.id(), "step: {e}");
        }
    }

    /// Received snapshots raft did not install this iteration were stale.
    fn discard_stale_snapshots(&mut self, walk: &[u64]) {
        for id in walk {
            let Some(r) = self.regions.get_mut(id) else { continue };
            if let Some((_, file)) = r.receiving.take() {
                tracing::debug!(region = r.meta.id, "received snapshot is stale: discarded");
                self.outputs.push(Output::DiscardIncoming(file));
            }
        }
    }

    /// Starts a snapshot of each region whose applied log outgrew its share
    /// of the state (or that pins old WAL segments), a few at a time.
    fn take_snapshots(&mut self, walk: &[u64]) {
        for id in walk {
            let Some(r) = self.regions.get_mut(id) else { continue };
            if self.snapshots_writing >= SNAPSHOT_WRITES_IN_FLIGHT_MAX {
                return;
            }
            let since = r.snapshot.map_or(0, |s| s.index);
            if r.snapshot_taking.is_some() || self.ticks < r.snapshot_retry_tick {
                continue;
            }
            if r.applied <= since {
                if r.compact_wanted && r.raw.store().first() <= since {
                    // nothing new to snapshot, but a leader kept a tail for its followers
                    r.compact_wanted = false;
                    r.raw.mut_store().compact_to(since);
                    let write = wal::RegionWrite { compact_to: Some(since + 1), ..Default::default() };
                    self.staged_bytes += staged_size(&write);
                    self.staged.push((r.meta.id, write));
                }
                continue;
            }
            let bound = self.limits.snapshot_log_bytes_min.max(r.kv.bytes() / SNAPSHOT_STATE_DIVISOR);
            let wanted = r.raw.store().take_snapshot_wanted();
            if r.applied_bytes_since_snapshot < bound && !r.compact_wanted && !wanted {
                continue;
            }
            let index = r.applied;
            let term = r.raw.raft.raft_log.term(index).expect("the term of every live entry is in memory");
            let conf = r.raw.raft.prs().conf().to_conf_state();
            let snap = RegionSnapshot {
                meta: r.meta.clone(),
                index,
                term,
                conf_state: SnapshotConf::from_raft(&conf),
                kv: r.kv.clone(),
            };
            r.snapshot_taking = Some((snap.id(), conf, std::mem::take(&mut r.applied_bytes_since_snapshot)));
            self.snapshots_writing += 1;
            self.outputs.push(Output::WriteSnapshot(Box::new(snap)));
        }
    }

    /// All client writes of a region that arrived this iteration → one entry.
    fn propose(&mut self, walk: &[u64]) {
        let mut replies = vec![];
        for id in walk {
            let Some(r) = self.regions.get_mut(id) else { continue };
            // A leader with a proposal of its term still uncommitted holds new
            // writes until it commits: what arrives meanwhile goes into the
            // next entry together. Below load nothing waits (no proposal is
            // out); under load a region proposes about one entry per commit
            // round trip, and entries carry many writes instead of one each
            // (the per-entry cost — readies, messages, acks — is what grows
            // with the number of active regions).
            let holding = self.limits.batching
                && r.is_leader()
                && r.proposals
                    .last_key_value()
                    .is_some_and(|(index, p)| *index > r.raw.raft.raft_log.committed && p.term == r.raw.raft.term);
            if !r.pending_writes.is_empty() && !holding {
                let writes = std::mem::take(&mut r.pending_writes);
                r.pending_write_bytes = 0;
                let (requests, commands): (Vec<u64>, Vec<Command>) = writes.into_iter().unzip();
                let batch = WriteBatch { conf_ver: r.meta.conf_ver, version: r.meta.version, commands };
                let last_before = r.raw.raft.raft_log.last_index();
                // raft-rs would forward a follower's proposal to the leader, where we could not track it
                let proposed = if r.is_leader() {
                    r.raw.propose(vec![], batch.encode())
                } else {
                    Err(raft::Error::ProposalDropped)
                };
                match proposed {
                    Ok(()) => {
                        let index = r.raw.raft.raft_log.last_index();
                        assert_eq!(index, last_before + 1, "region {}: one proposal, one entry", r.id());
                        self.stats.proposals += 1;
                        self.stats.writes_proposed += requests.len() as u64;
                        if let Some(old) = r.proposals.insert(index, Proposal { term: r.term(), requests }) {
                            // an earlier term's proposal at this index can no longer commit
                            let err = RegionError::NotLeader { region: r.id(), leader: r.leader() };
                            replies.extend(old.requests.into_iter().map(|q| (q, Err(err.clone()))));
                        }
                    }
                    Err(e) => {
                        // dropped before it reached the log: definitely not applied
                        tracing::debug!(region = r.id(), "proposal dropped: {e}");
                        let err = if r.is_leader() {
                            // the leader's own bound (uncommitted bytes, a transfer in progress)
                            RegionError::ServerIsBusy { region: r.id(), backoff_ms: BUSY_BACKOFF_MS }
                        } else {
                            RegionError::NotLeader { region: r.id(), leader: r.leader() }
                        };
                        replies.extend(requests.into_iter().map(|q| (q, Err(err.clone()))));
                    }
                }
            }
            if !r.pending_reads.is_empty() && !r.is_leader() {
                let err = RegionError::NotLeader { region: r.id(), leader: r.leader() };
                replies.extend(std::mem::take(&mut r.pending_reads).into_iter().map(|(q, _)| (q, Err(err.clone()))));
            }
            // raft-rs drops a ReadIndex silently until the leader has committed in
            // its term: hold the reads until then
            if !r.pending_reads.is_empty() && r.raw.raft.commit_to_current_term() {
                let reads = std::mem::take(&mut r.pending_reads);
                let ctx = self.next_read_ctx;
                self.next_read_ctx += 1;
                r.raw.read_index(ctx.to_le_bytes().to_vec());
                r.read_batches.insert(ctx, ReadBatch { term: r.term(), issued_tick: self.ticks, reads });
            }
        }
        for (q, res) in replies {
            self.reply(q, res);
        }
    }

    fn handle_readies(&mut self, walk: &[u64]) {
        for &id in walk {
            if self.regions.contains_key(&id) {
                self.handle_ready(id);
            }
        }
    }

    fn handle_ready(&mut self, id: u64) {
        let r = self.regions.get_mut(&id).expect("listed");
        if !r.raw.has_ready() {
            return;
        }
        let mut rd = r.raw.ready();
        self.send(id, rd.take_messages());
        let r = self.regions.get_mut(&id).expect("listed");
        let mut writes = vec![wal::RegionWrite::default()];
        if !rd.snapshot().is_empty() {
            // the file it replaces goes once the install's record is durable
            if let Some(old) = r.snapshot {
                self.obsolete.push_back((self.next_batch, old));
            }
            let (write, install, replies) = install_snapshot(r, rd.snapshot());
            writes[0] = write;
            self.staged_installs.push(install);
            self.stats.snapshots_installed += 1;
            for (q, res) in replies {
                self.outputs.push(Output::Reply { request: q, result: res });
            }
        }
        for rs in rd.take_read_states() {
            match <[u8; 8]>::try_from(rs.request_ctx.as_slice()) {
                Ok(ctx) if r.read_batches.contains_key(&u64::from_le_bytes(ctx)) => {
                    r.ready_reads.push((u64::from_le_bytes(ctx), rs.index))
                }
                _ => tracing::debug!(region = id, "a ReadIndex answer for no pending read"),
            }
        }
        let committed = rd.take_committed_entries();
        // a follower catching up can get many appends in one Ready: split its
        // entries over region writes that each fit a WAL record; the HardState
        // rides on the last (a durable prefix without it is harmless)
        if !rd.entries().is_empty() {
            r.raw.mut_store().append(rd.entries());
            let mut bytes = 0;
            for e in rd.entries() {
                let size = e.data.len() + ENTRY_OVERHEAD_BYTES;
                let last = writes.last_mut().unwrap();
                if !last.entries.is_empty() && bytes + size > self.limits.write_bytes_max {
                    writes.push(wal::RegionWrite::default());
                    bytes = 0;
                }
                bytes += size;
                writes.last_mut().unwrap().entries.push(entry_to_wal(e));
            }
        }
        if let Some(hs) = rd.hs() {
            r.raw.mut_store().set_hard_state(hs.clone());
            writes.last_mut().unwrap().hard_state = Some(hard_state_to_wal(hs));
        }
        let messages = rd.take_persisted_messages();
        let role_changed = rd.ss().is_some() || rd.hs().is_some_and(|hs| hs.term != r.timeout_term);
        let number = rd.number();
        r.raw.advance_append_async(rd);
        // raft-rs redraws its election timeout from thread_rng whenever the term or
        // role changes: replace it from the shard's seed so a simulation replays
        if role_changed {
            let t = self.rng.between(ELECTION_TICKS as u64, 2 * ELECTION_TICKS as u64 - 1) as usize;
            r.raw.raft.set_randomized_election_timeout(t);
        }
        if r.term() != r.timeout_term {
            r.timeout_term = r.term();
        }
        // raft forgets pending ReadIndex requests when the term or the role
        // changes: answer those it had not confirmed (confirmed ones are safe to serve)
        if role_changed && !r.read_batches.is_empty() {
            let err = RegionError::NotLeader { region: id, leader: r.leader() };
            let confirmed: Vec<u64> = r.ready_reads.iter().map(|(c, _)| *c).collect();
            let unconfirmed: Vec<u64> = r.read_batches.keys().filter(|c| !confirmed.contains(c)).copied().collect();
            for ctx in unconfirmed {
                for (q, _) in r.read_batches.remove(&ctx).unwrap().reads {
                    self.outputs.push(Output::Reply { request: q, result: Err(err.clone()) });
                }
            }
        }
        // a ready is durable once its own writes are, and (raft acknowledges
        // readies in order) once every earlier ready of the region is
        let has_writes = writes.iter().any(|w| !w.is_empty());
        let batch = if has_writes {
            for w in writes.into_iter().filter(|w| !w.is_empty()) {
                self.staged_bytes += staged_size(&w);
                self.staged.push((id, w));
            }
            Some(self.next_batch)
        } else if r.readies_awaiting > 0 {
            Some(if self.staged.is_empty() {
                self.in_flight.expect("an awaited ready rides on a batch")
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
                self.regions.get_mut(&id).expect("listed").raw.on_persist_ready(number);
                self.send(id, messages);
            }
        }
        self.apply(id, committed);
        // applying may have made more ready (e.g. served reads need nothing; conf changes do)
    }

    fn on_persisted(&mut self, batch: u64) {
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
        }
        // the batch recorded newer snapshots: the files they replaced can go
        let (done, waiting): (VecDeque<_>, VecDeque<_>) =
            std::mem::take(&mut self.obsolete).into_iter().partition(|(b, _)| *b <= batch);
        self.obsolete = waiting;
        for (_, id) in done {
            if self.sending.values().flatten().any(|s| *s == id) {
                self.removals_waiting.push(id);
            } else {
                self.outputs.push(Output::RemoveSnapshot(id));
            }
        }
        // second flush point: votes and append responses leave as soon as they are durable
        self.flush_outboxes();
    }

    /// Queues a region's raft messages for their peers' stores and shards;
    /// a `MsgSnapshot` instead goes out with its file on the snapshot stream
    /// (and the file is kept while that send runs).
    fn send(&mut self, id: u64, messages: Vec<eraftpb::Message>) {
        let Some(r) = self.regions.get(&id) else { return };
        for m in messages {
            let Some(to) = r.meta.peer(m.to).copied() else {
                tracing::warn!(region = id, to = m.to, "message to a peer not in the region's meta");
                continue;
            };
            let envelope = Envelope {
                region_id: id,
                start_key: r.key_range.0.clone(),
                end_key: r.key_range.1.clone(),
                epoch: r.meta.epoch(),
                // (every region of this shard has its own peer here)
                from: Peer { peer_id: r.peer_id, store_id: self.store_id, shard: self.shard },
                to: Target { peer_id: to.peer_id, store_id: to.store_id, shard: to.shard },
                message: m.write_to_bytes().expect("a raft message encodes").into(),
            };
            let dest = Destination { store_id: to.store_id, shard: to.shard };
            if m.get_msg_type() == MessageType::MsgSnapshot {
                // raft asked storage for it: a durable snapshot whose file is kept
                // until a newer one's record is durable and this send has ended
                let meta = m.get_snapshot().get_metadata();
                let snap = SnapshotId { region: id, index: meta.index, term: meta.term };
                self.stats.snapshots_sent += 1;
                self.sending.entry((id, to.peer_id)).or_default().push_back(snap);
                self.outputs.push(Output::SendSnapshot { to: dest, envelope, id: snap });
                continue;
            }
            if let Err(e) = self.outboxes.push(dest, &envelope) {
                tracing::warn!(region = id, "message dropped: {e}");
            }
            if !self.limits.batching {
                // measuring what batching buys: this message is a frame of its own
                self.outputs.push(Output::Frames(self.outboxes.flush()));
            }
        }
    }

    fn flush_outboxes(&mut self) {
        let frames = self.outboxes.flush();
        if !frames.is_empty() {
            self.outputs.push(Output::Frames(frames));
        }
    }

    fn issue_persist(&mut self) {
        if self.in_flight.is_some() || self.staged.is_empty() {
            return;
        }
        let batch = self.next_batch;
        self.next_batch += 1;
        self.in_flight = Some(batch);
        let (writes, installs) = if self.limits.batching {
            self.staged_bytes = 0;
            (std::mem::take(&mut self.staged), std::mem::take(&mut self.staged_installs))
        } else {
            self.take_one_region(batch)
        };
        self.stats.persist_batches += 1;
        self.stats.region_writes_persisted += writes.len() as u64;
        self.stats.regions_persisted +=
            writes.iter().map(|(r, _)| *r).collect::<std::collections::BTreeSet<_>>().len() as u64;
        self.outputs.push(Output::Persist { batch, writes, installs });
    }

    /// Without batching: batch `batch` carries one region's staged writes;
    /// what else was staged for it (readies, replaced snapshot files) moves
    /// to the next batch, so nothing counts as durable before its write is.
    #[allow(clippy::type_complexity)]
    fn take_one_region(&mut self, batch: u64) -> (Vec<(u64, wal::RegionWrite)>, Vec<(PathBuf, SnapshotId)>) {
        let region = self.staged[0].0;
        let (mine, rest): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.staged).into_iter().partition(|(r, _)| *r == region);
        self.staged = rest;
        self.staged_bytes = self.staged.iter().map(|(_, w)| staged_size(w)).sum();
        let (installs, later) =
            std::mem::take(&mut self.staged_installs).into_iter().partition(|(_, id)| id.region == region);
        self.staged_installs = later;
        // (a region with nothing left staged rode on writes already issued: it stays)
        let later: std::collections::BTreeSet<u64> = self.staged.iter().map(|(r, _)| *r).collect();
        for a in self.awaiting.iter_mut().filter(|a| a.batch == batch && later.contains(&a.region)) {
            a.batch = batch + 1;
        }
        for (b, id) in self.obsolete.iter_mut() {
            if *b == batch && later.contains(&id.region) {
                *b = batch + 1;
            }
        }
        (mine, installs)
    }

    /// Applies committed entries, answers their clients, serves reads whose
    /// ReadIndex is now applied.
    fn apply(&mut self, id: u64, committed: Vec<eraftpb::Entry>) {
        let mut replies = vec![];
        let mut removed = false;
        let r = self.regions.get_mut(&id).expect("listed");
        for e in committed {
            assert_eq!(e.index, r.applied + 1, "region {id}: applying {} after {}", e.index, r.applied);
            let results = match e.get_entry_type() {
                EntryType::EntryNormal if e.data.is_empty() => vec![], // a new leader's empty entry
                EntryType::EntryNormal => {
                    r.applied_bytes_since_snapshot += e.data.len();
                    r.applied_bytes_total += e.data.len() as u64;
                    apply_batch(r, &e.data)
                }
                EntryType::EntryConfChange => {
                    let (result, write) = apply_conf_change(r, &e);
                    removed = r.meta.peer(r.peer_id).is_none();
                    // (its own removal is recorded with its tombstone, in one write)
                    if let Some(w) = write.filter(|_| !removed) {
                        self.staged_bytes += staged_size(&w);
                        self.staged.push((id, w));
                    }
                    vec![result]
                }
                EntryType::EntryConfChangeV2 => {
                    panic!("region {id}: entry {} is a ConfChangeV2, never proposed here", e.index)
                }
            };
            // proposals of earlier terms beyond this entry can never commit now
            // (log terms only grow): they were not applied
            let stale: Vec<u64> =
                r.proposals.iter().filter(|(i, p)| **i > e.index && p.term < e.term).map(|(i, _)| *i).collect();
            for i in stale {
                let err = RegionError::NotLeader { region: id, leader: r.leader() };
                replies.extend(r.proposals.remove(&i).unwrap().requests.into_iter().map(|q| (q, Err(err.clone()))));
            }
            if let Some(p) = r.proposals.remove(&e.index) {
                if p.term == e.term && results.is_empty() {
                    // raft turned our membership change into an empty entry (one was pending)
                    let reason = "another membership change was in progress".to_string();
                    replies.extend(
                        p.requests
                            .into_iter()
                            .map(|q| (q, Err(RegionError::Refused { region: id, reason: reason.clone() }))),
                    );
                } else if p.term == e.term {
                    assert_eq!(results.len(), p.requests.len(), "region {id}: entry {} is our batch", e.index);
                    replies.extend(p.requests.into_iter().zip(results));
                } else {
                    // another leader's entry took our index: ours was never applied
                    let err = RegionError::NotLeader { region: id, leader: r.leader() };
                    replies.extend(p.requests.into_iter().map(|q| (q, Err(err.clone()))));
                }
            }
            r.applied = e.index;
            self.stats.entries_applied += 1;
            if removed {
                break; // nothing after its own removal concerns this peer
            }
        }
        if removed {
            for (q, res) in replies {
                self.reply(q, res);
            }
            self.destroy_region(id);
            return;
        }
        advance_raft_applied(r);
        let applied = r.applied;
        let mut still = vec![];
        for (ctx, index) in std::mem::take(&mut r.ready_reads) {
            if index > applied {
                still.push((ctx, index));
                continue;
            }
            for (q, query) in r.read_batches.remove(&ctx).map(|b| b.reads).unwrap_or_default() {
                let response = match query {
                    Query::Get(key) => Response::Value(r.kv.get(&key).map(<[u8]>::to_vec)),
                    Query::Scan { start, end, limit } => {
                        // within the region: a client scanning further moves on to the next region
                        let end = match (end.is_empty(), r.meta.end_key.is_empty()) {
                            (true, _) => r.meta.end_key.clone(),
                            (false, true) => end,
                            (false, false) => end.min(r.meta.end_key.clone()),
                        };
                        Response::Rows(r.kv.scan(&start, &end, limit))
                    }
                };
                replies.push((q, Ok(response)));
            }
        }
        r.ready_reads = still;
        for (q, res) in replies {
            self.reply(q, res);
        }
    }
}

/// Tells raft how far the state machine has applied: an installed
/// snapshot's index only once raft has it persisted (raft checks that).
fn advance_raft_applied(r: &mut Region) {
    let to = r.applied.min(r.raw.raft.raft_log.persisted);
    if to > r.raw.raft.raft_log.applied {
        r.raw.advance_apply_to(to);
    }
}

/// Where a region's log may start after a snapshot at `index`: right after
/// it, except that a leader keeps (a bounded number of) the entries its
/// active followers have not yet matched, so one a little behind gets
/// appends rather than a whole snapshot. A follower that has not been heard
/// from within an election timeout is not waited for (it gets the
/// snapshot), nor is anyone when the WAL named the region as pinning old
/// segments.
fn compact_point(r: &mut Region, index: u64) -> u64 {
    let forced = std::mem::take(&mut r.compact_wanted);
    if forced || !r.is_leader() {
        return index;
    }
    let me = r.peer_id;
    let lowest = r
        .raw
        .raft
        .prs()
        .iter()
        .filter(|(id, p)| **id != me && p.recent_active)
        .map(|(_, p)| p.matched)
        .min()
        .unwrap_or(index);
    lowest.max(index.saturating_sub(COMPACT_LAG_ENTRIES_MAX)).min(index)
}

/// Whether the leader `r` sees peer `id` as up and keeping up: itself, or a
/// follower it heard from within an election timeout that it replicates
/// to or that has every entry. (A follower back from a restart or a broken
/// link is probed, and raft-rs moves it back to replicating only on an
/// append's answer: in an idle region, one that already has everything
/// would stay "probed" until the next write.)
fn is_healthy(r: &Region, id: u64) -> bool {
    let last = r.raw.raft.raft_log.last_index();
    id == r.peer_id
        || r.raw.raft.prs().get(id).is_some_and(|p| {
            p.recent_active
                && (p.state == raft::ProgressState::Replicate
                    || (p.state == raft::ProgressState::Probe && p.matched >= last))
        })
}

/// What the WAL's meta bytes hold for `r` now.
fn local_state(r: &Region) -> bytes::Bytes {
    RegionLocalState { meta: r.meta.clone(), snapshot: r.snapshot.map(|s| (s.index, s.term)), removed_peer: None }
        .encode()
}

/// The region's HardState with a commit index at least `index` (a snapshot
/// at `index` is committed; a restart applies it and raft checks
/// applied ≤ commit).
fn hard_state_covering(r: &Region, index: u64) -> wal::HardState {
    let mut hs = hard_state_to_wal(r.raw.store().hard_state());
    hs.commit = hs.commit.max(index);
    hs
}

/// Installs the received snapshot raft just took: the state machine, meta
/// and log start over from it. Returns the region write that records it
/// (first of the ready's writes: it resets the log before any entry), the
/// file to move into place before that write, and replies to proposals
/// the snapshot covers (their fate cannot be known).
#[allow(clippy::type_complexity)]
fn install_snapshot(
    r: &mut Region,
    snap: &eraftpb::Snapshot,
) -> (wal::RegionWrite, (PathBuf, SnapshotId), Vec<(u64, Result<Response, RegionError>)>) {
    let (index, term) = (snap.get_metadata().index, snap.get_metadata().term);
    let (data, file) = r
        .receiving
        .take()
        .unwrap_or_else(|| panic!("region {}: raft installs a snapshot at {index} that was never received", r.id()));
    assert_eq!(
        (data.index, data.term),
        (index, term),
        "region {}: raft installs another snapshot than received",
        r.id()
    );
    let id = data.id();
    let conf = snap.get_metadata().get_conf_state().clone();
    r.kv = data.kv;
    r.meta = data.meta;
    r.key_range = (r.meta.start_key.clone().into(), r.meta.end_key.clone().into());
    r.applied = index;
    r.applied_bytes_since_snapshot = 0;
    r.raw.mut_store().restore(index, term, conf.clone());
    r.snapshot = Some(id);
    let mut replies = vec![];
    let covered: Vec<u64> = r.proposals.range(..=index).map(|(i, _)| *i).collect();
    for i in covered {
        let err = RegionError::Ambiguous { region: r.id() };
        replies.extend(r.proposals.remove(&i).unwrap().requests.into_iter().map(|q| (q, Err(err.clone()))));
    }
    let write = wal::RegionWrite {
        snapshot: Some(wal::SnapshotMarker { index, term }),
        conf_state: Some(conf_state_to_wal(&conf)),
        meta: Some(local_state(r)),
        hard_state: Some(hard_state_covering(r, index)),
        ..Default::default()
    };
    (write, (file, id), replies)
}

/// Applies a committed membership change: checked against the region's
/// epoch as it is now (another change may have applied since it was
/// proposed), then raft's configuration, the meta and their WAL write.
fn apply_conf_change(r: &mut Region, e: &eraftpb::Entry) -> (Result<Response, RegionError>, Option<wal::RegionWrite>) {
    let cc = eraftpb::ConfChange::parse_from_carllerche_bytes(&e.data)
        .unwrap_or_else(|err| panic!("region {}: conf change at {} undecodable: {err}", r.id(), e.index));
    let next = RegionMeta::decode(&cc.context)
        .unwrap_or_else(|err| panic!("region {}: conf change at {} carries no meta: {err}", r.id(), e.index));
    let fits = next.id == r.id() && next.conf_ver == r.meta.conf_ver + 1 && next.version == r.meta.version;
    if !fits {
        // not applied anywhere: every replica sees the same epoch here
        return (Err(RegionError::EpochNotMatch { current: Box::new(r.meta.clone()) }), None);
    }
    let cs = r
        .raw
        .apply_conf_change(&cc)
        .unwrap_or_else(|err| panic!("region {}: conf change at {}: {err}", r.id(), e.index));
    r.meta = next;
    r.raw.mut_store().set_conf_state(cs.clone());
    let write =
        wal::RegionWrite { conf_state: Some(conf_state_to_wal(&cs)), meta: Some(local_state(r)), ..Default::default() };
    (Ok(Response::Done), Some(write))
}

/// Bytes a staged region write counts against `STAGED_BYTES_MAX`.
fn staged_size(w: &wal::RegionWrite) -> usize {
    w.entries.iter().map(|e| e.data.len() + ENTRY_OVERHEAD_BYTES).sum::<usize>() + 64
}

/// Applies one write batch, checking its epoch against the region's now.
fn apply_batch(r: &mut Region, data: &[u8]) -> Vec<Result<Response, RegionError>> {
    let batch =
        WriteBatchRef::decode(data).unwrap_or_else(|e| panic!("region {}: committed entry undecodable: {e}", r.id()));
    if batch.version != r.meta.version {
        // proposed before a split this entry now follows: refuse every command
        let err = RegionError::EpochNotMatch { current: Box::new(r.meta.clone()) };
        return batch.commands.iter().map(|_| Err(err.clone())).collect();
    }
    batch
        .commands
        .iter()
        .map(|c| {
            if !r.meta.contains(c.key()) {
                return Err(RegionError::KeyNotInRegion {
                    key: c.key().to_vec(),
                    region: r.id(),
                    start: r.meta.start_key.clone(),
                    end: r.meta.end_key.clone(),
                });
            }
            Ok(match r.kv.apply(*c) {
                Applied::Done => Response::Done,
                Applied::Cas(ok) => Response::Cas(ok),
            })
        })
        .collect()
}
