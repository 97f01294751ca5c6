//! A peer created for a candidate's vote request, once PD vouches for it.
//!
//! Peers are created by their leader's messages (`create_peer`): a store
//! added to a region hears from the region's leader. A split child can be
//! left with no leader to hear from: its parent's leader applied the split
//! (creating the child there) while the parent's other replicas caught up
//! by a snapshot taken past the split, which creates no child — and the
//! child's one replica cannot be elected alone. Its vote requests are all
//! that reach the other stores. TiKV creates a peer from any vote request
//! and keeps tombstones for good; here a vote request for a region not
//! hosted (and overlapping no region here: that one waits for a split this
//! replica has not applied, `split.rs`) asks PD instead, and the peer is
//! created — empty, to be filled by the leader it helps elect — only when
//! PD's meta of the region names that peer on this shard and the candidate
//! is not behind PD (its epoch is at PD's or newer). A removed peer is never
//! named again (PD's meta only moves forward, and peer ids are never
//! reused), so a stale candidate cannot bring back a peer whose tombstone
//! was collected (`tombstone.rs`).

use transport::Envelope;

use crate::region::meta::RegionMeta;
use crate::region::peer::ELECTION_TICKS;

use super::{Output, Shard};

/// Regions whose vote requests wait for PD's word at once (more are
/// dropped: the candidate asks again next election timeout).
pub const VOUCHING_MAX: usize = 64;

/// Ticks before a region's ask may be made again (an unanswered one: PD
/// down, or none configured).
pub const VOUCH_ASK_TICKS: u64 = ELECTION_TICKS as u64;

impl Shard {
    /// A vote request for a peer this shard does not host: asks PD whether
    /// the peer is a member (at most once per region per `VOUCH_ASK_TICKS`).
    pub(super) fn ask_pd_to_vouch(&mut self, envelope: &Envelope) {
        let (region, now) = (envelope.region_id, self.ticks);
        self.vouching.retain(|_, (_, at)| now.saturating_sub(*at) < VOUCH_ASK_TICKS);
        if self.vouching.contains_key(&region) || self.vouching.len() >= VOUCHING_MAX {
            return;
        }
        self.vouching.insert(region, (envelope.clone(), now));
        let peer_id = envelope.to.peer_id;
        tracing::debug!(
            region,
            peer = peer_id,
            candidate = envelope.from.store_id,
            "vote request for a peer not here: asking PD"
        );
        self.outputs.push(Output::CheckMembership { region, peer_id });
    }

    /// PD's answer about a vote request's peer (`None`: PD does not know
    /// the region): creates the peer if PD names it and the candidate is
    /// not behind PD.
    pub(super) fn on_vouched(&mut self, region: u64, current: Option<RegionMeta>) {
        let Some((envelope, _)) = self.vouching.remove(&region) else { return };
        let Some(c) = current.filter(|c| c.id == region) else { return };
        let named = c.peer(envelope.to.peer_id).is_some_and(|p| (p.store_id, p.shard) == (self.store_id, self.shard));
        let current_candidate = envelope.epoch.conf_ver >= c.conf_ver && envelope.epoch.version >= c.version;
        // (what may have changed while PD was asked)
        let hosted = self.regions.contains_key(&region);
        let removed = self.is_removed_peer(region, envelope.to.peer_id);
        let overlapped = self.overlaps_initialized(&envelope.start_key, &envelope.end_key);
        let full = self.is_full();
        if !named || !current_candidate || hosted || removed || overlapped || full {
            tracing::debug!(
                region,
                named,
                current_candidate,
                hosted,
                removed,
                overlapped,
                "PD does not vouch: no peer"
            );
            return;
        }
        tracing::info!(region, peer = envelope.to.peer_id, "PD names the peer a vote request is for: creating it");
        self.stats.peers_vouched += 1;
        self.create_uninitialized(&envelope);
    }
}
