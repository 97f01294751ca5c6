//! Snapshots on the shard's side: taken when a region's applied log outgrew
//! a share of its state (or it pins old WAL segments), recorded in the WAL
//! once the file is durable and the log compacted up to it; sent to a
//! follower on the snapshot stream; received, checked and installed when
//! raft takes them. The files themselves are the driver's (`Output::
//! WriteSnapshot`, `SendSnapshot`, `RemoveSnapshot`, `DiscardIncoming`);
//! which of them may go, and when, is `SnapshotFiles`'s one set of rules.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;

use protobuf::Message as _;
use raft::eraftpb::{self, MessageType};
use transport::Envelope;

use crate::error::RegionError;
use crate::kv::StateMachine as _;
use crate::region::meta::RegionLocalState;
use crate::region::peer::{Region, SnapshotTaking};
use crate::region::wal_convert::{conf_state_to_wal, hard_state_to_wal};
use crate::snapshot::{RegionSnapshot, SnapshotConf, SnapshotId};

use super::{
    Output, Response, Shard, COMPACT_LAG_ENTRIES_MAX, COMPACT_PIN_SEGMENTS_MAX, SNAPSHOT_RETRY_TICKS,
    SNAPSHOT_STATE_DIVISOR, SNAPSHOT_WRITES_IN_FLIGHT_MAX,
};

/// The regions of a purge's `blocking` list (region, segment it pins) to ask
/// for a compaction, given the segment being written.
pub fn regions_to_compact(blocking: &[(u64, u64)], active_seq: u64) -> Vec<u64> {
    blocking.iter().filter(|(_, pin)| pin + COMPACT_PIN_SEGMENTS_MAX <= active_seq).map(|(r, _)| *r).collect()
}

/// Which snapshot files the shard still needs. A file goes only when no
/// one can ask for it again:
/// - a file replaced by a newer snapshot goes once the persist batch that
///   records the newer one is durable (a crash before that restarts from
///   the old one);
/// - and not while it is being sent to a follower (sends to one follower
///   end in the order they started);
/// - a received file is moved into place (installed) before the batch that
///   records it is written.
#[derive(Default)]
pub(super) struct SnapshotFiles {
    /// Snapshots being written now (at most `SNAPSHOT_WRITES_IN_FLIGHT_MAX`).
    writing: usize,
    /// Received snapshot files to move into place before the staged batch is written.
    installs: Vec<(PathBuf, SnapshotId)>,
    /// Snapshots replaced by a newer one, removable once batch `.0` is durable.
    obsolete: VecDeque<(u64, SnapshotId)>,
    /// Snapshots being sent, by (region, follower): their files stay until
    /// the send ends, even when a newer snapshot replaced them.
    sending: BTreeMap<(u64, u64), VecDeque<SnapshotId>>,
    /// Replaced snapshots whose removal waits for a send.
    removals_waiting: Vec<SnapshotId>,
}

impl SnapshotFiles {
    /// Whether another snapshot may start being written now.
    pub(super) fn may_write(&self) -> bool {
        self.writing < SNAPSHOT_WRITES_IN_FLIGHT_MAX
    }

    pub(super) fn write_started(&mut self) {
        assert!(self.may_write(), "more than SNAPSHOT_WRITES_IN_FLIGHT_MAX snapshots written at once");
        self.writing += 1;
    }

    pub(super) fn write_ended(&mut self) {
        self.writing = self.writing.checked_sub(1).expect("a snapshot write ended that never started");
    }

    /// `old` was replaced by a snapshot (or a tombstone) that persist batch
    /// `batch` records.
    pub(super) fn replaced(&mut self, batch: u64, old: SnapshotId) {
        self.obsolete.push_back((batch, old));
    }

    /// A received file goes into place before the next batch is written.
    pub(super) fn stage_install(&mut self, file: PathBuf, id: SnapshotId) {
        self.installs.push((file, id));
    }

    /// The installs of the batch being issued.
    pub(super) fn take_installs(&mut self) -> Vec<(PathBuf, SnapshotId)> {
        std::mem::take(&mut self.installs)
    }

    /// Only `region`'s installs (a batch carrying one region: `--no-batching`).
    pub(super) fn take_installs_of(&mut self, region: u64) -> Vec<(PathBuf, SnapshotId)> {
        let (mine, later) = std::mem::take(&mut self.installs).into_iter().partition(|(_, id)| id.region == region);
        self.installs = later;
        mine
    }

    /// Batch `batch` went out without the writes of the regions in `later`:
    /// their replaced files wait for the next batch instead.
    pub(super) fn defer_obsolete(&mut self, batch: u64, later: &BTreeSet<u64>) {
        for (b, id) in self.obsolete.iter_mut() {
            if *b == batch && later.contains(&id.region) {
                *b = batch + 1;
            }
        }
    }

    /// Batch `batch` is durable: the files it made obsolete that no send
    /// holds may go now (returned); the others wait for their sends.
    pub(super) fn persisted(&mut self, batch: u64) -> Vec<SnapshotId> {
        let (done, waiting): (VecDeque<_>, VecDeque<_>) =
            std::mem::take(&mut self.obsolete).into_iter().partition(|(b, _)| *b <= batch);
        self.obsolete = waiting;
        let mut now = vec![];
        for (_, id) in done {
            if self.is_sending(id) {
                self.removals_waiting.push(id);
            } else {
                now.push(id);
            }
        }
        now
    }

    pub(super) fn send_started(&mut self, to_peer: u64, id: SnapshotId) {
        self.sending.entry((id.region, to_peer)).or_default().push_back(id);
    }

    /// The oldest send of `region`'s snapshot to `to_peer` ended: the
    /// replaced files no send holds any longer may go now (returned).
    pub(super) fn send_ended(&mut self, region: u64, to_peer: u64) -> Vec<SnapshotId> {
        // (sends to one follower end in the order they started)
        if let Some(q) = self.sending.get_mut(&(region, to_peer)) {
            q.pop_front();
            if q.is_empty() {
                self.sending.remove(&(region, to_peer));
            }
        }
        let (now, later) = std::mem::take(&mut self.removals_waiting).into_iter().partition(|id| !self.is_sending(*id));
        self.removals_waiting = later;
        now
    }

    fn is_sending(&self, id: SnapshotId) -> bool {
        self.sending.values().flatten().any(|s| *s == id)
    }
}

impl Shard {
    /// Starts a snapshot of each region whose applied log outgrew its share
    /// of the state (or that pins old WAL segments), a few at a time.
    pub(super) fn take_snapshots(&mut self, walk: &[u64]) {
        for id in walk {
            let Some(r) = self.regions.get_mut(id) else { continue };
            if !self.snapshot_files.may_write() {
                return;
            }
            let since = r.snapshot.map_or(0, |s| s.index);
            if r.snapshot_taking.is_some() || self.ticks < r.snapshot_retry_tick || r.fenced.is_some() {
                continue;
            }
            if r.removal_applied {
                continue; // its meta no longer names it (removal.rs)
            }
            if r.applied <= since {
                if r.compact_wanted && r.raw.store().first() <= since {
                    // nothing new to snapshot, but a leader kept a tail for its followers
                    r.compact_wanted = false;
                    r.raw.mut_store().compact_to(since);
                    let write = wal::RegionWrite { compact_to: Some(since + 1), ..Default::default() };
                    self.staged.push(r.meta.id, write);
                }
                continue;
            }
            if !r.children_unrecorded.is_empty() {
                continue; // its log re-derives them until they are recorded (split.rs)
            }
            let bound = self.limits.snapshot_log_bytes_min.max(r.kv.bytes() / SNAPSHOT_STATE_DIVISOR);
            // (a split child is recorded by its first snapshot: at once)
            let wanted = r.raw.store().take_snapshot_wanted() || r.initial_state_of.is_some();
            if r.applied_bytes_since_snapshot < bound && !r.compact_wanted && !wanted {
                continue;
            }
            self.start_snapshot(*id);
        }
    }

    /// Starts writing a snapshot of region `id` as applied now, unless one
    /// is being written or the shard writes as many as it may.
    pub(super) fn start_snapshot(&mut self, id: u64) {
        let Some(r) = self.regions.get_mut(&id) else { return };
        if r.snapshot_taking.is_some() || !self.snapshot_files.may_write() {
            return;
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
        r.snapshot_taking = Some(SnapshotTaking {
            id: snap.id(),
            conf,
            range: (snap.meta.start_key.clone().into(), snap.meta.end_key.clone().into()),
            bytes: std::mem::take(&mut r.applied_bytes_since_snapshot),
        });
        self.snapshot_files.write_started();
        self.outputs.push(Output::WriteSnapshot(Box::new(snap)));
    }

    /// A region's own snapshot file is durable: record it in the WAL and
    /// compact the log up to it (the record and the compaction are one write).
    pub(super) fn on_snapshot_written(&mut self, id: SnapshotId, result: Result<u64, String>) {
        self.snapshot_files.write_ended();
        let Some(r) = self.regions.get_mut(&id.region) else {
            self.outputs.push(Output::RemoveSnapshot(id));
            return;
        };
        if r.snapshot_taking.as_ref().is_none_or(|t| t.id != id) {
            // taken by an earlier life of the region (removed and created again since)
            tracing::debug!(region = id.region, "snapshot {id:?} of a removed peer finished");
            self.outputs.push(Output::RemoveSnapshot(id));
            return;
        }
        let SnapshotTaking { conf, range, bytes, .. } = r.snapshot_taking.take().expect("checked");
        if r.removal_applied {
            // (recorded with its meta now, which no longer names this peer, a
            // restart would find a region without its own peer: removal.rs)
            tracing::debug!(region = id.region, "snapshot {id:?} finished after this peer applied its removal");
            self.outputs.push(Output::RemoveSnapshot(id));
            return;
        }
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
        // (staged before any forget a tombstone's collection stages later:
        // a restart that sees that forget loads this snapshot)
        r.replay_range = range;
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
        let parent = r.initial_state_of;
        self.staged.push(id.region, write);
        if let Some(old) = replaced {
            self.snapshot_files.replaced(self.next_batch, old);
        }
        if let Some(parent) = parent {
            self.recording_staged(id.region, parent);
        }
    }

    /// How sending a snapshot to `to_peer` ended: raft hears of it, and
    /// files only that send held may go.
    pub(super) fn on_snapshot_sent(&mut self, region: u64, to_peer: u64, ok: bool) {
        if let Some(r) = self.regions.get_mut(&region) {
            let status = if ok { raft::SnapshotStatus::Finish } else { raft::SnapshotStatus::Failure };
            r.raw.report_snapshot(to_peer, status);
        }
        let removable = self.snapshot_files.send_ended(region, to_peer);
        self.outputs.extend(removable.into_iter().map(Output::RemoveSnapshot));
    }

    /// A snapshot received from a leader, its file durable and its contents
    /// checked: step its `MsgSnapshot` into raft, which installs it (in this
    /// iteration's ready) unless it is stale.
    pub(super) fn on_snapshot(&mut self, envelope: Envelope, snapshot: Box<RegionSnapshot>, file: PathBuf) {
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
        // (a leader's message: it names this peer a member at its epoch, `stale.rs`)
        r.leader_heard_tick = Some(self.ticks);
        r.member_at_conf_ver = r.member_at_conf_ver.max(envelope.epoch.conf_ver);
        if r.fenced.is_some() {
            return discard(&mut self.outputs, "the region is fenced on this replica");
        }
        if r.removal_applied {
            // (its leader needs its vote and its log's tail, never a snapshot: removal.rs)
            return discard(&mut self.outputs, "this replica applied its own removal");
        }
        if !r.children_unrecorded.is_empty() {
            // (its log re-derives them until they are recorded: split.rs; the leader sends again)
            return discard(&mut self.outputs, "the region's split children are not recorded yet");
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
    pub(super) fn discard_stale_snapshots(&mut self, walk: &[u64]) {
        for id in walk {
            let Some(r) = self.regions.get_mut(id) else { continue };
            if let Some((_, file)) = r.receiving.take() {
                tracing::debug!(region = r.meta.id, "received snapshot is stale: discarded");
                self.outputs.push(Output::DiscardIncoming(file));
            }
        }
    }

    /// Installs the received snapshot raft just took (in region `id`'s
    /// ready): the state machine, meta and log start over from it. Returns
    /// the region write that records it (first of the ready's writes: it
    /// resets the log before any entry) and replies to proposals the
    /// snapshot covers (their fate cannot be known) and to those of earlier
    /// terms past it (never applied). Its file goes into
    /// place before that write; the file it replaces goes once it is durable.
    #[allow(clippy::type_complexity)]
    pub(super) fn install_snapshot(
        &mut self,
        id: u64,
        snap: &eraftpb::Snapshot,
    ) -> (wal::RegionWrite, Vec<(u64, Result<Response, RegionError>)>) {
        let r = self.regions.get_mut(&id).expect("listed");
        let (index, term) = (snap.get_metadata().index, snap.get_metadata().term);
        let (data, file) = r
            .receiving
            .take()
            .unwrap_or_else(|| panic!("region {id}: raft installs a snapshot at {index} that was never received"));
        assert_eq!((data.index, data.term), (index, term), "region {id}: raft installs another snapshot than received");
        let snapshot_id = data.id();
        let conf = snap.get_metadata().get_conf_state().clone();
        r.kv = data.kv;
        r.meta = data.meta;
        r.key_range = (r.meta.start_key.clone().into(), r.meta.end_key.clone().into());
        r.replay_range = r.key_range.clone();
        let members = &r.meta;
        r.learned_peers.retain(|id, _| members.peer(*id).is_none());
        r.applied = index;
        r.applied_bytes_since_snapshot = 0;
        r.raw.mut_store().restore(index, term, conf.clone());
        let replaced = r.snapshot.replace(snapshot_id);
        let mut replies = vec![];
        let covered: Vec<u64> = r.proposals.range(..=index).map(|(i, _)| *i).collect();
        for i in covered {
            let err = RegionError::Ambiguous { region: id };
            replies.extend(r.proposals.remove(&i).unwrap().requests.into_iter().map(|q| (q, Err(err.clone()))));
        }
        // proposals of earlier terms beyond it can never commit now (log
        // terms only grow past the snapshot's), as at apply: not applied —
        // left alone they would wait forever in an idle region
        let stale: Vec<u64> = r.proposals.range(index + 1..).filter(|(_, p)| p.term < term).map(|(i, _)| *i).collect();
        for i in stale {
            let err = RegionError::NotLeader { region: id, leader: r.leader() };
            replies.extend(r.proposals.remove(&i).unwrap().requests.into_iter().map(|q| (q, Err(err.clone()))));
        }
        let write = wal::RegionWrite {
            snapshot: Some(wal::SnapshotMarker { index, term }),
            conf_state: Some(conf_state_to_wal(&conf)),
            meta: Some(local_state(r)),
            hard_state: Some(hard_state_covering(r, index)),
            ..Default::default()
        };
        if let Some(old) = replaced {
            self.snapshot_files.replaced(self.next_batch, old);
        }
        if let Some(parent) = r.initial_state_of {
            // a split child recorded by its leader's snapshot instead of its own
            self.recording_staged(id, parent);
        }
        self.snapshot_files.stage_install(file, snapshot_id);
        self.stats.snapshots_installed += 1;
        (write, replies)
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

/// What the WAL's meta bytes hold for `r` now.
pub(super) fn local_state(r: &Region) -> bytes::Bytes {
    RegionLocalState {
        meta: r.meta.clone(),
        snapshot: r.snapshot.map(|s| (s.index, s.term)),
        removed_peer: None,
        member_at_conf_ver: r.member_at_conf_ver,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(region: u64, index: u64) -> SnapshotId {
        SnapshotId { region, index, term: 6 }
    }

    #[test]
    fn a_replaced_file_goes_only_once_the_batch_recording_its_successor_is_durable() {
        let mut f = SnapshotFiles::default();
        f.replaced(3, snap(1, 10));
        assert_eq!(f.persisted(2), vec![], "batch 2 does not record the successor");
        assert_eq!(f.persisted(3), vec![snap(1, 10)]);
        assert_eq!(f.persisted(4), vec![], "removed once");
    }

    #[test]
    fn a_replaced_file_being_sent_waits_for_the_send_to_end() {
        let mut f = SnapshotFiles::default();
        f.send_started(7, snap(1, 10));
        f.replaced(1, snap(1, 10));
        assert_eq!(f.persisted(1), vec![], "a follower is still reading it");
        assert_eq!(f.send_ended(1, 8), vec![], "another follower's send ending changes nothing");
        assert_eq!(f.send_ended(1, 7), vec![snap(1, 10)]);
    }

    #[test]
    fn a_file_sent_to_two_followers_goes_after_both_sends() {
        let mut f = SnapshotFiles::default();
        f.send_started(7, snap(1, 10));
        f.send_started(8, snap(1, 10));
        f.replaced(1, snap(1, 10));
        assert_eq!(f.persisted(1), vec![]);
        assert_eq!(f.send_ended(1, 7), vec![]);
        assert_eq!(f.send_ended(1, 8), vec![snap(1, 10)]);
    }

    #[test]
    fn sends_to_one_follower_end_in_the_order_they_started() {
        let mut f = SnapshotFiles::default();
        f.send_started(7, snap(1, 10));
        f.send_started(7, snap(1, 20));
        f.replaced(1, snap(1, 10));
        f.replaced(1, snap(1, 20));
        assert_eq!(f.persisted(1), vec![]);
        assert_eq!(f.send_ended(1, 7), vec![snap(1, 10)], "the first send was the older file's");
        assert_eq!(f.send_ended(1, 7), vec![snap(1, 20)]);
    }

    #[test]
    fn a_file_never_sent_nor_replaced_is_never_removed() {
        let mut f = SnapshotFiles::default();
        f.send_started(7, snap(1, 10));
        assert_eq!(f.send_ended(1, 7), vec![], "sent, but still the region's current snapshot");
        assert_eq!(f.persisted(9), vec![]);
    }

    #[test]
    fn installs_go_with_the_batch_that_records_them() {
        let mut f = SnapshotFiles::default();
        f.stage_install(PathBuf::from("a"), snap(1, 10));
        f.stage_install(PathBuf::from("b"), snap(2, 10));
        assert_eq!(f.take_installs_of(2), vec![(PathBuf::from("b"), snap(2, 10))]);
        assert_eq!(f.take_installs(), vec![(PathBuf::from("a"), snap(1, 10))]);
        assert!(f.take_installs().is_empty());
    }

    #[test]
    fn a_region_left_out_of_a_batch_keeps_its_replaced_file_until_the_next() {
        let mut f = SnapshotFiles::default();
        f.replaced(5, snap(1, 10));
        f.replaced(5, snap(2, 10));
        f.defer_obsolete(5, &BTreeSet::from([2]));
        assert_eq!(f.persisted(5), vec![snap(1, 10)]);
        assert_eq!(f.persisted(6), vec![snap(2, 10)]);
    }

    #[test]
    fn snapshot_writes_are_bounded() {
        let mut f = SnapshotFiles::default();
        for _ in 0..SNAPSHOT_WRITES_IN_FLIGHT_MAX {
            assert!(f.may_write());
            f.write_started();
        }
        assert!(!f.may_write());
        f.write_ended();
        assert!(f.may_write());
    }

    #[test]
    fn only_regions_pinning_segments_far_enough_behind_are_asked_to_compact() {
        let blocking = [(1, 8), (2, 9), (3, 10)];
        assert_eq!(regions_to_compact(&blocking, 10), vec![1]);
        assert_eq!(regions_to_compact(&blocking, 12), vec![1, 2, 3]);
    }
}
