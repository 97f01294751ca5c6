//! Balance-leader: hands leadership from the store leading the most regions
//! to the one leading the fewest (TiKV PD's balance-leader, by count).
//! Only to a voter that stays one (never a learner, never a peer being
//! demoted) on a store that is up and serving; only while the gap is
//! wider than the tolerance plus the two leaders one transfer shifts, so
//! a transfer never reverses an earlier one.

use std::collections::BTreeMap;

use crate::meta::{PeerRole, RegionInfo};

use super::operator::OperatorKind;
use super::replica_checker::StoreLoad;
use super::step::Step;

/// Leadership transfers under way at once.
pub const BALANCE_LEADER_OPERATORS_MAX: usize = 4;
/// The gap in leader counts tolerated between two stores.
pub const LEADER_TOLERANCE: usize = 1;

/// One transfer that narrows the widest gap in `leaders` (store → regions
/// led, projected with the transfers under way), if any: a region led on
/// the source (from `led`, settled regions only) with a lasting voter on
/// the target.
pub fn pick_transfer<'a>(
    stores: &[StoreLoad],
    leaders: &BTreeMap<u64, usize>,
    led: impl Iterator<Item = (&'a RegionInfo, u64)>,
) -> Option<(u64, OperatorKind, Vec<Step>)> {
    let count = |s: &StoreLoad| leaders.get(&s.store_id).copied().unwrap_or(0);
    let source = stores.iter().max_by_key(|s| (count(s), s.store_id))?;
    let target = stores.iter().filter(|s| s.up).min_by_key(|s| (count(s), s.store_id))?;
    if count(source) < count(target) + 2 + LEADER_TOLERANCE {
        return None;
    }
    let (region, _) = led
        .filter(|(_, leader_store)| *leader_store == source.store_id)
        .find(|(r, _)| r.peer_on(target.store_id).is_some_and(|p| p.role == PeerRole::Voter))?;
    Some((region.id, OperatorKind::BalanceLeader, vec![Step::TransferLeader { to_store: target.store_id }]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{Epoch, PeerInfo};

    fn load(store_id: u64, up: bool) -> StoreLoad {
        StoreLoad { store_id, shards: 1, up, evacuate: false, regions: 0, leaders: 0 }
    }

    #[test]
    fn leadership_goes_to_the_store_leading_fewest_only_to_a_lasting_voter() {
        let mk = |id: u64, roles: [PeerRole; 3]| RegionInfo {
            id,
            start_key: vec![],
            end_key: vec![],
            epoch: Epoch { conf_ver: 1, version: 1 },
            peers: (1..=3)
                .map(|s| PeerInfo { role: roles[s as usize - 1], ..PeerInfo::voter(id * 10 + s, s, 0) })
                .collect(),
            max_peer_id: id * 10 + 3,
        };
        let v = PeerRole::Voter;
        let learner_on_3 = mk(1, [v, v, PeerRole::Learner]);
        let plain = mk(2, [v, v, v]);
        let stores = [load(1, true), load(2, true), load(3, true)];
        let leaders: BTreeMap<u64, usize> = [(1, 5), (2, 4), (3, 1)].into();
        let led = || [(&learner_on_3, 1), (&plain, 1)].into_iter();
        let (region, kind, steps) = pick_transfer(&stores, &leaders, led()).unwrap();
        assert_eq!((region, kind, steps), (2, OperatorKind::BalanceLeader, vec![Step::TransferLeader { to_store: 3 }]));
        let close: BTreeMap<u64, usize> = [(1, 4), (2, 4), (3, 2)].into();
        assert!(pick_transfer(&stores, &close, led()).is_none(), "within the tolerance");
        let down = [load(1, true), load(2, true), load(3, false)];
        let picked = pick_transfer(&down, &leaders, led());
        assert!(
            picked.is_none_or(|(_, _, s)| s != vec![Step::TransferLeader { to_store: 3 }]),
            "not to a store that is not up"
        );
    }
}
