//! One loop iteration: every input dispatched to the file that handles it,
//! then the batched stages over the regions the inputs touched (propose,
//! readies, snapshots, flush, persist). Raft ticks and raft messages are
//! stepped here too.

use protobuf::Message as _;
use raft::eraftpb::{self, MessageType};
use transport::Envelope;

use super::{redraw_election_timeout, Input, Query, Shard, READ_TIMEOUT_TICKS, SCAN_ROWS_MAX};
use crate::error::RegionError;
use crate::kv::StateMachine as _;
use crate::region::meta::{PeerMeta, PEERS_MAX};

impl Shard {
    /// One loop iteration.
    pub fn step(&mut self, inputs: impl IntoIterator<Item = Input>) -> Vec<super::Output> {
        self.stats.iterations += 1;
        let mut persisted = None;
        for input in inputs {
            self.touch_regions_of(&input);
            match input {
                Input::Tick => self.tick(),
                Input::DiskFull { full } => {
                    if full != self.disk_full {
                        match full {
                            true => tracing::warn!(
                                shard = self.shard,
                                "the WAL's disk is full: refusing writes other than deletes until space is freed"
                            ),
                            false => tracing::warn!(shard = self.shard, "the WAL's disk has room again: taking writes"),
                        }
                    }
                    self.disk_full = full;
                }
                Input::Client { request, req } => self.on_client(request, req),
                Input::Write { request, region, epoch, command } => self.on_write(request, region, epoch, command),
                Input::Read { request, region, key } => self.on_read(request, region, Query::Get(key)),
                Input::Scan { request, region, start, end, limit } => {
                    self.on_read(request, region, Query::Scan { start, end, limit: limit.min(SCAN_ROWS_MAX) })
                }
                Input::TransferLeader { request, region, to_peer } => self.on_transfer_leader(request, region, to_peer),
                Input::DescribeRegion { request, region } => self.on_describe_region(request, region),
                Input::ChangePeer { request, region, epoch, change } => {
                    self.on_change_peer(request, region, epoch, change)
                }
                Input::Split { request, region, epoch, split } => self.on_split(request, region, epoch, split),
                Input::SplitKeyFound { region, epoch, bytes, key } => {
                    self.on_split_key_found(region, epoch, bytes, key)
                }
                Input::Raft(envelope) => self.on_raft(envelope),
                Input::MembershipChecked { region, peer_id, current, reported } => {
                    self.on_membership_checked(region, peer_id, current.map(|c| *c), reported)
                }
                Input::Written { batch } => self.on_written(batch),
                Input::Persisted { batch } => {
                    // (cumulative: a later batch durable means every earlier one is)
                    assert!(batch < self.next_batch, "persist batch {batch} was never issued");
                    self.on_written(batch);
                    if batch > self.persisted_upto {
                        self.persisted_upto = batch;
                        persisted = Some(batch);
                    }
                }
                Input::SnapshotWritten { id, result } => self.on_snapshot_written(id, result),
                Input::Snapshot { envelope, snapshot, file } => self.on_snapshot(envelope, snapshot, file),
                Input::SnapshotSent { region, to_peer, ok } => self.on_snapshot_sent(region, to_peer, ok),
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
        self.split_housekeeping();
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
        let created = std::mem::take(&mut self.created);
        self.dirty.extend(created);
        std::mem::take(&mut self.outputs)
    }

    /// Marks the regions an input concerns for this iteration's walk (a
    /// tick: all of them).
    fn touch_regions_of(&mut self, input: &Input) {
        match input {
            Input::Tick => self.all_dirty = true,
            Input::Client { req, .. } => self.touch(req.region),
            Input::Write { region, .. }
            | Input::Read { region, .. }
            | Input::Scan { region, .. }
            | Input::TransferLeader { region, .. }
            | Input::ChangePeer { region, .. }
            | Input::Split { region, .. }
            | Input::SplitKeyFound { region, .. }
            | Input::MembershipChecked { region, .. }
            | Input::SnapshotSent { region, .. } => self.touch(*region),
            Input::Raft(e) | Input::Snapshot { envelope: e, .. } => self.touch(e.region_id),
            Input::SnapshotWritten { id, .. } => self.touch(id.region),
            Input::CompactRequested { regions } | Input::Unreachable { regions, .. } => {
                for r in regions {
                    self.touch(*r);
                }
            }
            Input::DescribeRegion { .. } | Input::Written { .. } | Input::Persisted { .. } | Input::DiskFull { .. } => {
            }
        }
    }

    fn tick(&mut self) {
        self.ticks += 1;
        // (once a tick: the memory limit's figure; every region is walked now anyway)
        self.memory_bytes = self.regions.values().map(|r| r.raw.store().entry_bytes() + r.kv.bytes()).sum();
        let mut failed = vec![];
        let split_bytes = self.limits.region_split_bytes;
        for r in self.regions.values_mut() {
            if let Some(job) = super::split::on_tick(r, self.ticks, split_bytes) {
                self.outputs.push(super::Output::FindSplitKey(Box::new(job)));
            }
            self.outputs.extend(super::stale::on_tick(r, self.ticks));
            if r.fenced.is_some() || r.catching_up.is_some() {
                continue; // never campaigns (fence.rs, catch_up.rs); a fenced one sends no heartbeat
            }
            if r.raw.raft.election_elapsed == 0 {
                redraw_election_timeout(&mut self.rng, r);
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
        self.ask_about_tombstones();
        self.ask_whether_removed();
    }

    /// Steps a peer's raft message into its region — creating the region
    /// first when a leader's message says this store was added to it, and
    /// keeping removed peers (ours or theirs) out (`membership.rs`).
    pub(super) fn on_raft(&mut self, envelope: Envelope) {
        if envelope.message.is_empty() {
            return self.on_removal_notice(envelope);
        }
        self.replace_removed_peer(&envelope);
        if !self.regions.contains_key(&envelope.region_id) && !self.create_peer(&envelope) {
            return;
        }
        let r = self.regions.get_mut(&envelope.region_id).expect("hosted or just created");
        if envelope.to.peer_id != r.peer_id {
            tracing::debug!(region = r.id(), to = envelope.to.peer_id, "message for another peer of the region");
            return;
        }
        if r.fenced.is_some() {
            return; // to its peers, a fenced replica is one that is down (fence.rs)
        }
        if r.meta.conf_ver == 0 && r.meta.peer(envelope.from.peer_id).is_none() && r.meta.peers.len() < PEERS_MAX {
            // not yet filled by a snapshot: it knows its peers only as they
            // write to it (a new leader must be answered too)
            let f = envelope.from;
            r.meta.peers.push(PeerMeta::voter(f.peer_id, f.store_id, f.shard));
        }
        let named = r.meta.peer(envelope.from.peer_id).is_some();
        if !named && envelope.epoch.conf_ver < r.meta.conf_ver {
            // a peer removed under an epoch we have applied (it was away when
            // it happened): it must not disturb the region, and is told so
            tracing::debug!(region = r.id(), from = envelope.from.peer_id, "message from a removed peer dropped");
            let f = envelope.from;
            return self.send_removal_notice(envelope.region_id, PeerMeta::voter(f.peer_id, f.store_id, f.shard));
        }
        if !named && r.learned_peers.len() < PEERS_MAX {
            // a member newer than this replica's meta (it missed the changes
            // that added it, and catches up from it): its answers must reach it
            let f = envelope.from;
            r.learned_peers.insert(f.peer_id, PeerMeta::voter(f.peer_id, f.store_id, f.shard));
        }
        let msg = match eraftpb::Message::parse_from_carllerche_bytes(&envelope.message) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(region = r.id(), from = envelope.from.store_id, "undecodable raft message: {e}");
                return;
            }
        };
        if r.catching_up.is_some()
            && matches!(
                msg.get_msg_type(),
                MessageType::MsgRequestVote | MessageType::MsgRequestPreVote | MessageType::MsgTimeoutNow
            )
        {
            // it may lack entries it acknowledged: no vote, no campaign (catch_up.rs)
            tracing::debug!(
                region = r.id(),
                from = envelope.from.store_id,
                "vote or campaign request while catching up dropped"
            );
            return;
        }
        if msg.get_msg_type() == MessageType::MsgSnapshot {
            // a snapshot's data comes on the snapshot stream, as `Input::Snapshot`
            tracing::warn!(region = r.id(), from = envelope.from.store_id, "snapshot message without its data dropped");
            return;
        }
        r.heard_at_tick.insert(envelope.from.peer_id, self.ticks);
        if matches!(msg.get_msg_type(), MessageType::MsgAppend | MessageType::MsgHeartbeat) {
            r.leader_heard_tick = Some(self.ticks);
            r.member_at_conf_ver = r.member_at_conf_ver.max(envelope.epoch.conf_ver);
        }
        if let Err(e) = r.raw.step(msg) {
            tracing::debug!(region = r.id(), "step: {e}");
        }
    }
}
