//! Balance-region: moves replicas from the store holding the most to the
//! one holding the fewest (TiKV PD's balance-region, by count). Counts
//! include the moves under way, so nothing is moved twice for one gap, and
//! a move is made only while the gap is wider than the tolerance plus the
//! two replicas one move shifts: a move never reverses an earlier one
//! (no flapping).

use crate::meta::{PeerInfo, PeerRole, RegionInfo};

use super::operator::{move_steps, OperatorKind};
use super::replica_checker::{pick_shard, StoreLoad};
use super::step::Step;

/// Balance moves under way at once (each costs a snapshot).
pub const BALANCE_REGION_OPERATORS_MAX: usize = 4;

/// The gap in replica counts tolerated between two stores: 5% of the
/// average, at least 1 (TiKV PD's auto tolerance is of the same kind).
pub fn tolerance(stores: &[StoreLoad]) -> usize {
    let serving: Vec<&StoreLoad> = stores.iter().filter(|s| !s.evacuate).collect();
    let (total, n) = (serving.iter().map(|s| s.regions).sum::<usize>(), serving.len().max(1));
    // (5% of total / n, rounded)
    ((total * 5 + 50 * n) / (100 * n)).max(1)
}

/// A region as the scheduler sees it.
pub struct Candidate<'a> {
    pub region: &'a RegionInfo,
    pub leader: Option<PeerInfo>,
    /// Healthy: no pending peer, not joint, no learner, no operator.
    pub settled: bool,
}

/// One move that narrows the widest gap, if any is wider than the
/// tolerance: a settled region on the fullest store (projected counts:
/// `stores[..].regions` with the moves under way) that the emptiest store
/// does not hold: the region's id and the move. `new_peer_id` hands out
/// the new replica's id.
pub fn pick_move<'a>(
    stores: &[StoreLoad],
    regions: impl Iterator<Item = Candidate<'a>>,
    new_peer_id: impl FnOnce() -> u64,
) -> Option<(u64, OperatorKind, Vec<Step>)> {
    let source = stores.iter().filter(|s| !s.evacuate).max_by_key(|s| (s.regions, s.store_id))?;
    let target = stores.iter().filter(|s| s.up).min_by_key(|s| (s.regions, s.store_id))?;
    if source.regions < target.regions + 2 + tolerance(stores) {
        return None;
    }
    let c = regions
        .filter(|c| c.settled && c.region.peer_on(target.store_id).is_none())
        .find(|c| c.region.peer_on(source.store_id).is_some_and(|p| p.role == PeerRole::Voter))?;
    let to = PeerInfo::voter(new_peer_id(), target.store_id, pick_shard(c.region, target.shards));
    Some((c.region.id, OperatorKind::BalanceRegion, move_steps(c.region, c.leader, source.store_id, to)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::Epoch;

    fn load(store_id: u64, regions: usize) -> StoreLoad {
        StoreLoad { store_id, shards: 1, up: true, evacuate: false, regions, leaders: 0 }
    }

    fn region(id: u64, stores: &[u64]) -> RegionInfo {
        RegionInfo {
            id,
            start_key: vec![],
            end_key: vec![],
            epoch: Epoch { conf_ver: 1, version: 1 },
            peers: stores.iter().map(|s| PeerInfo::voter(id * 10 + s, *s, 0)).collect(),
            max_peer_id: id * 10 + 9,
        }
    }

    #[test]
    fn a_move_goes_from_the_fullest_store_to_the_emptiest_only_past_the_tolerance() {
        let regions = [region(1, &[1, 2, 3]), region(2, &[1, 2, 3]), region(3, &[1, 2, 4])];
        let candidates =
            || regions.iter().map(|r| Candidate { region: r, leader: r.peers.first().copied(), settled: true });
        let stores = [load(1, 40), load(2, 40), load(3, 39), load(4, 1)];
        let (region, kind, steps) = pick_move(&stores, candidates(), || 99).unwrap();
        assert_eq!((region, kind), (1, OperatorKind::BalanceRegion));
        // (store 2 and store 1 tie at 40: the higher id is the source; region 1 lacks store 4)
        assert!(matches!(steps[0], Step::AddLearner(p) if p.store_id == 4 && p.peer_id == 99), "{steps:?}");
        assert!(steps.iter().any(|s| matches!(s, Step::RemovePeer(p) if p.store_id == 2)), "{steps:?}");
        // within the tolerance (40 replicas on average: 2), or one move from even: nothing
        for even in
            [[load(1, 41), load(2, 40), load(3, 39), load(4, 38)], [load(1, 40), load(2, 40), load(3, 40), load(4, 37)]]
        {
            assert!(pick_move(&even, candidates(), || 99).is_none(), "{even:?}");
        }
        // a target that is not up, or regions that are not settled: nothing
        let down = [load(1, 40), load(2, 40), load(3, 39), StoreLoad { up: false, ..load(4, 1) }];
        let target = pick_move(&down, candidates(), || 99).map(|(_, _, s)| s[0]);
        assert!(!matches!(target, Some(Step::AddLearner(p)) if p.store_id == 4));
        let unsettled = regions.iter().map(|r| Candidate { region: r, leader: None, settled: false });
        assert!(pick_move(&stores, unsettled, || 99).is_none());
    }
}
