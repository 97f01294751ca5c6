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

use std::collections::{BTreeMap, VecDeque};

use protobuf::Message as _;
use raft::eraftpb::{self, EntryType, MessageType};
use transport::{Destination, Envelope, Outboxes, Peer, SeededRng, Target};

use crate::error::RegionError;
use crate::kv::{Applied, Command, StateMachine, WriteBatch, ENTRY_BYTES_MAX};
use crate::region::meta::RegionMeta;
use crate::region::peer::{Proposal, ReadBatch, Region, ELECTION_TICKS, PENDING_WRITES_MAX, PROPOSALS_MAX};
use crate::region::wal_convert::{conf_state_to_wal, entry_to_wal, hard_state_to_wal};
use crate::region::RegionStorage;
use crate::shard::io::{Input, Output, Query, Response};

/// How long a client should wait before retrying a busy region.
const BUSY_BACKOFF_MS: u64 = 10;
/// Bytes staged for the next persist batch past which client writes are
/// refused (ServerIsBusy) until the disk catches up.
pub const STAGED_BYTES_MAX: usize = 64 << 20;
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

/// Sizes the shard keeps under so that everything it stages fits its WAL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardLimits {
    /// Largest entry payload a region proposes.
    pub entry_bytes_max: usize,
    /// Largest region write (entries and HardState) handed to the WAL in one piece.
    pub write_bytes_max: usize,
    /// Memory (every region's in-memory log and state) past which writes are refused.
    pub memory_bytes_max: usize,
}

impl ShardLimits {
    /// The limits that fit a WAL opened with `opts`.
    pub fn for_wal(opts: &wal::WalOptions) -> ShardLimits {
        let write_bytes_max = opts.batch_bytes_max - RECORD_OVERHEAD_BYTES;
        let entry_bytes_max = ENTRY_BYTES_MAX.min(write_bytes_max - ENTRY_OVERHEAD_BYTES);
        ShardLimits { entry_bytes_max, write_bytes_max, memory_bytes_max: MEMORY_BYTES_DEFAULT }
    }

    pub fn with_memory_limit(self, memory_bytes_max: usize) -> ShardLimits {
        ShardLimits { memory_bytes_max, ..self }
    }
}

/// A ready whose durability rides on persist batch `batch`.
struct Awaiting {
    batch: u64,
    region: u64,
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
    pub entries_applied: u64,
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
        }
    }

    /// Adds a region this shard hosts. `fresh`: a new region (bootstrap), whose
    /// meta and membership are persisted with the next batch.
    pub fn create_region(&mut self, meta: RegionMeta, storage: RegionStorage, applied: u64, fresh: bool) {
        let peer = *meta
            .peer_on(self.store_id)
            .unwrap_or_else(|| panic!("region {} has no peer on store {}", meta.id, self.store_id));
        assert_eq!(peer.shard, self.shard, "region {} belongs to shard {} of this store", meta.id, peer.shard);
        let id = meta.id;
        if fresh {
            let write = wal::RegionWrite {
                meta: Some(meta.encode()),
                conf_state: Some(conf_state_to_wal(storage.conf_state())),
                ..Default::default()
            };
            self.stage(id, write);
        }
        let mut region = Region::new(meta, peer.peer_id, storage, applied).expect("a valid raft config");
        let t = self.rng.between(ELECTION_TICKS as u64, 2 * ELECTION_TICKS as u64 - 1) as usize;
        region.raw.raft.set_randomized_election_timeout(t);
        region.timeout_term = region.term();
        assert!(self.regions.insert(id, region).is_none(), "region {id} created twice");
    }

    pub fn region(&self, id: u64) -> Option<&Region> {
        self.regions.get(&id)
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
        self.regions.values().any(|r| r.raw.has_ready())
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
            })
    }

    /// Whether a persist batch is in flight.
    pub fn persist_in_flight(&self) -> Option<u64> {
        self.in_flight
    }

    /// One loop iteration.
    pub fn step(&mut self, inputs: Vec<Input>) -> Vec<Output> {
        self.stats.iterations += 1;
        self.memory_bytes = self.regions.values().map(|r| r.raw.store().entry_bytes() + r.kv.bytes()).sum();
        let mut persisted = None;
        for input in inputs {
            match input {
                Input::Tick => self.tick(),
                Input::Write { request, region, epoch, command } => self.on_write(request, region, epoch, command),
                Input::Read { request, region, key } => self.on_read(request, region, Query::Get(key)),
                Input::Scan { request, region, start, end, limit } => {
                    self.on_read(request, region, Query::Scan { start, end, limit: limit.min(SCAN_ROWS_MAX) })
                }
                Input::TransferLeader { request, region, to_peer } => self.on_transfer_leader(request, region, to_peer),
                Input::Raft(envelope) => self.on_raft(envelope),
                Input::Persisted { batch } => {
                    assert_eq!(self.in_flight, Some(batch), "persist batch {batch} completed out of order");
                    self.in_flight = None;
                    persisted = Some(batch);
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
        self.propose();
        self.handle_readies();
        self.flush_outboxes();
        self.issue_persist();
        std::mem::take(&mut self.outputs)
    }

    fn tick(&mut self) {
        self.ticks += 1;
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
        let Some(r) = self.regions.get_mut(&envelope.region_id) else {
            // creating peers for unknown regions comes with conf changes and splits
            tracing::debug!(region = envelope.region_id, "message for a region this shard does not host");
            return;
        };
        if envelope.to.peer_id != r.peer_id {
            tracing::debug!(region = r.id(), to = envelope.to.peer_id, "message for another peer of the region");
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
            // snapshots arrive through the transport's snapshot stream (with log compaction, later)
            tracing::warn!(
                region = r.id(),
                from = envelope.from.store_id,
                "snapshot message dropped: not supported yet"
            );
            return;
        }
        if let Err(e) = r.raw.step(msg) {
            tracing::debug!(region = r.id(), "step: {e}");
        }
    }

    /// All client writes of a region that arrived this iteration → one entry.
    fn propose(&mut self) {
        let mut replies = vec![];
        for r in self.regions.values_mut() {
            if !r.pending_writes.is_empty() {
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

    fn handle_readies(&mut self) {
        let ids: Vec<u64> = self.regions.keys().copied().collect();
        for id in ids {
            self.handle_ready(id);
        }
    }

    fn handle_ready(&mut self, id: u64) {
        let r = self.regions.get_mut(&id).expect("listed");
        if !r.raw.has_ready() {
            return;
        }
        let mut rd = r.raw.ready();
        let store_id = self.store_id;
        for m in rd.take_messages() {
            push_message(&mut self.outboxes, r, store_id, m);
        }
        assert!(rd.snapshot().is_empty(), "region {id}: snapshots come with log compaction (not yet)");
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
        let mut writes = vec![wal::RegionWrite::default()];
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
                self.awaiting.push_back(Awaiting { batch, region: id, number, messages })
            }
            None => {
                // nothing of this region is waiting for a disk: persisted at once
                let r = self.regions.get_mut(&id).expect("listed");
                r.raw.on_persist_ready(number);
                for m in messages {
                    push_message(&mut self.outboxes, r, store_id, m);
                }
            }
        }
        self.apply(id, committed);
        // applying may have made more ready (e.g. served reads need nothing; conf changes do)
    }

    fn on_persisted(&mut self, batch: u64) {
        let store_id = self.store_id;
        while self.awaiting.front().is_some_and(|a| a.batch <= batch) {
            let a = self.awaiting.pop_front().unwrap();
            let r = self.regions.get_mut(&a.region).expect("regions are not removed yet");
            r.readies_awaiting -= 1;
            r.raw.on_persist_ready(a.number);
            for m in a.messages {
                push_message(&mut self.outboxes, r, store_id, m);
            }
        }
        // second flush point: votes and append responses leave as soon as they are durable
        self.flush_outboxes();
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
        let writes = std::mem::take(&mut self.staged);
        self.staged_bytes = 0;
        self.stats.persist_batches += 1;
        self.stats.region_writes_persisted += writes.len() as u64;
        self.outputs.push(Output::Persist { batch, writes });
    }

    /// Applies committed entries, answers their clients, serves reads whose
    /// ReadIndex is now applied.
    fn apply(&mut self, id: u64, committed: Vec<eraftpb::Entry>) {
        let mut replies = vec![];
        let r = self.regions.get_mut(&id).expect("listed");
        for e in committed {
            assert_eq!(e.index, r.applied + 1, "region {id}: applying {} after {}", e.index, r.applied);
            let results = match e.get_entry_type() {
                EntryType::EntryNormal if e.data.is_empty() => vec![], // a new leader's empty entry
                EntryType::EntryNormal => apply_batch(r, &e.data),
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    panic!("region {id}: conf change at {} (membership changes come with the PD issue)", e.index)
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
                if p.term == e.term {
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
        }
        // proposals below the applied index that were never seen were overwritten by a snapshot (not yet possible)
        r.raw.advance_apply_to(r.applied);
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

/// Bytes a staged region write counts against `STAGED_BYTES_MAX`.
fn staged_size(w: &wal::RegionWrite) -> usize {
    w.entries.iter().map(|e| e.data.len() + ENTRY_OVERHEAD_BYTES).sum::<usize>() + 64
}

/// Applies one write batch, checking its epoch against the region's now.
fn apply_batch(r: &mut Region, data: &[u8]) -> Vec<Result<Response, RegionError>> {
    let batch =
        WriteBatch::decode(data).unwrap_or_else(|e| panic!("region {}: committed entry undecodable: {e}", r.id()));
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
            Ok(match r.kv.apply(c) {
                Applied::Done => Response::Done,
                Applied::Cas(ok) => Response::Cas(ok),
            })
        })
        .collect()
}

/// Queues a raft message for its peer's store and shard.
fn push_message(outboxes: &mut Outboxes, r: &Region, store_id: u64, m: eraftpb::Message) {
    let Some(to) = r.meta.peer(m.to).copied() else {
        tracing::warn!(region = r.id(), to = m.to, "message to a peer not in the region's meta");
        return;
    };
    debug_assert!(m.get_msg_type() != MessageType::MsgSnapshot, "snapshot messages travel on the snapshot stream");
    let envelope = Envelope {
        region_id: r.id(),
        start_key: r.key_range.0.clone(),
        end_key: r.key_range.1.clone(),
        epoch: r.meta.epoch(),
        from: Peer { peer_id: r.peer_id, store_id },
        to: Target { peer_id: to.peer_id, store_id: to.store_id, shard: to.shard },
        message: m.write_to_bytes().expect("a raft message encodes").into(),
    };
    let dest = Destination { store_id: to.store_id, shard: to.shard };
    if let Err(e) = outboxes.push(dest, &envelope) {
        tracing::warn!(region = r.id(), "message dropped: {e}");
    }
}
