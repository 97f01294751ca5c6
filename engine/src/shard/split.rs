//! Split: region [start, end) becomes [start, key) — the same region, its
//! `version` + 1 — and [key, end), a new region with ids PD allocated, its
//! peers on the same stores and shards (so on every replica the child is
//! born on its parent's shard, in the same WAL).
//!
//! - **Propose and apply check one rule** (`RegionMeta::split`): the key is
//!   strictly inside the region, one new peer id per peer. The leader also
//!   refuses while a membership change is pending or the region is in a
//!   joint configuration, and checks its local limits (regions per shard)
//!   there: nothing at apply depends on local state, or replicas diverge.
//!   At apply the command must carry the region's epoch exactly (a split or
//!   membership change applied since refuses it, the same on every replica).
//! - **The child's state is re-derivable until it is durable.** Applying
//!   the split cuts the state machine in O(1) (both halves share the map
//!   and trim the other side's keys a budget per iteration), creates the
//!   child at `RAFT_INIT_INDEX` with its half, stages its log start, raft
//!   membership and HardState (its peers vote and append from the first
//!   ready) — with a meta that names no snapshot. The child is *recorded*
//!   (its meta naming a durable snapshot of its own) once that snapshot's
//!   file and record are durable. Until then a restart finds it *pending*
//!   (recovery keeps it aside) and re-derives it by replaying the parent's
//!   split, keeping the child's log and vote; so the parent
//!   takes no snapshot, installs none and is not destroyed until its
//!   children are recorded. A replayed split whose child is recorded only
//!   trims the parent. (The alternative, one WAL record holding both
//!   regions' new state, would have needed atomic multi-region records in
//!   the WAL; replay gives the same all-or-nothing without them.)
//! - **Only initialized regions own key ranges.** A message for a region
//!   this shard does not host whose range overlaps one it does creates no
//!   peer: it is a child this replica has not split off yet, and the split
//!   will create it. Vote requests among those are kept (a few) and stepped
//!   once the child exists, so its first election is not lost. A split that
//!   meets an uninitialized peer of the child (created by a leader's message
//!   where no overlapping region was) fills it in place with its term and
//!   vote kept: a forgotten vote could elect two leaders in one term.
//! - **No snapshot for a split.** The child's leader (on the parent leader's
//!   store, campaigning at once) sends no snapshot for
//!   `SPLIT_SNAPSHOT_HOLD_TICKS`: followers that have not applied the split
//!   yet get the time to, and then need none.
//! - **In flight.** Writes and reads queued on the parent whose keys left
//!   it are answered at once (`EpochNotMatch`, naming the regions split
//!   off it: `Shard::reply`); proposals already in the log fail the version
//!   check at apply; reads check the range when served.
//! - **By size.** Once a tick, a leader past `region_split_bytes` (and not
//!   trimming) has its middle key found off the loop (`Output::FindSplitKey`)
//!   and asks for ids (`Output::AskSplit`; the driver brings back an
//!   `Input::Split`), again after `SPLIT_ASK_TIMEOUT_TICKS` without one. Past
//!   twice the size with no split proposed, its writes are refused
//!   (`admission.rs`), so a region that cannot split does not grow unbounded.

use std::collections::BTreeSet;

use raft::eraftpb;
use transport::Envelope;

use crate::error::RegionError;
use crate::kv::admin::{AdminCommand, SplitCommand};
use crate::kv::{MemKv, StateMachine as _};
use crate::region::meta::{RegionLocalState, RegionMeta};
use crate::region::peer::{Region, ELECTION_TICKS};
use crate::region::wal_convert::{conf_state_to_wal, hard_state_to_wal};
use crate::region::RegionStorage;

use super::io::SplitKeyJob;
use super::snapshot::local_state;
use super::{
    redraw_election_timeout, Output, Query, Response, Shard, SplitRequest, RAFT_INIT_INDEX, RAFT_INIT_TERM,
    SHARD_REGIONS_MAX, SPLIT_ASK_TIMEOUT_TICKS,
};

/// Keys a shard trims from split halves per loop iteration: a fraction of a
/// millisecond (`ringraft bench split` measures it on a 96 MiB region).
pub const SPLIT_TRIM_KEYS_PER_ITERATION: usize = 1024;
/// Ticks a new child's leader holds its snapshots back (its followers apply
/// the split within a few heartbeats unless they are down or far behind).
pub const SPLIT_SNAPSHOT_HOLD_TICKS: u64 = 3 * ELECTION_TICKS as u64;
/// Children a region remembers, to name them in `EpochNotMatch` answers.
pub const SPLIT_OFF_REMEMBERED: usize = 4;
/// Regions one `EpochNotMatch` names at most (children, theirs, …).
pub const SPLIT_OFF_NAMED_MAX: usize = 16;
/// Vote requests for not-yet-split children a shard keeps, in all.
pub const EARLY_VOTES_MAX: usize = 64;

const _: () = assert!(SPLIT_SNAPSHOT_HOLD_TICKS > ELECTION_TICKS as u64);

/// What applying a split entry left for the shard to do once the region's
/// committed entries are applied: create (or fill, or find) the child.
pub(super) struct SplitApplied {
    pub child: RegionMeta,
    pub kv: MemKv,
}

impl Shard {
    /// A split asked of this region's leader: checked, then proposed as an
    /// admin entry; answered once applied.
    pub(super) fn on_split(&mut self, request: u64, region: u64, epoch: transport::Epoch, split: SplitRequest) {
        let full = self.is_full();
        let new_id_here = self.regions.contains_key(&split.new_region_id);
        let proposed = (|| {
            let r = super::propose::admin_region(&mut self.regions, region, epoch)?;
            let refused = |reason: String| RegionError::Refused { region, reason };
            if r.raw.raft.has_pending_conf() {
                return Err(refused("a membership change is not applied yet".into()));
            }
            r.meta.split(&split.split_key, split.new_region_id, &split.new_peer_ids).map_err(refused)?;
            if new_id_here {
                return Err(refused(format!("region {} is already on this shard", split.new_region_id)));
            }
            if full {
                return Err(refused(format!("the shard hosts SHARD_REGIONS_MAX ({SHARD_REGIONS_MAX}) regions")));
            }
            let cmd = AdminCommand::Split(SplitCommand {
                conf_ver: r.meta.conf_ver,
                version: r.meta.version,
                split_key: split.split_key,
                new_region_id: split.new_region_id,
                new_peer_ids: split.new_peer_ids,
            });
            let index = super::propose::propose_admin(r, request, |raw| raw.propose(vec![], cmd.encode()))
                .map_err(|e| refused(format!("raft refused the split: {e}")))?;
            r.split_proposed = Some(index);
            tracing::info!(region, index, new_region = split.new_region_id, "split proposed");
            Ok(())
        })();
        if let Err(e) = proposed {
            self.reply(request, Err(e));
        }
    }

    /// Finishes a split `parent` applied: the child is created on this
    /// shard (or filled in place, or — a replayed split — found recorded),
    /// the client work that left the parent is answered, and the child's
    /// leader campaigns when the parent's leader is here.
    pub(super) fn finish_split(&mut self, parent: u64, applied: SplitApplied) {
        let SplitApplied { child, kv } = applied;
        let id = child.id;
        self.stats.splits_applied += 1;
        let p = self.regions.get_mut(&parent).expect("the parent applied it");
        let leads = p.is_leader();
        (p.split_check_tick, p.split_proposed) = (None, None);
        // (whatever becomes of the child here, the parent's map holds its keys)
        p.untrimmed = true;
        self.untrimmed.insert(parent);
        let answered = take_work_outside(p);
        let created = self.create_child(parent, child, kv, leads);
        if created {
            let p = self.regions.get_mut(&parent).expect("the parent applied it");
            p.children_unrecorded.insert(id);
        }
        if self.regions.contains_key(&id) {
            let p = self.regions.get_mut(&parent).expect("the parent applied it");
            p.split_off.push_back(id);
            if p.split_off.len() > SPLIT_OFF_REMEMBERED {
                p.split_off.pop_front();
            }
        }
        self.answer_moved(parent, answered);
    }

    /// Creates the split child `child` on this shard with its half `kv`;
    /// whether it did (a replayed split finds it recorded, or removed).
    fn create_child(&mut self, parent: u64, child: RegionMeta, kv: MemKv, leads: bool) -> bool {
        let id = child.id;
        let Some(peer) = child.peer_on(self.store_id).copied() else {
            unreachable!("a child has a peer wherever its parent has one")
        };
        if self.is_removed_peer(id, peer.peer_id) {
            // (replayed: the child was removed from this store since)
            tracing::info!(region = parent, child = id, "split replayed; its child was removed from this store since");
            return false;
        }
        let mut kept = None;
        let mut suspect = self.needs_catch_up;
        match self.regions.get(&id) {
            Some(r) if r.meta.conf_ver > 0 => {
                // replayed: the child is recorded and lives on by itself
                // (or a leader's snapshot made it before this replica split)
                tracing::debug!(region = parent, child = id, "split met its child initialized");
                return false;
            }
            Some(r) if r.peer_id > peer.peer_id => {
                tracing::info!(region = parent, child = id, "split met a newer peer of its child: kept");
                return false;
            }
            Some(r) if r.peer_id == peer.peer_id => {
                // an uninitialized peer a message created: filled in place,
                // its term and vote kept
                kept = Some(r.raw.store().hard_state().clone());
                suspect |= r.catching_up.is_some();
                let mut old = self.regions.remove(&id).expect("just seen");
                let work = super::take_client_work(&mut old);
                self.answer_client_work(id, work, RegionError::RegionNotFound { region: id });
                if let Some((_, file)) = old.receiving {
                    self.outputs.push(Output::DiscardIncoming(file));
                }
            }
            Some(_) => {
                // an older peer of the region, removed since: replaced by this one
                self.destroy_region(id);
                if self.regions.contains_key(&id) {
                    tracing::warn!(region = parent, child = id, "split child not created: an older peer waits to go");
                    return false;
                }
            }
            None => {}
        }
        let (mut storage, stage_start) = match (kept, self.pending_children.remove(&id)) {
            (None, Some(mut recovered)) => {
                // recovered: its log and vote are in the WAL already
                recovered.set_conf_state(child.conf_state());
                (recovered, false)
            }
            (kept, _) => {
                // (a vote the table holds and the WAL does not: the child's
                // records were lost; it comes back suspect, with that vote)
                suspect |= kept.is_none() && self.table_says_active(id);
                (initial_storage(&child, kept), true)
            }
        };
        if let Some(&(term, vote)) = self.votes.votes.get(&id) {
            let mut hs = storage.hard_state().clone();
            if crate::votes::newer((term, vote), (hs.term, hs.vote)).unwrap_or(false) {
                (hs.term, hs.vote) = (term, vote);
                storage.set_hard_state(hs);
            }
        }
        if stage_start {
            // (a meta that names no snapshot: recovery knows it for a pending child)
            let state =
                RegionLocalState { meta: child.clone(), snapshot: None, removed_peer: None, member_at_conf_ver: 0 };
            let write = wal::RegionWrite {
                snapshot: Some(wal::SnapshotMarker { index: RAFT_INIT_INDEX, term: RAFT_INIT_TERM }),
                hard_state: Some(hard_state_to_wal(storage.hard_state())),
                conf_state: Some(conf_state_to_wal(storage.conf_state())),
                meta: Some(state.encode()),
                ..Default::default()
            };
            self.staged.push(id, write);
        }
        self.tombstones.remove(&id);
        let early = self.early_votes.remove(&id).unwrap_or_default();
        let mut region = Region::new(child, peer.peer_id, storage, RAFT_INIT_INDEX, kv).expect("a valid raft config");
        region.incarnation = self.next_incarnation;
        self.next_incarnation += 1;
        // (its membership is its parent's, durable as far as the parent's is: removal.rs)
        region.conf_ver_durable = self.regions.get(&parent).map_or(0, |p| p.conf_ver_durable);
        region.untrimmed = true;
        region.initial_state_of = Some(parent);
        region.snapshot_hold_until_tick = Some(self.ticks + SPLIT_SNAPSHOT_HOLD_TICKS);
        region.raw.mut_store().hold_snapshots(true);
        redraw_election_timeout(&mut self.rng, &mut region);
        region.timeout_term = region.term();
        if leads && !suspect && region.raw.raft.promotable() {
            // its peers on the other stores are followers at the initial term
            // (or about to be): no election timeout to wait for
            if let Err(e) = region.raw.campaign() {
                tracing::debug!(region = id, "campaign: {e}");
            }
            region.born_leading = true;
            self.report_wanted = true;
        }
        assert!(self.regions.insert(id, region).is_none(), "region {id} created twice");
        if suspect {
            self.suspect(id);
        }
        self.untrimmed.insert(id);
        self.created.push(id);
        self.stats.regions_created += 1;
        tracing::info!(region = parent, child = id, leads, "split applied: child created");
        self.start_snapshot(id);
        // vote requests that came before this replica split
        for e in early {
            self.on_raft(e);
        }
        true
    }

    /// Answers requests queued on `parent` whose keys a split took: the
    /// answer names the regions split off it (`reply`), the new one included.
    fn answer_moved(&mut self, parent: u64, requests: Vec<u64>) {
        for q in requests {
            self.reply(q, Err(RegionError::epoch_not_match(&self.regions[&parent].meta)));
        }
    }

    /// A message for a region this shard does not host, whose range
    /// overlaps one it hosts initialized: a child not split off here yet.
    /// It creates no peer; a vote request is kept for when it is.
    pub(super) fn keep_if_early_vote(&mut self, envelope: &Envelope, kind: eraftpb::MessageType) -> bool {
        if !self.overlaps_initialized(&envelope.start_key, &envelope.end_key) {
            return false;
        }
        let vote = matches!(kind, eraftpb::MessageType::MsgRequestVote | eraftpb::MessageType::MsgRequestPreVote);
        let kept: usize = self.early_votes.values().map(Vec::len).sum();
        if vote && kept < EARLY_VOTES_MAX {
            self.early_votes.entry(envelope.region_id).or_default().push(envelope.clone());
            self.stats.early_votes_kept += 1;
        }
        true
    }

    /// Trims split halves (a budget of keys per iteration) and lets new
    /// children's leaders send snapshots once their hold is over.
    pub(super) fn split_housekeeping(&mut self) {
        let mut budget = SPLIT_TRIM_KEYS_PER_ITERATION;
        let ids: Vec<u64> = self.untrimmed.iter().copied().collect();
        for id in ids {
            let Some(r) = self.regions.get_mut(&id) else {
                self.untrimmed.remove(&id);
                continue;
            };
            let before = r.kv.keys();
            let done = r.kv.trim_to(&r.meta.start_key, &r.meta.end_key, budget);
            budget -= before - r.kv.keys();
            if done {
                r.untrimmed = false;
                self.untrimmed.remove(&id);
            }
            if budget == 0 {
                break;
            }
        }
    }

    /// A split key was found (or not) for region `id` under `epoch`: its
    /// leader asks PD for the new ids, unless the region changed meanwhile.
    pub(super) fn on_split_key_found(&mut self, id: u64, epoch: transport::Epoch, bytes: u64, key: Option<Vec<u8>>) {
        let split_bytes = self.limits.region_split_bytes;
        let Some(r) = self.regions.get_mut(&id) else { return };
        match key {
            Some(split_key) if r.is_leader() && r.meta.epoch() == epoch && bytes >= split_bytes => {
                self.stats.split_checks += 1;
                tracing::info!(region = id, bytes, "region past the split size: asking PD for a split");
                self.outputs.push(Output::AskSplit { region: id, epoch, split_key, peers: r.meta.peers.len() });
            }
            _ => r.split_check_tick = None,
        }
    }

    /// The regions split off region `id` lately — and off those, and so on
    /// (at most `SPLIT_OFF_NAMED_MAX`) — as this shard has them now.
    pub(super) fn split_off(&self, id: u64) -> Vec<RegionMeta> {
        let mut out = vec![];
        let mut next: Vec<u64> = self.regions.get(&id).map_or(vec![], |r| r.split_off.iter().copied().collect());
        while let Some(c) = next.pop() {
            if out.len() >= SPLIT_OFF_NAMED_MAX {
                break;
            }
            let Some(child) = self.regions.get(&c) else { continue };
            out.push(child.meta.clone());
            next.extend(child.split_off.iter().copied());
        }
        out
    }

    /// Issued persist batch `batch` carries these region writes: a child's
    /// recording write among them is durable once the batch is.
    pub(super) fn note_recording_issued(&mut self, batch: u64, writes: &[(u64, wal::RegionWrite)]) {
        if self.children_recording.is_empty() {
            return; // (as nearly always: no lookup per region write of every batch)
        }
        for (region, _) in writes {
            if let Some((_, b @ None)) = self.children_recording.get_mut(region) {
                *b = Some(batch);
            }
        }
    }

    /// A write that settles split child `child` of `parent` for good was
    /// just staged: its first snapshot's record, or its tombstone (removed
    /// before it was recorded: nothing of it is to be re-derived any more).
    pub(super) fn recording_staged(&mut self, child: u64, parent: u64) {
        self.children_recording.insert(child, (parent, None));
    }

    /// Persist batches up to `batch` are durable: children whose recording
    /// rode on them are settled; their parents may snapshot again (and one
    /// removed meanwhile goes).
    pub(super) fn children_recorded(&mut self, batch: u64) {
        let done: Vec<(u64, u64)> = self
            .children_recording
            .iter()
            .filter(|(_, (_, b))| b.is_some_and(|b| b <= batch))
            .map(|(c, (p, _))| (*c, *p))
            .collect();
        for (child, parent) in done {
            self.children_recording.remove(&child);
            if let Some(c) = self.regions.get_mut(&child).filter(|c| c.initial_state_of == Some(parent)) {
                c.initial_state_of = None;
            }
            tracing::debug!(region = parent, child, "split child recorded");
            // (its parent waits for it, and so may an older region: recovery
            // keeps a pending child under the region holding its range, its
            // grandparent when its parent was pending too — which, waiting
            // for it forever, would never snapshot again)
            let waiting: Vec<u64> = self
                .regions
                .iter()
                .filter(|(_, r)| r.children_unrecorded.contains(&child))
                .map(|(id, _)| *id)
                .collect();
            for id in waiting {
                let p = self.regions.get_mut(&id).expect("just seen");
                p.children_unrecorded.remove(&child);
                if p.children_unrecorded.is_empty() && p.destroy_deferred {
                    self.destroy_region(id);
                }
            }
        }
    }

    /// A split child recovery found pending whose log cannot be trusted
    /// (the WAL lost records: `recover.rs`): its log in the WAL is reset to
    /// the initial state, its vote kept (`hs`), so that no later boot loads
    /// that log again, whoever creates the child here next.
    pub fn reset_pending_child_log(&mut self, id: u64, hs: &eraftpb::HardState) {
        let hs = eraftpb::HardState { commit: RAFT_INIT_INDEX, ..hs.clone() };
        let write = wal::RegionWrite {
            snapshot: Some(wal::SnapshotMarker { index: RAFT_INIT_INDEX, term: RAFT_INIT_TERM }),
            hard_state: Some(hard_state_to_wal(&hs)),
            ..Default::default()
        };
        self.staged.push(id, write);
    }

    /// Split children recovery found pending, each kept for the region
    /// whose range holds it (its parent, restarted from before the split):
    /// that region takes no snapshot, installs none and is not destroyed
    /// until its replayed split has recorded them. Unless that region
    /// restarted with no log past its snapshot (`restarted_without_log`:
    /// dropped after the WAL lost records, at this boot or an earlier one):
    /// it replays no split here, and may be sent a snapshot past it, which it
    /// would refuse for good — the child's log is reset instead, and whoever
    /// creates the child next starts it afresh (suspect, if its vote table
    /// entry says it took part in anything).
    pub fn add_pending_children(
        &mut self,
        children: Vec<(RegionMeta, RegionStorage)>,
        restarted_without_log: &BTreeSet<u64>,
    ) {
        for (meta, storage) in children {
            let id = meta.id;
            match self.regions.values_mut().find(|r| r.meta.conf_ver > 0 && r.meta.contains(&meta.start_key)) {
                Some(p) if restarted_without_log.contains(&p.id()) => {
                    tracing::info!(
                        region = p.id(),
                        child = id,
                        "split child pending under a region with no log: reset"
                    );
                    self.reset_pending_child_log(id, storage.hard_state());
                    continue;
                }
                Some(p) => {
                    tracing::info!(
                        region = p.id(),
                        child = id,
                        "split child pending: its parent's log creates it again"
                    );
                    p.children_unrecorded.insert(id);
                }
                None => tracing::warn!(child = id, "split child pending, and no region here holds its range"),
            }
            self.pending_children.insert(id, storage);
        }
    }
}

/// A region's split upkeep once a tick (in the tick's one walk over every
/// region): a new child's snapshot hold ends; a child campaigning where its
/// parent led stops being reported as led once someone leads it; and a
/// leader whose state passed `split_bytes`, with no split of it under way
/// and none of another half's keys left to trim, gets its split key found
/// off the loop (the job returned, for `Output::FindSplitKey`).
pub(super) fn on_tick(r: &mut Region, now: u64, split_bytes: u64) -> Option<SplitKeyJob> {
    if r.snapshot_hold_until_tick.is_some_and(|t| t <= now) {
        r.snapshot_hold_until_tick = None;
        r.raw.mut_store().hold_snapshots(false);
    }
    if r.born_leading && r.raw.raft.leader_id != raft::INVALID_ID {
        r.born_leading = false; // (someone leads it: PD hears from that leader)
    }
    if r.split_check_tick.is_some_and(|t| now - t >= SPLIT_ASK_TIMEOUT_TICKS) {
        r.split_check_tick = None; // (PD did not answer, or the split was refused: try again)
    }
    let due = r.is_leader()
        && r.fenced.is_none()
        && !r.untrimmed
        && r.split_check_tick.is_none()
        && r.split_proposed.is_none()
        && r.kv.bytes() as u64 >= split_bytes;
    if !due {
        return None;
    }
    r.split_check_tick = Some(now);
    Some(SplitKeyJob {
        region: r.id(),
        epoch: r.meta.epoch(),
        start: r.meta.start_key.clone(),
        end: r.meta.end_key.clone(),
        kv: r.kv.clone(),
    })
}

/// A split child's log view at its start: after (`RAFT_INIT_INDEX`,
/// `RAFT_INIT_TERM`), committed there, with `kept`'s term and vote when an
/// uninitialized peer of it voted already.
fn initial_storage(child: &RegionMeta, kept: Option<eraftpb::HardState>) -> RegionStorage {
    let mut hs = eraftpb::HardState { term: RAFT_INIT_TERM, vote: 0, commit: RAFT_INIT_INDEX, ..Default::default() };
    if let Some(k) = kept.filter(|k| k.term >= RAFT_INIT_TERM) {
        (hs.term, hs.vote) = (k.term, k.vote);
    }
    RegionStorage::new(hs, child.conf_state(), (RAFT_INIT_INDEX, RAFT_INIT_TERM), vec![])
}

/// Takes the parent's queued writes and reads whose keys left it: they are
/// answered at once rather than proposed under the new epoch.
fn take_work_outside(r: &mut Region) -> Vec<u64> {
    let mut out = vec![];
    let (writes, kept): (Vec<_>, Vec<_>) =
        std::mem::take(&mut r.pending_writes).into_iter().partition(|(_, c)| !r.meta.contains(c.key()));
    r.pending_writes = kept;
    r.pending_write_bytes = if r.pending_writes.is_empty() {
        0
    } else {
        crate::kv::command::BATCH_OVERHEAD_BYTES_MAX + r.pending_writes.iter().map(|(_, c)| c.size()).sum::<usize>()
    };
    out.extend(writes.into_iter().map(|(q, _)| q));
    let (reads, kept): (Vec<_>, Vec<_>) =
        std::mem::take(&mut r.pending_reads).into_iter().partition(|(_, q)| !r.meta.contains(query_key(q)));
    r.pending_reads = kept;
    out.extend(reads.into_iter().map(|(q, _)| q));
    out
}

/// The key a read asks for (a scan's start).
pub(super) fn query_key(q: &Query) -> &[u8] {
    match q {
        Query::Get(key) => key,
        Query::Scan { start, .. } => start,
    }
}

/// Applies a committed split to the parent `r`: checked against its epoch
/// now; its meta and WAL meta change, its state machine is shared with the
/// child (each trims the other's side later). `Err` if the entry does not
/// decode (the region is fenced).
#[allow(clippy::type_complexity)]
pub(super) fn apply_admin(
    r: &mut Region,
    data: &[u8],
) -> Result<(Result<Response, RegionError>, Option<(wal::RegionWrite, SplitApplied)>), String> {
    let AdminCommand::Split(cmd) = AdminCommand::decode(data).map_err(|e| format!("not an admin command: {e}"))?;
    if cmd.epoch() != r.meta.epoch() {
        // not applied anywhere: every replica sees the same epoch here
        return Ok((Err(RegionError::epoch_not_match(&r.meta)), None));
    }
    let (left, right) = match r.meta.split(&cmd.split_key, cmd.new_region_id, &cmd.new_peer_ids) {
        Ok(halves) => halves,
        Err(reason) => return Ok((Err(RegionError::Refused { region: r.id(), reason }), None)),
    };
    r.meta = left;
    r.key_range = (r.meta.start_key.clone().into(), r.meta.end_key.clone().into());
    let write = wal::RegionWrite { meta: Some(local_state(r)), ..Default::default() };
    let reply = Ok(Response::Split(Box::new((r.meta.clone(), right.clone()))));
    Ok((reply, Some((write, SplitApplied { child: right, kv: r.kv.clone() }))))
}
