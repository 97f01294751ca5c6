//! A peer removed from its region goes only once the region can do
//! without it.
//!
//! raft-rs applies a membership change when its entry applies, and a
//! replica may apply what it knows committed before its own commit index
//! (or the meta the change wrote) is durable. So a leader can apply the
//! change removing voter X, and crash before that is on disk: it comes back
//! in the old configuration, with the change in its log but not known
//! committed, and needs X's vote again — for a region of two voters, X's
//! alone. Had X gone as soon as it was told, or as soon as it applied its
//! own removal, the region would stall for good.
//!
//! Hence, here:
//! - a peer that applies its own removal does not go: it applies nothing
//!   more, takes and installs no snapshot, never campaigns (it is not in
//!   its own configuration), but still answers votes and appends, and
//!   every election timeout asks the voters of the new configuration
//!   whether it may go (the notice may have been lost, or its sender may
//!   have crashed before sending it);
//! - a removal notice is sent only by a voter of the configuration that
//!   removed the peer, and only once that configuration's meta is durable
//!   on it (`conf_ver_durable`): then that voter restarts in it, and
//!   knows the change committed;
//! - PD hears of a region's meta only once it is durable on its leader
//!   (`Shard::leader_reports`), so PD's word, which a removed peer that
//!   hears no notice asks for (`stale.rs`), is such a voter's word too.
//!
//! A learner waits too: in a move, the voter a joint change demoted is a
//! learner when its removal applies, and the region's outgoing half may
//! still need its vote if the change leaving the joint state is not durable
//! on the leader.
//!
//! Why a durable meta is enough: a restart rebuilds a region's
//! configuration by replaying its log up to the durable commit index, and
//! the meta write the change's apply stages carries the HardState whose
//! commit index covers the change, unless an earlier write of the region
//! did (`persist::stage_hard_state`; a region's writes are issued together
//! and in order). So once the meta is durable, a restart applies the change
//! again.

use std::collections::VecDeque;

use transport::{Destination, Envelope, Target};

use crate::error::RegionError;
use crate::region::meta::{PeerMeta, RegionLocalState, PEERS_MAX};
use crate::region::peer::{Region, ELECTION_TICKS};

use super::{take_client_work, Shard};

/// The peer id a removed peer's question is addressed to: none (raft's
/// `INVALID_ID`), so that no peer takes it for a removal notice.
const QUESTION_TO: u64 = raft::INVALID_ID;

/// A meta write of a region in an issued persist batch: the region's
/// `conf_ver_durable` once the batch is durable.
pub(super) struct MetaIssued {
    batch: u64,
    region: u64,
    incarnation: u64,
    conf_ver: u64,
}

impl Shard {
    /// Tells `peer` — removed under an epoch this region has applied — that
    /// it was removed (an empty message): the sender of a message from a
    /// removed peer, or, from its leader, a peer just removed. Only a voter
    /// of the configuration that removed it tells it, and only once that
    /// configuration is durable here; until then the notice waits.
    pub(super) fn send_removal_notice(&mut self, region: u64, peer: PeerMeta) {
        let r = self.regions.get_mut(&region).expect("hosted");
        if !r.meta.is_voter(r.peer_id) {
            return; // a learner's word, or a removed peer's, proves nothing
        }
        if r.conf_ver_durable < r.meta.conf_ver {
            let waiting = &mut r.removal_notices_waiting;
            if waiting.len() < PEERS_MAX && !waiting.iter().any(|p| p.peer_id == peer.peer_id) {
                waiting.push(peer);
            }
            return;
        }
        let notice = empty_envelope(r, self.store_id, self.shard, peer);
        self.push_empty(notice);
    }

    fn push_empty(&mut self, envelope: Envelope) {
        let dest = Destination { store_id: envelope.to.store_id, shard: envelope.to.shard };
        if let Err(e) = self.outboxes.push(dest, &envelope) {
            tracing::warn!(region = envelope.region_id, "removal notice or question dropped: {e}");
        }
    }

    /// An empty message: a removal notice, or a removed peer's question
    /// (addressed to no peer, `QUESTION_TO`).
    ///
    /// A notice: a member of the region, under a newer epoch that does not
    /// include this peer, says it was removed (it was away when the change
    /// applied, and no one sends it the log anymore; or it applied its
    /// removal and waits to be told): remove it here too. Safe: a conf_ver
    /// never comes back, and a peer added again has a new id.
    ///
    /// A question, from a peer this region's meta does not name, at this
    /// meta's epoch or an older one: it is told, when this replica may tell
    /// it (`send_removal_notice`).
    pub(super) fn on_removal_notice(&mut self, notice: Envelope) {
        let id = notice.region_id;
        let Some(r) = self.regions.get(&id) else { return };
        let f = notice.from;
        if notice.to.peer_id == QUESTION_TO {
            if notice.epoch.conf_ver <= r.meta.conf_ver && r.meta.peer(f.peer_id).is_none() {
                self.send_removal_notice(id, PeerMeta::voter(f.peer_id, f.store_id, f.shard));
            }
            return;
        }
        if r.peer_id == notice.to.peer_id && self.removal_proven(id, notice.epoch.conf_ver, None) {
            tracing::info!(
                region = id,
                peer = r.peer_id,
                by = f.peer_id,
                conf_ver = notice.epoch.conf_ver,
                "told by a member that this peer was removed"
            );
            self.destroy_region(id);
        }
    }

    /// Whether word of region `id` at `conf_ver` (a member's notice, or PD's
    /// meta `current`, which must then not name the peer) proves this peer
    /// removed: the word is newer than any epoch the peer knows itself a
    /// member at — its own meta's, or, uninitialized, the one its leader's
    /// messages carried —, or, when the peer applied its own removal, at
    /// that meta's or newer.
    pub(super) fn removal_proven(
        &self,
        id: u64,
        conf_ver: u64,
        current: Option<&crate::region::meta::RegionMeta>,
    ) -> bool {
        let Some(r) = self.regions.get(&id) else { return false };
        if current.is_some_and(|c| c.peer(r.peer_id).is_some()) {
            return false;
        }
        let member_at = r.meta.conf_ver.max(r.member_at_conf_ver);
        conf_ver > member_at || (r.removal_applied && conf_ver >= r.meta.conf_ver)
    }

    /// Region `id`'s peer here applied the change that removed it: it stays,
    /// answering votes and appends, until told (`removal_proven`). Its
    /// client work is answered now (it leads no more).
    pub(super) fn await_removal_word(&mut self, id: u64) {
        let r = self.regions.get_mut(&id).expect("hosted");
        r.removal_applied = true;
        let work = take_client_work(r);
        tracing::info!(
            region = id,
            peer = r.peer_id,
            conf_ver = r.meta.conf_ver,
            "this peer applied its own removal: it goes once a voter of the new configuration says so"
        );
        self.answer_client_work(id, work, RegionError::RegionNotFound { region: id });
    }

    /// Every election timeout, each peer that applied its own removal asks
    /// the voters of its new configuration whether it may go (an empty
    /// message): the notice its leader sent may have been lost, or its
    /// leader may have crashed before the change was durable and sent none.
    pub(super) fn ask_whether_removed(&mut self) {
        if !self.ticks.is_multiple_of(ELECTION_TICKS as u64) {
            return;
        }
        let mut asks = vec![];
        // (one told already and waiting for its split children asks no more)
        for r in self.regions.values().filter(|r| r.removal_applied && !r.destroy_deferred) {
            asks.extend(
                r.meta
                    .peers
                    .iter()
                    .filter(|p| r.meta.is_voter(p.peer_id))
                    // (to no peer: a question is never taken for a notice)
                    .map(|p| empty_envelope(r, self.store_id, self.shard, PeerMeta { peer_id: QUESTION_TO, ..*p })),
            );
        }
        for ask in asks {
            self.push_empty(ask);
        }
    }

    /// Issued persist batch `batch` carries these region writes: the metas
    /// among them are durable once it is.
    pub(super) fn note_metas_issued(&mut self, batch: u64, writes: &[(u64, wal::RegionWrite)]) {
        for (region, w) in writes.iter().filter(|(_, w)| !w.tombstone) {
            let Some(bytes) = &w.meta else { continue };
            let Some(r) = self.regions.get(region) else { continue };
            let state = RegionLocalState::decode(bytes).expect("a meta this shard encoded decodes");
            let issued =
                MetaIssued { batch, region: *region, incarnation: r.incarnation, conf_ver: state.meta.conf_ver };
            self.metas_issued.push_back(issued);
        }
    }

    /// Persist batches up to `batch` are durable: the metas they carried
    /// are, and the removal notices that waited for them leave.
    pub(super) fn metas_persisted(&mut self, batch: u64) {
        while self.metas_issued.front().is_some_and(|m| m.batch <= batch) {
            let m = self.metas_issued.pop_front().expect("just seen");
            let Some(r) = self.regions.get_mut(&m.region).filter(|r| r.incarnation == m.incarnation) else {
                continue; // removed since
            };
            r.conf_ver_durable = r.conf_ver_durable.max(m.conf_ver);
            if r.conf_ver_durable < r.meta.conf_ver || r.removal_notices_waiting.is_empty() {
                continue;
            }
            for peer in std::mem::take(&mut r.removal_notices_waiting) {
                self.send_removal_notice(m.region, peer);
            }
        }
    }
}

/// An empty message of region `r`'s peer here to `to`, at the region's
/// epoch: a removal notice, or a removed peer's question.
fn empty_envelope(r: &Region, store_id: u64, shard: u16, to: PeerMeta) -> Envelope {
    Envelope {
        region_id: r.id(),
        start_key: r.key_range.0.clone(),
        end_key: r.key_range.1.clone(),
        epoch: r.meta.epoch(),
        from: transport::Peer { peer_id: r.peer_id, store_id, shard },
        to: Target { peer_id: to.peer_id, store_id: to.store_id, shard: to.shard },
        message: bytes::Bytes::new(),
    }
}

/// Metas in issued batches not yet durable.
pub(super) type MetasIssued = VecDeque<MetaIssued>;
