//! A store and its placement driver: joining the cluster at start, and a
//! thread that heartbeats afterwards.
//!
//! **Joining** (before any shard starts): the store registers (PD gives a
//! new store its id, which goes into the IDENT file; a registration token
//! drawn at the very first start, and kept in IDENT, makes a repeat after a
//! crash get the same id). Only at its first bootstrap does it ask PD for
//! its regions, waiting until PD has laid them out, and it writes them to
//! its BOOTSTRAP file before using them: once that file exists PD is never
//! asked again — each shard creates those regions when its WAL is empty,
//! and after that its WAL is authoritative (a restart must never bring back
//! a peer that was removed since).
//!
//! **Heartbeats**: every store interval, the store's figures (regions,
//! leaders, capacity, memory used, write rate); every region interval, the
//! reports the shards published for the regions they lead (the newest of
//! each shard, taken from its channel: `runtime::control`), in one batch.
//! When PD's store set changes (its version moves), the directory is
//! refreshed and every shard picks up the new addresses. Directives in the
//! answers go to the leaders' shards (`runtime::directives`). Once a store
//! runs, PD being down only delays all this: the store goes on serving.
//!
//! **Restarting with PD down**: every directory the store learns is kept in
//! its STORES file (the data directory's files: `runtime::data_dir`). A
//! store that has its id, its BOOTSTRAP file and that cache starts from
//! them when PD does not answer within `RESTART_PD_WAIT` (its own WAL
//! holds its regions); it registers with PD once PD answers
//! (the heartbeat thread tries before every heartbeat). A store without
//! them (its first start) waits for PD.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pd::protocol::{PdResponse, RegionReport};
use pd::{PdClient, PdClientError, PdError, PdRequest};

use crate::directory::{Directory, StoreAddrs};
use crate::region::meta::RegionMeta;
use crate::runtime::control::{LeaderReportReceiver, PdAsk};
use crate::runtime::data_dir::{self, DataDirError, Ident};
use crate::runtime::directives::{DirectiveOp, DirectiveRunner};
use crate::runtime::metrics::StoreMetrics;
use crate::shard::LeaderReport;
use crate::shard::SplitRequest;

/// How long one attempt to reach PD at start may take before it is logged and repeated.
const JOIN_ATTEMPT: Duration = Duration::from_secs(10);
/// How long a restarting store that can start without PD waits for it first.
const RESTART_PD_WAIT: Duration = Duration::from_secs(3);
/// Between asks while PD waits for enough stores to bootstrap.
const BOOTSTRAP_POLL: Duration = Duration::from_millis(200);
/// The heartbeat thread's granularity (how soon it sees `stop`).
const HEARTBEAT_STEP: Duration = Duration::from_millis(20);

/// How a store finds and reports to PD.
#[derive(Clone, Debug)]
pub struct PdOptions {
    pub addr: SocketAddr,
    /// Base addresses of this store's shards (registered with PD).
    pub peer_addr: SocketAddr,
    pub client_addr: SocketAddr,
    pub shards: u16,
    pub store_heartbeat: Duration,
    pub region_heartbeat: Duration,
}

/// What joining gave the store.
pub struct Joined {
    pub ident: Ident,
    pub initial_regions: Vec<RegionMeta>,
    pub directory: Arc<Directory>,
    pub client: PdClient,
    /// The registration still to make, when the store started without PD.
    pub registration: Option<PdRequest>,
}

/// Why a store could not join its cluster.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    #[error(
        "{} was created for store {} of cluster {} with {} shard(s); this start asks for {} shard(s) (the shard count is fixed when a store is created)",
        .path.display(), .found.store_id, .found.cluster_id, .found.shards, .shards
    )]
    ShardsMismatch { path: PathBuf, found: Ident, shards: u16 },
    /// The data directory cannot join a cluster this way.
    #[error("{}: {what}", .path.display())]
    Refused { path: PathBuf, what: String },
    #[error("placement driver: {0}")]
    Pd(String),
}

fn pd_err(e: impl std::fmt::Display) -> JoinError {
    JoinError::Pd(e.to_string())
}

/// Repeats `req` until PD answers (logging while it cannot be reached) or `stop`.
fn call_patiently(client: &mut PdClient, req: PdRequest, stop: &AtomicBool) -> Result<PdResponse, JoinError> {
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err(JoinError::Pd("stopped while waiting for PD".into()));
        }
        match client.call_until(req.clone(), Instant::now() + JOIN_ATTEMPT) {
            Ok(r) => return Ok(r),
            Err(e) if e.is_transient() => eprintln!("ringraft server: waiting for PD: {e}"),
            Err(e) => return Err(pd_err(e)),
        }
    }
}

/// Registers the store with PD and gets what it starts from (see the module doc).
pub fn join(opts: &PdOptions, data_dir: &Path, stop: &AtomicBool) -> Result<Joined, JoinError> {
    let path = data_dir::ident_path(data_dir);
    let mut ident = match data_dir::read_ident_of_store(data_dir)? {
        Some(found) => {
            if found.shards != opts.shards {
                return Err(JoinError::ShardsMismatch { path, found, shards: opts.shards });
            }
            if found.token == 0 {
                let what = "this store was created from a cluster spec (start it with --spec)".into();
                return Err(JoinError::Refused { path, what });
            }
            found
        }
        None => {
            // written before registering, so a crash right after leaves the token to repeat with
            let ident = Ident {
                format: data_dir::DATA_FORMAT_VERSION,
                cluster_id: 0,
                store_id: 0,
                shards: opts.shards,
                token: data_dir::fresh_nonce(0),
                wals: None,
            };
            data_dir::write_ident(data_dir, &ident)?;
            ident
        }
    };
    let mut client = PdClient::new(opts.addr, ident.cluster_id);
    let capacity_bytes = disk_capacity(data_dir).unwrap_or(0);
    let req = PdRequest::RegisterStore {
        store_id: ident.store_id,
        token: ident.token,
        shards: opts.shards,
        peer_addr: opts.peer_addr,
        client_addr: opts.client_addr,
        capacity_bytes,
    };
    // a store that can start on its own (its id, regions and a cached directory
    // are here) does not wait long for PD
    let cached = data_dir::read_stores(data_dir)?;
    let bootstrapped = data_dir::has_bootstrap(data_dir);
    let mut answer = None;
    if let (true, true, Some(stores)) = (ident.store_id != 0, bootstrapped, &cached) {
        match client.call_until(req.clone(), Instant::now() + RESTART_PD_WAIT) {
            Ok(r) => answer = Some(r),
            Err(e) if e.is_transient() => {
                eprintln!(
                    "ringraft server: PD does not answer ({e}); starting from this store's own regions and the {} store addresses it last knew; registering once PD answers",
                    stores.len()
                );
                let initial_regions = data_dir::read_bootstrap(data_dir)?.unwrap_or_default();
                return Ok(Joined {
                    ident,
                    initial_regions: initial_regions.iter().map(RegionMeta::from).collect(),
                    directory: Arc::new(Directory::new(stores.clone())),
                    client,
                    registration: Some(req),
                });
            }
            Err(e) => return Err(pd_err(e)),
        }
    }
    let answer = match answer {
        Some(r) => r,
        None => call_patiently(&mut client, req, stop)?,
    };
    let store_id = match answer {
        PdResponse::Registered { store_id, .. } => store_id,
        other => return Err(pd_err(format!("PD answered a registration with {other:?}"))),
    };
    if ident.store_id == 0 {
        ident = Ident { cluster_id: client.cluster_id(), store_id, ..ident };
        data_dir::write_ident(data_dir, &ident)?;
        eprintln!("ringraft server: registered with PD at {} as store {store_id}", opts.addr);
    } else {
        assert_eq!(store_id, ident.store_id, "PD answers a known store with its own id");
    }
    let initial_regions = match data_dir::read_bootstrap(data_dir)? {
        Some(regions) => regions,
        None => {
            let regions = fetch_bootstrap(&mut client, store_id, stop)?;
            data_dir::write_bootstrap(data_dir, &regions)?;
            eprintln!("ringraft server: first start: {} regions from PD", regions.len());
            regions
        }
    };
    let directory = Arc::new(Directory::default());
    refresh_directory(&mut client, &directory, stop)?;
    data_dir::write_stores(data_dir, &directory.all())?;
    Ok(Joined {
        ident,
        initial_regions: initial_regions.iter().map(RegionMeta::from).collect(),
        directory,
        client,
        registration: None,
    })
}

fn fetch_bootstrap(client: &mut PdClient, store_id: u64, stop: &AtomicBool) -> Result<Vec<pd::RegionInfo>, JoinError> {
    let mut told = false;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err(JoinError::Pd("stopped while waiting for PD to bootstrap the cluster".into()));
        }
        match client.call_until(PdRequest::BootstrapRegions { store_id }, Instant::now() + JOIN_ATTEMPT) {
            Ok(PdResponse::Regions(views)) => return Ok(views.into_iter().map(|v| v.region).collect()),
            Ok(other) => return Err(pd_err(format!("PD answered a bootstrap request with {other:?}"))),
            Err(PdClientError::Pd(e @ PdError::NotBootstrapped { .. })) => {
                if !told {
                    eprintln!("ringraft server: {e}; waiting");
                    told = true;
                }
                std::thread::sleep(BOOTSTRAP_POLL);
            }
            Err(e) if e.is_transient() => eprintln!("ringraft server: waiting for PD: {e}"),
            Err(e) => return Err(pd_err(e)),
        }
    }
}

fn refresh_directory(client: &mut PdClient, directory: &Directory, stop: &AtomicBool) -> Result<u64, JoinError> {
    match call_patiently(client, PdRequest::GetStores, stop)? {
        PdResponse::Stores { stores, stores_version } => {
            directory.replace(stores.iter().map(|v| (v.store.id, StoreAddrs::from(&v.store))).collect());
            Ok(stores_version)
        }
        other => Err(pd_err(format!("PD answered a store listing with {other:?}"))),
    }
}

/// Bytes the file system of `dir` holds in all.
fn disk_capacity(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes one struct we own; the path is a valid C string
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    (rc == 0).then(|| st.f_blocks * st.f_frsize)
}

/// What the heartbeat thread remembers of the regions it reported.
#[derive(Default)]
struct RegionsSeen {
    /// Applied bytes at the last report, by region (the write rate's base).
    applied: BTreeMap<u64, u64>,
    /// The last reports' metas and leader shards: what directives are checked against.
    metas: BTreeMap<u64, (RegionMeta, u16)>,
}

/// The heartbeat thread's inputs.
pub struct Heartbeats {
    pub client: PdClient,
    pub store_id: u64,
    pub data_dir: PathBuf,
    pub metrics: StoreMetrics,
    /// By shard index: the reports each shard publishes for the regions it leads.
    pub leader_reports: Vec<LeaderReportReceiver>,
    pub directory: Arc<Directory>,
    pub store_interval: Duration,
    pub region_interval: Duration,
    pub stop: Arc<AtomicBool>,
    /// Hands directives to the shards of the leaders they are for.
    pub directives: DirectiveRunner,
    /// Leaders' asks for split ids.
    pub pd_asks: crossbeam_channel::Receiver<crate::runtime::control::PdAsk>,
    /// A registration still to make (the store started while PD was down).
    pub registration: Option<PdRequest>,
}

/// `r` in PD's terms; `written_bytes`: what it applied since the last report.
pub(crate) fn report_of(r: LeaderReport, written_bytes: u64) -> RegionReport {
    RegionReport {
        region: pd::RegionInfo::from(&r.meta),
        leader: r.leader.into(),
        term: r.term,
        stats: pd::RegionStats {
            approximate_bytes: r.approximate_bytes,
            approximate_keys: r.approximate_keys,
            written_bytes,
        },
        pending_peers: r.pending_peers,
    }
}

impl Heartbeats {
    pub fn spawn(self) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new().name(format!("store{}-pd", self.store_id)).spawn(move || self.run())
    }

    fn run(mut self) {
        let mut regions = RegionsSeen::default();
        let mut next_store = Instant::now();
        let mut next_region = Instant::now() + self.region_interval;
        let mut stores_version = None;
        let mut writes_before = (Instant::now(), self.writes());
        let mut pd_down = false;
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let mut outcome = Ok(());
            if let Some(req) = self.registration.clone().filter(|_| now >= next_store) {
                // (nothing else until PD knows this store again)
                next_store = now + self.store_interval;
                match self.client.call(req) {
                    Ok(_) => {
                        eprintln!("ringraft server: registered with PD again");
                        self.registration = None;
                        next_store = now;
                    }
                    Err(e) if e.is_transient() => {}
                    Err(e) => eprintln!("ringraft server: PD refuses this store's registration: {e}"),
                }
                std::thread::sleep(HEARTBEAT_STEP);
                continue;
            }
            if now >= next_store {
                next_store = now + self.store_interval;
                let writes = self.writes();
                let secs = now.duration_since(writes_before.0).as_secs_f64().max(1e-3);
                let stats = pd::meta::StoreStats {
                    region_count: self.sum(|m| &m.regions),
                    leader_count: self.sum(|m| &m.leaders),
                    capacity_bytes: disk_capacity(&self.data_dir).unwrap_or(0),
                    used_bytes: self.sum(|m| &m.memory_bytes),
                    writes_per_sec: ((writes - writes_before.1) as f64 / secs) as u64,
                    regions_fenced: self.sum(|m| &m.regions_fenced),
                };
                writes_before = (now, writes);
                outcome = self.store_heartbeat(stats, &mut stores_version);
            }
            if outcome.is_ok() {
                outcome = self.pd_asks();
            }
            if outcome.is_ok() && now >= next_region {
                next_region = now + self.region_interval;
                outcome = self.region_heartbeats(&mut regions);
            }
            match outcome {
                Err(e) if !pd_down => {
                    eprintln!("ringraft server: PD heartbeat failed (the store carries on): {e}");
                    pd_down = true;
                }
                Ok(()) if pd_down => {
                    eprintln!("ringraft server: PD answers again");
                    pd_down = false;
                }
                _ => {}
            }
            std::thread::sleep(HEARTBEAT_STEP);
        }
    }

    fn sum(&self, f: impl Fn(&crate::runtime::metrics::ShardMetrics) -> &std::sync::atomic::AtomicU64) -> u64 {
        self.metrics.iter().map(|m| f(m).load(Ordering::Relaxed)).sum()
    }

    fn writes(&self) -> u64 {
        self.sum(|m| &m.writes_proposed)
    }

    fn store_heartbeat(
        &mut self,
        stats: pd::meta::StoreStats,
        seen: &mut Option<u64>,
    ) -> Result<(), pd::PdClientError> {
        let version = self.client.store_heartbeat(self.store_id, stats)?;
        if *seen != Some(version) {
            let (stores, version) = self.client.stores()?;
            let stores: BTreeMap<u64, StoreAddrs> =
                stores.iter().map(|v| (v.store.id, StoreAddrs::from(&v.store))).collect();
            // (kept for a restart while PD is down; a failure only costs that)
            if let Err(e) = data_dir::write_stores(&self.data_dir, &stores) {
                tracing::warn!("caching the store directory: {e}");
            }
            self.directory.replace(stores);
            *seen = Some(version);
        }
        Ok(())
    }

    /// Answers the shards' asks: the ids of the splits leaders asked for,
    /// from PD's allocator, handed back to each leader's shard as its split;
    /// and for each silent follower, the region as PD has it. (An ask left
    /// unanswered when PD is down is asked again by its region.)
    fn pd_asks(&mut self) -> Result<(), pd::PdClientError> {
        let asks: Vec<_> = self.pd_asks.try_iter().collect();
        for ask in asks {
            match ask {
                PdAsk::Split { shard, region, epoch, split_key, peers } => {
                    let first = self.client.alloc_ids(SplitRequest::ids_needed(peers))?;
                    let split = SplitRequest::with_ids(split_key, first, peers);
                    tracing::info!(region, new_region = first, "split ids from PD");
                    self.directives.hand(DirectiveOp::Split(split), region, epoch, shard);
                }
                PdAsk::Membership { shard, region, peer_id } => {
                    let (current, reported) = match self.client.region_by_id(region) {
                        Ok(view) => (Some(Box::new(RegionMeta::from(&view.region))), view.leader.is_some()),
                        Err(PdClientError::Pd(PdError::UnknownRegion { .. })) => (None, false),
                        Err(e) => return Err(e),
                    };
                    let op = DirectiveOp::MembershipChecked { peer_id, current, reported };
                    self.directives.hand(op, region, transport::Epoch::default(), shard);
                }
            }
        }
        Ok(())
    }

    fn region_heartbeats(&mut self, seen: &mut RegionsSeen) -> Result<(), pd::PdClientError> {
        let led: Vec<LeaderReport> =
            self.leader_reports.iter().filter_map(LeaderReportReceiver::take_newest).flatten().collect();
        if led.is_empty() {
            return Ok(());
        }
        let mut reports = Vec::with_capacity(led.len());
        seen.metas.clear();
        for r in led {
            let before = seen.applied.insert(r.meta.id, r.applied_bytes_total);
            // (a new leader's count starts anew: no rate until its second report)
            let written = before.filter(|b| *b <= r.applied_bytes_total).map_or(0, |b| r.applied_bytes_total - b);
            seen.metas.insert(r.meta.id, (r.meta.clone(), r.leader.shard));
            reports.push(report_of(r, written));
        }
        seen.applied.retain(|id, _| seen.metas.contains_key(id));
        let mut refused: BTreeMap<String, Vec<u64>> = BTreeMap::new();
        let mut directives = vec![];
        let mut sent = Ok(());
        for batch in report_batches(reports) {
            let ids: Vec<u64> = batch.iter().map(|r| r.region.id).collect();
            let (outcomes, mut given) = match self.client.region_heartbeats(self.store_id, batch) {
                Ok(answer) => answer,
                Err(e) => {
                    // (what earlier batches brought back is still carried out)
                    sent = Err(e);
                    break;
                }
            };
            directives.append(&mut given);
            for (id, o) in ids.into_iter().zip(outcomes) {
                if let Err(e) = o {
                    let kind = match e {
                        PdError::StaleEpoch { .. } => "stale epoch".to_string(),
                        other => other.to_string(),
                    };
                    refused.entry(kind).or_default().push(id);
                }
            }
        }
        for (why, regions) in refused {
            tracing::warn!(?regions, "PD refused region reports: {why}");
        }
        let work = directives
            .into_iter()
            .filter_map(|d| {
                let (meta, shard) = seen.metas.get(&d.region_id)?;
                Some((d, meta.clone(), *shard))
            })
            .collect();
        self.directives.run(work);
        sent
    }
}

/// Bytes of a report, about (its keys, peers and fixed fields encoded).
fn report_bytes(r: &RegionReport) -> usize {
    r.region.start_key.len() + r.region.end_key.len() + 32 * r.region.peers.len() + 128
}

/// The reports in requests of at most `REGION_REPORTS_MAX` reports and
/// about a quarter of PD's message limit (an answer may carry a region per report).
fn report_batches(reports: Vec<RegionReport>) -> Vec<Vec<RegionReport>> {
    let bytes_max = pd::protocol::PD_MESSAGE_BYTES_MAX / 4;
    let mut batches: Vec<Vec<RegionReport>> = vec![];
    let mut bytes = 0;
    for r in reports {
        let b = report_bytes(&r);
        let full =
            batches.last().is_none_or(|last| last.len() >= pd::protocol::REGION_REPORTS_MAX || bytes + b > bytes_max);
        if full {
            batches.push(vec![]);
            bytes = 0;
        }
        bytes += b;
        batches.last_mut().expect("pushed above").push(r);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(id: u64, key_bytes: usize) -> RegionReport {
        let peer = pd::PeerInfo::voter(id + 1, 1, 0);
        RegionReport {
            region: pd::RegionInfo {
                id,
                start_key: vec![b'a'; key_bytes],
                end_key: vec![],
                epoch: pd::Epoch { conf_ver: 1, version: 1 },
                peers: vec![peer],
                max_peer_id: id + 1,
            },
            leader: peer,
            term: 1,
            stats: Default::default(),
            pending_peers: vec![],
        }
    }

    #[test]
    fn reports_go_in_batches_bounded_by_count_and_bytes_and_keep_their_order() {
        let many: Vec<_> = (0..2500).map(|i| report(i, 4)).collect();
        let batches = report_batches(many);
        assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), vec![1024, 1024, 452]);
        let big: Vec<_> = (0..100).map(|i| report(i, 60 << 10)).collect();
        let batches = report_batches(big);
        assert!(batches.len() > 1);
        for b in &batches {
            assert!(b.iter().map(report_bytes).sum::<usize>() <= pd::protocol::PD_MESSAGE_BYTES_MAX / 4);
        }
        let ids: Vec<u64> = batches.iter().flatten().map(|r| r.region.id).collect();
        assert_eq!(ids, (0..100).collect::<Vec<_>>());
        assert!(report_batches(vec![]).is_empty());
    }
}
