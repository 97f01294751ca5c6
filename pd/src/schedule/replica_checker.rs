//! The replica checker: what a region needs so that it has `--replicas`
//! voters and nothing half-done (TiKV PD's replica, learner and joint-state
//! checkers, in that order). It looks at one region at a time, only at
//! regions no operator drives and whose leader has reported.

use crate::meta::{PeerInfo, PeerRole, RegionInfo};

use super::operator::{add_voter_steps, leave_joint_steps, move_steps, remove_steps, OperatorKind};
use super::step::Step;

/// A store as the checkers see it.
#[derive(Clone, Copy, Debug)]
pub struct StoreLoad {
    pub store_id: u64,
    pub shards: u16,
    /// Heard from lately and serving: it can take a replica.
    pub up: bool,
    /// Down for good or draining: its replicas go elsewhere.
    pub evacuate: bool,
    /// Replicas of regions it holds (voters and learners).
    pub regions: usize,
    /// Regions whose leader it is.
    pub leaders: usize,
}

/// The store that takes a new replica of `region`: up, holding none of it,
/// holding the fewest replicas (then the lowest id).
pub fn pick_target(region: &RegionInfo, stores: &[StoreLoad]) -> Option<StoreLoad> {
    stores
        .iter()
        .filter(|s| s.up && region.peer_on(s.store_id).is_none())
        .min_by_key(|s| (s.regions, s.store_id))
        .copied()
}

/// The shard of a store of `shards` shards a new replica of `region` goes
/// to (spread by region id).
pub fn pick_shard(region: &RegionInfo, shards: u16) -> u16 {
    (region.id % u64::from(shards.max(1))) as u16
}

/// What `region` needs, if anything: the kind of operator and its steps.
/// `new_peer_id` hands out an id when a replica is added.
pub fn check(
    region: &RegionInfo,
    leader: Option<PeerInfo>,
    replicas: usize,
    stores: &[StoreLoad],
    new_peer_id: impl FnOnce() -> u64,
) -> Option<(OperatorKind, Vec<Step>)> {
    leader?; // (nothing is known of a region whose leader has not reported)
    if region.is_joint() {
        return Some((OperatorKind::LeaveJoint, leave_joint_steps(region, leader)?));
    }
    if let Some(learner) = region.peers.iter().find(|p| p.role == PeerRole::Learner) {
        return Some((OperatorKind::RemoveOrphanLearner, remove_steps(region, leader, *learner)?));
    }
    let evacuating = |p: &PeerInfo| stores.iter().any(|s| s.store_id == p.store_id && s.evacuate);
    let voters = region.voters().count();
    // a voter on a store going away is replaced (a region with a voter to
    // spare loses that one instead, below); a region short of voters gets one
    let gone = region.voters().find(|p| evacuating(p)).filter(|_| voters <= replicas).copied();
    if gone.is_some() || voters < replicas {
        let to = pick_target(region, stores)?;
        let peer = PeerInfo {
            peer_id: new_peer_id(),
            store_id: to.store_id,
            shard: pick_shard(region, to.shards),
            role: PeerRole::Learner,
        };
        return Some(match gone {
            Some(g) => (OperatorKind::ReplaceReplica, move_steps(region, leader, g.store_id, peer)?),
            None => (OperatorKind::AddReplica, add_voter_steps(peer)),
        });
    }
    if voters > replicas {
        // the replica on the busiest store goes (not the leader's when another will do)
        let load = |p: &PeerInfo| stores.iter().find(|s| s.store_id == p.store_id).map_or(usize::MAX, |s| s.regions);
        let leads = |p: &PeerInfo| leader.is_some_and(|l| l.peer_id == p.peer_id);
        let victim = region.voters().max_by_key(|p| (evacuating(p), !leads(p), load(p), p.store_id))?;
        return Some((OperatorKind::RemoveReplica, remove_steps(region, leader, *victim)?));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::Epoch;

    fn region(peers: Vec<PeerInfo>) -> RegionInfo {
        RegionInfo {
            id: 5,
            start_key: vec![],
            end_key: vec![],
            epoch: Epoch { conf_ver: 3, version: 1 },
            max_peer_id: 50,
            peers,
        }
    }

    fn stores(loads: &[(u64, bool, usize)]) -> Vec<StoreLoad> {
        loads
            .iter()
            .map(|&(store_id, up, regions)| StoreLoad { store_id, shards: 1, up, evacuate: false, regions, leaders: 0 })
            .collect()
    }

    #[test]
    fn a_region_short_of_voters_gets_a_learner_on_the_least_loaded_store_that_is_up() {
        let (a, b) = (PeerInfo::voter(1, 1, 0), PeerInfo::voter(2, 2, 0));
        let r = region(vec![a, b]);
        let s = stores(&[(1, true, 9), (2, true, 9), (3, false, 0), (4, true, 7), (5, true, 8)]);
        let (kind, steps) = check(&r, Some(a), 3, &s, || 60).unwrap();
        let learner = PeerInfo { role: PeerRole::Learner, ..PeerInfo::voter(60, 4, 0) };
        assert_eq!(
            (kind, steps),
            (OperatorKind::AddReplica, vec![Step::AddLearner(learner), Step::PromoteLearner(learner)])
        );
        assert!(check(&r, None, 3, &s, || 60).is_none(), "no report of its leader yet");
        assert!(check(&r, Some(a), 2, &s, || 60).is_none(), "enough voters");
    }

    #[test]
    fn half_done_work_is_undone_or_finished_and_extra_voters_go() {
        let (a, b, c, d) =
            (PeerInfo::voter(1, 1, 0), PeerInfo::voter(2, 2, 0), PeerInfo::voter(3, 3, 0), PeerInfo::voter(4, 4, 0));
        let s = stores(&[(1, true, 1), (2, true, 1), (3, true, 5), (4, true, 1)]);
        let learner = PeerInfo { role: PeerRole::Learner, ..d };
        let (kind, steps) = check(&region(vec![a, b, c, learner]), Some(a), 3, &s, || 60).unwrap();
        assert_eq!((kind, steps), (OperatorKind::RemoveOrphanLearner, vec![Step::RemovePeer(learner)]));
        let joint = region(vec![
            PeerInfo { role: PeerRole::DemotingVoter, ..a },
            b,
            c,
            PeerInfo { role: PeerRole::IncomingVoter, ..d },
        ]);
        let (kind, steps) = check(&joint, Some(PeerInfo { role: PeerRole::DemotingVoter, ..a }), 3, &s, || 60).unwrap();
        assert_eq!((kind, steps[0]), (OperatorKind::LeaveJoint, Step::TransferLeader { to_store: 2 }));
        let (kind, steps) = check(&region(vec![a, b, c, d]), Some(c), 3, &s, || 60).unwrap();
        assert_eq!(
            (kind, steps),
            (OperatorKind::RemoveReplica, vec![Step::RemovePeer(d)]),
            "not the leader's, the busiest other"
        );
    }
}
