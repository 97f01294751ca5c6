//! The initial layout: `N` regions splitting the key space evenly, each
//! with its replicas on distinct stores and on the least loaded shard of each.
//!
//! The split points are four-digit decimal prefixes ("0000".."9999", as the
//! bench and `ringraft ctl load` write keys): readable in every tool, and
//! even for keys that start with digits. Regions split by size once the
//! split work lands; until then keys outside the digits land in the first
//! or the last region.

use std::collections::BTreeMap;

use crate::meta::{Epoch, PeerInfo, RegionInfo, StoreInfo};

/// Most regions a cluster may start with (four decimal digits of split points).
pub const INITIAL_REGIONS_MAX: u32 = 10_000;

/// The boundary between region `i - 1` and region `i` of `n`.
fn split_key(i: u32, n: u32) -> Vec<u8> {
    if i == 0 {
        return vec![];
    }
    format!("{:04}", u64::from(i) * 10_000 / u64::from(n)).into_bytes()
}

/// Lays out `n` regions over `stores` with `replicas` each. `ids` hands out
/// fresh ids (region ids and peer ids alike).
pub fn initial_regions(n: u32, replicas: u32, stores: &[StoreInfo], mut ids: impl FnMut() -> u64) -> Vec<RegionInfo> {
    assert!((1..=INITIAL_REGIONS_MAX).contains(&n), "checked when PD starts");
    assert!(replicas as usize <= stores.len(), "bootstrap waits for enough stores");
    // peers placed per (store, shard): each replica goes to its store's least loaded shard
    let mut load: BTreeMap<(u64, u16), u32> = BTreeMap::new();
    let mut regions = Vec::with_capacity(n as usize);
    for i in 0..n {
        let id = ids();
        let mut peers = Vec::with_capacity(replicas as usize);
        for r in 0..replicas {
            let store = &stores[((i + r) as usize) % stores.len()];
            let shard = (0..store.shards)
                .min_by_key(|s| (load.get(&(store.id, *s)).copied().unwrap_or(0), *s))
                .expect("a store has at least one shard");
            *load.entry((store.id, shard)).or_default() += 1;
            peers.push(PeerInfo::voter(ids(), store.id, shard));
        }
        let max_peer_id = peers.iter().map(|p| p.peer_id).max().expect("at least one replica");
        regions.push(RegionInfo {
            id,
            start_key: split_key(i, n),
            end_key: if i + 1 == n { vec![] } else { split_key(i + 1, n) },
            epoch: Epoch { conf_ver: 1, version: 1 },
            peers,
            max_peer_id,
        });
    }
    regions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(id: u64, shards: u16) -> StoreInfo {
        StoreInfo {
            id,
            peer_addr: format!("127.0.0.1:{}", 1000 + id * 100).parse().unwrap(),
            client_addr: format!("127.0.0.1:{}", 1050 + id * 100).parse().unwrap(),
            shards,
            capacity_bytes: 0,
            token: id,
            state: Default::default(),
        }
    }

    #[test]
    fn regions_tile_the_key_space_on_distinct_stores_and_balanced_shards() {
        for n in [1, 3, 64, 1000, INITIAL_REGIONS_MAX] {
            let mut next = 10;
            let regions = initial_regions(n, 3, &[store(1, 2), store(2, 2), store(3, 1)], || {
                next += 1;
                next
            });
            assert_eq!(regions.len(), n as usize);
            assert!(regions[0].start_key.is_empty() && regions.last().unwrap().end_key.is_empty());
            for w in regions.windows(2) {
                assert_eq!(w[0].end_key, w[1].start_key);
                assert!(w[0].start_key < w[1].start_key);
            }
            for r in &regions {
                r.validate().unwrap();
                assert_eq!(r.peers.len(), 3);
            }
            if n >= 64 {
                let on = |shard| regions.iter().filter(|r| r.peer_on(1).unwrap().shard == shard).count();
                assert!(on(0).abs_diff(on(1)) <= 1, "store 1's two shards share the regions evenly");
            }
        }
    }
}
