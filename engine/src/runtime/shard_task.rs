//! One shard on its glommio executor: the sans-IO `Shard` with real I/O
//! around it — the WAL through `GroupCommit` (one write + fdatasync per
//! persist batch, at most one in flight), the transport endpoint for peer
//! frames and snapshot streams, the client port, a raft tick timer, and
//! snapshot files written, read, moved and removed on glommio's blocking
//! pool (never on the loop's thread).

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use transport::{Destination, Endpoint, EndpointConfig, Incoming};
use wal::disk::GlommioDisk;
use wal::{GroupCommit, Wal, WalOptions};

use crate::client::protocol::{ClientOp, ClientReply, ClientResponse};
use crate::directory::{Directory, StoreAddrs};
use crate::error::RegionError;
use crate::region::meta::RegionMeta;
use crate::runtime::client_service::{self, ClientQueues};
use crate::shard::core::{regions_to_compact, LeaderReport, RegionInit};
use crate::shard::recover::{load_regions, load_tombstones};
use crate::shard::{Input, Output, Response, Shard, ShardLimits};
use crate::snapshot::files::{self, SnapshotFileError};
use transport::net::Notify;

/// Time between raft ticks (election after 10–20 ticks: 1–2 s).
pub const TICK: Duration = Duration::from_millis(100);
/// How often a shard copies its figures for the status endpoint.
const METRICS_PUBLISH_INTERVAL: Duration = Duration::from_millis(100);
/// Peer frames the loop takes per iteration; more wait in the transport's
/// bounded inbox (and TCP pushes back on their senders).
pub const RAFT_FRAMES_PER_ITERATION_MAX: usize = 1024;
/// Inputs' capacity the loop keeps between iterations (what a burst grew
/// beyond it is given back).
const INPUTS_KEPT_MAX: usize = 64 << 10;

pub struct ShardConfig {
    pub cluster_id: u64,
    pub store_id: u64,
    pub shard: u16,
    /// This store's addresses (the shard listens on base + its index).
    pub me: StoreAddrs,
    /// The regions the store was given at its first start (from PD or the
    /// spec): a shard whose WAL is empty creates those with a peer on it.
    /// Afterwards its WAL is authoritative.
    pub initial_regions: Arc<Vec<RegionMeta>>,
    /// Every store's addresses; read again whenever its version moves.
    pub directory: Arc<Directory>,
    /// Where the shard publishes its leaders' reports for PD, and how often.
    pub leader_reports: Option<(Duration, Arc<std::sync::Mutex<Vec<LeaderReport>>>)>,
    /// This shard's directory (its WAL and snapshots live inside).
    pub dir: PathBuf,
    pub seed: u64,
    pub tick: Duration,
    pub stop: Arc<AtomicBool>,
    pub memory_bytes_max: Option<usize>,
    /// Applied log bytes below which a region does not snapshot (None: the default).
    pub snapshot_log_bytes_min: Option<usize>,
    /// Measuring what batching buys: one fdatasync per region ready, one frame per message.
    pub no_batching: bool,
    pub metrics: Arc<crate::runtime::metrics::ShardMetrics>,
}

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("open the WAL in {dir}: {source}")]
    OpenDisk { dir: String, source: std::io::Error },
    #[error("open the WAL in {dir}: {source}")]
    OpenWal { dir: String, source: wal::OpenError },
    #[error("the WAL in {dir} lost records in a tolerant recovery; this store cannot vote safely until caught up (not supported yet)")]
    NeedsCatchUp { dir: String },
    #[error("load regions: {0}")]
    Load(#[from] crate::shard::recover::LoadError),
    #[error("transport: {0}")]
    Transport(#[from] transport::net::StartError),
    #[error("client port {addr}: {source}")]
    ClientPort { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("region {region}: loading its snapshot: {source}")]
    LoadSnapshot { region: u64, source: SnapshotFileError },
    #[error("snapshot directory: {0}")]
    SnapshotDir(SnapshotFileError),
}

/// Runs blocking file work on glommio's blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    glommio::executor().spawn_blocking(f).await
}

/// Runs a shard until `stop` is set.
pub async fn run_shard(cfg: ShardConfig) -> Result<(), ShardError> {
    let me = cfg.me;
    let wal_dir = cfg.dir.join("wal");
    let dir_err = |source| ShardError::OpenDisk { dir: wal_dir.display().to_string(), source };
    std::fs::create_dir_all(&wal_dir).map_err(dir_err)?;
    // the directories themselves must survive a crash, or a store could come back empty
    for d in [cfg.dir.as_path(), cfg.dir.parent().unwrap_or(&cfg.dir)] {
        std::fs::File::open(d).and_then(|f| f.sync_all()).map_err(dir_err)?;
    }
    let disk = GlommioDisk::open(&wal_dir)
        .await
        .map_err(|source| ShardError::OpenDisk { dir: wal_dir.display().to_string(), source })?;
    let opts = WalOptions::default();
    let mut limits = ShardLimits::for_wal(&opts);
    if let Some(m) = cfg.memory_bytes_max {
        limits = limits.with_memory_limit(m);
    }
    if let Some(b) = cfg.snapshot_log_bytes_min {
        limits = limits.with_snapshot_log_min(b);
    }
    limits = limits.with_batching(!cfg.no_batching);
    let snap_dir = files::snapshot_dir(&cfg.dir);
    let (wal, _report) = Wal::open(disk, opts)
        .await
        .map_err(|source| ShardError::OpenWal { dir: wal_dir.display().to_string(), source })?;
    let mut shard = Shard::new(cfg.store_id, cfg.shard, cfg.seed, limits);
    if wal.regions().next().is_none() {
        // first start: the store's initial regions that have a peer on this shard
        let shard_dir = cfg.dir.clone();
        blocking(move || files::sweep(&shard_dir, &Default::default())).await.map_err(ShardError::SnapshotDir)?;
        for m in cfg.initial_regions.iter().cloned() {
            if m.peer_on(cfg.store_id).is_some_and(|p| p.shard == cfg.shard) {
                // every region starts from the empty snapshot, durable before the WAL names it
                let (init, snap) = RegionInit::bootstrap(m);
                let dir = snap_dir.clone();
                blocking(move || files::write(&dir, &snap)).await.map_err(ShardError::SnapshotDir)?;
                shard.create_region(init);
            }
        }
    } else {
        let loaded = load_regions(&wal).await?;
        for (region, removed_peer) in load_tombstones(&wal)? {
            shard.add_tombstone(region, removed_peer);
        }
        // what the WAL does not name is a leftover of a crash
        let named: std::collections::BTreeSet<_> = loaded.iter().filter_map(|r| r.snapshot).collect();
        let shard_dir = cfg.dir.clone();
        let swept = blocking(move || files::sweep(&shard_dir, &named)).await.map_err(ShardError::SnapshotDir)?;
        if swept > 0 {
            tracing::info!(shard = cfg.shard, "removed {swept} snapshot files no region needs");
        }
        for r in loaded {
            let snapshot = match r.snapshot {
                None => None,
                Some(id) => {
                    let dir = snap_dir.clone();
                    let snap = blocking(move || files::read(&dir, id))
                        .await
                        .map_err(|source| ShardError::LoadSnapshot { region: id.region, source })?;
                    Some(snap)
                }
            };
            shard.create_region(RegionInit { meta: r.meta, storage: r.storage, snapshot, fresh: false });
        }
    }
    let gc = GroupCommit::new(wal);
    let gc_task = {
        let gc = gc.clone();
        glommio::spawn_local(async move {
            if let Err(e) = gc.run().await {
                // an fdatasync failure: nothing after it may be acknowledged
                eprintln!("ringraft: fatal WAL error, stopping: {e}");
                std::process::abort();
            }
        })
    };

    let ep_cfg = EndpointConfig::new(
        cfg.cluster_id,
        cfg.store_id,
        cfg.shard,
        me.peer_addr_of(cfg.shard),
        files::incoming_dir(&cfg.dir),
    );
    let (endpoint, inbox) = Endpoint::start(ep_cfg)?;
    let mut directory_seen = 0;
    let wake = Rc::new(Notify::default());
    let raft_in: Rc<RefCell<Vec<Incoming>>> = Rc::default();
    let raft_in_space = Rc::new(Notify::default());
    let forward = {
        let (raft_in, wake, space) = (raft_in.clone(), wake.clone(), raft_in_space.clone());
        glommio::spawn_local(async move {
            loop {
                // keep the inbox's bound: take more only when the loop took the last
                while raft_in.borrow().len() >= RAFT_FRAMES_PER_ITERATION_MAX {
                    space.wait().await;
                }
                let Some(item) = inbox.recv().await else { return };
                raft_in.borrow_mut().push(item);
                wake.notify();
            }
        })
    };
    let client_addr = me.client_addr_of(cfg.shard);
    let listener =
        transport::net::listen(client_addr).map_err(|source| ShardError::ClientPort { addr: client_addr, source })?;
    let queues = Rc::new(ClientQueues::default());
    let clients = glommio::spawn_local(client_service::serve(listener, queues.clone(), wake.clone()));

    let persisted: Rc<Cell<Option<u64>>> = Rc::default();
    // inputs produced by background file work (snapshots written or read)
    let file_inputs: Rc<RefCell<Vec<Input>>> = Rc::default();
    // request id in the shard → (connection, the client's id)
    let mut routes: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    let mut next_request = 1u64;
    let mut next_tick = Instant::now() + cfg.tick;
    let mut last_publish = Instant::now();
    let mut last_report = Instant::now();
    // (kept across iterations: their memory is reused, not faulted in afresh)
    let mut inputs: Vec<Input> = vec![];
    while !cfg.stop.load(Ordering::Relaxed) {
        if cfg.directory.version() != directory_seen {
            // a store registered or moved (PD): its shards' addresses, before sending anything
            directory_seen = cfg.directory.version();
            for (id, s) in cfg.directory.all() {
                for i in 0..s.shards {
                    endpoint.set_address(Destination { store_id: id, shard: i }, s.peer_addr_of(i));
                }
            }
        }
        inputs.clear();
        let now = Instant::now();
        if now >= next_tick {
            inputs.push(Input::Tick);
            next_tick += cfg.tick;
            if next_tick < now {
                next_tick = now + cfg.tick; // the loop fell behind: do not tick in a burst
            }
        }
        let frames = std::mem::take(&mut *raft_in.borrow_mut());
        raft_in_space.notify();
        for item in frames {
            match item {
                Incoming::Raft { batch, .. } => inputs.extend(batch.iter().map(|e| Input::Raft(e.to_envelope()))),
                Incoming::Snapshot { envelope, path, .. } => {
                    // read and check it off the loop; the shard steps it once it is whole
                    let (file_inputs, wake) = (file_inputs.clone(), wake.clone());
                    glommio::spawn_local(async move {
                        let p = path.clone();
                        match blocking(move || files::read_path(&p)).await {
                            Ok(snap) => {
                                let snapshot = Box::new(snap);
                                file_inputs.borrow_mut().push(Input::Snapshot { envelope, snapshot, file: path });
                                wake.notify();
                            }
                            Err(e) => {
                                // the leader sees no progress and sends another
                                tracing::warn!(region = envelope.region_id, "received snapshot refused: {e}");
                                remove_in_background(path);
                            }
                        }
                    })
                    .detach();
                }
            }
        }
        inputs.append(&mut file_inputs.borrow_mut());
        for r in endpoint.take_snapshot_reports() {
            inputs.push(Input::SnapshotSent { region: r.region_id, to_peer: r.to_peer, ok: r.outcome.is_ok() });
        }
        let (blocking_regions, active_seq) = gc.take_blocking();
        let compact = regions_to_compact(&blocking_regions, active_seq);
        if !compact.is_empty() {
            inputs.push(Input::CompactRequested { regions: compact });
        }
        let requests = std::mem::take(&mut *queues.requests.borrow_mut());
        cfg.metrics.client_requests.fetch_add(requests.len() as u64, Ordering::Relaxed);
        for (conn, req) in requests {
            if req.store_id != cfg.store_id {
                let result =
                    Err(RegionError::StoreNotMatch { request_store: req.store_id, actual_store: cfg.store_id });
                queues.reply(conn, &ClientResponse { id: req.id, result });
                continue;
            }
            let request = next_request;
            next_request += 1;
            routes.insert(request, (conn, req.id));
            let (region, epoch) = (req.region, req.epoch());
            inputs.push(match req.op {
                ClientOp::Get { key } => Input::Read { request, region, key },
                ClientOp::Scan { start, end, limit } => {
                    Input::Scan { request, region, start, end, limit: limit as usize }
                }
                ClientOp::TransferLeader { to_peer } => Input::TransferLeader { request, region, to_peer },
                ClientOp::ChangePeer(change) => Input::ChangePeer { request, region, epoch, change },
                ClientOp::DescribeRegion => Input::DescribeRegion { request, region },
                ClientOp::Write(command) => Input::Write { request, region, epoch, command },
            });
        }
        if let Some(batch) = persisted.take() {
            inputs.push(Input::Persisted { batch });
        }
        for (dest, regions) in endpoint.take_unreachable() {
            inputs.push(Input::Unreachable { regions: regions.into_iter().collect(), store_id: dest.store_id });
        }
        if inputs.is_empty() && !shard.has_ready() {
            let wait = next_tick.saturating_duration_since(Instant::now());
            futures_lite::future::or(wake.wait(), glommio::timer::sleep(wait)).await;
            continue;
        }
        shard.recycle_frame_buffers(endpoint.take_spent_buffers());
        let mut outputs = shard.step(inputs.drain(..));
        for out in outputs.drain(..) {
            match out {
                Output::Persist { batch, writes, installs } => {
                    let (gc, persisted, wake) = (gc.clone(), persisted.clone(), wake.clone());
                    let dir = snap_dir.clone();
                    glommio::spawn_local(async move {
                        // received snapshots go into place before the writes that record them
                        for (from, id) in installs {
                            let dir = dir.clone();
                            if let Err(e) = blocking(move || files::install(&from, &dir, id)).await {
                                eprintln!(
                                    "ringraft: region {}: installing a received snapshot failed, stopping: {e}",
                                    id.region
                                );
                                std::process::abort();
                            }
                        }
                        let mut last = 0;
                        for (region, write) in writes {
                            last = loop {
                                match gc.append(region, write.clone()) {
                                    Ok(t) => break t,
                                    Err(wal::AppendError::Busy { .. }) => {
                                        glommio::timer::sleep(Duration::from_millis(1)).await;
                                    }
                                    Err(e) => {
                                        // the shard's state and its log would part ways: stop the process
                                        eprintln!(
                                            "ringraft: region {region}: the WAL refused a shard write, stopping: {e}"
                                        );
                                        std::process::abort();
                                    }
                                }
                            };
                        }
                        if let Err(e) = gc.wait(last).await {
                            eprintln!("ringraft: fatal WAL error, stopping: {e}");
                            std::process::abort();
                        }
                        persisted.set(Some(batch));
                        wake.notify();
                    })
                    .detach();
                }
                Output::Frames(frames) => endpoint.send(frames),
                Output::WriteSnapshot(snap) => {
                    let (file_inputs, wake, dir) = (file_inputs.clone(), wake.clone(), snap_dir.clone());
                    glommio::spawn_local(async move {
                        let id = snap.id();
                        let result = blocking(move || files::write(&dir, &snap)).await.map_err(|e| e.to_string());
                        file_inputs.borrow_mut().push(Input::SnapshotWritten { id, result });
                        wake.notify();
                    })
                    .detach();
                }
                Output::SendSnapshot { to, envelope, id } => {
                    endpoint.send_snapshot(to, envelope, files::path_of(&snap_dir, id));
                }
                Output::RemoveSnapshot(id) => {
                    let path = files::path_of(&snap_dir, id);
                    remove_in_background(path);
                }
                Output::DiscardIncoming(path) => remove_in_background(path),
                Output::Reply { request, result } => {
                    if let Some((conn, id)) = routes.remove(&request) {
                        let result = result.map(|r| match r {
                            Response::Done => ClientReply::Done,
                            Response::Cas(ok) => ClientReply::Cas(ok),
                            Response::Value(v) => ClientReply::Value(v),
                            Response::Rows(rows) => ClientReply::Rows(rows),
                            Response::Region(meta) => ClientReply::Region(meta),
                        });
                        queues.reply(conn, &ClientResponse { id, result });
                    }
                }
            }
        }
        shard.recycle_outputs(outputs);
        inputs.shrink_to(INPUTS_KEPT_MAX);
        if last_publish.elapsed() >= METRICS_PUBLISH_INTERVAL {
            last_publish = Instant::now();
            publish(&cfg.metrics, &shard, &endpoint, &gc);
        }
        if let Some((every, slot)) = &cfg.leader_reports {
            if last_report.elapsed() >= *every {
                last_report = Instant::now();
                *slot.lock().expect("not poisoned") = shard.leader_reports();
            }
        }
        // let the I/O tasks run between iterations
        futures_lite::future::yield_now().await;
    }
    endpoint.shutdown();
    gc.stop();
    drop((forward, clients));
    gc_task.await;
    Ok(())
}

/// Removes a file no longer needed; a failure is only logged (the next
/// start sweeps what the WAL does not name).
fn remove_in_background(path: PathBuf) {
    glommio::spawn_local(async move {
        let p = path.clone();
        if let Err(e) = blocking(move || files::remove(&p)).await {
            tracing::warn!("{e}");
        }
    })
    .detach();
}

/// Copies the shard's figures to where the status thread reads them.
fn publish(
    m: &crate::runtime::metrics::ShardMetrics,
    shard: &Shard,
    endpoint: &Endpoint,
    gc: &GroupCommit<GlommioDisk>,
) {
    let r = Ordering::Relaxed;
    let st = shard.stats();
    m.regions.store(shard.regions().count() as u64, r);
    m.leaders.store(shard.regions().filter(|g| g.is_leader()).count() as u64, r);
    m.proposals.store(st.proposals, r);
    m.iterations.store(st.iterations, r);
    m.writes_proposed.store(st.writes_proposed, r);
    m.persist_batches.store(st.persist_batches, r);
    m.region_writes_persisted.store(st.region_writes_persisted, r);
    m.entries_applied.store(st.entries_applied, r);
    m.snapshots_taken.store(st.snapshots_taken, r);
    m.snapshots_sent.store(st.snapshots_sent, r);
    m.snapshots_installed.store(st.snapshots_installed, r);
    m.memory_bytes.store(shard.memory_bytes() as u64, r);
    let lag: u64 = shard.regions().map(|g| g.raw.raft.raft_log.committed.saturating_sub(g.applied)).sum();
    m.apply_lag_entries.store(lag, r);
    m.cpu_us.store(thread_cpu_us(), r);
    let t = endpoint.stats();
    m.raft_frames_sent.store(t.frames_sent, r);
    m.raft_messages_sent.store(t.messages_sent, r);
    m.raft_frames_dropped.store(t.frames_dropped_total(), r);
    let wal = gc.wal();
    let ws = wal.stats();
    m.wal_segments_purged.store(ws.segments_recycled + ws.segments_removed, r);
    m.wal_spares_created.store(ws.spares_created, r);
    m.wal_spares_recycled.store(ws.spares_recycled, r);
    let h = wal.flush_latency_us();
    if !h.is_empty() {
        m.fsync_latency_us_p50.store(h.value_at_quantile(0.5), r);
        m.fsync_latency_us_p99.store(h.value_at_quantile(0.99), r);
    }
}

/// CPU time the calling thread has used, in microseconds.
fn thread_cpu_us() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec we own
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}
