//! One simulated store: a real `Shard` over a real `Wal` on the in-memory
//! disk (which loses everything not fdatasynced when the store crashes),
//! booted and persisted by the same code the runtime runs: `shard::boot`
//! builds the shard from the WAL and the snapshot files, and a persist
//! batch goes through `driver`'s two halves (`install_received` when it is
//! issued, `append_and_wait` when its latency passed) and the WAL's `GroupCommit`
//! (its writer, spare segments and purges), whose tasks run on a
//! single-threaded executor the simulator polls. A batch is handed to the
//! disk once its simulated latency has passed; a crash before that makes a
//! prefix of it durable (a batch spans several WAL records when it is
//! large, and a crash can fall between them), as a real crash would.
//! Snapshot files are maps: durable ones survive crashes, received files
//! not yet installed do not.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Instant;

use futures_executor::LocalPool;
use futures_lite::future::block_on;
use futures_util::task::LocalSpawnExt;
use wal::disk::MemDisk;
use wal::{GroupCommit, Wal, WalOptions};

use crate::driver::{append_and_wait, install_received, seal_recovered, write_votes};
use crate::region::meta::RegionMeta;
use crate::shard::boot::{boot, BootOptions};
use crate::shard::{regions_to_compact, Input, Output, Shard, ShardLimits};
use crate::snapshot::files::SnapshotFileError;
use crate::snapshot::{RegionSnapshot, SnapshotId, SnapshotStore};
use crate::votes::{VoteStore, VoteTable};

/// A store's snapshot files, kept in memory.
#[derive(Default)]
pub struct SimFileMaps {
    /// Durable snapshot files (they survive crashes).
    pub snapshots: BTreeMap<SnapshotId, RegionSnapshot>,
    /// Received snapshot files not yet installed (a crash loses them).
    pub incoming: BTreeMap<PathBuf, RegionSnapshot>,
    /// The shard's vote table as last written durably (`crate::votes`).
    pub votes: Option<VoteTable>,
}

/// The simulator's `SnapshotStore`: shared by the store and its persist tasks.
#[derive(Clone, Default)]
pub struct SimFiles(pub Rc<RefCell<SimFileMaps>>);

fn missing(what: &str, path: PathBuf) -> SnapshotFileError {
    SnapshotFileError::Io { op: "open", path, source: io::Error::new(io::ErrorKind::NotFound, what.to_string()) }
}

impl SnapshotStore for SimFiles {
    async fn write(&self, snap: RegionSnapshot) -> Result<u64, SnapshotFileError> {
        self.0.borrow_mut().snapshots.insert(snap.id(), snap.as_filed());
        Ok(0)
    }

    async fn read(&self, id: SnapshotId) -> Result<RegionSnapshot, SnapshotFileError> {
        let name = PathBuf::from(crate::snapshot::files::file_name(id));
        self.0.borrow().snapshots.get(&id).cloned().ok_or_else(|| missing("snapshot lost", name))
    }

    async fn install(&self, from: PathBuf, id: SnapshotId) -> Result<(), SnapshotFileError> {
        let mut maps = self.0.borrow_mut();
        let snap = maps.incoming.remove(&from).ok_or_else(|| missing("received snapshot lost", from.clone()))?;
        assert_eq!(snap.id(), id, "{}: installed as another snapshot than received", from.display());
        maps.snapshots.insert(id, snap);
        Ok(())
    }

    async fn sweep(&self, keep: BTreeSet<SnapshotId>) -> Result<usize, SnapshotFileError> {
        let mut maps = self.0.borrow_mut();
        let before = maps.snapshots.len() + maps.incoming.len();
        maps.snapshots.retain(|id, _| keep.contains(id));
        maps.incoming.clear();
        Ok(before - maps.snapshots.len())
    }
}

impl VoteStore for SimFiles {
    async fn write_votes(&self, table: VoteTable) -> Result<(), String> {
        self.0.borrow_mut().votes = Some(table);
        Ok(())
    }

    async fn read_votes(&self) -> Result<Option<VoteTable>, String> {
        Ok(self.0.borrow().votes.clone())
    }
}

pub struct SimStore {
    pub id: u64,
    pub disk: MemDisk,
    /// `None` while the store is down.
    pub node: Option<Node>,
    pub files: SimFiles,
    pub next_incoming: u64,
    limits: ShardLimits,
    /// How a restart's recovery treats a damaged record (strict: refuse,
    /// which the simulator reports as a panic; tolerant: drop it and catch
    /// the regions up, `shard::catch_up`).
    pub recovery_mode: wal::RecoveryMode,
}

/// A running store.
pub struct Node {
    pub shard: Shard,
    pub gc: GroupCommit<MemDisk>,
    /// Runs the group commit and the persist tasks (the runtime's glommio
    /// executor, here polled by the simulator until nothing can progress).
    pool: LocalPool,
    pub inputs: Vec<Input>,
    pub persist: Option<InFlightPersist>,
    /// Set by a persist task once its batch is written, then durable.
    persisted: Rc<Cell<(bool, Option<u64>)>>,
    /// Batches written whose `Persisted` the shard hears of at `.0`: the
    /// simulated disk makes a batch durable at once, and the shard is told
    /// one seal's latency later — or when the next batch is written, which
    /// acknowledges it, as under the runtime.
    pub acknowledging: Vec<(Instant, u64)>,
    /// Snapshot files being written, durable at `.0`.
    pub snapshot_writes: Vec<(Instant, Box<RegionSnapshot>)>,
    /// What the shard was last told of the WAL's disk (`driver::disk_full_change`).
    pub disk_full_told: bool,
}

/// The persist batch in flight and when the simulated disk has taken it
/// (its received snapshot files were moved into place when it was issued,
/// as the runtime's persist task does first).
pub struct InFlightPersist {
    pub batch: u64,
    pub writes: Vec<(u64, wal::RegionWrite)>,
    pub votes: Option<VoteTable>,
    pub durable_at: Instant,
}

/// WAL options for the simulation: small segments so rolls happen.
pub fn sim_wal_options() -> WalOptions {
    WalOptions { segment_bytes: 256 << 10, batch_bytes_max: 64 << 10, staged_bytes_max: 16 << 20, ..Default::default() }
}

impl SimStore {
    /// A new store whose regions come from the bootstrap spec.
    pub fn bootstrap(id: u64, metas: &[RegionMeta], seed: u64, limits: ShardLimits) -> SimStore {
        let disk = MemDisk::new();
        let files = SimFiles::default();
        let mut node = Node::start(&disk, &files, id, seed, limits, metas, sim_wal_options());
        // a store's bootstrap is durable before it serves anything (as creating
        // a data directory is): persist the new regions' meta now
        // (one batch, or one per region without batching)
        let mut outputs = node.shard.step(vec![]);
        while let Some(out) = outputs.pop() {
            match out {
                Output::Persist { batch, writes, installs, votes } => {
                    node.install_now(&files, installs);
                    node.persist_now(&files, batch, writes, votes, Instant::now())
                        .expect("a new disk takes the bootstrap");
                    node.acknowledging.clear();
                    let mut inputs = std::mem::take(&mut node.inputs);
                    inputs.push(Input::Persisted { batch });
                    outputs = node.shard.step(inputs);
                }
                _ => panic!("a fresh shard only persists its regions"),
            }
        }
        assert!(node.shard.is_quiet(), "store {id}: bootstrap left work in flight");
        SimStore { id, disk, node: Some(node), files, next_incoming: 0, limits, recovery_mode: Default::default() }
    }

    /// Kills the store: what was not durable is gone. A persist batch in
    /// flight may have reached the disk in part: its first `durable_writes`
    /// region writes are made durable, the rest are lost.
    /// The store stops: of the persist in flight, `durable_writes(n)` of its
    /// `n` writes reach the disk; of the disk's last unsynced write,
    /// `tear(len)` bytes do.
    pub fn crash(&mut self, durable_writes: impl FnOnce(usize) -> usize, tear: impl FnOnce(usize) -> usize) {
        if let Some(mut node) = self.node.take() {
            if let Some(p) = node.persist.take() {
                let keep = durable_writes(p.writes.len()).min(p.writes.len());
                let mut writes = p.writes;
                writes.truncate(keep);
                // (the vote table is written before the WAL: durable if any write is)
                let votes = p.votes.filter(|_| keep > 0);
                // (a disk failing its fdatasyncs refuses them: what it kept, the tear says)
                let _ = node.persist_now(&self.files, p.batch, writes, votes, p.durable_at);
            }
        }
        self.disk = self.disk.crash(tear);
        self.files.0.borrow_mut().incoming.clear();
    }

    /// Restarts a crashed store from its disk, through the boot path.
    pub fn restart(&mut self, seed: u64) {
        assert!(self.node.is_none(), "store {} is running", self.id);
        let wal_options = WalOptions { recovery_mode: self.recovery_mode, ..sim_wal_options() };
        self.node = Some(Node::start(&self.disk, &self.files, self.id, seed, self.limits, &[], wal_options));
    }
}

impl Node {
    /// Opens the WAL on `disk` and boots the shard from it (or from
    /// `initial` when it is empty), as the runtime does.
    fn start(
        disk: &MemDisk,
        files: &SimFiles,
        store_id: u64,
        seed: u64,
        limits: ShardLimits,
        initial: &[RegionMeta],
        wal_options: WalOptions,
    ) -> Node {
        let (wal, _) = block_on(Wal::open(disk.clone(), wal_options)).expect("open the WAL");
        let opts = BootOptions { store_id, shard: 0, seed, limits, initial_regions: initial };
        let (shard, _) = block_on(boot(&wal, files, opts)).unwrap_or_else(|e| panic!("store {store_id}: boot: {e}"));
        let gc = GroupCommit::new(wal);
        let mut pool = LocalPool::new();
        let writer = gc.clone();
        pool.spawner()
            .spawn_local(async move {
                // (a failed fdatasync ends it: the persists that wait on the
                // log fail, and the simulation stops the store, as the runtime does)
                if let Err(e) = writer.run().await {
                    tracing::info!(store_id, "the WAL failed: {e}");
                }
            })
            .expect("the pool takes tasks");
        // what was recovered is acknowledged before the shard answers anything, as in the runtime
        let sealed = Rc::new(Cell::new(false));
        let (flag, sealing) = (sealed.clone(), gc.clone());
        pool.spawner()
            .spawn_local(async move {
                seal_recovered(&sealing).await.expect("the simulated disk seals the recovered log");
                flag.set(true);
            })
            .expect("the pool takes tasks");
        pool.run_until_stalled();
        assert!(sealed.get(), "store {store_id}: sealing the recovered log did not complete on the simulated disk");
        Node {
            shard,
            gc,
            pool,
            inputs: vec![],
            persist: None,
            persisted: Rc::default(),
            acknowledging: vec![],
            snapshot_writes: vec![],
            disk_full_told: false,
        }
    }

    /// A persist batch's received snapshot files into place, through the
    /// runtime's persist path (`driver::install_received`), when the batch
    /// is issued.
    /// One raft tick: the shard's input, and the group commit's tick (a
    /// spare segment that failed is tried again on them, as under the
    /// runtime), its maintenance run at once.
    pub fn tick(&mut self) {
        self.inputs.push(Input::Tick);
        self.gc.tick();
        self.pool.run_until_stalled();
    }

    pub fn install_now(&mut self, files: &SimFiles, installs: Vec<(PathBuf, SnapshotId)>) {
        if installs.is_empty() {
            return;
        }
        let files = files.clone();
        let done = Rc::new(Cell::new(false));
        let flag = done.clone();
        self.pool
            .spawner()
            .spawn_local(async move {
                install_received(&files, installs).await.expect("received snapshots are kept until installed");
                flag.set(true);
            })
            .expect("the pool takes tasks");
        self.pool.run_until_stalled();
        assert!(done.get(), "installing received snapshots did not complete on the simulated disk");
    }

    /// Makes a persist batch's vote table and writes durable through the
    /// runtime's persist path (`driver::write_votes`, `driver::append_and_wait`; the simulated disk completes every
    /// I/O at once), then queues `Written` (and `Persisted` for `acknowledged_at`)
    /// and any compaction the WAL's purge asks for. A disk that fails its
    /// fdatasyncs fails the batch (the WAL's fatal error): the runtime stops
    /// the store then, and so does the simulator.
    pub fn persist_now(
        &mut self,
        files: &SimFiles,
        batch: u64,
        writes: Vec<(u64, wal::RegionWrite)>,
        votes: Option<VoteTable>,
        acknowledged_at: Instant,
    ) -> Result<(), String> {
        let (gc, files, persisted) = (self.gc.clone(), files.clone(), self.persisted.clone());
        let failure: Rc<RefCell<Option<String>>> = Rc::default();
        let failed = failure.clone();
        self.pool
            .spawner()
            .spawn_local(async move {
                write_votes(&files, votes).await.expect("the simulated disk keeps the vote table");
                let written = || persisted.set((true, None));
                match append_and_wait(&gc, writes, written).await {
                    Ok(()) => persisted.set((true, Some(batch))),
                    Err(e) => *failed.borrow_mut() = Some(e.to_string()),
                }
            })
            .expect("the pool takes tasks");
        self.pool.run_until_stalled();
        if let Some(e) = failure.borrow_mut().take() {
            self.persisted.take();
            return Err(e);
        }
        let done = self.persisted.take();
        assert_eq!(done, (true, Some(batch)), "persist batch {batch} did not complete on the simulated disk");
        // this batch's record acknowledges the ones before it, at once
        let earlier = self.acknowledging.iter().filter(|(_, b)| *b < batch).map(|(_, b)| *b).max();
        self.acknowledging.retain(|(_, b)| *b >= batch);
        self.inputs.extend(earlier.map(|batch| Input::Persisted { batch }));
        self.inputs.push(Input::Written { batch });
        self.acknowledging.push((acknowledged_at, batch));
        let (blocking, active) = self.gc.take_blocking();
        let regions = regions_to_compact(&blocking, active);
        if !regions.is_empty() {
            self.inputs.push(Input::CompactRequested { regions });
        }
        Ok(())
    }
}
