//! One simulated store: a real `Shard` over a real `Wal` on the in-memory
//! disk (which loses everything not fdatasynced when the store crashes).
//! A persist batch becomes durable when its simulated disk latency has
//! passed; a crash before that loses it, as a real crash would. Snapshot
//! files are a map that keeps what was durably written (a write in flight
//! at a crash is lost; received files not yet installed are swept at
//! restart, as the runtime does).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Instant;

use futures_lite::future::block_on;
use wal::disk::MemDisk;
use wal::{FlushStart, Wal, WalOptions};

use crate::region::meta::RegionMeta;
use crate::shard::core::{regions_to_compact, RegionInit};
use crate::shard::recover::{load_regions, load_tombstones};
use crate::shard::{Input, Output, Shard, ShardLimits};
use crate::snapshot::{RegionSnapshot, SnapshotId};

pub struct SimStore {
    pub id: u64,
    pub disk: MemDisk,
    /// `None` while the store is down.
    pub node: Option<Node>,
    /// Durable snapshot files (they survive crashes).
    pub snapshots: BTreeMap<SnapshotId, RegionSnapshot>,
    /// Received snapshot files not yet installed.
    pub incoming: BTreeMap<PathBuf, RegionSnapshot>,
    pub next_incoming: u64,
    limits: ShardLimits,
}

/// A running store.
pub struct Node {
    pub shard: Shard,
    pub wal: Wal<MemDisk>,
    pub inputs: Vec<Input>,
    pub persist: Option<InFlightPersist>,
    /// Snapshot files being written, durable at `.0`.
    pub snapshot_writes: Vec<(Instant, Box<RegionSnapshot>)>,
}

/// The persist batch in flight and when its fdatasync completes.
pub struct InFlightPersist {
    pub batch: u64,
    pub writes: Vec<(u64, wal::RegionWrite)>,
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
        let (wal, _) = block_on(Wal::open(disk.clone(), sim_wal_options())).expect("open a fresh WAL");
        let mut shard = Shard::new(id, 0, seed, limits);
        let mut snapshots = BTreeMap::new();
        for m in metas.iter().filter(|m| m.peer_on(id).is_some()) {
            let (init, snap) = RegionInit::bootstrap(m.clone());
            // the initial snapshot's file is durable before the WAL names it
            snapshots.insert(snap.id(), snap);
            shard.create_region(init);
        }
        let mut node = Node { shard, wal, inputs: vec![], persist: None, snapshot_writes: vec![] };
        // a store's bootstrap is durable before it serves anything (as creating
        // a data directory is): persist the new regions' meta now
        // (one batch, or one per region without batching)
        let mut outputs = node.shard.step(vec![]);
        while let Some(out) = outputs.pop() {
            match out {
                Output::Persist { batch, writes, installs } => {
                    assert!(installs.is_empty());
                    node.persist_now(writes);
                    outputs = node.shard.step(vec![Input::Persisted { batch }]);
                }
                _ => panic!("a fresh shard only persists its regions"),
            }
        }
        assert!(node.shard.is_quiet(), "store {id}: bootstrap left work in flight");
        SimStore { id, disk, node: Some(node), snapshots, incoming: BTreeMap::new(), next_incoming: 0, limits }
    }

    /// Kills the store: what was not durable is gone. A persist batch in
    /// flight may have reached the disk in part: its first `durable_writes`
    /// region writes are made durable (a batch spans several WAL records when
    /// it is large, and a crash can fall between them), the rest are lost.
    pub fn crash(&mut self, durable_writes: impl FnOnce(usize) -> usize) {
        if let Some(mut node) = self.node.take() {
            if let Some(p) = node.persist.take() {
                let keep = durable_writes(p.writes.len()).min(p.writes.len());
                let mut writes = p.writes;
                writes.truncate(keep);
                if !writes.is_empty() {
                    node.persist_now(writes);
                }
            }
        }
        self.disk = self.disk.crash(|len| len);
        self.incoming.clear();
    }

    /// Restarts a crashed store from its disk.
    pub fn restart(&mut self, seed: u64) {
        assert!(self.node.is_none(), "store {} is running", self.id);
        let (wal, _) = block_on(Wal::open(self.disk.clone(), sim_wal_options())).expect("recover the WAL");
        let mut shard = Shard::new(self.id, 0, seed, self.limits);
        let loaded = block_on(load_regions(&wal)).expect("load regions");
        for (region, removed_peer) in load_tombstones(&wal).expect("load tombstones") {
            shard.add_tombstone(region, removed_peer);
        }
        // as the runtime's sweep: keep only the snapshots the WAL names
        let named: BTreeSet<SnapshotId> = loaded.iter().filter_map(|r| r.snapshot).collect();
        self.snapshots.retain(|id, _| named.contains(id));
        for r in loaded {
            let snapshot = r.snapshot.map(|id| {
                self.snapshots.get(&id).cloned().unwrap_or_else(|| panic!("store {}: snapshot {id:?} is lost", self.id))
            });
            shard.create_region(RegionInit { meta: r.meta, storage: r.storage, snapshot, fresh: false });
        }
        self.node = Some(Node { shard, wal, inputs: vec![], persist: None, snapshot_writes: vec![] });
    }
}

impl Node {
    /// Appends a batch's writes and makes them durable (write + fdatasync,
    /// several if the batch is over the WAL's record limit), then purges
    /// what no region needs and asks regions pinning old segments to compact.
    pub fn persist_now(&mut self, writes: Vec<(u64, wal::RegionWrite)>) {
        for (region, write) in writes {
            self.wal.append(region, write).expect("the WAL accepts the shard's writes");
        }
        loop {
            match self.wal.start_flush() {
                FlushStart::Idle => break,
                FlushStart::NeedSpare => {
                    let job = self.wal.spare_job().expect("no spare job out");
                    let spare = block_on(job.run());
                    self.wal.add_spare(spare).expect("spare segment");
                }
                FlushStart::Flush(f) => {
                    let done = block_on(f.execute());
                    self.wal.finish_flush(done).expect("fdatasync succeeds on the simulated disk");
                }
            }
        }
        let mut plan = self.wal.purge();
        let active = self.wal.segment_seqs().last().copied().unwrap_or(0);
        let regions = regions_to_compact(&plan.blocking, active);
        if let Some(job) = plan.take_job() {
            let done = block_on(job.run());
            self.wal.purge_done(done).expect("purging on the simulated disk");
        }
        if !regions.is_empty() {
            self.inputs.push(Input::CompactRequested { regions });
        }
    }
}
