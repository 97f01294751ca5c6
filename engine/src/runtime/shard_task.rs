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

use crate::client::protocol::{ClientReply, ClientResponse};
use crate::directory::{Directory, StoreAddrs};
use crate::driver::persist_batch;
use crate::region::meta::RegionMeta;
use crate::runtime::client_service::{self, ClientQueues};
use crate::runtime::control::{self, DirectiveReceiver, LeaderReportSender};
use crate::runtime::data_dir::Ident;
use crate::runtime::directives;
use crate::runtime::snapshot_files::{blocking, ShardFiles};
use crate::runtime::wal_ident::{self, WalIdent, WalRefusal};
use crate::shard::boot::{boot, BootError, BootOptions, BootReport};
use crate::shard::regions_to_compact;
use crate::shard::{Input, Output, Response, Shard, ShardLimits};
use crate::snapshot::files;
use crate::snapshot::SnapshotStore;
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

/// The store's start barrier: a shard reports its WAL's nonce once its WAL
/// identity is durable and the shard booted, then waits for the store to
/// say go (`true`) — the store records every nonce in its IDENT first — or
/// to give up (anything else: the shard returns without serving).
pub struct StartGate {
    pub ready: crossbeam_channel::Sender<(u16, u64)>,
    pub go: crossbeam_channel::Receiver<bool>,
}

pub struct ShardConfig {
    pub cluster_id: u64,
    pub store_id: u64,
    pub shard: u16,
    /// The store's IDENT as it was at the start (its WAL nonces, if the
    /// store is initialized: `runtime::wal_ident`).
    pub ident: Ident,
    /// Where the shard reports that its WAL is ready and waits to serve.
    pub gate: Option<StartGate>,
    /// This store's addresses (the shard listens on base + its index).
    pub me: StoreAddrs,
    /// The regions the store was given at its first start (from PD or the
    /// spec): a shard whose WAL is empty creates those with a peer on it.
    /// Afterwards its WAL is authoritative.
    pub initial_regions: Arc<Vec<RegionMeta>>,
    /// Every store's addresses; read again whenever its version moves.
    pub directory: Arc<Directory>,
    /// Where the shard publishes its leaders' reports for PD, and how often
    /// (`runtime::control`).
    pub leader_reports: Option<(Duration, LeaderReportSender)>,
    /// PD's directives for this shard's leaders, as inputs with internal
    /// request ids (`runtime::control`).
    pub directives: Option<DirectiveReceiver>,
    /// Where the shard's leaders ask the PD worker for split ids; `None`
    /// (no PD): regions never split by size.
    pub pd_asks: Option<crossbeam_channel::Sender<control::PdAsk>>,
    /// State bytes past which a region splits (`None`: the default).
    pub region_split_bytes: Option<u64>,
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
    /// Strict, or tolerant: damaged records dropped, regions caught up (`shard::catch_up`).
    pub wal_recovery: wal::RecoveryMode,
    pub metrics: Arc<crate::runtime::metrics::ShardMetrics>,
}

#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    #[error("open the WAL in {dir}: {source}")]
    OpenDisk { dir: String, source: std::io::Error },
    #[error("open the WAL in {dir}: {source}")]
    OpenWal { dir: String, source: wal::OpenError },
    #[error("{0}")]
    Boot(#[from] BootError),
    #[error("{0}")]
    Wal(#[from] WalRefusal),
    #[error("transport: {0}")]
    Transport(#[from] transport::net::StartError),
    #[error("client port {addr}: {source}")]
    ClientPort { addr: std::net::SocketAddr, source: std::io::Error },
}

/// Runs a shard until `stop` is set.
pub async fn run_shard(mut cfg: ShardConfig) -> Result<(), ShardError> {
    let (shard, wal, snapshots, wal_ident) = open_shard(&cfg).await?;
    if let Some(StartGate { ready, go }) = cfg.gate.take() {
        // nothing is sent or served before the store recorded every WAL
        // (blocking this executor's thread is fine: nothing else runs on it
        // yet); the sender goes at once, so the store's wait ends when every
        // shard has reported or ended
        let reported = ready.send((cfg.shard, wal_ident.nonce)).is_ok();
        drop(ready);
        if !reported || go.recv() != Ok(true) {
            return Ok(());
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
    // (a disk that cannot give the seal a segment must not keep a stop
    // waiting; and its retries count ticks, which the loop gives only later)
    let stopped = async {
        while !cfg.stop.load(Ordering::Relaxed) {
            glommio::timer::sleep(cfg.tick).await;
            gc.tick();
        }
    };
    let sealed = futures_lite::future::or(async { Some(crate::driver::seal_recovered(&gc).await) }, async {
        stopped.await;
        None
    })
    .await;
    match sealed {
        Some(Ok(())) => {}
        // the writer task has reported the failure and is aborting the store
        Some(Err(_)) => return Ok(()),
        // stopped first: nothing was answered, so nothing waits for the seal
        // (the writer is dropped with its task; a stop would wait for it)
        None => return Ok(()),
    }
    let mut task = ShardTask::start(&cfg, shard, gc.clone(), snapshots, wal_ident)?;
    task.run(&cfg).await;
    let ShardTask { endpoint, _forward: forward, _clients: clients, .. } = task;
    endpoint.shutdown();
    gc.stop();
    drop((forward, clients));
    gc_task.await;
    Ok(())
}

/// Opens the shard's directory and WAL — checked against the store's IDENT,
/// or given its identity at a first start (`runtime::wal_ident`) — and
/// boots the shard from it (`shard::boot`, the path the simulator runs too).
async fn open_shard(cfg: &ShardConfig) -> Result<(Shard, Wal<GlommioDisk>, ShardFiles, WalIdent), ShardError> {
    let wal_dir = cfg.dir.join("wal");
    let wal_ident = wal_ident::prepare(&wal_dir, &cfg.ident, cfg.shard)?;
    let dir_err = |source| ShardError::OpenDisk { dir: wal_dir.display().to_string(), source };
    std::fs::create_dir_all(&wal_dir).map_err(dir_err)?;
    // the directories themselves must survive a crash, or a store could come back empty
    for d in [cfg.dir.as_path(), cfg.dir.parent().unwrap_or(&cfg.dir)] {
        std::fs::File::open(d).and_then(|f| f.sync_all()).map_err(dir_err)?;
    }
    let disk = GlommioDisk::open(&wal_dir).await.map_err(dir_err)?;
    let opts = WalOptions { recovery_mode: cfg.wal_recovery, ..WalOptions::default() };
    let mut limits = ShardLimits::for_wal(&opts);
    if let Some(m) = cfg.memory_bytes_max {
        limits = limits.with_memory_limit(m);
    }
    if let Some(b) = cfg.snapshot_log_bytes_min {
        limits = limits.with_snapshot_log_min(b);
    }
    limits = match (&cfg.pd_asks, cfg.region_split_bytes) {
        // (without PD no one hands out a new region's ids)
        (None, _) => limits.with_region_split_bytes(u64::MAX),
        (Some(_), Some(b)) => limits.with_region_split_bytes(b),
        (Some(_), None) => limits,
    };
    limits = limits.with_batching(!cfg.no_batching);
    let (wal, _report) = Wal::open(disk, opts)
        .await
        .map_err(|source| ShardError::OpenWal { dir: wal_dir.display().to_string(), source })?;
    let snapshots = ShardFiles::new(cfg.dir.clone());
    let boot_opts = BootOptions {
        store_id: cfg.store_id,
        shard: cfg.shard,
        seed: cfg.seed,
        limits,
        initial_regions: &cfg.initial_regions,
    };
    let (shard, report) = boot(&wal, &snapshots, boot_opts).await?;
    match report {
        BootReport::FirstStart { regions } => {
            tracing::info!(shard = cfg.shard, regions, "first start: initial regions created")
        }
        BootReport::Recovered { regions, tombstones, swept } => {
            tracing::info!(shard = cfg.shard, regions, tombstones, swept, "recovered from the WAL");
        }
    }
    Ok((shard, wal, snapshots, wal_ident))
}

/// A running shard: the `Shard` and the I/O around it.
struct ShardTask {
    shard: Shard,
    gc: GroupCommit<GlommioDisk>,
    snapshots: ShardFiles,
    endpoint: Endpoint,
    /// Wakes the loop: a frame, a client request, a finished persist or file job.
    wake: Rc<Notify>,
    /// Peer frames forwarded from the transport's inbox, at most
    /// `RAFT_FRAMES_PER_ITERATION_MAX`; `raft_in_space` says the loop took them.
    raft_in: Rc<RefCell<Vec<Incoming>>>,
    raft_in_space: Rc<Notify>,
    queues: Rc<ClientQueues>,
    /// What persist tasks report: batches written, batches durable.
    persist_inputs: Rc<RefCell<Vec<Input>>>,
    /// Inputs produced by background file work (snapshots written or read).
    file_inputs: Rc<RefCell<Vec<Input>>>,
    /// Request id in the shard → (connection, the client's id).
    routes: BTreeMap<u64, (u64, u64)>,
    /// Split requests handed to the shard, and when (their duration is a metric).
    splits_started: BTreeMap<u64, Instant>,
    next_request: u64,
    directory_seen: u64,
    /// (kept across iterations: their memory is reused, not faulted in afresh)
    inputs: Vec<Input>,
    /// The WAL's identity as last written, and whether a rewrite is running.
    wal_ident: Rc<Cell<WalIdent>>,
    wal_ident_writing: Rc<Cell<bool>>,
    /// What the shard was last told of the WAL's disk (`driver::disk_full_change`).
    disk_full_told: bool,
    wal_dir: PathBuf,
    _forward: glommio::Task<()>,
    _clients: glommio::Task<()>,
}

impl ShardTask {
    /// Starts the transport endpoint, the task forwarding its frames, and
    /// the client port.
    fn start(
        cfg: &ShardConfig,
        shard: Shard,
        gc: GroupCommit<GlommioDisk>,
        snapshots: ShardFiles,
        wal_ident: WalIdent,
    ) -> Result<ShardTask, ShardError> {
        let me = &cfg.me;
        let ep_cfg = EndpointConfig::new(
            cfg.cluster_id,
            cfg.store_id,
            cfg.shard,
            me.peer_addr_of(cfg.shard),
            files::incoming_dir(&cfg.dir),
        );
        let (endpoint, inbox) = Endpoint::start(ep_cfg)?;
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
        let listener = transport::net::listen(client_addr)
            .map_err(|source| ShardError::ClientPort { addr: client_addr, source })?;
        let queues = Rc::new(ClientQueues::default());
        let clients =
            glommio::spawn_local(client_service::serve(listener, queues.clone(), wake.clone(), cfg.cluster_id));
        Ok(ShardTask {
            shard,
            gc,
            snapshots,
            endpoint,
            wake,
            raft_in,
            raft_in_space,
            queues,
            persist_inputs: Rc::default(),
            file_inputs: Rc::default(),
            routes: BTreeMap::new(),
            splits_started: BTreeMap::new(),
            next_request: 1,
            directory_seen: 0,
            inputs: vec![],
            wal_ident: Rc::new(Cell::new(wal_ident)),
            wal_ident_writing: Rc::default(),
            disk_full_told: false,
            wal_dir: cfg.dir.join("wal"),
            _forward: forward,
            _clients: clients,
        })
    }

    /// The loop: gather inputs, step the shard, carry out its outputs.
    async fn run(&mut self, cfg: &ShardConfig) {
        let mut next_tick = Instant::now() + cfg.tick;
        let mut last_publish = Instant::now();
        let mut last_report = Instant::now();
        while !cfg.stop.load(Ordering::Relaxed) {
            self.follow_directory(cfg);
            self.inputs.clear();
            let now = Instant::now();
            if now >= next_tick {
                self.inputs.push(Input::Tick);
                self.gc.tick(); // (a spare segment that failed is tried again on the shard's ticks)
                next_tick += cfg.tick;
                if next_tick < now {
                    next_tick = now + cfg.tick; // the loop fell behind: do not tick in a burst
                }
            }
            self.gather_inputs(cfg);
            if self.inputs.is_empty() && !self.shard.has_ready() {
                let wait = next_tick.saturating_duration_since(Instant::now());
                futures_lite::future::or(self.wake.wait(), glommio::timer::sleep(wait)).await;
                continue;
            }
            self.shard.recycle_frame_buffers(self.endpoint.take_spent_buffers());
            let began = Instant::now();
            let mut outputs = self.shard.step(self.inputs.drain(..));
            for out in outputs.drain(..) {
                self.carry_out(cfg, out);
            }
            cfg.metrics.iteration_us_max.fetch_max(began.elapsed().as_micros() as u64, Ordering::Relaxed);
            self.shard.recycle_outputs(outputs);
            self.inputs.shrink_to(INPUTS_KEPT_MAX);
            if last_publish.elapsed() >= METRICS_PUBLISH_INTERVAL {
                last_publish = Instant::now();
                publish(&cfg.metrics, &self.shard, &self.endpoint, &self.gc);
                self.record_segment_roll();
            }
            // (a split applied here: PD hears of both halves in one report)
            let split = self.shard.take_report_wanted();
            if let Some((every, reports)) = &cfg.leader_reports {
                if split || last_report.elapsed() >= *every {
                    last_report = Instant::now();
                    reports.publish(self.shard.leader_reports());
                }
            }
            // let the I/O tasks run between iterations
            futures_lite::future::yield_now().await;
        }
    }

    /// The WAL moved to a newer segment than its identity records: record
    /// it, durably, off the loop (a start that finds the WAL ending before
    /// it refuses: `runtime::wal_ident`). One rewrite at a time; a failed
    /// one only leaves the record behind the WAL, which is safe.
    fn record_segment_roll(&self) {
        let Some(last) = self.gc.wal().newest_segment() else { return };
        if last <= self.wal_ident.get().last_segment || self.wal_ident_writing.get() {
            return;
        }
        let next = WalIdent { last_segment: last, ..self.wal_ident.get() };
        let (recorded, writing, dir) = (self.wal_ident.clone(), self.wal_ident_writing.clone(), self.wal_dir.clone());
        writing.set(true);
        glommio::spawn_local(async move {
            match blocking(move || wal_ident::write(&dir, &next)).await {
                Ok(()) => recorded.set(next),
                Err(e) => tracing::warn!("recording the WAL's newest segment: {e}"),
            }
            writing.set(false);
        })
        .detach();
    }

    /// A store registered or moved (PD): its shards' addresses, before sending anything.
    fn follow_directory(&mut self, cfg: &ShardConfig) {
        if cfg.directory.version() == self.directory_seen {
            return;
        }
        self.directory_seen = cfg.directory.version();
        for (id, s) in cfg.directory.all() {
            for i in 0..s.shards {
                self.endpoint.set_address(Destination { store_id: id, shard: i }, s.peer_addr_of(i));
            }
        }
    }

    /// Everything that arrived since the last iteration, as the shard's inputs.
    fn gather_inputs(&mut self, cfg: &ShardConfig) {
        let frames = std::mem::take(&mut *self.raft_in.borrow_mut());
        self.raft_in_space.notify();
        for item in frames {
            match item {
                Incoming::Raft { batch, .. } => self.inputs.extend(batch.iter().map(|e| Input::Raft(e.to_envelope()))),
                Incoming::Snapshot { envelope, path, .. } => self.read_received_snapshot(envelope, path),
            }
        }
        self.inputs.append(&mut self.file_inputs.borrow_mut());
        if let Some(directives) = &cfg.directives {
            // PD's directives, as the PD worker made them (their replies are logged)
            for input in directives.try_iter().take(control::DIRECTIVES_QUEUED_MAX) {
                if let Input::Split { request, .. } = input {
                    self.time_split(request); // (a split its leader asked PD's ids for)
                }
                self.inputs.push(input);
            }
        }
        for r in self.endpoint.take_snapshot_reports() {
            self.inputs.push(Input::SnapshotSent { region: r.region_id, to_peer: r.to_peer, ok: r.outcome.is_ok() });
        }
        let (blocking_regions, active_seq) = self.gc.take_blocking();
        let compact = regions_to_compact(&blocking_regions, active_seq);
        if !compact.is_empty() {
            self.inputs.push(Input::CompactRequested { regions: compact });
        }
        let requests = std::mem::take(&mut *self.queues.requests.borrow_mut());
        cfg.metrics.client_requests.fetch_add(requests.len() as u64, Ordering::Relaxed);
        for (conn, req) in requests {
            let request = self.next_request;
            self.next_request += 1;
            assert!(!control::is_internal(request), "client request ids ran into the store's own");
            self.routes.insert(request, (conn, req.id));
            if matches!(req.op, crate::client::protocol::ClientOp::Split(_)) {
                self.time_split(request); // (an operator's split)
            }
            self.inputs.push(Input::Client { request, req });
        }
        self.inputs.append(&mut self.persist_inputs.borrow_mut());
        self.inputs.extend(crate::driver::disk_full_change(&self.gc, &mut self.disk_full_told));
        for (dest, regions) in self.endpoint.take_unreachable() {
            self.inputs.push(Input::Unreachable { regions: regions.into_iter().collect(), store_id: dest.store_id });
        }
    }

    /// Notes when split request `request` starts (its duration is a metric).
    fn time_split(&mut self, request: u64) {
        if self.splits_started.len() < SPLITS_TIMED_MAX {
            self.splits_started.insert(request, Instant::now());
        }
    }

    /// Reads and checks a received snapshot file off the loop; the shard
    /// steps it once it is whole.
    fn read_received_snapshot(&self, envelope: transport::Envelope, path: PathBuf) {
        let (file_inputs, wake) = (self.file_inputs.clone(), self.wake.clone());
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

    /// Turns one of the shard's outputs into I/O.
    fn carry_out(&mut self, cfg: &ShardConfig, out: Output) {
        match out {
            Output::Persist { batch, writes, installs, votes } => {
                let (gc, snapshots) = (self.gc.clone(), self.snapshots.clone());
                let (inputs, wake) = (self.persist_inputs.clone(), self.wake.clone());
                glommio::spawn_local(async move {
                    let written = || {
                        inputs.borrow_mut().push(Input::Written { batch });
                        wake.notify();
                    };
                    if let Err(e) = persist_batch(&gc, &snapshots, writes, installs, votes, written).await {
                        // the shard's state and its log would part ways: stop the process
                        eprintln!("ringraft: {e}; stopping");
                        std::process::abort();
                    }
                    inputs.borrow_mut().push(Input::Persisted { batch });
                    wake.notify();
                })
                .detach();
            }
            Output::Frames(frames) => self.endpoint.send(frames),
            Output::WriteSnapshot(snap) => {
                let (file_inputs, wake, snapshots) =
                    (self.file_inputs.clone(), self.wake.clone(), self.snapshots.clone());
                glommio::spawn_local(async move {
                    let id = snap.id();
                    let result = snapshots.write(*snap).await.map_err(|e| e.to_string());
                    file_inputs.borrow_mut().push(Input::SnapshotWritten { id, result });
                    wake.notify();
                })
                .detach();
            }
            Output::SendSnapshot { to, envelope, id } => {
                self.endpoint.send_snapshot(to, envelope, self.snapshots.path_of(id));
            }
            Output::RemoveSnapshot(id) => remove_in_background(self.snapshots.path_of(id)),
            Output::DiscardIncoming(path) => remove_in_background(path),
            Output::CaughtUp => self.gc.wal().clear_needs_catch_up(),
            Output::FindSplitKey(job) => {
                // (O(keys) over the region's O(1) clone: on a blocking thread, never the loop)
                let (file_inputs, wake) = (self.file_inputs.clone(), self.wake.clone());
                glommio::spawn_local(async move {
                    let found = blocking(move || job.run()).await;
                    file_inputs.borrow_mut().push(found);
                    wake.notify();
                })
                .detach();
            }
            Output::AskSplit { region, epoch, split_key, peers } => {
                let ask = control::PdAsk::Split { shard: cfg.shard, region, epoch, split_key, peers };
                if let Some(Err(e)) = cfg.pd_asks.as_ref().map(|tx| tx.try_send(ask)) {
                    tracing::debug!(region, "split ask dropped (asked again later): {e}");
                }
            }
            Output::CheckMembership { region, peer_id } => {
                // (without PD, nobody can say: the peer waits for a member)
                let ask = control::PdAsk::Membership { shard: cfg.shard, region, peer_id };
                if let Some(Err(e)) = cfg.pd_asks.as_ref().map(|tx| tx.try_send(ask)) {
                    tracing::debug!(region, "membership ask dropped (asked again later): {e}");
                }
            }
            // (a split's reply: how long it took to apply is a metric)
            Output::Reply { ref result, request } if self.splits_started.contains_key(&request) => {
                let began = self.splits_started.remove(&request).expect("checked");
                if result.is_ok() {
                    cfg.metrics.splits_led.fetch_add(1, Ordering::Relaxed);
                    cfg.metrics.split_us_max.fetch_max(began.elapsed().as_micros() as u64, Ordering::Relaxed);
                }
                self.route_reply(cfg, out);
            }
            out @ Output::Reply { .. } => self.route_reply(cfg, out),
        }
    }

    /// A reply: a directive's outcome is logged (no client waits for it),
    /// a client's goes back on its connection.
    fn route_reply(&mut self, cfg: &ShardConfig, out: Output) {
        let Output::Reply { request, result } = out else { unreachable!("only replies are routed") };
        if control::is_internal(request) {
            return directives::log_outcome(cfg.shard, request, &result);
        }
        if let Some((conn, id)) = self.routes.remove(&request) {
            let result = result.map(|r| match r {
                Response::Done => ClientReply::Done,
                Response::Cas(ok) => ClientReply::Cas(ok),
                Response::Value(v) => ClientReply::Value(v),
                Response::Rows(rows) => ClientReply::Rows(rows),
                Response::Region(meta) => ClientReply::Region(meta),
                Response::Split(halves) => ClientReply::Split(halves),
            });
            self.queues.reply(conn, &ClientResponse { id, result });
        }
    }
}

/// Split requests whose duration is timed at once (more are not timed).
const SPLITS_TIMED_MAX: usize = 64;

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
    m.regions_fenced.store(shard.regions().filter(|g| g.fenced.is_some()).count() as u64, r);
    m.regions_catching_up.store(shard.regions().filter(|g| g.catching_up.is_some()).count() as u64, r);
    m.proposals.store(st.proposals, r);
    m.iterations.store(st.iterations, r);
    m.writes_proposed.store(st.writes_proposed, r);
    m.persist_batches.store(st.persist_batches, r);
    m.region_writes_persisted.store(st.region_writes_persisted, r);
    m.entries_applied.store(st.entries_applied, r);
    m.snapshots_taken.store(st.snapshots_taken, r);
    m.snapshots_sent.store(st.snapshots_sent, r);
    m.snapshots_installed.store(st.snapshots_installed, r);
    m.splits_applied.store(st.splits_applied, r);
    m.writes_refused_disk_full.store(st.writes_refused_disk_full, r);
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
    m.wal_seals.store(ws.seals, r);
    m.wal_spare_failures.store(ws.spare_failures, r);
    m.disk_full.store(u64::from(wal.disk_full()), r);
    let h = wal.flush_latency_us();
    if !h.is_empty() {
        m.fsync_latency_us_p50.store(h.value_at_quantile(0.5), r);
        m.fsync_latency_us_p99.store(h.value_at_quantile(0.99), r);
    }
}

/// CPU time the calling thread has used, in microseconds.
fn thread_cpu_us() -> u64 {
    super::metrics::cpu_us(libc::CLOCK_THREAD_CPUTIME_ID)
}
