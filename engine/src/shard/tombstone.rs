//! Tombstones: what a shard keeps of a region after its peer here was
//! removed, and when it may forget it.
//!
//! A tombstone names the removed peer, so that a late message to it (or to
//! an older peer id) cannot recreate the region: a peer created with no
//! memory would answer as a member. Kept for good, tombstones would pile up
//! with every move — each takes a slot of `SHARD_REGIONS_MAX` and of the
//! WAL's regions, and a record in every checkpoint.
//!
//! Only a leader's message (heartbeat, append, snapshot) creates a peer
//! (`create_peer`; a vote request only once PD's meta names the peer, which
//! it never does again for a removed one: `vouched.rs`), and only a leader whose
//! applied configuration still holds the removed peer sends it one. Once a
//! leader has applied the change that removed it, that change is committed:
//! a later leader has it in its log, commits it with the first entry of its
//! term and, applying it, stops sending to the removed peer. What is left
//! is brief: messages already in flight, a deposed leader that has not
//! noticed yet (check-quorum steps it down within an election timeout), and
//! a new leader elected before it learned that the removal had committed
//! (raft-rs lets a candidate campaign on a configuration change it holds but
//! does not know is committed). A peer such a leader creates again is an
//! empty one that the removal, applied a moment later, or the stale-peer
//! check removes again; its vote counts only for candidates whose
//! configuration still holds it, and every such candidate's log lacks what
//! the voters that committed the removal hold.
//!
//! A restart is the other way back: a parent that has not snapshotted since
//! it split replays the split and creates each child again. So a tombstone
//! is kept while a hosted region's restart state (`Region::replay_range`)
//! overlaps its range.
//!
//! A tombstone is collected when it has aged `TOMBSTONE_GC_TICKS` (far past
//! the brief cases above), no replay can recreate it, and PD's meta of the
//! region — which its leaders report after they apply a change — is at the
//! tombstone's `conf_ver` or newer and does not name the removed peer. An
//! older, missing or silent answer keeps it: the shard asks again later.
//! The WAL then forgets the region (a `forget` record); a region this store
//! is added to again comes back as any new one.

use crate::region::meta::RegionMeta;

use super::stale::STALE_PEER_CHECK_TICKS;
use super::{Output, Shard};

/// Ticks a tombstone is kept before the shard asks PD whether it may go
/// (ten stale-peer checks, 100 s at the runtime's 100 ms tick).
pub const TOMBSTONE_GC_TICKS: u64 = 10 * STALE_PEER_CHECK_TICKS;

/// Ticks between two rounds of asks, and between two asks for one tombstone.
pub const TOMBSTONE_ASK_TICKS: u64 = STALE_PEER_CHECK_TICKS;

/// Tombstones asked about in one round (the rest wait for the next): a
/// shard that removed thousands of peers does not flood the PD worker.
pub const TOMBSTONE_ASKS_MAX: usize = 32;

const _: () = assert!(TOMBSTONE_GC_TICKS >= 2 * STALE_PEER_CHECK_TICKS);

/// A region removed from this shard.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tombstone {
    /// The peer removed: a message to it or to an older peer id is late.
    pub removed_peer: u64,
    /// The epoch's `conf_ver` in the meta the peer had when it went.
    pub conf_ver: u64,
    /// The key range in that meta.
    pub range: (Vec<u8>, Vec<u8>),
    /// The tick it was made (or the shard booted with it).
    pub since_tick: u64,
    /// The last tick PD was asked whether it may go.
    pub asked_tick: Option<u64>,
}

impl Tombstone {
    /// The tombstone of `removed_peer`, whose last meta was `meta` and that
    /// knew itself a member at `member_at_conf_ver` (an uninitialized peer's
    /// meta says conf_ver 0: its leader's messages said more), made at `now`.
    pub fn new(removed_peer: u64, meta: &RegionMeta, member_at_conf_ver: u64, now: u64) -> Tombstone {
        let range = (meta.start_key.clone(), meta.end_key.clone());
        let conf_ver = meta.conf_ver.max(member_at_conf_ver);
        Tombstone { removed_peer, conf_ver, range, since_tick: now, asked_tick: None }
    }

    fn aged(&self, now: u64) -> bool {
        now.saturating_sub(self.since_tick) >= TOMBSTONE_GC_TICKS
    }

    /// Whether PD's meta `current` of the region proves no member still
    /// sends to the removed peer.
    fn outlived_by(&self, current: &RegionMeta) -> bool {
        current.conf_ver >= self.conf_ver && current.peer(self.removed_peer).is_none()
    }
}

impl Shard {
    /// Whether a hosted region would replay, after a restart, a split that
    /// may have made the tombstoned region here: its restart state's range
    /// overlaps the tombstone's (a child's range lies within its parent's
    /// before the split). Its next snapshot, past the split, lets it go.
    fn replay_may_recreate(&self, t: &Tombstone) -> bool {
        let (start, end) = (&t.range.0[..], &t.range.1[..]);
        self.regions.values().filter(|r| r.replay_range != r.key_range).any(|r| {
            let (rs, re) = (&r.replay_range.0[..], &r.replay_range.1[..]);
            (end.is_empty() || rs < end) && (re.is_empty() || start < re)
        })
    }

    /// A round of asks about the tombstones old enough to go (every
    /// `TOMBSTONE_ASK_TICKS`, at most `TOMBSTONE_ASKS_MAX`).
    pub(super) fn ask_about_tombstones(&mut self) {
        let now = self.ticks;
        if !now.is_multiple_of(TOMBSTONE_ASK_TICKS) {
            return;
        }
        let due: Vec<u64> = self
            .tombstones
            .iter()
            .filter(|(_, t)| t.aged(now) && t.asked_tick.is_none_or(|a| now - a >= TOMBSTONE_ASK_TICKS))
            .filter(|(_, t)| !self.replay_may_recreate(t))
            .map(|(id, _)| *id)
            .take(TOMBSTONE_ASKS_MAX)
            .collect();
        for region in due {
            let t = self.tombstones.get_mut(&region).expect("listed");
            t.asked_tick = Some(now);
            self.outputs.push(Output::CheckMembership { region, peer_id: t.removed_peer });
        }
    }

    /// PD's answer about a tombstone (`None`: PD does not know the region).
    pub(super) fn on_tombstone_checked(&mut self, region: u64, peer_id: u64, current: Option<RegionMeta>) {
        let now = self.ticks;
        let Some(t) = self.tombstones.get(&region).filter(|t| t.removed_peer == peer_id && t.aged(now)) else {
            return;
        };
        if self.replay_may_recreate(t) {
            return;
        }
        let Some(c) = current.filter(|c| c.id == region && t.outlived_by(c)) else { return };
        tracing::info!(region, peer = peer_id, conf_ver = c.conf_ver, "tombstone collected: no member sends to it");
        self.tombstones.remove(&region);
        self.staged.push(region, wal::RegionWrite { forget: true, ..Default::default() });
        self.stats.tombstones_collected += 1;
    }
}
