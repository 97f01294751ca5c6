use super::*;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use proptest::prelude::*;

use crate::meta::Epoch;
use crate::protocol::DirectiveAction;
use crate::storage::MemMetaStore;

type Pd = Cluster<MemMetaStore>;

const CLUSTER_ID: u64 = 4242;
const DOWN_AFTER_MS: u64 = 10_000;

// ---------------------------------------------------------------- helpers

fn config() -> ClusterConfig {
    ClusterConfig {
        new_cluster_id: CLUSTER_ID,
        replicas: 3,
        initial_regions: 64,
        store_down_after_ms: DOWN_AFTER_MS,
        initial_stores: 0,
        max_store_down_ms: 1_800_000,
    }
}

fn config_with(initial_regions: u32) -> ClusterConfig {
    ClusterConfig { initial_regions, ..config() }
}

fn open(store: &MemMetaStore, config: &ClusterConfig) -> Pd {
    match Cluster::open(store.clone(), config) {
        Ok(c) => c,
        Err(e) => panic!("PD does not open: {e}"),
    }
}

/// What a restarted PD would load.
fn saved(store: &MemMetaStore) -> ClusterState {
    store.saved.lock().unwrap().clone().expect("PD saved a state")
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A registration: peers listen from `port_base`, clients from `port_base + 100`.
fn registration(store_id: u64, token: u64, port_base: u16, shards: u16) -> PdRequest {
    PdRequest::RegisterStore {
        store_id,
        token,
        shards,
        peer_addr: addr(port_base),
        client_addr: addr(port_base + 100),
        capacity_bytes: 1 << 30,
    }
}

/// (store id, bootstrapped) or the error.
fn try_register(c: &mut Cluster<impl MetaStore>, req: PdRequest) -> Result<(u64, bool), PdError> {
    match c.handle(req, 0)? {
        PdResponse::Registered { store_id, bootstrapped } => Ok((store_id, bootstrapped)),
        other => panic!("a registration answered with {other:?}"),
    }
}

/// Registers a new store of 2 shards (its token is `port_base`); its id.
fn register(c: &mut Cluster<impl MetaStore>, port_base: u16) -> u64 {
    let (id, _) = try_register(c, registration(0, u64::from(port_base), port_base, 2)).expect("registered");
    assert_ne!(id, 0);
    id
}

fn stores_with_version(c: &mut Pd, now_ms: u64) -> (Vec<StoreView>, u64) {
    match c.handle(PdRequest::GetStores, now_ms).unwrap() {
        PdResponse::Stores { stores, stores_version } => (stores, stores_version),
        other => panic!("GetStores answered with {other:?}"),
    }
}

fn stores(c: &mut Pd, now_ms: u64) -> Vec<StoreView> {
    stores_with_version(c, now_ms).0
}

fn stores_version(c: &mut Pd) -> u64 {
    stores_with_version(c, 0).1
}

fn get_store(c: &mut Pd, store_id: u64, now_ms: u64) -> Result<StoreView, PdError> {
    match c.handle(PdRequest::GetStore { store_id }, now_ms)? {
        PdResponse::Store(v) => Ok(v),
        other => panic!("GetStore answered with {other:?}"),
    }
}

fn cluster_view(c: &mut Pd) -> ClusterView {
    match c.handle(PdRequest::GetCluster, 0).unwrap() {
        PdResponse::Cluster(v) => v,
        other => panic!("GetCluster answered with {other:?}"),
    }
}

fn regions_answer(r: Result<PdResponse, PdError>) -> Result<Vec<RegionView>, PdError> {
    match r? {
        PdResponse::Regions(v) => Ok(v),
        other => panic!("expected regions, got {other:?}"),
    }
}

fn region_answer(r: Result<PdResponse, PdError>) -> Result<RegionView, PdError> {
    match r? {
        PdResponse::Region(v) => Ok(v),
        other => panic!("expected a region, got {other:?}"),
    }
}

fn bootstrap_regions(c: &mut Pd, store_id: u64) -> Result<Vec<RegionView>, PdError> {
    regions_answer(c.handle(PdRequest::BootstrapRegions { store_id }, 0))
}

fn region(c: &mut Pd, region_id: u64) -> Result<RegionView, PdError> {
    region_answer(c.handle(PdRequest::GetRegionById { region_id }, 0))
}

fn by_key(c: &mut Pd, key: &[u8]) -> Result<RegionView, PdError> {
    region_answer(c.handle(PdRequest::GetRegionByKey { key: key.to_vec() }, 0))
}

fn scan(c: &mut Pd, start_key: &[u8], limit: u32) -> Vec<RegionView> {
    regions_answer(c.handle(PdRequest::ScanRegions { start_key: start_key.to_vec(), limit }, 0)).unwrap()
}

/// Every region PD holds, in key order.
fn all_regions(c: &mut Pd) -> Vec<RegionInfo> {
    scan(c, b"", SCAN_REGIONS_MAX).into_iter().map(|v| v.region).collect()
}

fn ids(c: &mut Pd, count: u32) -> Result<u64, PdError> {
    match c.handle(PdRequest::AllocIds { count }, 0)? {
        PdResponse::Ids { first, count: n } => {
            assert_eq!(n, count);
            Ok(first)
        }
        other => panic!("AllocIds answered with {other:?}"),
    }
}

/// The first of `count` fresh ids.
fn alloc(c: &mut Pd, count: u32) -> u64 {
    ids(c, count).unwrap()
}

/// A report of `region` by its peer on `leader_store`.
fn report(region: &RegionInfo, leader_store: u64, term: u64) -> RegionReport {
    let leader = *region.peer_on(leader_store).expect("the leader's store holds a peer");
    RegionReport { region: region.clone(), leader, term, stats: RegionStats::default(), pending_peers: vec![] }
}

/// The store of `r`'s first peer: the one the tests report from.
fn leader_store(r: &RegionInfo) -> u64 {
    r.peers[0].store_id
}

type Outcomes = Vec<Result<(), PdError>>;

fn heartbeat(c: &mut Cluster<impl MetaStore>, store_id: u64, reports: Vec<RegionReport>) -> (Outcomes, Vec<Directive>) {
    match c.handle(PdRequest::RegionHeartbeats { store_id, reports }, 0).expect("the heartbeat is taken") {
        PdResponse::RegionHeartbeats { outcomes, directives } => (outcomes, directives),
        other => panic!("RegionHeartbeats answered with {other:?}"),
    }
}

/// Sends one report from its leader's store: its outcome and the directives handed out.
fn send(c: &mut Cluster<impl MetaStore>, rep: RegionReport) -> (Result<(), PdError>, Vec<Directive>) {
    let (mut outcomes, directives) = heartbeat(c, rep.leader.store_id, vec![rep]);
    assert_eq!(outcomes.len(), 1, "one outcome per report");
    (outcomes.pop().unwrap(), directives)
}

/// Reports `r` from its first peer's store at term 1; the outcome.
fn send_region(c: &mut Pd, r: &RegionInfo) -> Result<(), PdError> {
    send(c, report(r, leader_store(r), 1)).0
}

/// A cluster bootstrapped with `initial_regions` regions of 3 replicas on
/// the stores at ports 7000, 7200 and 7400, and a fourth store (7600)
/// registered afterwards (it holds no peer).
fn bootstrapped(initial_regions: u32) -> (MemMetaStore, Pd, Vec<u64>) {
    let store = MemMetaStore::default();
    let mut c = open(&store, &config_with(initial_regions));
    let ids = vec![register(&mut c, 7000), register(&mut c, 7200), register(&mut c, 7400), register(&mut c, 7600)];
    assert!(cluster_view(&mut c).bootstrapped);
    (store, c, ids)
}

/// `r` after one conf change: its peer at `index` replaced by a fresh peer on `to`.
fn move_peer(c: &mut Pd, r: &RegionInfo, index: usize, to: u64) -> RegionInfo {
    let peer_id = alloc(c, 1);
    let mut n = r.clone();
    n.peers[index] = PeerInfo::voter(peer_id, to, 0);
    n.max_peer_id = n.max_peer_id.max(peer_id);
    n.epoch.conf_ver += 1;
    n
}

/// `r` split at `key`: (`r` keeping the left part, the new right region),
/// both at the next version; the new ids come from PD.
fn split(c: &mut Pd, r: &RegionInfo, key: &[u8]) -> (RegionInfo, RegionInfo) {
    let first = alloc(c, 1 + r.peers.len() as u32);
    let epoch = Epoch { conf_ver: r.epoch.conf_ver, version: r.epoch.version + 1 };
    let peers: Vec<PeerInfo> = r.peers.iter().zip(first + 1..).map(|(p, peer_id)| PeerInfo { peer_id, ..*p }).collect();
    let max_peer_id = peers.iter().map(|p| p.peer_id).max().unwrap();
    let right =
        RegionInfo { id: first, start_key: key.to_vec(), end_key: r.end_key.clone(), epoch, peers, max_peer_id };
    let left = RegionInfo { end_key: key.to_vec(), epoch, ..r.clone() };
    (left, right)
}

fn stale(err: &Result<(), PdError>) -> (u64, Epoch, RegionInfo) {
    match err {
        Err(PdError::StaleEpoch { region_id, reported, current }) => (*region_id, *reported, (**current).clone()),
        other => panic!("expected StaleEpoch, got {other:?}"),
    }
}

fn is_invalid<T>(r: &Result<T, PdError>) -> bool {
    matches!(r, Err(PdError::Invalid(_)))
}

// ---------------------------------------------------------------- registration

#[test]
fn a_new_store_gets_a_fresh_id_and_a_repeated_registration_gets_the_same_one() {
    let store = MemMetaStore::default();
    let mut c = open(&store, &config());
    assert_eq!(stores_version(&mut c), 0);

    let (a, boot) = try_register(&mut c, registration(0, 11, 7000, 2)).unwrap();
    assert_ne!(a, 0);
    assert!(!boot);
    assert_eq!(stores_version(&mut c), 1, "a new store bumps stores_version");

    // the store crashed before writing its id down: it repeats with id 0 and its token
    assert_eq!(try_register(&mut c, registration(0, 11, 7000, 2)), Ok((a, false)));
    // a restart of the store, now with its id
    assert_eq!(try_register(&mut c, registration(a, 11, 7000, 2)), Ok((a, false)));
    assert_eq!(stores_version(&mut c), 1, "a repeat is not a change");
    assert_eq!(stores(&mut c, 0).len(), 1, "a repeat adds no store");

    let (b, _) = try_register(&mut c, registration(0, 22, 7200, 2)).unwrap();
    assert!(b != 0 && b != a, "another token is another store: {a} and {b}");
    assert_eq!(stores_version(&mut c), 2);
    let listed: Vec<u64> = stores(&mut c, 0).iter().map(|v| v.store.id).collect();
    assert_eq!(listed, {
        let mut v = vec![a, b];
        v.sort_unstable();
        v
    });
    let s = get_store(&mut c, a, 0).unwrap().store;
    assert_eq!((s.token, s.shards, s.peer_addr, s.client_addr), (11, 2, addr(7000), addr(7100)));
}

#[test]
fn conflicting_registrations_are_refused_with_typed_errors_and_change_nothing() {
    let store = MemMetaStore::default();
    let mut c = open(&store, &config());
    let a = try_register(&mut c, registration(0, 11, 7000, 2)).unwrap().0;
    let b = try_register(&mut c, registration(0, 22, 7200, 2)).unwrap().0;
    let before = saved(&store);

    // peers 7001..=7002 overlap a's 7000..=7001
    assert_eq!(
        try_register(&mut c, registration(0, 33, 7001, 2)),
        Err(PdError::DuplicateStoreAddress { addr: addr(7001), store_id: a })
    );
    // a known store moving onto another's addresses
    assert!(matches!(
        try_register(&mut c, registration(b, 22, 7000, 2)),
        Err(PdError::DuplicateStoreAddress { store_id, .. }) if store_id == a
    ));
    // another data directory claiming a's id
    assert!(matches!(
        try_register(&mut c, registration(a, 99, 7000, 2)),
        Err(PdError::StoreMismatch { store_id, .. }) if store_id == a
    ));
    // the shard count is fixed at creation, by id or by token
    assert!(matches!(
        try_register(&mut c, registration(a, 11, 7000, 3)),
        Err(PdError::StoreMismatch { store_id, .. }) if store_id == a
    ));
    assert!(matches!(
        try_register(&mut c, registration(0, 11, 7000, 1)),
        Err(PdError::StoreMismatch { store_id, .. }) if store_id == a
    ));
    assert_eq!(
        try_register(&mut c, registration(12_345, 11, 7000, 2)),
        Err(PdError::UnknownStore { store_id: 12_345 })
    );
    // invalid addresses: peer 8000..=8001 and client 8001..=8002 overlap; ports past 65535; no shard
    let overlapping = PdRequest::RegisterStore {
        store_id: 0,
        token: 44,
        shards: 2,
        peer_addr: addr(8000),
        client_addr: addr(8001),
        capacity_bytes: 0,
    };
    assert!(is_invalid(&try_register(&mut c, overlapping)));
    let past_the_end = PdRequest::RegisterStore {
        store_id: 0,
        token: 44,
        shards: 2,
        peer_addr: addr(65_535),
        client_addr: addr(9000),
        capacity_bytes: 0,
    };
    assert!(is_invalid(&try_register(&mut c, past_the_end)));
    assert!(is_invalid(&try_register(&mut c, registration(0, 44, 9000, 0))));
    assert!(is_invalid(&try_register(&mut c, registration(0, 44, 9000, crate::meta::SHARDS_MAX + 1))));

    assert_eq!(saved(&store), before, "refusals save nothing");
    assert_eq!(stores_version(&mut c), 2);
    assert_eq!(stores(&mut c, 0).len(), 2);
    assert_eq!(get_store(&mut c, b, 0).unwrap().store.peer_addr, addr(7200), "b did not move");
}

#[test]
fn an_address_change_bumps_stores_version_and_frees_the_old_addresses() {
    let store = MemMetaStore::default();
    let mut c = open(&store, &config());
    let a = try_register(&mut c, registration(0, 11, 7000, 2)).unwrap().0;
    assert_eq!(stores_version(&mut c), 1);

    assert_eq!(try_register(&mut c, registration(a, 11, 7500, 2)), Ok((a, false)));
    assert_eq!(stores_version(&mut c), 2, "an address change bumps stores_version");
    let s = get_store(&mut c, a, 0).unwrap().store;
    assert_eq!((s.peer_addr, s.client_addr), (addr(7500), addr(7600)));
    assert_eq!(saved(&store).stores[0].peer_addr, addr(7500), "the move is saved");
    assert_eq!(saved(&store).stores_version, 2);

    // the same move repeated is no change
    assert_eq!(try_register(&mut c, registration(a, 11, 7500, 2)), Ok((a, false)));
    assert_eq!(stores_version(&mut c), 2);

    // a's old ports are free for another store
    let b = try_register(&mut c, registration(0, 22, 7000, 2)).unwrap().0;
    assert_ne!(b, a);
    assert_eq!(stores_version(&mut c), 3);
}

/// `DuplicateStoreAddress { addr }` reads "address {addr} is already used
/// by store {store_id}"; `addr` must be an address the other store uses
/// (it once named the newcomer's peer address whatever collided).
#[test]
fn a_duplicate_address_error_names_the_address_in_use() {
    let store = MemMetaStore::default();
    let mut c = open(&store, &config());
    let a = try_register(&mut c, registration(0, 11, 7000, 2)).unwrap().0;
    // valid by itself (peer 7200.., client 7000..); its client ports are a's peer ports
    let req = PdRequest::RegisterStore {
        store_id: 0,
        token: 22,
        shards: 2,
        peer_addr: addr(7200),
        client_addr: addr(7000),
        capacity_bytes: 0,
    };
    match try_register(&mut c, req) {
        Err(PdError::DuplicateStoreAddress { addr: used, store_id }) => {
            assert_eq!(store_id, a);
            let s = get_store(&mut c, a, 0).unwrap().store;
            let a_uses: Vec<SocketAddr> =
                (0..s.shards).flat_map(|i| [s.peer_addr_of(i), s.client_addr_of(i)]).collect();
            assert!(a_uses.contains(&used), "the error says {used} is used by store {a}, which uses {a_uses:?}");
        }
        other => panic!("expected DuplicateStoreAddress, got {other:?}"),
    }
}

// ---------------------------------------------------------------- bootstrap

#[test]
fn bootstrap_waits_for_replicas_stores_then_gives_each_store_its_regions() {
    let store = MemMetaStore::default();
    let mut c = open(&store, &config());
    let s1 = register(&mut c, 7000);
    let s2 = register(&mut c, 7200);
    assert_eq!(bootstrap_regions(&mut c, s1), Err(PdError::NotBootstrapped { registered: 2, needed: 3 }));
    assert_eq!(by_key(&mut c, b"k"), Err(PdError::NotBootstrapped { registered: 2, needed: 3 }));
    assert_eq!(bootstrap_regions(&mut c, 999), Err(PdError::UnknownStore { store_id: 999 }));
    assert!(!cluster_view(&mut c).bootstrapped);
    assert!(all_regions(&mut c).is_empty());

    let (s3, boot) = try_register(&mut c, registration(0, 7400, 7400, 2)).unwrap();
    assert!(boot, "the third registration bootstraps");
    assert_eq!(try_register(&mut c, registration(s1, 7000, 7000, 2)), Ok((s1, true)), "and later answers say so");

    let view = cluster_view(&mut c);
    assert!(view.bootstrapped);
    assert_eq!(
        (view.cluster_id, view.replicas, view.initial_regions, view.stores, view.regions),
        (CLUSTER_ID, 3, 64, 3, 64)
    );
    assert!(saved(&store).bootstrapped, "the bootstrap is saved");
    assert_eq!(saved(&store).regions.len(), 64);

    let all = all_regions(&mut c);
    assert_eq!(all.len(), 64);
    for s in [s1, s2, s3] {
        let mine = bootstrap_regions(&mut c, s).unwrap();
        assert_eq!(mine.len(), 64, "with 3 stores and 3 replicas every region has a peer on store {s}");
        for v in &mine {
            assert!(v.region.peer_on(s).is_some());
            assert_eq!(v.region.epoch, Epoch { conf_ver: 1, version: 1 });
            assert_eq!(v.leader, None, "no leader reported yet");
        }
        let mut ids: Vec<u64> = mine.iter().map(|v| v.region.id).collect();
        ids.sort_unstable();
        let mut all_ids: Vec<u64> = all.iter().map(|r| r.id).collect();
        all_ids.sort_unstable();
        assert_eq!(ids, all_ids);
    }

    // the regions tile the key space
    assert!(all[0].start_key.is_empty() && all[63].end_key.is_empty());
    for w in all.windows(2) {
        assert_eq!(w[0].end_key, w[1].start_key);
        assert!(w[0].start_key < w[1].start_key);
    }
    // every id is distinct: stores, regions, peers
    let mut every: Vec<u64> = vec![s1, s2, s3];
    for r in &all {
        r.validate().unwrap();
        every.push(r.id);
        let mut on: Vec<u64> = r.peers.iter().map(|p| p.store_id).collect();
        on.sort_unstable();
        assert_eq!(on, {
            let mut v = vec![s1, s2, s3];
            v.sort_unstable();
            v
        });
        every.extend(r.peers.iter().map(|p| p.peer_id));
        assert_eq!(r.max_peer_id, r.peers.iter().map(|p| p.peer_id).max().unwrap());
    }
    let n = every.len();
    every.sort_unstable();
    every.dedup();
    assert_eq!(every.len(), n, "an id was handed out twice");
    assert_eq!(n, 3 + 64 * 4);
    assert!(!every.contains(&0));
    assert!(*every.last().unwrap() < saved(&store).ids_reserved_until, "every id is under the saved reservation");

    // a store joining later starts with no region
    let s4 = register(&mut c, 7600);
    assert!(!every.contains(&s4));
    assert_eq!(bootstrap_regions(&mut c, s4), Ok(vec![]));
}

#[test]
fn bootstrap_regions_leaves_out_regions_changed_since_the_layout() {
    let (_store, mut c, s) = bootstrapped(2);
    let all = all_regions(&mut c);
    let moved = move_peer(&mut c, &all[0], 2, s[3]);
    assert_eq!(send_region(&mut c, &moved), Ok(()));
    for store_id in &s[..3] {
        let ids: Vec<u64> = bootstrap_regions(&mut c, *store_id).unwrap().iter().map(|v| v.region.id).collect();
        assert_eq!(ids, vec![all[1].id], "store {store_id}: only the region still as laid out");
    }
    assert_eq!(bootstrap_regions(&mut c, s[3]), Ok(vec![]));
}

// ---------------------------------------------------------------- restart

#[test]
fn a_restarted_pd_serves_the_same_stores_and_regions() {
    let (store, mut c, s) = bootstrapped(8);
    let all = all_regions(&mut c);
    // change the layout: a split, a conf change
    let (left, right) = split(&mut c, &all[3], b"4000");
    assert_eq!(send_region(&mut c, &left), Ok(()));
    assert_eq!(send_region(&mut c, &right), Ok(()));
    let moved = move_peer(&mut c, &all[5], 2, s[3]);
    assert_eq!(send_region(&mut c, &moved), Ok(()));
    assert_eq!(try_register(&mut c, registration(s[3], 7600, 7800, 2)), Ok((s[3], true)), "an address change");

    let view = cluster_view(&mut c);
    let (stores_before, version_before) = stores_with_version(&mut c, 0);
    let regions_before = all_regions(&mut c);
    assert_eq!(regions_before.len(), 9);
    drop(c);

    let mut c = open(&store, &ClusterConfig { new_cluster_id: 1, ..config_with(8) });
    assert_eq!(cluster_view(&mut c), view);
    assert_eq!(c.cluster_id(), CLUSTER_ID);
    let (stores_after, version_after) = stores_with_version(&mut c, 0);
    assert_eq!(version_after, version_before);
    let infos = |v: &[StoreView]| v.iter().map(|v| v.store.clone()).collect::<Vec<_>>();
    assert_eq!(infos(&stores_after), infos(&stores_before));
    assert!(stores_after.iter().all(|v| v.last_heartbeat_ms_ago.is_none() && !v.up), "no heartbeat since PD started");
    assert_eq!(all_regions(&mut c), regions_before);
    for r in &regions_before {
        let v = region(&mut c, r.id).unwrap();
        assert_eq!(v.region, *r);
        assert_eq!((v.leader, v.term), (None, 0), "leaders are soft: refilled by the next reports");
        assert_eq!(by_key(&mut c, &r.start_key).unwrap().region, *r);
    }
    // a stale report of the split region is still refused after the restart
    assert_eq!(stale(&send_region(&mut c, &all[3])).2, left);
    // and the same reports are accepted again without a change
    assert_eq!(send_region(&mut c, &moved), Ok(()));
    assert_eq!(all_regions(&mut c), regions_before);
}

#[test]
fn ids_allocated_after_a_restart_are_above_every_id_handed_out_before() {
    let (store, mut c, s) = bootstrapped(4);
    let mut handed: Vec<u64> = s.clone();
    for r in all_regions(&mut c) {
        handed.push(r.id);
        handed.extend(r.peers.iter().map(|p| p.peer_id));
    }
    let first = alloc(&mut c, 100);
    handed.extend(first..first + 100);
    let first = alloc(&mut c, 1);
    handed.push(first);
    let mut highest = *handed.iter().max().unwrap();

    for round in 0..3 {
        drop(c);
        c = open(&store, &config_with(4));
        let next = alloc(&mut c, 5);
        assert!(next > highest, "round {round}: {next} was handed out already (highest so far {highest})");
        highest = next + 4;
        let again = alloc(&mut c, 1);
        assert!(again > highest);
        highest = again;
    }
    // a store registered after a restart gets a fresh id too
    drop(c);
    c = open(&store, &config_with(4));
    let s5 = register(&mut c, 8000);
    assert!(s5 > highest);
}

#[test]
fn a_new_cluster_takes_the_configured_id_and_a_reopened_one_keeps_its_own() {
    let store = MemMetaStore::default();
    let c = open(&store, &config());
    assert_eq!(c.cluster_id(), CLUSTER_ID);
    assert_eq!(saved(&store).cluster_id, CLUSTER_ID, "a new cluster is saved when it is created");
    drop(c);
    let mut c = open(&store, &ClusterConfig { new_cluster_id: 777, ..config() });
    assert_eq!(c.cluster_id(), CLUSTER_ID);
    assert_eq!(cluster_view(&mut c).cluster_id, CLUSTER_ID);
    assert_eq!(saved(&store).cluster_id, CLUSTER_ID);

    let other = MemMetaStore::default();
    assert_eq!(open(&other, &ClusterConfig { new_cluster_id: 777, ..config() }).cluster_id(), 777);
}

#[test]
fn a_restart_before_bootstrap_takes_the_new_flags_and_after_it_keeps_the_saved_ones() {
    let store = MemMetaStore::default();
    let mut c = open(&store, &config());
    let s1 = register(&mut c, 7000);
    drop(c);
    let mut c = open(&store, &ClusterConfig { replicas: 2, initial_regions: 5, ..config() });
    let v = cluster_view(&mut c);
    assert_eq!((v.replicas, v.initial_regions, v.stores, v.bootstrapped), (2, 5, 1, false));
    assert_eq!((saved(&store).replicas, saved(&store).initial_regions), (2, 5));
    assert_eq!(bootstrap_regions(&mut c, s1), Err(PdError::NotBootstrapped { registered: 1, needed: 2 }));
    let (_, boot) = try_register(&mut c, registration(0, 7200, 7200, 2)).unwrap();
    assert!(boot);
    assert_eq!(bootstrap_regions(&mut c, s1).unwrap().len(), 5);
    drop(c);

    let mut c = open(&store, &config());
    let v = cluster_view(&mut c);
    assert_eq!((v.replicas, v.initial_regions, v.regions, v.bootstrapped), (2, 5, 5, true), "laid out already");
    assert_eq!(all_regions(&mut c).iter().map(|r| r.peers.len()).max(), Some(2));
}

/// Stores poll `BootstrapRegions` without registering again, so a PD
/// restarted with `--replicas` lowered to the stores already registered
/// must bootstrap when it opens (it once answered "2 of the 2 stores it
/// needs have registered" forever).
#[test]
fn a_restart_lowering_replicas_to_the_registered_stores_bootstraps() {
    let store = MemMetaStore::default();
    let mut c = open(&store, &config());
    let s1 = register(&mut c, 7000);
    register(&mut c, 7200);
    drop(c);
    let mut c = open(&store, &ClusterConfig { replicas: 2, initial_regions: 4, ..config() });
    assert_eq!(bootstrap_regions(&mut c, s1).map(|v| v.len()), Ok(4));
}

#[test]
fn open_refuses_bad_flags_and_a_saved_state_that_breaks_an_invariant() {
    let refused = |store: &MemMetaStore, config: &ClusterConfig| match Cluster::open(store.clone(), config) {
        Ok(_) => panic!("opened with {config:?}"),
        Err(e) => e,
    };
    let store = MemMetaStore::default();
    for bad in [
        ClusterConfig { replicas: 0, ..config() },
        ClusterConfig { replicas: crate::meta::PEERS_MAX as u32 + 1, ..config() },
        ClusterConfig { initial_regions: 0, ..config() },
        ClusterConfig { initial_regions: INITIAL_REGIONS_MAX + 1, ..config() },
    ] {
        assert!(matches!(refused(&store, &bad), OpenError::Config(_)), "{bad:?}");
    }
    assert!(store.saved.lock().unwrap().is_none(), "a refused start creates no cluster");

    let good = {
        let (store, _c, _) = bootstrapped(4);
        saved(&store)
    };
    let with = |f: &dyn Fn(&mut ClusterState)| {
        let mut st = good.clone();
        f(&mut st);
        let store = MemMetaStore::default();
        *store.saved.lock().unwrap() = Some(st);
        store
    };
    assert!(Cluster::open(with(&|_| {}), &config()).is_ok());
    type Breaks<'a> = (&'a str, &'a dyn Fn(&mut ClusterState));
    let broken: [Breaks; 5] = [
        ("a store id at the reservation", &|st| st.stores[0].id = st.ids_reserved_until),
        ("a repeated store", &|st| st.stores[1].id = st.stores[0].id),
        ("a region id never allocated", &|st| st.regions[0].id = st.ids_reserved_until + 5),
        ("overlapping regions", &|st| st.regions[1].start_key = b"0001".to_vec()),
        ("an invalid region", &|st| st.regions[0].peers.clear()),
    ];
    for (what, f) in broken {
        assert!(matches!(refused(&with(f), &config()), OpenError::Invalid(_)), "{what}");
    }
}

// ---------------------------------------------------------------- durability

#[test]
fn every_change_is_saved_before_it_is_answered() {
    let store = MemMetaStore::default();
    let mut c = open(&store, &config_with(4));
    let s1 = register(&mut c, 7000);
    assert_eq!(saved(&store).stores.iter().map(|s| s.id).collect::<Vec<_>>(), vec![s1]);
    assert_eq!(saved(&store).stores_version, 1);
    let s2 = register(&mut c, 7200);
    let s3 = register(&mut c, 7400);
    assert_eq!(saved(&store).stores.len(), 3);
    assert!(saved(&store).bootstrapped);
    assert_eq!(saved(&store).regions, all_regions(&mut c));
    assert!(saved(&store).stores.iter().all(|s| [s1, s2, s3].contains(&s.id)));

    // ids: whatever was handed out is under the saved reservation
    for count in [1, 7, ID_RESERVE_BATCH as u32, ALLOC_IDS_MAX, 1] {
        let first = alloc(&mut c, count);
        assert!(first + u64::from(count) <= saved(&store).ids_reserved_until, "{count} ids from {first}");
    }

    // an accepted newer report
    let r = all_regions(&mut c)[2].clone();
    let s4 = register(&mut c, 7600);
    assert!(saved(&store).stores.iter().any(|s| s.id == s4));
    let moved = move_peer(&mut c, &r, 2, s4);
    assert_eq!(send_region(&mut c, &moved), Ok(()));
    let saved_r = saved(&store).regions.into_iter().find(|x| x.id == r.id).unwrap();
    assert_eq!(saved_r, moved);
    assert_eq!(saved_r.epoch, Epoch { conf_ver: 2, version: 1 });

    // a split: both halves saved, and a child that replaces its parent
    let (left, right) = split(&mut c, &moved, b"6000");
    assert_eq!(send_region(&mut c, &right), Ok(()));
    let st = saved(&store);
    assert!(st.regions.contains(&right) && !st.regions.iter().any(|x| x.id == r.id), "the parent is replaced");
    assert_eq!(send_region(&mut c, &left), Ok(()));
    assert!(saved(&store).regions.contains(&left));
    assert_eq!(saved(&store).regions, all_regions(&mut c));
}

/// A MemMetaStore whose saves fail while `failing` is set.
#[derive(Clone, Default)]
struct FailingStore {
    inner: MemMetaStore,
    failing: Arc<AtomicBool>,
}

impl MetaStore for FailingStore {
    fn load(&mut self) -> Result<Option<ClusterState>, StorageError> {
        self.inner.load()
    }

    fn save(&mut self, state: &ClusterState) -> Result<(), StorageError> {
        if self.failing.load(Ordering::SeqCst) {
            let source = std::io::Error::other("disk full");
            return Err(StorageError::Io { op: "write", path: "pd-state".into(), source });
        }
        self.inner.save(state)
    }
}

#[test]
fn a_change_that_cannot_be_saved_is_answered_with_a_storage_error() {
    let store = FailingStore::default();
    let mut c = match Cluster::open(store.clone(), &config_with(2)) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    for port in [7000, 7200, 7400] {
        register(&mut c, port);
    }
    let r = match c.handle(PdRequest::ScanRegions { start_key: vec![], limit: 10 }, 0) {
        Ok(PdResponse::Regions(v)) => v[0].region.clone(),
        other => panic!("{other:?}"),
    };
    let before = saved(&store.inner);
    store.failing.store(true, Ordering::SeqCst);

    assert!(matches!(try_register(&mut c, registration(0, 1, 8000, 2)), Err(PdError::Storage(_))));
    assert!(matches!(c.handle(PdRequest::AllocIds { count: ALLOC_IDS_MAX }, 0), Err(PdError::Storage(_))));
    let mut newer = r.clone();
    newer.epoch.conf_ver += 1;
    let req =
        PdRequest::RegionHeartbeats { store_id: leader_store(&r), reports: vec![report(&newer, leader_store(&r), 1)] };
    assert!(matches!(c.handle(req, 0), Err(PdError::Storage(_))), "no outcome is answered as done");
    // what needs no save is still answered
    assert!(matches!(c.handle(PdRequest::GetCluster, 0), Ok(PdResponse::Cluster(_))));
    assert_eq!(saved(&store.inner), before);
}

#[test]
fn alloc_ids_hands_out_disjoint_increasing_ranges_and_refuses_bad_counts() {
    let store = MemMetaStore::default();
    let mut c = open(&store, &config());
    let s1 = register(&mut c, 7000);
    let mut last_end = s1 + 1;
    for count in [1, 2, 1000, ID_RESERVE_BATCH as u32, 3, ALLOC_IDS_MAX, 1] {
        let first = alloc(&mut c, count);
        assert!(first >= last_end, "[{first}, +{count}) overlaps ids up to {last_end}");
        last_end = first + u64::from(count);
    }
    assert!(is_invalid(&ids(&mut c, 0)));
    assert!(is_invalid(&ids(&mut c, ALLOC_IDS_MAX + 1)));
    assert!(alloc(&mut c, 1) >= last_end, "refused requests use no id range");
}

// ---------------------------------------------------------------- region heartbeats

#[test]
fn a_stale_report_is_refused_with_the_current_region() {
    let (_store, mut c, s) = bootstrapped(2);
    let a = all_regions(&mut c)[0].clone();

    // conf_ver behind
    let moved = move_peer(&mut c, &a, 2, s[3]);
    assert_eq!(send_region(&mut c, &moved), Ok(()));
    let out = send_region(&mut c, &a);
    assert_eq!(stale(&out), (a.id, a.epoch, moved.clone()));

    // version behind, conf_ver ahead
    let (left, right) = split(&mut c, &moved, b"1000");
    assert_eq!(send_region(&mut c, &left), Ok(()));
    let mut odd = moved.clone();
    odd.epoch.conf_ver += 5;
    let (id, reported, current) = stale(&send_region(&mut c, &odd));
    assert_eq!((id, reported, current), (a.id, odd.epoch, left.clone()));
    assert_eq!(region(&mut c, a.id).unwrap().region, left, "unchanged by the refusal");
    // the child, not reported yet, is not known
    assert_eq!(region(&mut c, right.id), Err(PdError::UnknownRegion { region_id: right.id }));
}

#[test]
fn a_report_with_a_newer_conf_ver_is_accepted_and_saved() {
    let (store, mut c, s) = bootstrapped(2);
    let a = all_regions(&mut c)[1].clone();
    let moved = move_peer(&mut c, &a, 1, s[3]);
    assert_eq!(send(&mut c, report(&moved, leader_store(&moved), 3)).0, Ok(()));
    let v = region(&mut c, a.id).unwrap();
    assert_eq!(v.region, moved);
    assert_eq!(v.leader, Some(moved.peers[0]));
    assert_eq!(v.term, 3);
    assert!(v.region.peer_on(s[3]).is_some());
    assert!(saved(&store).regions.contains(&moved));
    assert_eq!(by_key(&mut c, b"9999").unwrap().region, moved);
    // the new leader may be the new peer
    let mut again = move_peer(&mut c, &moved, 0, a.peers[1].store_id);
    again.peers.swap(0, 1);
    assert_eq!(send(&mut c, report(&again, s[3], 4)).0, Ok(()));
    assert_eq!(region(&mut c, a.id).unwrap().leader, again.peer_on(s[3]).copied());
    assert_eq!(saved(&store).regions.iter().find(|r| r.id == a.id), Some(&again));
}

#[test]
fn leadership_follows_the_report_with_the_higher_term() {
    let (store, mut c, _) = bootstrapped(2);
    let a = all_regions(&mut c)[0].clone();
    let (x, y) = (a.peers[0].store_id, a.peers[1].store_id);
    let stats = |n| RegionStats { approximate_bytes: n, approximate_keys: n, written_bytes: n };

    let mut rx = report(&a, x, 5);
    rx.stats = stats(1);
    rx.pending_peers = vec![a.peers[2].peer_id];
    assert_eq!(send(&mut c, rx).0, Ok(()));
    let v = region(&mut c, a.id).unwrap();
    assert_eq!(
        (v.leader, v.term, v.stats, v.pending_peers.clone()),
        (Some(a.peers[0]), 5, stats(1), vec![a.peers[2].peer_id])
    );
    let before = saved(&store);

    // an older leader at the same epoch: accepted, but the leader stays
    let mut ry = report(&a, y, 4);
    ry.stats = stats(2);
    assert_eq!(send(&mut c, ry).0, Ok(()));
    let v = region(&mut c, a.id).unwrap();
    assert_eq!((v.leader, v.term, v.stats), (Some(a.peers[0]), 5, stats(1)));

    // a newer term moves it
    let mut ry = report(&a, y, 6);
    ry.stats = stats(3);
    assert_eq!(send(&mut c, ry).0, Ok(()));
    let v = region(&mut c, a.id).unwrap();
    assert_eq!((v.leader, v.term, v.stats, v.pending_peers), (Some(a.peers[1]), 6, stats(3), vec![]));
    assert_eq!(by_key(&mut c, b"").unwrap().leader, Some(a.peers[1]));
    assert_eq!(saved(&store), before, "leaders are soft state: nothing to save");

    // and the old one, at its old term, does not take it back
    assert_eq!(send(&mut c, report(&a, x, 5)).0, Ok(()));
    assert_eq!(region(&mut c, a.id).unwrap().leader, Some(a.peers[1]));
}

#[test]
fn a_report_from_a_store_that_is_not_the_leaders_is_invalid() {
    let (_store, mut c, s) = bootstrapped(2);
    let a = all_regions(&mut c)[0].clone();
    let mut newer = a.clone();
    newer.epoch.conf_ver += 1;
    let rep = report(&newer, a.peers[0].store_id, 1);
    let (outcomes, _) = heartbeat(&mut c, a.peers[1].store_id, vec![rep.clone()]);
    assert!(is_invalid(&outcomes[0]), "{outcomes:?}");
    // the fourth store holds no peer of the region
    let (outcomes, _) = heartbeat(&mut c, s[3], vec![rep]);
    assert!(is_invalid(&outcomes[0]), "{outcomes:?}");
    // a leader that is not one of the region's peers
    let mut bogus = report(&newer, a.peers[0].store_id, 1);
    bogus.leader.peer_id += 1_000;
    assert!(is_invalid(&send(&mut c, bogus).0));
    assert_eq!(region(&mut c, a.id).unwrap().region, a, "nothing was taken");
    assert_eq!(region(&mut c, a.id).unwrap().leader, None);
}

#[test]
fn a_report_with_a_peer_on_an_unknown_store_or_shard_is_invalid() {
    let (store, mut c, _) = bootstrapped(2);
    let a = all_regions(&mut c)[0].clone();
    let before = saved(&store);
    let mut on_unknown = move_peer(&mut c, &a, 2, 999);
    assert!(is_invalid(&send_region(&mut c, &on_unknown)));
    on_unknown.peers[2].store_id = a.peers[2].store_id;
    on_unknown.peers[2].shard = 2; // the stores have shards 0 and 1
    assert!(is_invalid(&send_region(&mut c, &on_unknown)));
    let mut invalid = a.clone();
    invalid.epoch.conf_ver += 1;
    invalid.start_key = b"z".to_vec();
    invalid.end_key = b"a".to_vec(); // start after end
    assert!(is_invalid(&send_region(&mut c, &invalid)));
    assert_eq!(region(&mut c, a.id).unwrap().region, a);
    assert_eq!(saved(&store).regions, before.regions);
}

#[test]
fn a_report_using_ids_pd_never_handed_out_is_invalid() {
    let (_store, mut c, s) = bootstrapped(2);
    let a = all_regions(&mut c)[0].clone();
    let handed = alloc(&mut c, 1); // the last id handed out
    let with_peer = |peer_id| {
        let mut n = a.clone();
        n.peers[2] = PeerInfo::voter(peer_id, s[3], 0);
        n.max_peer_id = peer_id;
        n.epoch.conf_ver += 1;
        n
    };
    assert!(is_invalid(&send_region(&mut c, &with_peer(handed + 1))), "a peer id never handed out");
    assert!(is_invalid(&send_region(&mut c, &with_peer(1 << 40))));
    let mut high_max = a.clone();
    high_max.max_peer_id = handed + 1;
    high_max.epoch.conf_ver += 1;
    assert!(is_invalid(&send_region(&mut c, &high_max)), "max_peer_id never handed out");
    let mut new_region = a.clone();
    new_region.id = handed + 1;
    new_region.epoch.version += 1;
    new_region.start_key = b"1".to_vec();
    assert!(is_invalid(&send_region(&mut c, &new_region)), "a region id never handed out");
    assert_eq!(region(&mut c, a.id).unwrap().region, a);
    assert_eq!(all_regions(&mut c).len(), 2);
    // the id that was handed out is fine
    assert_eq!(send_region(&mut c, &with_peer(handed)), Ok(()));
}

#[test]
fn a_heartbeat_from_an_unknown_store_or_with_too_many_reports_is_refused_whole() {
    let (_store, mut c, _) = bootstrapped(2);
    let a = all_regions(&mut c)[0].clone();
    let req = PdRequest::RegionHeartbeats { store_id: 999, reports: vec![report(&a, leader_store(&a), 1)] };
    assert_eq!(c.handle(req, 0), Err(PdError::UnknownStore { store_id: 999 }));
    let rep = report(&a, leader_store(&a), 1);
    let req = PdRequest::RegionHeartbeats { store_id: leader_store(&a), reports: vec![rep; REGION_REPORTS_MAX + 1] };
    assert!(is_invalid(&c.handle(req, 0)));
    assert_eq!(region(&mut c, a.id).unwrap().leader, None, "nothing was taken");
}

#[test]
fn a_split_child_replaces_its_parent_until_the_parent_reports_its_new_range() {
    // region A: ["5000", "") holds "a".."c"
    let (store, mut c, _) = bootstrapped(2);
    let all = all_regions(&mut c);
    let a = all[1].clone();
    assert!(a.contains(b"a") && a.contains(b"c"));
    let (a2, b) = split(&mut c, &a, b"b");

    assert_eq!(send_region(&mut c, &b), Ok(()));
    assert_eq!(by_key(&mut c, b"b").unwrap().region, b);
    assert_eq!(by_key(&mut c, b"c").unwrap().region, b);
    assert_eq!(by_key(&mut c, b"a"), Err(PdError::KeyNotInAnyRegion { key: b"a".to_vec() }));
    assert_eq!(by_key(&mut c, b"5000"), Err(PdError::KeyNotInAnyRegion { key: b"5000".to_vec() }));
    assert_eq!(region(&mut c, a.id), Err(PdError::UnknownRegion { region_id: a.id }), "A is replaced as a whole");
    assert_eq!(by_key(&mut c, b"4999").unwrap().region, all[0], "the other region is untouched");
    assert_eq!(all_regions(&mut c), vec![all[0].clone(), b.clone()]);
    assert_eq!(saved(&store).regions, vec![all[0].clone(), b.clone()]);

    // outcomes are per report, in order: A's old range (stale against B), its new range, its old one again
    // (stale against A itself now)
    let old = report(&a, leader_store(&a), 1);
    let new = report(&a2, leader_store(&a), 1);
    let (outcomes, _) = heartbeat(&mut c, leader_store(&a), vec![old.clone(), new, old]);
    assert_eq!(outcomes.len(), 3);
    assert_eq!(stale(&outcomes[0]), (a.id, a.epoch, b.clone()));
    assert_eq!(outcomes[1], Ok(()));
    assert_eq!(stale(&outcomes[2]), (a.id, a.epoch, a2.clone()));

    assert_eq!(by_key(&mut c, b"a").unwrap().region, a2);
    assert_eq!(by_key(&mut c, b"5000").unwrap().region, a2);
    assert_eq!(by_key(&mut c, b"b").unwrap().region, b);
    assert_eq!(all_regions(&mut c), vec![all[0].clone(), a2.clone(), b.clone()]);
    assert_eq!(saved(&store).regions, vec![all[0].clone(), a2, b.clone()]);
    // B at an older version than itself is refused too
    let mut b_old = b.clone();
    b_old.epoch.version -= 1;
    assert_eq!(stale(&send_region(&mut c, &b_old)).2, b);
}

#[test]
fn a_parent_reporting_its_split_first_leaves_a_gap_until_the_child_reports() {
    let (_store, mut c, _) = bootstrapped(2);
    let a = all_regions(&mut c)[1].clone();
    let (a2, b) = split(&mut c, &a, b"b");
    assert_eq!(send_region(&mut c, &a2), Ok(()));
    assert_eq!(by_key(&mut c, b"a").unwrap().region, a2);
    assert_eq!(by_key(&mut c, b"c"), Err(PdError::KeyNotInAnyRegion { key: b"c".to_vec() }));
    // the stale parent range cannot fill the gap
    assert_eq!(stale(&send_region(&mut c, &a)).2, a2);
    assert_eq!(send_region(&mut c, &b), Ok(()));
    assert_eq!(by_key(&mut c, b"c").unwrap().region, b);
    assert_eq!(all_regions(&mut c).len(), 3);
}

// ---------------------------------------------------------------- routing

#[test]
fn keys_at_region_boundaries_route_to_the_region_starting_there() {
    let (_store, mut c, _) = bootstrapped(4);
    let all = all_regions(&mut c);
    let starts: Vec<&[u8]> = all.iter().map(|r| r.start_key.as_slice()).collect();
    assert_eq!(starts, vec![&b""[..], b"2500", b"5000", b"7500"]);
    for (i, r) in all.iter().enumerate() {
        assert_eq!(by_key(&mut c, &r.start_key).unwrap().region.id, r.id, "the start key of region {i}");
        if !r.end_key.is_empty() {
            assert_eq!(by_key(&mut c, &r.end_key).unwrap().region.id, all[i + 1].id, "the end key of region {i}");
            let mut just_before = r.end_key.clone();
            *just_before.last_mut().unwrap() -= 1;
            just_before.extend_from_slice(b"\xff\xff");
            assert_eq!(by_key(&mut c, &just_before).unwrap().region.id, r.id);
        }
    }
    assert_eq!(by_key(&mut c, b"\xff\xff\xff").unwrap().region.id, all[3].id);
    assert_eq!(by_key(&mut c, b"\0").unwrap().region.id, all[0].id);
}

#[test]
fn a_scan_from_inside_a_region_starts_at_that_region_and_honours_the_limit() {
    let (_store, mut c, _) = bootstrapped(4);
    let all = all_regions(&mut c);
    let ids = |v: Vec<RegionView>| v.into_iter().map(|v| v.region.id).collect::<Vec<_>>();
    assert_eq!(ids(scan(&mut c, b"3000", 2)), vec![all[1].id, all[2].id]);
    assert_eq!(ids(scan(&mut c, b"2500", 10)), vec![all[1].id, all[2].id, all[3].id]);
    assert_eq!(ids(scan(&mut c, b"24999", 1)), vec![all[0].id]);
    assert_eq!(ids(scan(&mut c, b"9", 10)), vec![all[3].id]);
    assert_eq!(ids(scan(&mut c, b"", 0)), vec![all[0].id], "a limit of 0 is taken as 1");
    assert_eq!(ids(scan(&mut c, b"", u32::MAX)).len(), 4);

    // from inside a gap: the first region after it
    let (a2, _b) = split(&mut c, &all[1], b"3000");
    assert_eq!(send_region(&mut c, &a2), Ok(()));
    assert_eq!(ids(scan(&mut c, b"3500", 2)), vec![all[2].id, all[3].id]);
    assert_eq!(ids(scan(&mut c, b"2999", 2)), vec![all[1].id, all[2].id]);
}

#[test]
fn a_scan_answer_stays_under_scan_bytes_max_and_pages_through_every_region() {
    let (_store, mut c, _) = bootstrapped(INITIAL_REGIONS_MAX);
    let mut seen: Vec<RegionInfo> = vec![];
    let mut from: Vec<u8> = vec![];
    let mut pages = 0;
    loop {
        let page = scan(&mut c, &from, SCAN_REGIONS_MAX);
        pages += 1;
        assert!(!page.is_empty(), "a scan answers with at least one region");
        if pages == 1 {
            assert!(page.len() < SCAN_REGIONS_MAX as usize, "the bytes, not the count, end the first page");
        }
        let bytes = crate::protocol::encode(&PdResponse::Regions(page.clone())).len();
        assert!(bytes <= 2 * SCAN_BYTES_MAX, "a page of {} regions is {bytes} bytes", page.len());
        assert!(bytes < crate::protocol::PD_MESSAGE_BYTES_MAX);
        let last = page.last().unwrap().region.end_key.clone();
        seen.extend(page.into_iter().map(|v| v.region));
        if last.is_empty() {
            break;
        }
        from = last;
        assert!(pages < 100, "the scan makes no progress");
    }
    assert!(pages > 1, "{INITIAL_REGIONS_MAX} regions of 3 peers take more than SCAN_BYTES_MAX");
    assert_eq!(seen.len(), INITIAL_REGIONS_MAX as usize);
    assert!(seen[0].start_key.is_empty());
    for w in seen.windows(2) {
        assert_eq!(w[0].end_key, w[1].start_key, "pages are contiguous");
    }
}

#[test]
fn an_unknown_region_id_is_unknown_region() {
    let (_store, mut c, _) = bootstrapped(4);
    assert_eq!(region(&mut c, 987_654), Err(PdError::UnknownRegion { region_id: 987_654 }));
    assert_eq!(region(&mut c, 0), Err(PdError::UnknownRegion { region_id: 0 }));
    let store_id = stores(&mut c, 0)[0].store.id;
    assert_eq!(region(&mut c, store_id), Err(PdError::UnknownRegion { region_id: store_id }), "a store id");
}

// ---------------------------------------------------------------- directives

fn transfer(r: &RegionInfo, to_store: u64) -> Directive {
    Directive { region_id: r.id, epoch: r.epoch, action: DirectiveAction::TransferLeader { to_store } }
}

#[test]
fn a_directive_is_delivered_once_with_the_report_at_its_epoch() {
    let (_store, mut c, s) = bootstrapped(2);
    let all = all_regions(&mut c);
    let (a, other) = (all[0].clone(), all[1].clone());
    let d = transfer(&a, a.peers[1].store_id);
    assert_eq!(c.add_directive(d.clone()), Ok(()));

    assert_eq!(send(&mut c, report(&other, leader_store(&other), 1)).1, vec![], "not for another region");
    assert_eq!(send(&mut c, report(&a, leader_store(&a), 1)), (Ok(()), vec![d]));
    assert_eq!(send(&mut c, report(&a, leader_store(&a), 1)).1, vec![], "delivered once");

    // in a batch, the directive comes with the report of its region
    let add =
        Directive { region_id: a.id, epoch: a.epoch, action: DirectiveAction::AddPeer(PeerInfo::voter(1, s[3], 0)) };
    assert_eq!(c.add_directive(add.clone()), Ok(()));
    let store_id = leader_store(&a);
    let mut batch = vec![report(&a, store_id, 1)];
    if other.peer_on(store_id).is_some() {
        batch.insert(0, report(&other, store_id, 1));
    }
    let (outcomes, directives) = heartbeat(&mut c, store_id, batch);
    assert!(outcomes.iter().all(|o| o.is_ok()));
    assert_eq!(directives, vec![add]);
}

#[test]
fn a_directive_at_a_stale_epoch_or_for_an_unknown_region_is_refused() {
    let (_store, mut c, s) = bootstrapped(2);
    let a = all_regions(&mut c)[0].clone();
    let moved = move_peer(&mut c, &a, 2, s[3]);
    assert_eq!(send_region(&mut c, &moved), Ok(()));
    match c.add_directive(transfer(&a, s[1])) {
        Err(PdError::StaleEpoch { region_id, reported, current }) => {
            assert_eq!((region_id, reported, *current), (a.id, a.epoch, moved.clone()));
        }
        other => panic!("expected StaleEpoch, got {other:?}"),
    }
    let mut ahead = transfer(&moved, s[1]);
    ahead.epoch.version += 1;
    assert!(matches!(c.add_directive(ahead), Err(PdError::StaleEpoch { .. })), "an epoch PD has not seen");
    let mut unknown = transfer(&moved, s[1]);
    unknown.region_id = 424_242;
    assert_eq!(c.add_directive(unknown), Err(PdError::UnknownRegion { region_id: 424_242 }));
    // nothing was queued
    assert_eq!(send(&mut c, report(&moved, leader_store(&moved), 1)), (Ok(()), vec![]));
}

#[test]
fn a_directive_is_dropped_when_its_region_reports_a_newer_epoch() {
    let (_store, mut c, s) = bootstrapped(2);
    let a = all_regions(&mut c)[0].clone();
    let d = transfer(&a, a.peers[1].store_id);
    assert_eq!(c.add_directive(d.clone()), Ok(()));

    // the region moves on before its leader hears of d: dropped, not delivered
    let moved = move_peer(&mut c, &a, 2, s[3]);
    assert_eq!(send(&mut c, report(&moved, leader_store(&a), 1)), (Ok(()), vec![]));
    assert_eq!(send(&mut c, report(&moved, leader_store(&a), 1)).1, vec![]);

    // a stale report (refused) does not take a directive
    let d2 = transfer(&moved, a.peers[1].store_id);
    assert_eq!(c.add_directive(d2), Ok(()));
    let (out, directives) = send(&mut c, report(&a, leader_store(&a), 1));
    assert!(matches!(out, Err(PdError::StaleEpoch { .. })));
    assert_eq!(directives, vec![]);

    // nor does it survive its region moving on
    let moved_again = move_peer(&mut c, &moved, 2, a.peers[2].store_id);
    assert_eq!(send(&mut c, report(&moved_again, leader_store(&a), 1)), (Ok(()), vec![]));
    assert_eq!(send(&mut c, report(&moved_again, leader_store(&a), 1)).1, vec![]);
    // and it does not come back with a report at its old epoch either (refused as stale)
    assert_eq!(send(&mut c, report(&moved, leader_store(&a), 1)).1, vec![]);
}

/// PD keeps the leader of the highest term; a report from an older term
/// comes from a leader that has been deposed (it has not heard yet), and a
/// directive handed to it would be lost: the real leader would never see it.
#[test]
fn a_directive_goes_to_the_current_leader_not_to_a_deposed_one() {
    let (_store, mut c, _) = bootstrapped(2);
    let a = all_regions(&mut c)[0].clone();
    let (old, new) = (a.peers[0].store_id, a.peers[1].store_id);
    assert_eq!(send(&mut c, report(&a, old, 5)).0, Ok(()));
    assert_eq!(send(&mut c, report(&a, new, 6)).0, Ok(()));
    let d = transfer(&a, a.peers[2].store_id);
    assert_eq!(c.add_directive(d.clone()), Ok(()));

    let (out, to_deposed) = send(&mut c, report(&a, old, 5));
    assert_eq!(out, Ok(()));
    assert_eq!(region(&mut c, a.id).unwrap().leader, Some(a.peers[1]), "PD knows store {old} no longer leads");
    assert_eq!(to_deposed, vec![], "the directive went to the deposed leader on store {old}");
    assert_eq!(send(&mut c, report(&a, new, 6)).1, vec![d]);
}

// ---------------------------------------------------------------- store heartbeats

#[test]
fn stores_are_up_only_within_store_down_after_ms_of_their_last_heartbeat() {
    let store = MemMetaStore::default();
    let mut c = open(&store, &config());
    let (s1, s2, s3) = (register(&mut c, 7000), register(&mut c, 7200), register(&mut c, 7400));
    let stats = StoreStats {
        region_count: 5,
        leader_count: 2,
        capacity_bytes: 100,
        used_bytes: 10,
        writes_per_sec: 7,
        regions_fenced: 1,
    };
    let hb = |c: &mut Pd, store_id, now_ms| c.handle(PdRequest::StoreHeartbeat { store_id, stats }, now_ms);
    let version = stores_version(&mut c);
    assert_eq!(hb(&mut c, s1, 1_000), Ok(PdResponse::Heartbeat { stores_version: version }));
    assert_eq!(hb(&mut c, s2, 5_000), Ok(PdResponse::Heartbeat { stores_version: version }));
    assert_eq!(hb(&mut c, 999, 5_000), Err(PdError::UnknownStore { store_id: 999 }));

    let state = |c: &mut Pd, now_ms| {
        stores(c, now_ms).into_iter().map(|v| (v.store.id, v.last_heartbeat_ms_ago, v.up)).collect::<Vec<_>>()
    };
    let now = 1_000 + DOWN_AFTER_MS;
    assert_eq!(
        state(&mut c, now),
        // (s3 was heard from only when it registered, at 0)
        vec![(s1, Some(DOWN_AFTER_MS), true), (s2, Some(now - 5_000), true), (s3, Some(now), false)]
    );
    assert_eq!(
        state(&mut c, now + 1),
        vec![(s1, Some(DOWN_AFTER_MS + 1), false), (s2, Some(now + 1 - 5_000), true), (s3, Some(now + 1), false)]
    );
    let later = 5_001 + DOWN_AFTER_MS;
    assert_eq!(
        state(&mut c, later),
        vec![(s1, Some(later - 1_000), false), (s2, Some(DOWN_AFTER_MS + 1), false), (s3, Some(later), false)]
    );

    // a new heartbeat brings it back
    assert!(hb(&mut c, s1, 30_000).is_ok());
    let v = get_store(&mut c, s1, 30_500).unwrap();
    assert_eq!((v.last_heartbeat_ms_ago, v.up, v.stats), (Some(500), true, stats));
    assert_eq!(get_store(&mut c, s3, 30_500).unwrap().stats, StoreStats::default());
    assert_eq!(get_store(&mut c, 999, 0), Err(PdError::UnknownStore { store_id: 999 }));

    // heartbeats carry the version that tells stores to refresh their directory
    let s4 = register(&mut c, 7600);
    assert_eq!(hb(&mut c, s4, 31_000), Ok(PdResponse::Heartbeat { stores_version: version + 1 }));
}

// ---------------------------------------------------------------- property: random splits, conf changes, stale reports

/// The whole key space in the model: numbers in `0..=KEYSPACE`; 0 as a
/// start and KEYSPACE as an end are the open ends ("").
const KEYSPACE: u64 = 1 << 40;

fn key_of(x: u64) -> Vec<u8> {
    if x == 0 || x == KEYSPACE {
        vec![]
    } else {
        format!("{x:013}").into_bytes()
    }
}

/// One state of a region as its leader would report it.
#[derive(Clone, Debug)]
struct Snap {
    region: RegionInfo,
    lo: u64,
    hi: u64,
    leader: usize,
    term: u64,
}

#[derive(Clone, Debug)]
enum Step {
    Split { region: usize, at: u64, keep_left: bool },
    ConfChange { region: usize, peer: usize },
    NewLeader { region: usize, peer: usize },
    Report { pick: usize, old: Option<usize> },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => (any::<usize>(), 0u64..1000, any::<bool>())
            .prop_map(|(region, at, keep_left)| Step::Split { region, at, keep_left }),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(region, peer)| Step::ConfChange { region, peer }),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(region, peer)| Step::NewLeader { region, peer }),
        6 => (any::<usize>(), proptest::option::of(any::<usize>())).prop_map(|(pick, old)| Step::Report { pick, old }),
    ]
}

/// The truth: each region's current state and every state it had.
#[derive(Default)]
struct Model {
    now: BTreeMap<u64, Snap>,
    history: BTreeMap<u64, Vec<Snap>>,
}

impl Model {
    fn pick(&self, i: usize) -> Snap {
        self.now.values().nth(i % self.now.len()).unwrap().clone()
    }

    fn set(&mut self, s: Snap) {
        self.history.entry(s.region.id).or_default().push(s.clone());
        self.now.insert(s.region.id, s);
    }
}

fn snap_report(s: &Snap) -> RegionReport {
    let leader = s.region.peers[s.leader];
    RegionReport {
        region: s.region.clone(),
        leader,
        term: s.term,
        stats: RegionStats::default(),
        pending_peers: vec![],
    }
}

/// What must hold after every step: PD's regions in key order without
/// overlaps, each a state its region really had, none older than what PD
/// held before, and the saved state the same as the served one.
fn check(c: &mut Pd, store: &MemMetaStore, m: &Model, held: &mut BTreeMap<u64, Epoch>) {
    let regions = all_regions(c);
    for w in regions.windows(2) {
        assert!(w[0].start_key < w[1].start_key, "not in key order: {w:?}");
        assert!(!w[0].end_key.is_empty() && w[0].end_key <= w[1].start_key, "overlapping: {w:?}");
    }
    for r in &regions {
        assert!(m.history[&r.id].iter().any(|s| s.region == *r), "PD holds a state region {} never had: {r:?}", r.id);
        if let Some(before) = held.insert(r.id, r.epoch) {
            assert!(!r.epoch.is_behind(&before), "region {} went back from {before:?} to {:?}", r.id, r.epoch);
        }
    }
    assert_eq!(saved(store).regions, regions, "the saved regions are the served ones");
}

fn run(steps: Vec<Step>) {
    let store = MemMetaStore::default();
    let mut c = open(&store, &config_with(1));
    let stores = [register(&mut c, 7000), register(&mut c, 7200), register(&mut c, 7400), register(&mut c, 7600)];
    let first = bootstrap_regions(&mut c, stores[0]).unwrap();
    assert_eq!(first.len(), 1);
    let mut m = Model::default();
    m.set(Snap { region: first[0].region.clone(), lo: 0, hi: KEYSPACE, leader: 0, term: 1 });
    let mut held = BTreeMap::new();
    check(&mut c, &store, &m, &mut held);

    for step in steps {
        match step {
            Step::Split { region, at, keep_left } => {
                let p = m.pick(region);
                if p.hi - p.lo < 2 {
                    continue;
                }
                let k = p.lo + 1 + (p.hi - p.lo - 2) * at / 1000;
                let first = alloc(&mut c, 1 + p.region.peers.len() as u32);
                let epoch = Epoch { conf_ver: p.region.epoch.conf_ver, version: p.region.epoch.version + 1 };
                let peers: Vec<PeerInfo> =
                    p.region.peers.iter().zip(first + 1..).map(|(q, peer_id)| PeerInfo { peer_id, ..*q }).collect();
                let (plo, phi, clo, chi) = if keep_left { (p.lo, k, k, p.hi) } else { (k, p.hi, p.lo, k) };
                let parent = RegionInfo { start_key: key_of(plo), end_key: key_of(phi), epoch, ..p.region.clone() };
                let child = RegionInfo {
                    id: first,
                    start_key: key_of(clo),
                    end_key: key_of(chi),
                    epoch,
                    max_peer_id: first + peers.len() as u64,
                    peers,
                };
                m.set(Snap { region: parent, lo: plo, hi: phi, ..p.clone() });
                m.set(Snap { region: child, lo: clo, hi: chi, leader: p.leader, term: 1 });
            }
            Step::ConfChange { region, peer } => {
                let mut s = m.pick(region);
                let free = *stores.iter().find(|id| s.region.peer_on(**id).is_none()).unwrap();
                let peer_id = alloc(&mut c, 1);
                let i = peer % s.region.peers.len();
                s.region.peers[i] = PeerInfo::voter(peer_id, free, 1);
                s.region.max_peer_id = peer_id;
                s.region.epoch.conf_ver += 1;
                m.set(s);
            }
            Step::NewLeader { region, peer } => {
                let mut s = m.pick(region);
                s.leader = peer % s.region.peers.len();
                s.term += 1;
                m.set(s);
            }
            Step::Report { pick, old } => {
                let now = m.pick(pick);
                let s = match old {
                    Some(i) => {
                        let h = &m.history[&now.region.id];
                        h[i % h.len()].clone()
                    }
                    None => now.clone(),
                };
                let (out, _) = send(&mut c, snap_report(&s));
                match out {
                    Ok(()) => assert_eq!(region(&mut c, s.region.id).unwrap().region, s.region),
                    Err(PdError::StaleEpoch { region_id, reported, current }) => {
                        assert_ne!(s.region, now.region, "the current state was refused");
                        assert_eq!((region_id, reported), (s.region.id, s.region.epoch));
                        assert_eq!(region(&mut c, current.id).unwrap().region, *current, "current is what PD holds");
                        assert!(
                            (current.id == region_id && reported.is_behind(&current.epoch))
                                || (current.overlaps(&s.region) && current.epoch.version >= reported.version),
                            "refused for {current:?}"
                        );
                    }
                    Err(e) => panic!("{s:?} refused: {e}"),
                }
            }
        }
        check(&mut c, &store, &m, &mut held);
    }

    // once every region reports its current state PD holds exactly the truth
    let truth: Vec<Snap> = m.now.values().cloned().collect();
    for s in &truth {
        assert_eq!(send(&mut c, snap_report(s)).0, Ok(()), "the current state of {}", s.region.id);
    }
    check(&mut c, &store, &m, &mut held);
    let mut expected: Vec<RegionInfo> = truth.into_iter().map(|s| s.region).collect();
    expected.sort_by(|a, b| a.start_key.cmp(&b.start_key));
    assert_eq!(all_regions(&mut c), expected);
    // and a restarted PD too
    drop(c);
    let mut c = open(&store, &config_with(1));
    assert_eq!(all_regions(&mut c), expected);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_splits_conf_changes_and_stale_reports_never_overlap_or_go_back(
        steps in proptest::collection::vec(step(), 1..60)
    ) {
        run(steps);
    }
}

// ---------------------------------------------------------------- store states

fn drain(c: &mut Pd, store_id: u64, now_ms: u64) -> Result<PdResponse, PdError> {
    c.handle(PdRequest::DrainStore { store_id }, now_ms)
}

fn store_state(c: &mut Pd, id: u64, now_ms: u64) -> StoreView {
    match c.handle(PdRequest::GetStore { store_id: id }, now_ms).unwrap() {
        PdResponse::Store(v) => v,
        other => panic!("GetStore answered with {other:?}"),
    }
}

/// A drain is refused when the others could not hold every replica; a
/// drained store holding nothing is removed at the next patrol, durably;
/// back under its id it is refused, and its address is free for a new store.
#[test]
fn a_drained_store_is_removed_once_empty_and_never_comes_back_under_its_id() {
    let (store, mut c, ids) = bootstrapped(1);
    // the fourth store holds nothing: three others remain, enough for 3 replicas
    for id in &ids[..3] {
        c.handle(PdRequest::StoreHeartbeat { store_id: *id, stats: Default::default() }, 100).unwrap();
    }
    assert!(matches!(drain(&mut c, ids[3], 100), Ok(PdResponse::Store(_))));
    assert!(matches!(drain(&mut c, ids[3], 100), Err(PdError::Invalid(why)) if why.contains("draining already")));
    match drain(&mut c, ids[0], 100) {
        Err(PdError::Invalid(why)) => assert!(why.contains("would leave 2 store(s)"), "{why}"),
        other => panic!("a drain leaving too few stores: {other:?}"),
    }
    c.handle(PdRequest::StoreHeartbeat { store_id: ids[0], stats: Default::default() }, 2_000).unwrap();
    assert_eq!(store_state(&mut c, ids[3], 2_000).store.state, StoreState::Removed);
    assert!(saved(&store).stores.iter().any(|s| s.id == ids[3] && s.state == StoreState::Removed), "durably");
    match try_register(&mut c, registration(ids[3], 7600, 7600, 2)) {
        Err(PdError::StoreMismatch { reason, .. }) => assert!(reason.contains("removed"), "{reason}"),
        other => panic!("a removed store came back: {other:?}"),
    }
    let (new_id, _) = try_register(&mut c, registration(0, 99, 7600, 2)).expect("its address is free again");
    assert!(new_id != ids[3]);
}

/// Down is counted from the last heartbeat — or, after a restart, from
/// PD's own start: it knows nothing of who was alive before.
#[test]
fn a_store_is_down_only_past_the_down_time_and_after_a_restart_from_the_start() {
    let store = MemMetaStore::default();
    let cfg = ClusterConfig { max_store_down_ms: 60_000, ..config_with(1) };
    let mut c = open(&store, &cfg);
    let id = register(&mut c, 7000);
    assert!(!store_state(&mut c, id, 59_000).down, "heard from when it registered (at 0)");
    assert!(store_state(&mut c, id, 61_000).down);
    // a store that registers late is not down before its first heartbeat
    let late = match c.handle(registration(0, 99, 7200, 2), 61_000) {
        Ok(PdResponse::Registered { store_id, .. }) => store_id,
        other => panic!("{other:?}"),
    };
    assert!(!store_state(&mut c, late, 100_000).down, "heard from when it registered, at 61 s");
    c.handle(PdRequest::StoreHeartbeat { store_id: id, stats: Default::default() }, 61_000).unwrap();
    let v = store_state(&mut c, id, 100_000);
    assert!(!v.up && !v.down, "disconnected, not down: {v:?}");
    assert!(store_state(&mut c, id, 122_000).down);
    let mut restarted = open(&store, &cfg);
    assert!(!store_state(&mut restarted, id, 1_000).down, "a restarted PD waits the down time");
}

// ---------------------------------------------------------------- operators

/// A move by hand goes out as its first directive with the leader's next
/// report; the report showing its learner caught up moves it on (and is
/// counted: a snapshot sent for a move); the per-store counts follow.
#[test]
fn a_move_by_hand_is_handed_out_step_by_step_with_the_reports() {
    let (_store, mut c, ids) = bootstrapped(1);
    let r = all_regions(&mut c)[0].clone();
    let leader = leader_store(&r);
    assert_eq!(send_region(&mut c, &r), Ok(()));
    let from = r.peers[1].store_id;
    let answer = c.handle(PdRequest::MoveRegion { region_id: r.id, from_store: from, to_store: ids[3] }, 0).unwrap();
    assert!(matches!(answer, PdResponse::Operators(ref ops) if ops.len() == 1 && ops[0].kind == "admin-move"));
    let refused = c.handle(PdRequest::MoveRegion { region_id: r.id, from_store: from, to_store: from }, 0);
    assert!(matches!(refused, Err(PdError::Invalid(_))), "{refused:?}");

    let (_, directives) = send(&mut c, report(&r, leader, 1));
    let learner = match directives.as_slice() {
        [Directive { action: DirectiveAction::AddLearner(p), epoch, .. }] if *epoch == r.epoch => *p,
        other => panic!("the first step's directive: {other:?}"),
    };
    assert_eq!((learner.store_id, learner.role), (ids[3], crate::meta::PeerRole::Learner));
    let mut with_learner = r.clone();
    with_learner.peers.push(learner);
    with_learner.epoch.conf_ver += 1;
    with_learner.max_peer_id = learner.peer_id;
    let mut pending = report(&with_learner, leader, 1);
    pending.pending_peers = vec![learner.peer_id];
    let (_, directives) = send(&mut c, pending);
    assert!(directives.is_empty(), "a learner catching up is waited for: {directives:?}");
    assert_eq!(c.learners_caught_up(), 0);
    let (_, directives) = send(&mut c, report(&with_learner, leader, 1));
    assert!(
        matches!(directives.as_slice(), [Directive { action: DirectiveAction::EnterJoint { .. }, .. }]),
        "{directives:?}"
    );
    assert_eq!(c.learners_caught_up(), 1);
    let counts = c.store_counts();
    assert_eq!(counts[&ids[3]], (1, 0), "{counts:?}");
    assert_eq!(counts[&leader].1, 1);
}
