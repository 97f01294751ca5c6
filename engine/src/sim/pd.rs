//! PD in the simulation: the real `pd::Cluster` (it is sans-IO), on an
//! in-memory `MetaStore`, answering what the stores' PD workers would ask
//! it — registration and the initial layout, the leaders' region reports,
//! the ids of the splits leaders ask for — and restarted from its saved
//! state like the process would be. While it is down, asks for split ids go
//! unanswered (the leaders ask again) and reports are not sent.

use pd::cluster::ClusterConfig;
use pd::protocol::{PdRequest, PdResponse, RegionView};
use pd::storage::MemMetaStore;
use pd::Cluster;

use crate::region::meta::RegionMeta;
use crate::shard::LeaderReport;

pub struct SimPd {
    config: ClusterConfig,
    store: MemMetaStore,
    /// `None` while PD is down.
    cluster: Option<Cluster<MemMetaStore>>,
    pub restarts: u32,
}

/// A store silent this long is down in the simulation (its replicas are
/// rebuilt elsewhere): seconds, where a real cluster waits 30 minutes.
pub const SIM_MAX_STORE_DOWN_MS: u64 = 10_000;

impl SimPd {
    /// A new cluster's PD with `stores` stores registered (ids 1..=stores)
    /// and `regions` initial regions of `replicas` replicas laid out;
    /// returns it and the layout.
    pub fn bootstrap(stores: u64, replicas: u64, regions: u64) -> (SimPd, Vec<RegionMeta>) {
        let config = ClusterConfig {
            new_cluster_id: 1,
            replicas: replicas as u32,
            initial_regions: regions as u32,
            store_down_after_ms: 20_000,
            initial_stores: stores as u32,
            max_store_down_ms: SIM_MAX_STORE_DOWN_MS,
        };
        let store = MemMetaStore::default();
        let mut cluster = Cluster::open(store.clone(), &config).expect("a new PD opens");
        for n in 1..=stores {
            let port = 10_000 + 2 * n as u16;
            let req = PdRequest::RegisterStore {
                store_id: 0,
                token: n,
                shards: 1,
                peer_addr: ([127, 0, 0, 1], port).into(),
                client_addr: ([127, 0, 0, 1], port + 1).into(),
                capacity_bytes: 1 << 30,
            };
            match cluster.handle(req, 0) {
                Ok(PdResponse::Registered { store_id, .. }) => {
                    assert_eq!(store_id, n, "PD numbers the simulation's stores 1..")
                }
                other => panic!("registering store {n} with PD: {other:?}"),
            }
        }
        let mut layout = std::collections::BTreeMap::new();
        for n in 1..=stores {
            match cluster.handle(PdRequest::BootstrapRegions { store_id: n }, 0) {
                Ok(PdResponse::Regions(views)) => {
                    layout.extend(views.iter().map(|v| (v.region.id, RegionMeta::from(&v.region))))
                }
                other => panic!("store {n}'s initial regions from PD: {other:?}"),
            }
        }
        let mut metas: Vec<RegionMeta> = layout.into_values().collect();
        metas.sort_by(|a, b| a.start_key.cmp(&b.start_key));
        (SimPd { config, store, cluster: Some(cluster), restarts: 0 }, metas)
    }

    pub fn is_up(&self) -> bool {
        self.cluster.is_some()
    }

    /// PD goes down (what it saved survives).
    pub fn crash(&mut self) {
        self.cluster = None;
    }

    /// PD comes back from what it saved; its soft state (leaders) refills from reports.
    pub fn restart(&mut self) {
        self.cluster = Some(Cluster::open(self.store.clone(), &self.config).expect("PD reopens its saved state"));
        self.restarts += 1;
    }

    /// `count` new ids from PD's allocator, unless PD is down.
    pub fn alloc_ids(&mut self, count: u64) -> Option<u64> {
        match self.cluster.as_mut()?.handle(PdRequest::AllocIds { count: count as u32 }, 0) {
            Ok(PdResponse::Ids { first, .. }) => Some(first),
            other => panic!("PD's allocator: {other:?}"),
        }
    }

    /// A store heartbeats PD and its leaders report their regions (as its
    /// PD worker does); PD's directives for them, each as the shard input
    /// it becomes (`request` numbers the inputs), with the region it is for.
    pub fn report(
        &mut self,
        store_id: u64,
        led: Vec<LeaderReport>,
        now_ms: u64,
        mut request: impl FnMut() -> u64,
    ) -> Vec<crate::shard::Input> {
        let Some(c) = self.cluster.as_mut() else { return vec![] };
        let stats = pd::meta::StoreStats::default();
        if let Err(e) = c.handle(PdRequest::StoreHeartbeat { store_id, stats }, now_ms) {
            panic!("store {store_id}'s heartbeat: {e}");
        }
        if led.is_empty() {
            return vec![];
        }
        let metas: std::collections::BTreeMap<u64, RegionMeta> =
            led.iter().map(|r| (r.meta.id, r.meta.clone())).collect();
        let reports = led.into_iter().map(|r| crate::runtime::pd_worker::report_of(r, 0)).collect();
        // (stale reports are refused one by one: that is PD's business)
        let Ok(PdResponse::RegionHeartbeats { directives, .. }) =
            c.handle(PdRequest::RegionHeartbeats { store_id, reports }, now_ms)
        else {
            return vec![];
        };
        let mut inputs = vec![];
        for d in directives {
            let Some(meta) = metas.get(&d.region_id) else { continue };
            match crate::runtime::directives::directive_op(&d, meta) {
                Ok(op) => inputs.push(op.into_input(request(), d.region_id, meta.epoch())),
                Err(e) => tracing::debug!("directive ignored: {e}"),
            }
        }
        inputs
    }

    /// Region `id` as PD has it (`None`: PD does not know it, or is down).
    pub fn region(&mut self, id: u64) -> Option<RegionMeta> {
        let c = self.cluster.as_mut()?;
        match c.handle(PdRequest::GetRegionById { region_id: id }, 0) {
            Ok(PdResponse::Region(v)) => Some(RegionMeta::from(&v.region)),
            _ => None,
        }
    }

    /// PD's answer to a membership ask (`shard::stale`): region `id` as PD
    /// has it (`None`: PD does not know it), and whether a leader of it
    /// reported since PD started (else it is what PD saved, which may be
    /// older than what a peer knows). `None` while PD is down.
    pub fn membership_answer(&mut self, id: u64) -> Option<(Option<RegionMeta>, bool)> {
        let c = self.cluster.as_mut()?;
        Some(match c.handle(PdRequest::GetRegionById { region_id: id }, 0) {
            Ok(PdResponse::Region(v)) => (Some(RegionMeta::from(&v.region)), v.leader.is_some()),
            _ => (None, false),
        })
    }

    /// The operators under way (none while PD is down).
    pub fn operators(&mut self) -> Vec<pd::protocol::OperatorView> {
        let Some(c) = self.cluster.as_mut() else { return vec![] };
        match c.handle(PdRequest::GetOperators, 0) {
            Ok(PdResponse::Operators(ops)) => ops,
            other => panic!("PD's operators: {other:?}"),
        }
    }

    /// How operators of `kind` went since PD last started.
    pub fn operator_counts(&self, kind: &str) -> pd::schedule::controller::OperatorCounts {
        let Some(c) = self.cluster.as_ref() else { return Default::default() };
        c.operator_counts().into_iter().find(|(k, _)| *k == kind).map(|(_, c)| c).unwrap_or_default()
    }

    /// `ctl drain-store`.
    pub fn drain_store(&mut self, store_id: u64, now_ms: u64) -> Result<(), String> {
        let c = self.cluster.as_mut().ok_or("PD is down")?;
        match c.handle(PdRequest::DrainStore { store_id }, now_ms) {
            Ok(PdResponse::Store(_)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    }

    /// Every store as PD sees it (none while PD is down).
    pub fn stores(&mut self, now_ms: u64) -> Vec<pd::protocol::StoreView> {
        let Some(c) = self.cluster.as_mut() else { return vec![] };
        match c.handle(PdRequest::GetStores, now_ms) {
            Ok(PdResponse::Stores { stores, .. }) => stores,
            other => panic!("PD's stores: {other:?}"),
        }
    }

    /// Asks PD to move `region`'s replica on `from` to `to` (`ctl move`).
    pub fn move_region(&mut self, region_id: u64, from_store: u64, to_store: u64, now_ms: u64) -> Result<(), String> {
        let c = self.cluster.as_mut().ok_or("PD is down")?;
        match c.handle(PdRequest::MoveRegion { region_id, from_store, to_store }, now_ms) {
            Ok(PdResponse::Operators(_)) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    }

    /// Every region as PD sees it, in key order (`None` while PD is down).
    pub fn regions(&mut self) -> Option<Vec<RegionView>> {
        let c = self.cluster.as_mut()?;
        match c.handle(PdRequest::ScanRegions { start_key: vec![], limit: u32::MAX }, 0) {
            Ok(PdResponse::Regions(views)) => Some(views),
            other => panic!("PD's regions: {other:?}"),
        }
    }
}
