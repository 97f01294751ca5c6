//! PD's logic without I/O: a request and the time go in, an answer comes
//! out, and every change is made durable through the [`MetaStore`] before
//! the answer is returned (the server sends nothing it has not saved).
//!
//! Durable: the cluster id, the bootstrap, stores, region descriptions and
//! the id allocator's reservation. Soft (refilled by heartbeats after a
//! restart): leaders and their terms, region and store statistics.

pub mod bootstrap;
pub mod regions;

use std::collections::BTreeMap;

use crate::meta::{PeerInfo, RegionInfo, RegionStats, StoreInfo, StoreState, StoreStats};
use crate::protocol::{
    ClusterView, Directive, PdError, PdRequest, PdResponse, RegionReport, RegionView, StoreView, ALLOC_IDS_MAX,
    REGION_REPORTS_MAX, SCAN_BYTES_MAX, SCAN_REGIONS_MAX,
};
use crate::schedule::controller::{Operators, OPERATORS_MAX};
use crate::schedule::operator::{self, Operator, OperatorKind};
use crate::schedule::replica_checker::{self, StoreLoad};
use crate::schedule::step::RegionState;
use crate::schedule::{balance_leader, balance_region};
use crate::storage::{ClusterState, MetaStore, StorageError};
use bootstrap::INITIAL_REGIONS_MAX;
use regions::RegionIndex;

/// Ids reserved (made durable) ahead of use, so allocating is not a write each time.
pub const ID_RESERVE_BATCH: u64 = 10_000;
/// Most stores a cluster may have.
pub const STORES_MAX: usize = 4096;
/// Most regions PD keeps.
pub const REGIONS_MAX: usize = 1 << 20;
/// Most directives waiting for their regions' leaders.
pub const DIRECTIVES_MAX: usize = 65_536;
/// How often the checkers look over every region (on store heartbeats).
pub const PATROL_INTERVAL_MS: u64 = 1_000;

#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// The id a new cluster gets (an existing one keeps its own).
    pub new_cluster_id: u64,
    pub replicas: u32,
    pub initial_regions: u32,
    /// A store silent this long is shown as disconnected (no new replica
    /// or leadership goes to it).
    pub store_down_after_ms: u64,
    /// A store silent this long is down: its replicas are rebuilt elsewhere.
    pub max_store_down_ms: u64,
    /// Stores that must register before a new cluster lays out its
    /// regions (at least `replicas`; 0: `replicas`).
    pub initial_stores: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("{0}")]
    Config(String),
    #[error("the saved state breaks an invariant: {0}")]
    Invalid(String),
}

#[derive(Default, Clone)]
struct RegionSoft {
    leader: Option<PeerInfo>,
    term: u64,
    stats: RegionStats,
    pending_peers: Vec<u64>,
}

pub struct Cluster<S: MetaStore> {
    storage: S,
    cluster_id: u64,
    replicas: u32,
    initial_regions: u32,
    bootstrapped: bool,
    ids_reserved_until: u64,
    next_id: u64,
    stores_version: u64,
    stores: BTreeMap<u64, StoreInfo>,
    regions: RegionIndex,
    soft: BTreeMap<u64, RegionSoft>,
    /// store → (time of its last heartbeat, what it said).
    heartbeats: BTreeMap<u64, (u64, StoreStats)>,
    directives: BTreeMap<u64, Directive>,
    store_down_after_ms: u64,
    max_store_down_ms: u64,
    initial_stores: u32,
    /// Operators under way (soft: lost with a restart, when the replica
    /// checker finishes or undoes what they left).
    operators: Operators,
    last_patrol_ms: Option<u64>,
}

impl<S: MetaStore> Cluster<S> {
    /// Loads the saved state, or creates (and saves) a new cluster.
    pub fn open(mut storage: S, config: &ClusterConfig) -> Result<Cluster<S>, OpenError> {
        if config.replicas == 0 || config.replicas as usize > crate::meta::PEERS_MAX {
            return Err(OpenError::Config(format!(
                "--replicas {} (1..={} allowed)",
                config.replicas,
                crate::meta::PEERS_MAX
            )));
        }
        if !(1..=INITIAL_REGIONS_MAX).contains(&config.initial_regions) {
            return Err(OpenError::Config(format!(
                "--initial-regions {} (1..={INITIAL_REGIONS_MAX} allowed)",
                config.initial_regions
            )));
        }
        let saved = storage.load()?;
        let fresh = saved.is_none();
        let state = saved.unwrap_or(ClusterState {
            cluster_id: config.new_cluster_id,
            replicas: config.replicas,
            initial_regions: config.initial_regions,
            bootstrapped: false,
            ids_reserved_until: 1,
            stores_version: 0,
            stores: vec![],
            regions: vec![],
        });
        assert_ne!(state.cluster_id, 0, "cluster id 0 means 'not known yet' on the wire");
        let mut c = Cluster {
            storage,
            cluster_id: state.cluster_id,
            replicas: state.replicas,
            initial_regions: state.initial_regions,
            bootstrapped: state.bootstrapped,
            // ids under the old reservation may have been handed out: never again
            next_id: state.ids_reserved_until,
            ids_reserved_until: state.ids_reserved_until,
            stores_version: state.stores_version,
            stores: BTreeMap::new(),
            regions: RegionIndex::default(),
            soft: BTreeMap::new(),
            heartbeats: BTreeMap::new(),
            directives: BTreeMap::new(),
            store_down_after_ms: config.store_down_after_ms,
            initial_stores: config.initial_stores,
            max_store_down_ms: config.max_store_down_ms,
            operators: Operators::default(),
            last_patrol_ms: None,
        };
        for s in state.stores {
            s.validate().map_err(|e| OpenError::Invalid(format!("store {}: {e}", s.id)))?;
            if s.id == 0 || s.id >= c.ids_reserved_until || c.stores.insert(s.id, s.clone()).is_some() {
                return Err(OpenError::Invalid(format!("store id {} is 0, repeated or never allocated", s.id)));
            }
        }
        for r in state.regions {
            r.validate().map_err(OpenError::Invalid)?;
            if r.id >= c.ids_reserved_until || r.max_peer_id >= c.ids_reserved_until {
                return Err(OpenError::Invalid(format!("region {} uses ids never allocated", r.id)));
            }
            if c.regions.get(r.id).is_some() || !c.regions.overlapping(&r).is_empty() {
                return Err(OpenError::Invalid(format!("region {} is repeated or overlaps another", r.id)));
            }
            c.regions.put(r);
        }
        if !c.bootstrapped && (c.replicas != config.replicas || c.initial_regions != config.initial_regions) {
            // nothing was laid out yet: this start's flags decide
            c.replicas = config.replicas;
            c.initial_regions = config.initial_regions;
            if c.stores.len() >= c.stores_to_bootstrap() {
                // (fewer replicas now: the stores already registered are enough)
                c.bootstrap();
            }
            c.save().map_err(OpenError::Storage)?;
        } else if fresh {
            c.save().map_err(OpenError::Storage)?;
        }
        Ok(c)
    }

    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    pub fn cluster_view(&self) -> ClusterView {
        ClusterView {
            cluster_id: self.cluster_id,
            bootstrapped: self.bootstrapped,
            replicas: self.replicas,
            initial_regions: self.initial_regions,
            stores: self.stores.len() as u32,
            regions: self.regions.len() as u32,
        }
    }

    /// PD's figures for its metrics: (name, help, value).
    pub fn gauges(&self, now_ms: u64) -> Vec<(&'static str, &'static str, u64)> {
        let up = self.stores.values().filter(|s| self.store_view(s, now_ms).up).count();
        let led = self.soft.values().filter(|s| s.leader.is_some()).count();
        vec![
            ("ringraft_pd_stores", "stores registered", self.stores.len() as u64),
            ("ringraft_pd_stores_up", "stores heard from within --store-down-after", up as u64),
            ("ringraft_pd_regions", "regions known", self.regions.len() as u64),
            ("ringraft_pd_regions_led", "regions whose leader reported since PD started", led as u64),
            ("ringraft_pd_directives_waiting", "directives waiting for their leaders", self.directives.len() as u64),
            ("ringraft_pd_ids_reserved_until", "ids below this may have been handed out", self.ids_reserved_until),
            ("ringraft_pd_bootstrapped", "1 once the initial regions are laid out", u64::from(self.bootstrapped)),
            ("ringraft_pd_operators_running", "operators under way", self.operators.len() as u64),
        ]
    }

    /// Per store: replicas (any role) and regions led, as PD sees them now.
    pub fn store_counts(&self) -> BTreeMap<u64, (u64, u64)> {
        let mut counts: BTreeMap<u64, (u64, u64)> = self.stores.keys().map(|id| (*id, (0, 0))).collect();
        for r in self.regions.iter() {
            for p in &r.peers {
                counts.entry(p.store_id).or_default().0 += 1;
            }
        }
        for l in self.soft.values().filter_map(|s| s.leader) {
            counts.entry(l.store_id).or_default().1 += 1;
        }
        counts
    }

    /// Learners PD's operators added that caught up (each was sent a snapshot).
    pub fn learners_caught_up(&self) -> u64 {
        self.operators.learners_caught_up
    }

    /// How operators started and ended so far, by kind (since PD started).
    pub fn operator_counts(&self) -> Vec<(&'static str, crate::schedule::controller::OperatorCounts)> {
        self.operators.counts.iter().map(|(k, c)| (*k, *c)).collect()
    }

    fn state(&self) -> ClusterState {
        ClusterState {
            cluster_id: self.cluster_id,
            replicas: self.replicas,
            initial_regions: self.initial_regions,
            bootstrapped: self.bootstrapped,
            ids_reserved_until: self.ids_reserved_until,
            stores_version: self.stores_version,
            stores: self.stores.values().cloned().collect(),
            regions: self.regions.iter().cloned().collect(),
        }
    }

    fn save(&mut self) -> Result<(), StorageError> {
        let state = self.state();
        self.storage.save(&state)
    }

    fn save_or_fail(&mut self) -> Result<(), PdError> {
        self.save().map_err(|e| PdError::Storage(e.to_string()))
    }

    /// `count` fresh ids; the reservation grows (unsaved) when it runs out:
    /// the caller saves before answering.
    fn take_ids(&mut self, count: u64) -> u64 {
        let first = self.next_id;
        self.next_id += count;
        if self.next_id > self.ids_reserved_until {
            self.ids_reserved_until = self.next_id + ID_RESERVE_BATCH;
        }
        first
    }

    /// Takes from the allocator the ids a walk handed out while it could not
    /// (it borrowed the regions): every id below `next_id`, counted from
    /// the allocator's next.
    fn take_counted_ids(&mut self, next_id: u64) {
        if next_id > self.next_id {
            self.take_ids(next_id - self.next_id);
        }
    }

    /// Queues work for a region's leader by hand (tests; operators hand
    /// theirs out through `Operators::on_report`); handed out with the next
    /// report of the region at `directive.epoch`.
    pub fn add_directive(&mut self, directive: Directive) -> Result<(), PdError> {
        let Some(r) = self.regions.get(directive.region_id) else {
            return Err(PdError::UnknownRegion { region_id: directive.region_id });
        };
        if directive.epoch != r.epoch {
            return Err(PdError::StaleEpoch {
                region_id: r.id,
                reported: directive.epoch,
                current: Box::new(r.clone()),
            });
        }
        if self.directives.len() >= DIRECTIVES_MAX && !self.directives.contains_key(&directive.region_id) {
            return Err(PdError::Invalid(format!("{DIRECTIVES_MAX} directives already wait")));
        }
        self.directives.insert(directive.region_id, directive);
        Ok(())
    }

    pub fn handle(&mut self, req: PdRequest, now_ms: u64) -> Result<PdResponse, PdError> {
        match req {
            PdRequest::RegisterStore { store_id, token, shards, peer_addr, client_addr, capacity_bytes } => {
                let info = StoreInfo {
                    id: store_id,
                    peer_addr,
                    client_addr,
                    shards,
                    capacity_bytes,
                    token,
                    state: StoreState::Serving,
                };
                let answer = self.register(info)?;
                if let PdResponse::Registered { store_id, .. } = answer {
                    // (a registration is hearing from the store: a new one is not
                    // down until its first heartbeat)
                    let stats = self.heartbeats.get(&store_id).map(|(_, s)| *s).unwrap_or_default();
                    self.heartbeats.insert(store_id, (now_ms, stats));
                }
                Ok(answer)
            }
            PdRequest::BootstrapRegions { store_id } => {
                self.known_store(store_id)?;
                self.check_bootstrapped()?;
                // only regions still as laid out: a peer added or moved since is
                // created by its leader's messages, not from PD's description
                let first = crate::meta::Epoch { conf_ver: 1, version: 1 };
                let mine = self.regions.iter().filter(|r| r.epoch == first && r.peer_on(store_id).is_some());
                Ok(PdResponse::Regions(mine.map(|r| self.view(r)).collect()))
            }
            PdRequest::StoreHeartbeat { store_id, stats } => {
                self.known_store(store_id)?;
                self.heartbeats.insert(store_id, (now_ms, stats));
                if self.last_patrol_ms.is_none_or(|at| now_ms.saturating_sub(at) >= PATROL_INTERVAL_MS) {
                    self.last_patrol_ms = Some(now_ms);
                    self.patrol(now_ms)?;
                }
                Ok(PdResponse::Heartbeat { stores_version: self.stores_version })
            }
            PdRequest::RegionHeartbeats { store_id, reports } => self.region_heartbeats(store_id, reports, now_ms),
            PdRequest::MoveRegion { region_id, from_store, to_store } => {
                self.move_region(region_id, from_store, to_store, now_ms)
            }
            PdRequest::GetOperators => Ok(PdResponse::Operators(self.operators.views(now_ms))),
            PdRequest::DrainStore { store_id } => self.drain_store(store_id, now_ms),
            PdRequest::AllocIds { count } => {
                if count == 0 || count > ALLOC_IDS_MAX {
                    return Err(PdError::Invalid(format!("ask for 1..={ALLOC_IDS_MAX} ids, not {count}")));
                }
                let reserved = self.ids_reserved_until;
                let first = self.take_ids(u64::from(count));
                if self.ids_reserved_until != reserved {
                    self.save_or_fail()?;
                }
                Ok(PdResponse::Ids { first, count })
            }
            PdRequest::GetCluster => Ok(PdResponse::Cluster(self.cluster_view())),
            PdRequest::GetStores => Ok(PdResponse::Stores {
                stores: self.stores.values().map(|s| self.store_view(s, now_ms)).collect(),
                stores_version: self.stores_version,
            }),
            PdRequest::GetStore { store_id } => {
                let s = self.known_store(store_id)?;
                Ok(PdResponse::Store(self.store_view(s, now_ms)))
            }
            PdRequest::GetRegionByKey { key } => {
                self.check_bootstrapped()?;
                match self.regions.by_key(&key) {
                    Some(r) => Ok(PdResponse::Region(self.view(r))),
                    None => Err(PdError::KeyNotInAnyRegion { key }),
                }
            }
            PdRequest::GetRegionById { region_id } => match self.regions.get(region_id) {
                Some(r) => Ok(PdResponse::Region(self.view(r))),
                None => Err(PdError::UnknownRegion { region_id }),
            },
            PdRequest::ScanRegions { start_key, limit } => {
                let limit = limit.clamp(1, SCAN_REGIONS_MAX) as usize;
                let mut bytes = 0;
                let page = self.regions.scan(&start_key, limit).into_iter().take_while(|r| {
                    let fits = bytes < SCAN_BYTES_MAX; // (the first region always goes)
                    bytes += r.start_key.len() + r.end_key.len() + 64 * (1 + r.peers.len());
                    fits
                });
                Ok(PdResponse::Regions(page.map(|r| self.view(r)).collect()))
            }
        }
    }

    /// How many stores a new cluster waits for before laying out its regions.
    fn stores_to_bootstrap(&self) -> usize {
        self.replicas.max(self.initial_stores) as usize
    }

    fn check_bootstrapped(&self) -> Result<(), PdError> {
        if self.bootstrapped {
            return Ok(());
        }
        Err(PdError::NotBootstrapped {
            registered: self.stores.len() as u32,
            needed: self.stores_to_bootstrap() as u32,
        })
    }

    fn known_store(&self, store_id: u64) -> Result<&StoreInfo, PdError> {
        self.stores.get(&store_id).ok_or(PdError::UnknownStore { store_id })
    }

    fn view(&self, r: &RegionInfo) -> RegionView {
        let soft = self.soft.get(&r.id).cloned().unwrap_or_default();
        RegionView {
            region: r.clone(),
            leader: soft.leader,
            term: soft.term,
            stats: soft.stats,
            pending_peers: soft.pending_peers,
        }
    }

    fn store_view(&self, s: &StoreInfo, now_ms: u64) -> StoreView {
        let hb = self.heartbeats.get(&s.id);
        let ago = hb.map(|(at, _)| now_ms.saturating_sub(*at));
        // (after a PD restart nothing is known of a store: it is called down
        // only once PD has run that long without hearing from it)
        let silent_ms = ago.unwrap_or(now_ms);
        StoreView {
            store: s.clone(),
            last_heartbeat_ms_ago: ago,
            up: ago.is_some_and(|a| a <= self.store_down_after_ms),
            down: silent_ms > self.max_store_down_ms,
            stats: hb.map(|(_, st)| *st).unwrap_or_default(),
        }
    }

    fn register(&mut self, mut info: StoreInfo) -> Result<PdResponse, PdError> {
        info.validate().map_err(|e| PdError::Invalid(format!("store registration: {e}")))?;
        let existing = if info.id == 0 {
            // a first start, or its repeat after a crash before the store wrote its id down
            self.stores.values().find(|s| s.token == info.token).map(|s| s.id)
        } else {
            let s = self.known_store(info.id)?;
            if s.token != info.token {
                return Err(PdError::StoreMismatch {
                    store_id: info.id,
                    reason: "its registration token differs: another data directory claims this store id".into(),
                });
            }
            Some(info.id)
        };
        if let Some(id) = existing {
            let s = &self.stores[&id];
            if s.state == StoreState::Removed {
                return Err(PdError::StoreMismatch {
                    store_id: id,
                    reason: "it was drained and removed from the cluster: start it with an empty data directory to join as a new store".into(),
                });
            }
            // (its state is the operator's word, not the store's)
            info.state = s.state;
            if s.shards != info.shards {
                return Err(PdError::StoreMismatch {
                    store_id: id,
                    reason: format!("registered with {} shard(s), now {} (fixed at creation)", s.shards, info.shards),
                });
            }
            info.id = id;
        }
        // (a removed store's addresses are free again)
        let clash = self
            .stores
            .values()
            .filter(|s| s.id != info.id && s.state != StoreState::Removed)
            .find_map(|s| Some((s.id, s.shared_address(&info)?)));
        if let Some((store_id, addr)) = clash {
            return Err(PdError::DuplicateStoreAddress { addr, store_id });
        }
        let mut changed = false;
        match existing {
            Some(id) if self.stores[&id] == info => {}
            Some(id) => {
                let old = &self.stores[&id];
                let moved = (old.peer_addr, old.client_addr) != (info.peer_addr, info.client_addr);
                self.stores.insert(info.id, info.clone());
                if moved {
                    // (what the directory's readers care about: a new capacity is not news to them)
                    self.stores_version += 1;
                }
                changed = true;
            }
            None => {
                if self.stores.len() >= STORES_MAX {
                    return Err(PdError::Invalid(format!("the cluster has STORES_MAX ({STORES_MAX}) stores")));
                }
                info.id = self.take_ids(1);
                self.stores.insert(info.id, info.clone());
                self.stores_version += 1;
                changed = true;
                tracing::info!(store = info.id, addr = %info.peer_addr, shards = info.shards, "store registered");
            }
        }
        if !self.bootstrapped && self.stores.len() >= self.stores_to_bootstrap() {
            self.bootstrap();
            changed = true;
        }
        if changed {
            self.save_or_fail()?;
        }
        Ok(PdResponse::Registered { store_id: info.id, bootstrapped: self.bootstrapped })
    }

    fn bootstrap(&mut self) {
        let stores: Vec<StoreInfo> = self.stores.values().cloned().collect();
        let (n, replicas) = (self.initial_regions, self.replicas);
        let ids_needed = u64::from(n) * (1 + u64::from(replicas));
        let mut next = self.take_ids(ids_needed);
        let regions = bootstrap::initial_regions(n, replicas, &stores, || {
            next += 1;
            next - 1
        });
        for r in regions {
            r.validate().expect("the layout is valid");
            self.regions.put(r);
        }
        self.bootstrapped = true;
        tracing::info!(regions = n, replicas, stores = stores.len(), "cluster bootstrapped");
    }

    /// Looks over every region no operator drives and starts what the
    /// replica checker says it needs (within the operators' limits).
    fn patrol(&mut self, now_ms: u64) -> Result<(), PdError> {
        if !self.bootstrapped {
            return Ok(());
        }
        let loads = self.store_loads(now_ms);
        let reserved = self.ids_reserved_until;
        // (ids for new replicas are counted here and taken from the
        // allocator after the walk: the walk borrows the regions, no copy)
        let mut next_id = self.next_id;
        for region in self.regions.iter() {
            if self.operators.len() >= OPERATORS_MAX {
                break;
            }
            if self.operators.get(region.id).is_some() {
                continue;
            }
            let soft = self.soft.get(&region.id);
            let before = next_id;
            let new_peer_id = || {
                next_id += 1;
                next_id - 1
            };
            let leader = soft.and_then(|s| s.leader);
            let Some((kind, steps)) =
                replica_checker::check(region, leader, self.replicas as usize, &loads, new_peer_id)
            else {
                continue;
            };
            let bytes = soft.map_or(0, |s| s.stats.approximate_bytes);
            if let Err(why) = self.operators.add(Operator::new(kind, region, bytes, steps, now_ms)) {
                tracing::debug!(region = region.id, kind = kind.name(), "not now: {why}");
                next_id = before; // (its id goes to the next region that needs one)
            }
        }
        self.take_counted_ids(next_id);
        self.balance(&loads, now_ms);
        // a draining store that holds nothing any more is removed
        let mut changed = self.ids_reserved_until != reserved;
        let drained: Vec<u64> = loads.iter().filter(|l| l.regions == 0).map(|l| l.store_id).collect();
        for id in drained {
            let s = self.stores.get_mut(&id).expect("listed");
            if s.state == StoreState::Draining {
                s.state = StoreState::Removed;
                self.stores_version += 1;
                changed = true;
                tracing::info!(store = id, "store drained: removed from the cluster");
            }
        }
        if changed {
            self.save_or_fail()?;
        }
        Ok(())
    }

    /// `ctl drain-store`: every replica on the store moves elsewhere, then
    /// the store is removed. Refused when the other stores cannot hold
    /// `--replicas` copies of every region.
    fn drain_store(&mut self, store_id: u64, now_ms: u64) -> Result<PdResponse, PdError> {
        self.check_bootstrapped()?;
        let s = self.known_store(store_id)?.clone();
        if s.state != StoreState::Serving {
            return Err(PdError::Invalid(format!("store {store_id} is {} already", s.state.name())));
        }
        let others = self
            .stores
            .values()
            .filter(|o| o.id != store_id && o.state == StoreState::Serving && !self.store_view(o, now_ms).down)
            .count();
        if others < self.replicas as usize {
            return Err(PdError::Invalid(format!(
                "draining store {store_id} would leave {others} store(s) to hold {} replicas of every region",
                self.replicas
            )));
        }
        self.stores.get_mut(&store_id).expect("known").state = StoreState::Draining;
        self.stores_version += 1;
        self.save_or_fail()?;
        tracing::info!(store = store_id, "store draining: its replicas move to other stores");
        let view = self.store_view(&self.stores[&store_id], now_ms);
        Ok(PdResponse::Store(view))
    }

    /// Evens out replica and leader counts, a few operators at a time.
    fn balance(&mut self, loads: &[StoreLoad], now_ms: u64) {
        let leader_of: BTreeMap<u64, u64> =
            self.soft.iter().filter_map(|(id, s)| Some((*id, s.leader?.store_id))).collect();
        let (replica_delta, leader_delta) = self.operators.projected(&leader_of);
        let project = |n: usize, d: Option<&i64>| (n as i64 + d.copied().unwrap_or(0)).max(0) as usize;
        let mut loads = loads.to_vec();
        for l in loads.iter_mut() {
            l.regions = project(l.regions, replica_delta.get(&l.store_id));
        }
        let settled = |c: &Self, r: &RegionInfo| {
            let soft = c.soft.get(&r.id);
            c.operators.get(r.id).is_none()
                && soft.is_some_and(|s| s.leader.is_some() && s.pending_peers.is_empty())
                && r.peers.iter().all(|p| p.role == crate::meta::PeerRole::Voter)
        };
        if self.operators.count_of(OperatorKind::BalanceRegion) < balance_region::BALANCE_REGION_OPERATORS_MAX {
            let mut next_id = self.next_id;
            let candidates = self.regions.iter().map(|region| balance_region::Candidate {
                region,
                leader: self.soft.get(&region.id).and_then(|s| s.leader),
                settled: settled(self, region),
            });
            let new_peer_id = || {
                next_id += 1;
                next_id - 1
            };
            let picked = balance_region::pick_move(&loads, candidates, new_peer_id);
            if let Some((region_id, kind, steps)) = picked {
                let region = self.regions.get(region_id).expect("listed");
                let bytes = self.soft.get(&region_id).map_or(0, |s| s.stats.approximate_bytes);
                match self.operators.add(Operator::new(kind, region, bytes, steps, now_ms)) {
                    Ok(_) => self.take_counted_ids(next_id),
                    Err(why) => tracing::debug!(region = region_id, "balance-region not now: {why}"),
                }
            }
        }
        if self.operators.count_of(OperatorKind::BalanceLeader) < balance_leader::BALANCE_LEADER_OPERATORS_MAX {
            let projected: BTreeMap<u64, usize> =
                loads.iter().map(|l| (l.store_id, project(l.leaders, leader_delta.get(&l.store_id)))).collect();
            let led =
                self.regions.iter().filter(|r| settled(self, r)).filter_map(|r| Some((r, *leader_of.get(&r.id)?)));
            if let Some((region_id, kind, steps)) = balance_leader::pick_transfer(&loads, &projected, led) {
                let region = self.regions.get(region_id).expect("listed");
                if let Err(why) = self.operators.add(Operator::new(kind, region, 0, steps, now_ms)) {
                    tracing::debug!(region = region_id, "balance-leader not now: {why}");
                }
            }
        }
    }

    /// Every store as the checkers see it.
    fn store_loads(&self, now_ms: u64) -> Vec<StoreLoad> {
        let counts = self.store_counts();
        self.stores
            .values()
            .map(|s| {
                let view = self.store_view(s, now_ms);
                StoreLoad {
                    store_id: s.id,
                    shards: s.shards,
                    up: view.up && s.state == StoreState::Serving,
                    evacuate: view.down || s.state != StoreState::Serving,
                    regions: counts.get(&s.id).map_or(0, |(replicas, _)| *replicas as usize),
                    leaders: counts.get(&s.id).map_or(0, |(_, leaders)| *leaders as usize),
                }
            })
            .collect()
    }

    /// An operator by hand: the region's replica on `from_store` moves to `to_store`.
    fn move_region(&mut self, region_id: u64, from: u64, to: u64, now_ms: u64) -> Result<PdResponse, PdError> {
        self.check_bootstrapped()?;
        let region = self.regions.get(region_id).ok_or(PdError::UnknownRegion { region_id })?.clone();
        let target = self.known_store(to)?.clone();
        self.known_store(from)?;
        let soft = self.soft.get(&region_id).cloned().unwrap_or_default();
        let refused = |why: String| Err(PdError::Invalid(format!("region {region_id}: {why}")));
        if region.peer_on(to).is_some() {
            return refused(format!("store {to} already has a replica"));
        }
        if region.peer_on(from).is_none_or(|p| p.role != crate::meta::PeerRole::Voter) {
            return refused(format!("store {from} has no voter of it"));
        }
        if region.is_joint() {
            return refused("it is in a joint configuration (an operator is finishing)".into());
        }
        if soft.leader.is_none() {
            return refused("its leader has not reported since PD started: try again shortly".into());
        }
        if target.state != StoreState::Serving {
            return refused(format!("store {to} is {}", target.state.name()));
        }
        let to_peer = PeerInfo::voter(self.next_id, to, replica_checker::pick_shard(&region, target.shards));
        let Some(steps) = operator::move_steps(&region, soft.leader, from, to_peer) else {
            return refused(format!("no voter other than store {from}'s could lead meanwhile"));
        };
        let op = Operator::new(OperatorKind::AdminMove, &region, soft.stats.approximate_bytes, steps, now_ms);
        self.operators.add(op).map_err(|why| PdError::Invalid(format!("region {region_id}: {why}")))?;
        // (the new peer's id, taken once the operator is under way; saved
        // before the answer if the reservation grew)
        let reserved = self.ids_reserved_until;
        self.take_ids(1);
        if self.ids_reserved_until != reserved {
            self.save_or_fail()?;
        }
        let view = self.operators.views(now_ms).into_iter().filter(|v| v.region_id == region_id).collect();
        Ok(PdResponse::Operators(view))
    }

    fn region_heartbeats(
        &mut self,
        store_id: u64,
        reports: Vec<RegionReport>,
        now_ms: u64,
    ) -> Result<PdResponse, PdError> {
        self.known_store(store_id)?;
        if reports.len() > REGION_REPORTS_MAX {
            return Err(PdError::Invalid(format!("{} reports, over {REGION_REPORTS_MAX}", reports.len())));
        }
        let mut changed = false;
        let mut outcomes = Vec::with_capacity(reports.len());
        let mut directives = vec![];
        for report in reports {
            let id = report.region.id;
            let epoch = report.region.epoch;
            let (leader, term) = (report.leader, report.term);
            let outcome = self.accept(store_id, report);
            if let Ok(durable) = &outcome {
                changed |= *durable;
                // a directive for this epoch goes to this leader (if PD takes it as
                // the leader: not a deposed one reporting late); one for an older epoch is dropped
                let soft = self.soft.get(&id);
                let is_leader = soft.is_some_and(|s| s.leader == Some(leader) && s.term == term);
                match self.directives.get(&id) {
                    Some(d) if d.epoch == epoch && is_leader => directives.extend(self.directives.remove(&id)),
                    Some(d) if d.epoch.is_behind(&epoch) => {
                        self.directives.remove(&id);
                    }
                    _ => {}
                }
                if let (true, Some(region)) = (is_leader, self.regions.get(id)) {
                    let soft = self.soft.get(&id).expect("just accepted");
                    let state = RegionState { region, leader: soft.leader, pending_peers: &soft.pending_peers };
                    if let Some(action) = self.operators.on_report(&state, now_ms) {
                        directives.push(Directive { region_id: id, epoch, action });
                    }
                }
            }
            outcomes.push(outcome.map(|_| ()));
        }
        if changed {
            self.save_or_fail()?;
        }
        Ok(PdResponse::RegionHeartbeats { outcomes, directives })
    }

    /// Takes one leader's report in; whether the durable state changed.
    fn accept(&mut self, store_id: u64, rep: RegionReport) -> Result<bool, PdError> {
        let r = &rep.region;
        r.validate().map_err(PdError::Invalid)?;
        if rep.leader.store_id != store_id || r.peers.iter().all(|p| *p != rep.leader) {
            return Err(PdError::Invalid(format!(
                "region {}: the reported leader {:?} is not a peer on the reporting store {store_id}",
                r.id, rep.leader
            )));
        }
        for p in &r.peers {
            let Some(s) = self.stores.get(&p.store_id) else {
                return Err(PdError::Invalid(format!(
                    "region {}: peer {} on unknown store {}",
                    r.id, p.peer_id, p.store_id
                )));
            };
            if p.shard >= s.shards {
                return Err(PdError::Invalid(format!("region {}: store {} has no shard {}", r.id, s.id, p.shard)));
            }
        }
        if r.id >= self.next_id || r.max_peer_id >= self.next_id {
            return Err(PdError::Invalid(format!("region {}: uses ids PD never handed out", r.id)));
        }
        let stale = |cur: &RegionInfo| PdError::StaleEpoch {
            region_id: r.id,
            reported: r.epoch,
            current: Box::new(cur.clone()),
        };
        let current = self.regions.get(r.id);
        if let Some(cur) = current.filter(|cur| r.epoch.is_behind(&cur.epoch)) {
            return Err(stale(cur));
        }
        let overlapped = self.regions.overlapping(r);
        for o in &overlapped {
            let o = self.regions.get(*o).expect("listed by the index");
            if o.epoch.version >= r.epoch.version {
                // the report predates the split that made `o`
                return Err(stale(o));
            }
        }
        let durable = match current {
            None => true,
            Some(cur) => r.epoch.is_ahead(&cur.epoch) || !overlapped.is_empty(),
        };
        if durable {
            if self.regions.len() >= REGIONS_MAX && current.is_none() {
                return Err(PdError::Invalid(format!("PD holds REGIONS_MAX ({REGIONS_MAX}) regions")));
            }
            for o in overlapped {
                tracing::info!(replaced = o, by = r.id, "a newer region report replaces an overlapping region");
                self.regions.remove(o);
                self.soft.remove(&o);
                self.directives.remove(&o);
                self.operators.forget(o);
            }
            self.regions.put(rep.region.clone());
        }
        let soft = self.soft.entry(rep.region.id).or_default();
        if rep.term >= soft.term {
            soft.leader = Some(rep.leader);
            soft.term = rep.term;
            soft.stats = rep.stats;
            soft.pending_peers = rep.pending_peers;
        }
        Ok(durable)
    }
}

#[cfg(test)]
mod tests;
