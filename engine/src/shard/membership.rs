//! A region's life on this shard and its membership: creation (from the
//! initial layout, from recovery, or from a leader's message when this
//! store was added to the region), membership changes proposed and applied,
//! removal, and the tombstones that keep a removed peer from coming back.

use protobuf::Message as _;
use raft::eraftpb::{self, MessageType};
use transport::Envelope;

use crate::error::RegionError;
use crate::kv::MemKv;
use crate::region::meta::{PeerChange, PeerMeta, RegionLocalState, RegionMeta};
use crate::region::peer::{Region, ELECTION_TICKS};
use crate::region::wal_convert::{conf_state_to_wal, hard_state_to_wal};
use crate::region::RegionStorage;
use crate::snapshot::{RegionSnapshot, SnapshotConf};

use super::snapshot::local_state;
use super::tombstone::Tombstone;
use super::{
    redraw_election_timeout, take_client_work, Output, Response, Shard, RAFT_INIT_INDEX, RAFT_INIT_TERM,
    SHARD_REGIONS_MAX,
};

/// A region as the shard starts it: from bootstrap (fresh) or as recovery found it.
pub struct RegionInit {
    pub meta: RegionMeta,
    pub storage: RegionStorage,
    /// The snapshot its state restarts from (`None`: the empty state at index 0).
    pub snapshot: Option<RegionSnapshot>,
    /// A new region: its meta and membership are persisted with the next batch.
    pub fresh: bool,
    /// The epoch a leader's message named this peer a member at, for a
    /// peer created uninitialized (persisted with it: `shard::stale`).
    pub member_at_conf_ver: u64,
}

impl RegionInit {
    /// A region of the initial layout: its peers are voters, its state is
    /// the empty snapshot at `RAFT_INIT_INDEX`, whose file the caller makes
    /// durable before the shard's first batch records it.
    pub fn bootstrap(meta: RegionMeta) -> (RegionInit, RegionSnapshot) {
        let cs = meta.conf_state();
        let hs = eraftpb::HardState { term: RAFT_INIT_TERM, vote: 0, commit: RAFT_INIT_INDEX, ..Default::default() };
        let snap = RegionSnapshot {
            meta: meta.clone(),
            index: RAFT_INIT_INDEX,
            term: RAFT_INIT_TERM,
            conf_state: SnapshotConf::from_raft(&cs),
            kv: MemKv::default(),
        };
        let storage = RegionStorage::new(hs, cs, (RAFT_INIT_INDEX, RAFT_INIT_TERM), vec![]);
        (RegionInit { meta, storage, snapshot: Some(snap.clone()), fresh: true, member_at_conf_ver: 0 }, snap)
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
                PeerMeta::voter(envelope.to.peer_id, envelope.to.store_id, envelope.to.shard),
                PeerMeta::voter(envelope.from.peer_id, envelope.from.store_id, envelope.from.shard),
            ],
            max_peer_id: 0,
        };
        let storage = RegionStorage::new(Default::default(), Default::default(), (0, 0), vec![]);
        // (whatever the message — a snapshot's too —, its leader's epoch named
        // this peer: PD's older word cannot remove it, even after a restart)
        RegionInit { meta, storage, snapshot: None, fresh: true, member_at_conf_ver: envelope.epoch.conf_ver }
    }
}

impl Shard {
    /// Adds a region this shard hosts.
    pub fn create_region(&mut self, init: RegionInit) {
        let RegionInit { meta, mut storage, snapshot, fresh, member_at_conf_ver } = init;
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
                meta: Some(
                    RegionLocalState { meta: meta.clone(), snapshot: at, removed_peer: None, member_at_conf_ver }
                        .encode(),
                ),
                conf_state: Some(conf_state_to_wal(storage.conf_state())),
                ..Default::default()
            };
            self.staged.push(id, write);
            self.tombstones.remove(&id);
        }
        // (vote requests kept for a split child that came to be another way)
        self.early_votes.remove(&id);
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
        region.member_at_conf_ver = member_at_conf_ver;
        // (recovered, it is durable; fresh, it is staged with the first batch,
        // and no change applied to it yet has removed a peer: `removal.rs`)
        region.conf_ver_durable = region.meta.conf_ver;
        self.dirty.insert(id);
        region.incarnation = self.next_incarnation;
        self.next_incarnation += 1;
        redraw_election_timeout(&mut self.rng, &mut region);
        region.timeout_term = region.term();
        assert!(self.regions.insert(id, region).is_none(), "region {id} created twice");
    }

    /// A region the WAL holds as removed (recovery), with the peer removed
    /// and its last meta.
    pub fn add_tombstone(&mut self, region: u64, removed_peer: u64, meta: &RegionMeta, member_at_conf_ver: u64) {
        self.tombstones.insert(region, Tombstone::new(removed_peer, meta, member_at_conf_ver, self.ticks));
    }

    pub fn is_tombstone(&self, region: u64) -> bool {
        self.tombstones.contains_key(&region)
    }

    /// Whether `peer_id` of `region` is the peer removed from this shard,
    /// or an older one (peer ids only grow): a message to it is late.
    pub(super) fn is_removed_peer(&self, region: u64, peer_id: u64) -> bool {
        self.tombstones.get(&region).is_some_and(|t| peer_id <= t.removed_peer)
    }

    /// Whether the shard tracks `SHARD_REGIONS_MAX` regions, tombstones
    /// included (the WAL holds no more): no region is created.
    pub(super) fn is_full(&self) -> bool {
        self.regions.len() + self.tombstones.len() >= SHARD_REGIONS_MAX
    }

    /// Whether an initialized region here overlaps [start, end): only those
    /// own key ranges (`split.rs`).
    pub(super) fn overlaps_initialized(&self, start: &[u8], end: &[u8]) -> bool {
        self.regions.values().any(|r| r.meta.conf_ver > 0 && r.meta.overlaps(start, end))
    }

    /// A message to a newer peer of a region this shard hosts under an
    /// older epoch: ours was removed while it could not hear of it (peer
    /// ids only grow). It goes, and the message may create the new one.
    /// (Unlike a notice, nothing says the removal is durable on the sender
    /// (`removal.rs`): PD adds a peer to a store only after a leader's
    /// report, durable, of the change that removed the old one; an
    /// operator's changes in quick succession could beat that.)
    pub(super) fn replace_removed_peer(&mut self, envelope: &Envelope) {
        let here = (envelope.to.store_id, envelope.to.shard) == (self.store_id, self.shard);
        let Some(r) = self.regions.get(&envelope.region_id).filter(|_| here) else { return };
        if envelope.to.peer_id > r.peer_id && envelope.epoch.conf_ver > r.meta.conf_ver {
            tracing::info!(region = r.id(), stale = r.peer_id, new = envelope.to.peer_id, "replacing a removed peer");
            self.destroy_region(envelope.region_id);
        }
    }

    /// Creates the peer a message from a leader addresses on this shard, for
    /// a region the shard does not host: this store was added to it. Never
    /// for a late message to a peer removed since (its tombstone's epoch);
    /// for a candidate's vote request, only once PD names the peer
    /// (`vouched.rs`).
    pub(super) fn create_peer(&mut self, envelope: &Envelope) -> bool {
        let id = envelope.region_id;
        let refuse = |why: &str| {
            tracing::debug!(region = id, from = envelope.from.store_id, "message for a region not hosted here: {why}");
            false
        };
        if (envelope.to.store_id, envelope.to.shard) != (self.store_id, self.shard) {
            return refuse("addressed to another shard");
        }
        if self.is_removed_peer(id, envelope.to.peer_id) {
            return refuse("a late message to a peer removed from this store");
        }
        if self.is_full() {
            return refuse("the shard hosts SHARD_REGIONS_MAX regions");
        }
        let Ok(kind) = eraftpb::Message::parse_from_carllerche_bytes(&envelope.message).map(|m| m.get_msg_type())
        else {
            return refuse("an undecodable message");
        };
        if self.keep_if_early_vote(envelope, kind) {
            // only initialized regions own key ranges (split.rs)
            return refuse("its range overlaps a region here: a split this replica has not applied yet");
        }
        if matches!(kind, MessageType::MsgRequestVote | MessageType::MsgRequestPreVote) {
            self.ask_pd_to_vouch(envelope);
            return refuse("a vote request creates a peer only once PD names it (vouched.rs)");
        }
        if !matches!(kind, MessageType::MsgHeartbeat | MessageType::MsgAppend | MessageType::MsgSnapshot) {
            return refuse("only a leader's message creates a peer");
        }
        self.create_uninitialized(envelope);
        true
    }

    /// The peer `envelope` addresses, created empty (filled by its leader's
    /// snapshot), with the epoch its sender named it a member at.
    pub(super) fn create_uninitialized(&mut self, envelope: &Envelope) {
        let id = envelope.region_id;
        tracing::info!(
            region = id,
            peer = envelope.to.peer_id,
            conf_ver = envelope.epoch.conf_ver,
            "creating the peer this store was added as"
        );
        self.create_region(RegionInit::uninitialized(envelope));
        self.stats.regions_created += 1;
        if self.needs_catch_up || self.table_says_active(id) {
            // it may be one the WAL lost, with what it acknowledged (catch_up.rs)
            self.suspect(id);
        }
    }

    /// A membership change: the leader checks it against the region as it is
    /// and proposes it; it is answered when applied.
    pub(super) fn on_change_peer(&mut self, request: u64, region: u64, epoch: transport::Epoch, change: PeerChange) {
        let now = self.ticks;
        let proposed = (|| {
            let r = super::propose::admin_region(&mut self.regions, region, epoch)?;
            let refused = |reason: String| RegionError::Refused { region, reason };
            if r.raw.raft.has_pending_conf() {
                return Err(refused("another membership change is not applied yet".into()));
            }
            let next = r.meta.changed(change).map_err(refused)?;
            check_leader_stays(r.peer_id, &next).map_err(refused)?;
            if let PeerChange::PromoteLearner(p) | PeerChange::EnterJoint { promote: p, .. } = change {
                if !is_healthy(r, p.peer_id, now) {
                    return Err(refused(format!(
                        "learner {} on store {} has not caught up: it is promoted once it has",
                        p.peer_id, p.store_id
                    )));
                }
            }
            check_healthy_quorums(r, &next, now).map_err(refused)?;
            let context = next.encode();
            let result = match conf_change_of(change) {
                RaftChange::Simple(change_type, node_id) => {
                    let mut cc = eraftpb::ConfChange { node_id, context, ..Default::default() };
                    cc.set_change_type(change_type);
                    super::propose::propose_admin(r, request, |raw| raw.propose_conf_change(vec![], cc))
                }
                RaftChange::Joint(changes) => {
                    let mut cc = eraftpb::ConfChangeV2 { context, ..Default::default() };
                    if !changes.is_empty() {
                        // (explicit: the region leaves the joint state only when
                        // told to; leaving is an empty change of transition Auto)
                        cc.set_transition(eraftpb::ConfChangeTransition::Explicit);
                        cc.set_changes(changes.into());
                    }
                    super::propose::propose_admin(r, request, |raw| raw.propose_conf_change(vec![], cc))
                }
            };
            result.map_err(|e| refused(format!("raft refused the change: {e}")))
        })();
        if let Err(e) = proposed {
            self.reply(request, Err(e));
        }
    }

    /// Removes a region whose own peer a membership change removed: its log
    /// is dropped, a tombstone (with the final meta) stays in the WAL and in
    /// memory so that late messages cannot recreate it, and its client work
    /// is answered.
    pub(super) fn destroy_region(&mut self, id: u64) {
        let r = self.regions.get_mut(&id).expect("destroying a hosted region");
        if !r.children_unrecorded.is_empty() {
            // a restart could not re-derive them without its log (split.rs)
            tracing::info!(region = id, children = ?r.children_unrecorded, "removal waits for split children to be recorded");
            r.destroy_deferred = true;
            return;
        }
        let mut r = self.regions.remove(&id).expect("destroying a hosted region");
        // (proposed when this peer led, maybe committed by a later leader: unknown)
        let work = take_client_work(&mut r);
        self.answer_client_work(id, work, RegionError::RegionNotFound { region: id });
        // one record: the membership that removed it (if it applied it) and
        // the tombstone naming the removed peer land together or not at all
        let state = RegionLocalState {
            meta: r.meta.clone(),
            snapshot: None,
            removed_peer: Some(r.peer_id),
            member_at_conf_ver: r.member_at_conf_ver,
        };
        let write = wal::RegionWrite {
            tombstone: true,
            conf_state: Some(conf_state_to_wal(r.raw.store().conf_state())),
            meta: Some(state.encode()),
            ..Default::default()
        };
        self.staged.push(id, write);
        if let Some(parent) = r.initial_state_of {
            // removed before it was recorded: its tombstone settles it
            self.recording_staged(id, parent);
        }
        if let Some(old) = r.snapshot {
            self.snapshot_files.replaced(self.next_batch, old);
        }
        if let Some((_, file)) = r.receiving {
            self.outputs.push(Output::DiscardIncoming(file));
        }
        self.tombstones.insert(id, Tombstone::new(r.peer_id, &r.meta, r.member_at_conf_ver, self.ticks));
        self.stats.regions_removed += 1;
        tracing::info!(region = id, conf_ver = r.meta.conf_ver, "peer removed from this store; tombstone kept");
    }
}

/// raft's form of a membership change.
enum RaftChange {
    Simple(eraftpb::ConfChangeType, u64),
    /// A ConfChangeV2 (entering the joint state with these changes; none: leaving it).
    Joint(Vec<eraftpb::ConfChangeSingle>),
}

fn conf_change_of(change: PeerChange) -> RaftChange {
    use eraftpb::ConfChangeType::{AddLearnerNode, AddNode, RemoveNode};
    let single = |change_type, node_id| {
        let mut c = eraftpb::ConfChangeSingle { node_id, ..Default::default() };
        c.set_change_type(change_type);
        c
    };
    match change {
        PeerChange::AddVoter(p) | PeerChange::PromoteLearner(p) => RaftChange::Simple(AddNode, p.peer_id),
        PeerChange::AddLearner(p) => RaftChange::Simple(AddLearnerNode, p.peer_id),
        PeerChange::RemovePeer(p) => RaftChange::Simple(RemoveNode, p.peer_id),
        PeerChange::EnterJoint { promote, demote } => {
            RaftChange::Joint(vec![single(AddNode, promote.peer_id), single(AddLearnerNode, demote.peer_id)])
        }
        PeerChange::LeaveJoint => RaftChange::Joint(vec![]),
    }
}

/// No leader proposes a change that leaves it outside the voters: it
/// hands leadership to a voter first (raft-rs would let a removed leader
/// lead on, on a path it leaves untested). A leader demoted in a joint
/// change is still a voter of the outgoing half: it must hand over before
/// the region leaves the joint state.
fn check_leader_stays(leader: u64, next: &RegionMeta) -> Result<(), String> {
    if next.is_voter(leader) {
        return Ok(()); // (a voter of the outgoing half too: entering a joint state that demotes it)
    }
    Err(format!(
        "the change would leave the leader (peer {leader}) outside the voters: transfer leadership to a voter that stays first"
    ))
}

/// Never leave the region without a quorum of voters that are up and
/// keeping up (a new peer counts as neither until it caught up) — in a
/// joint configuration, in each half.
fn check_healthy_quorums(r: &Region, next: &RegionMeta, now: u64) -> Result<(), String> {
    let halves = [("", next.voters().collect::<Vec<_>>()), (" of the outgoing half", next.outgoing_voters().collect())];
    for (which, voters) in halves.iter().filter(|(_, v)| !v.is_empty()) {
        let behind: Vec<u64> = voters.iter().map(|p| p.peer_id).filter(|id| !is_healthy(r, *id, now)).collect();
        let healthy = voters.len() - behind.len();
        if healthy < voters.len() / 2 + 1 {
            return Err(format!(
                "after the change only {healthy} of {} voters{which} would be up and keeping up (not {behind:?}): not a quorum",
                voters.len()
            ));
        }
    }
    Ok(())
}

/// Applies a committed membership change: checked against the region's
/// epoch as it is now (another change may have applied since it was
/// proposed), then raft's configuration, the meta and their WAL write.
/// The meta's roles and raft's configuration must then agree. `Err`
/// (nothing applied, or the two disagree: the region is fenced) if the
/// entry does not decode.
#[allow(clippy::type_complexity)]
pub(super) fn apply_conf_change(
    r: &mut Region,
    e: &eraftpb::Entry,
) -> Result<(Result<Response, RegionError>, Option<wal::RegionWrite>), String> {
    let cc = match e.get_entry_type() {
        eraftpb::EntryType::EntryConfChangeV2 => eraftpb::ConfChangeV2::parse_from_carllerche_bytes(&e.data)
            .map_err(|err| format!("not a joint conf change: {err}"))?,
        _ => {
            // (a simple change: raft takes it as a V2 of one change, transition Auto)
            let v1 = eraftpb::ConfChange::parse_from_carllerche_bytes(&e.data)
                .map_err(|err| format!("not a conf change: {err}"))?;
            let mut single = eraftpb::ConfChangeSingle { node_id: v1.node_id, ..Default::default() };
            single.set_change_type(v1.get_change_type());
            eraftpb::ConfChangeV2 { changes: vec![single].into(), context: v1.context, ..Default::default() }
        }
    };
    let context = cc.context.clone();
    let next = RegionMeta::decode(&context).map_err(|err| format!("a conf change without a region meta: {err}"))?;
    let fits = next.id == r.id() && next.conf_ver == r.meta.conf_ver + 1 && next.version == r.meta.version;
    if !fits {
        // not applied anywhere: every replica sees the same epoch here
        return Ok((Err(RegionError::epoch_not_match(&r.meta)), None));
    }
    let cs = r.raw.apply_conf_change(&cc).map_err(|err| format!("raft refuses the conf change: {err}"))?;
    if !crate::region::meta::same_conf(&cs, &next.conf_state()) {
        return Err(format!("raft's configuration {cs:?} is not the one the region's roles say: {next:?}"));
    }
    if r.is_leader() && !next.is_voter(r.peer_id) {
        // a change another leader proposed took this one out of the voters:
        // raft-rs would leave it leading (and unwraps its own progress in
        // places); it steps down, as TiKV's peers do, and the voters elect
        tracing::info!(region = r.id(), peer = r.peer_id, "leader no longer a voter: stepping down");
        let term = r.term();
        r.raw.raft.become_follower(term, raft::INVALID_ID);
    }
    r.meta = next;
    // (a peer removed is never heard from again: its id is never reused)
    let members = &r.meta;
    r.heard_at_tick.retain(|id, _| members.peer(*id).is_some());
    r.learned_peers.retain(|id, _| members.peer(*id).is_none());
    r.raw.mut_store().set_conf_state(cs.clone());
    let write =
        wal::RegionWrite { conf_state: Some(conf_state_to_wal(&cs)), meta: Some(local_state(r)), ..Default::default() };
    Ok((Ok(Response::Done), Some(write)))
}

/// Whether the leader `r` sees peer `id` as up and keeping up at shard
/// tick `now`: itself, or a follower it heard from within an election
/// timeout that it replicates to or that has every entry. (A follower back
/// from a restart or a broken link is probed, and raft-rs moves it back to
/// replicating only on an append's answer: in an idle region, one that
/// already has everything would stay "probed" until the next write. Not
/// raft-rs's `recent_active`: check-quorum clears it every election
/// timeout, so a check right after that would find every follower away.)
pub(crate) fn is_healthy(r: &Region, id: u64, now: u64) -> bool {
    let last = r.raw.raft.raft_log.last_index();
    let heard = r.heard_at_tick.get(&id).is_some_and(|at| now.saturating_sub(*at) <= ELECTION_TICKS as u64);
    id == r.peer_id
        || (heard
            && r.raw.raft.prs().get(id).is_some_and(|p| {
                p.state == raft::ProgressState::Replicate
                    || (p.state == raft::ProgressState::Probe && p.matched >= last)
            }))
}
