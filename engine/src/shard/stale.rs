//! Stale peers: a peer that hears from no leader for a while asks PD
//! whether it is still a member, and removes itself if not (TiKV's stale
//! peer check). A member's removal notice reaches a removed voter, which
//! campaigns and is answered; but a removed learner never campaigns, a peer
//! removed while its store was away may find no member that still sends to
//! it, and a peer created by a leader's message whose region then dropped
//! it (an abandoned move) hears nothing again — such a peer would linger,
//! holding its range against a later move onto its store.
//!
//! The answer is trusted only when it proves the removal the way a member's
//! notice does: PD's meta of the region is at a newer `conf_ver` and does
//! not name this peer (a `conf_ver` never comes back, and a peer added again
//! gets a new id). An older or unknown answer changes nothing.

use crate::region::meta::RegionMeta;
use crate::region::peer::{Region, ELECTION_TICKS};

use super::{Output, Shard};

/// Ticks a follower goes without a message from a leader before it asks
/// PD (ten election timeouts), and between two asks.
pub const STALE_PEER_CHECK_TICKS: u64 = 10 * ELECTION_TICKS as u64;

/// A region's stale check at tick `now`: the ask, when it is due.
pub(super) fn on_tick(r: &mut Region, now: u64) -> Option<Output> {
    let heard = *r.leader_heard_tick.get_or_insert(now);
    if r.is_leader() {
        r.leader_heard_tick = Some(now);
        return None;
    }
    let asked = r.membership_asked_tick.unwrap_or(0);
    if now.saturating_sub(heard) < STALE_PEER_CHECK_TICKS || now.saturating_sub(asked) < STALE_PEER_CHECK_TICKS {
        return None;
    }
    r.membership_asked_tick = Some(now);
    tracing::debug!(region = r.id(), peer = r.peer_id, silent_ticks = now - heard, "no leader heard: asking PD");
    Some(Output::CheckMembership { region: r.id(), peer_id: r.peer_id })
}

impl Shard {
    /// PD's answer to a stale check, about a tombstone, or for a vote
    /// request's peer (`vouched.rs`): the region as PD has it (`None`: PD
    /// does not know it), and whether a leader reported it since PD started.
    pub(super) fn on_membership_checked(
        &mut self,
        region: u64,
        peer_id: u64,
        current: Option<RegionMeta>,
        reported: bool,
    ) {
        let hosted = self.regions.contains_key(&region);
        if !hosted && self.vouching.get(&region).is_some_and(|(e, _)| e.to.peer_id == peer_id) {
            return self.on_vouched(region, current);
        }
        // (what PD saved before a restart may be older than what this peer
        // knows — its epoch is in memory only —: only a leader's report since counts)
        let current = current.filter(|_| reported);
        if !hosted {
            return self.on_tombstone_checked(region, peer_id, current);
        }
        let Some(r) = self.regions.get(&region).filter(|r| r.peer_id == peer_id) else { return };
        let Some(c) = current.filter(|c| c.id == region) else { return };
        // (as a member's notice would: PD may not have heard yet of the
        // change that added this peer — `removal.rs`)
        if self.removal_proven(region, c.conf_ver, Some(&c)) {
            tracing::info!(
                region,
                peer = peer_id,
                conf_ver = c.conf_ver,
                member_at = r.member_at_conf_ver,
                "PD says this peer was removed: removing it"
            );
            self.stats.stale_peers_removed += 1;
            self.destroy_region(region);
        }
    }
}
