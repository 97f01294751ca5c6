//! A store process: its data directory (an ident file fixing the store id,
//! the cluster and the shard count at creation; a directory per shard:
//! `runtime::data_dir`) and one glommio executor per shard. The store learns
//! the cluster from PD (`runtime::pd_worker`, which talks to the shards
//! through `runtime::control`) or, for tests and fixed setups, from a
//! cluster spec.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use glommio::{LocalExecutorBuilder, Placement};

use crate::directory::{Directory, StoreAddrs};
use crate::runtime::control;
use crate::runtime::data_dir::{self, DataDirError, Ident};
use crate::runtime::directives::DirectiveRunner;
use crate::runtime::pd_worker::{self, Heartbeats, JoinError, PdOptions};
use crate::runtime::shard_task::{run_shard, ShardConfig, StartGate, TICK};
use crate::runtime::wal_ident::{self, WalRefusal};
use crate::spec::ClusterSpec;

/// io_memory per shard executor (the WAL's DMA buffers).
const SHARD_IO_MEMORY_BYTES: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {0} is not in the cluster spec")]
    UnknownStore(u64),
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// The data directory cannot be started this way.
    #[error("{}: {what}", .path.display())]
    Refused { path: PathBuf, what: String },
    #[error(
        "{} was created for store {} of cluster {} with {} shard(s); this start asks for store {} of cluster {} with {} shard(s) (the shard count is fixed when a store is created)",
        .path.display(), .found.store_id, .found.cluster_id, .found.shards, .want.store_id, .want.cluster_id, .want.shards
    )]
    IdentMismatch { path: PathBuf, found: Box<Ident>, want: Box<Ident> },
    #[error(transparent)]
    Join(#[from] JoinError),
    #[error(transparent)]
    Wal(#[from] WalRefusal),
    #[error("status address {addr}: {what}")]
    Status { addr: std::net::SocketAddr, what: String },
    #[error("start the executor of shard {shard}: {what}")]
    Executor { shard: u16, what: String },
    #[error("shard {shard}: {what}")]
    Shard { shard: u16, what: String },
    #[error("placement driver: {0}")]
    Pd(String),
}

/// Creates the ident file on first start, or checks it.
pub fn check_ident(data_dir: &Path, want: &Ident) -> Result<(), StoreError> {
    let path = data_dir::ident_path(data_dir);
    match data_dir::read_ident_of_store(data_dir)? {
        Some(found) if found.token != 0 && want.token == 0 => Err(StoreError::Refused {
            path,
            what: format!("store {} of a cluster run by PD: start it with --pd", found.store_id),
        }),
        Some(found) if !found.same_store(want) => {
            Err(StoreError::IdentMismatch { path, found: Box::new(found), want: Box::new(want.clone()) })
        }
        Some(_) => Ok(()),
        None => Ok(data_dir::write_ident(data_dir, want)?),
    }
}

/// Where a store learns the cluster from.
pub enum ClusterSource {
    /// A fixed cluster spec, and this store's id in it.
    Spec { spec: Arc<ClusterSpec>, store_id: u64 },
    /// The placement driver.
    Pd(PdOptions),
}

pub struct StoreOptions {
    pub source: ClusterSource,
    pub data_dir: PathBuf,
    pub stop: Arc<AtomicBool>,
    /// Memory the store's logs and state may use, split evenly over its
    /// shards; writes are refused past it. None: the default per shard.
    pub memory_limit_bytes: Option<usize>,
    /// Where to serve Prometheus metrics (`GET /metrics`), if anywhere.
    pub status_addr: Option<std::net::SocketAddr>,
    /// Applied log bytes past which a region snapshots (None: the default).
    pub snapshot_log_bytes_min: Option<usize>,
    /// State bytes past which a region splits (with PD only: it hands out
    /// the new ids); `None`: `REGION_SPLIT_BYTES_DEFAULT`.
    pub region_split_bytes: Option<u64>,
    /// Only to measure what batching buys (see `ShardLimits::batching`).
    pub no_batching: bool,
    /// How the shards' WALs treat a damaged record: refuse to open (strict),
    /// or drop it and catch the shard's regions up from their leaders
    /// (tolerant; `shard::catch_up`).
    pub wal_recovery: wal::RecoveryMode,
    /// Whether the status endpoint takes faults (`runtime::fault_control`:
    /// cut links, a slow WAL); test clusters only.
    pub fault_injection: bool,
}

impl StoreOptions {
    /// A store of `source` in `data_dir`, stopped by `stop`, with every
    /// other option at its default.
    pub fn new(source: ClusterSource, data_dir: PathBuf, stop: Arc<AtomicBool>) -> StoreOptions {
        StoreOptions {
            source,
            data_dir,
            stop,
            memory_limit_bytes: None,
            status_addr: None,
            snapshot_log_bytes_min: None,
            region_split_bytes: None,
            no_batching: false,
            wal_recovery: wal::RecoveryMode::Strict,
            fault_injection: false,
        }
    }
}

/// Runs every shard of the store until `stop` is set (or the process is killed).
pub fn run_store(opts: StoreOptions) -> Result<(), StoreError> {
    // before anything is contacted (PD, peers): an initialized store's WALs
    // are the ones it recorded, whole (runtime::wal_ident)
    if let Some(found) = data_dir::read_ident(&opts.data_dir)? {
        wal_ident::check_store(&opts.data_dir, &found)?;
    }
    let (ident, me, initial_regions, directory, pd) = match &opts.source {
        ClusterSource::Spec { spec, store_id } => {
            let s = spec.store(*store_id).ok_or(StoreError::UnknownStore(*store_id))?;
            let ident = Ident {
                format: data_dir::DATA_FORMAT_VERSION,
                cluster_id: spec.cluster_id,
                store_id: *store_id,
                shards: s.shards,
                token: 0,
                wals: None,
            };
            check_ident(&opts.data_dir, &ident)?;
            let me = StoreAddrs { peer_addr: s.peer_addr, client_addr: s.client_addr, shards: s.shards };
            (ident, me, spec.region_metas(), Arc::new(Directory::from_spec(spec)), None)
        }
        ClusterSource::Pd(pd_opts) => {
            let joined = pd_worker::join(pd_opts, &opts.data_dir, &opts.stop)?;
            let me =
                StoreAddrs { peer_addr: pd_opts.peer_addr, client_addr: pd_opts.client_addr, shards: pd_opts.shards };
            let pd = Some((joined.client, pd_opts.clone(), joined.registration));
            (joined.ident, me, joined.initial_regions, joined.directory, pd)
        }
    };
    // (as the start left it: with the WALs' nonces once the store is initialized)
    let ident = data_dir::read_ident(&opts.data_dir)?.unwrap_or(ident);
    let store_id = ident.store_id;
    let initial_regions = Arc::new(initial_regions);
    let metrics: crate::runtime::metrics::StoreMetrics = Arc::new((0..me.shards).map(|_| Arc::default()).collect());
    // with PD: the channels between its worker and the shards
    let (pd_ends, shard_ends) = match pd {
        Some(_) => {
            let (pd_ends, shard_ends) = control::channels(me.shards);
            (Some(pd_ends), shard_ends)
        }
        None => (None, vec![]),
    };
    let mut shard_ends = shard_ends.into_iter();
    let status = match opts.status_addr {
        None => None,
        Some(addr) => Some(
            crate::runtime::metrics::serve(addr, store_id, metrics.clone(), opts.fault_injection)
                .map_err(|e| StoreError::Status { addr, what: e.to_string() })?,
        ),
    };
    let (done_tx, done_rx) = std::sync::mpsc::channel::<(u16, Result<(), String>)>();
    let (ready_tx, ready_rx) = crossbeam_channel::bounded(usize::from(me.shards));
    let (go_tx, go_rx) = crossbeam_channel::bounded(usize::from(me.shards));
    let mut handles = vec![];
    for shard in 0..me.shards {
        // unpinned: on a small host the stores share the cores (docs/design.md, "Processes and threads");
        // pinning a shard per core is an operator's choice for later
        let (leader_reports, directives, pd_asks) = match (shard_ends.next(), &pd) {
            (Some(ends), Some((_, o, _))) => {
                (Some((o.region_heartbeat, ends.leader_reports)), Some(ends.directives), Some(ends.pd_asks))
            }
            _ => (None, None, None),
        };
        let cfg = ShardConfig {
            cluster_id: ident.cluster_id,
            store_id,
            shard,
            ident: ident.clone(),
            gate: Some(StartGate { ready: ready_tx.clone(), go: go_rx.clone() }),
            me,
            initial_regions: initial_regions.clone(),
            directory: directory.clone(),
            leader_reports,
            directives,
            pd_asks,
            region_split_bytes: opts.region_split_bytes,
            dir: data_dir::shard_dir(&opts.data_dir, shard),
            seed: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
                ^ (u64::from(shard) << 48),
            tick: TICK,
            stop: opts.stop.clone(),
            memory_bytes_max: opts.memory_limit_bytes.map(|m| m / usize::from(me.shards)),
            snapshot_log_bytes_min: opts.snapshot_log_bytes_min,
            no_batching: opts.no_batching,
            wal_recovery: opts.wal_recovery,
            metrics: metrics[usize::from(shard)].clone(),
        };
        let tx = done_tx.clone();
        let h = LocalExecutorBuilder::new(Placement::Unbound)
            .name(&format!("store{store_id}-shard{shard}"))
            .io_memory(SHARD_IO_MEMORY_BYTES)
            .spawn(move || async move {
                let r = run_shard(cfg).await.map_err(|e| e.to_string());
                let _ = tx.send((shard, r));
            })
            .map_err(|e| StoreError::Executor { shard, what: e.to_string() })?;
        handles.push((shard, h));
    }
    drop(done_tx);
    drop(ready_tx);
    let initialized = initialize(&opts.data_dir, &ident, &ready_rx);
    let go = initialized.is_ok();
    for _ in 0..me.shards {
        // (a shard that already ended took no message: the channel holds one per shard)
        let _ = go_tx.send(go);
    }
    drop(go_tx);
    if let Err(e) = initialized {
        opts.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // (a shard that did not start says why better than the barrier can)
        let shard_error = wait_for_shards(handles, done_rx, &opts.stop);
        if let Some(s) = status {
            s.stop();
        }
        return Err(shard_error.unwrap_or(e));
    }
    let heartbeats = match pd.zip(pd_ends) {
        None => None,
        Some(((client, o, registration), ends)) => Some(
            Heartbeats {
                client,
                store_id,
                data_dir: opts.data_dir.clone(),
                metrics: metrics.clone(),
                leader_reports: ends.leader_reports,
                directory,
                store_interval: o.store_heartbeat,
                region_interval: o.region_heartbeat,
                stop: opts.stop.clone(),
                directives: DirectiveRunner::new(ends.directives),
                pd_asks: ends.pd_asks,
                registration,
            }
            .spawn()
            .map_err(|e| StoreError::Pd(format!("start the heartbeat thread: {e}")))?,
        ),
    };
    let first_error = wait_for_shards(handles, done_rx, &opts.stop);
    if let Some(s) = status {
        s.stop();
    }
    if let Some(h) = heartbeats {
        let _ = h.join();
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// The start barrier: waits until every shard's WAL identity is durable
/// and its shard booted, and records their nonces in IDENT if the store is
/// not initialized yet — before any shard sends or serves anything (a crash
/// before that point starts again as a first start).
fn initialize(
    data_dir: &Path,
    ident: &Ident,
    ready: &crossbeam_channel::Receiver<(u16, u64)>,
) -> Result<(), StoreError> {
    let mut nonces = vec![None; usize::from(ident.shards)];
    for (shard, nonce) in ready.iter() {
        nonces[usize::from(shard)] = Some(nonce);
    }
    // (the iteration ends when every shard reported or ended: all senders are gone)
    let Some(nonces) = nonces.into_iter().collect::<Option<Vec<u64>>>() else {
        return Err(StoreError::Refused {
            path: data_dir.to_path_buf(),
            what: "a shard ended before its WAL was ready".into(),
        });
    };
    match &ident.wals {
        Some(recorded) => {
            assert_eq!(recorded, &nonces, "every shard's WAL was checked against IDENT at its start");
        }
        None => {
            data_dir::write_ident(data_dir, &Ident { wals: Some(nonces), ..ident.clone() })?;
            tracing::info!(store = ident.store_id, "store initialized: every shard's WAL recorded in IDENT");
        }
    }
    Ok(())
}

/// Waits for the shards' executors. The first shard to end ends the store
/// (`stop` is set): a store with a dead shard must not go on serving the
/// others as if nothing happened. Returns the first error.
fn wait_for_shards(
    handles: Vec<(u16, glommio::ExecutorJoinHandle<()>)>,
    done: std::sync::mpsc::Receiver<(u16, Result<(), String>)>,
    stop: &AtomicBool,
) -> Option<StoreError> {
    let mut first_error = None;
    let mut ended = 0;
    while ended < handles.len() {
        match done.recv() {
            Ok((shard, r)) => {
                ended += 1;
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                if let Err(what) = r {
                    first_error.get_or_insert(StoreError::Shard { shard, what });
                }
            }
            Err(_) => break, // a shard's executor died without reporting (a panic)
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for (shard, h) in handles {
        if let Err(e) = h.join() {
            first_error.get_or_insert(StoreError::Shard { shard, what: format!("executor: {e}") });
        }
    }
    first_error
}
