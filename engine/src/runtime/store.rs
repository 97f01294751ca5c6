//! A store process: its data directory (an ident file fixing the store id,
//! the cluster and the shard count at creation; a directory per shard) and
//! one glommio executor per shard.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use glommio::{LocalExecutorBuilder, Placement};
use serde::{Deserialize, Serialize};

use crate::runtime::shard_task::{run_shard, ShardConfig, TICK};
use crate::spec::ClusterSpec;

/// io_memory per shard executor (the WAL's DMA buffers).
const SHARD_IO_MEMORY_BYTES: usize = 16 << 20;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ident {
    pub cluster_id: u64,
    pub store_id: u64,
    pub shards: u16,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {0} is not in the cluster spec")]
    UnknownStore(u64),
    #[error("{path}: {what}")]
    Ident { path: String, what: String },
    #[error(
        "{path} was created for store {} of cluster {} with {} shard(s); this start asks for store {} of cluster {} with {} shard(s) (the shard count is fixed when a store is created)",
        .found.store_id, .found.cluster_id, .found.shards, .want.store_id, .want.cluster_id, .want.shards
    )]
    IdentMismatch { path: String, found: Ident, want: Ident },
    #[error("status address {addr}: {what}")]
    Status { addr: std::net::SocketAddr, what: String },
    #[error("start the executor of shard {shard}: {what}")]
    Executor { shard: u16, what: String },
    #[error("shard {shard}: {what}")]
    Shard { shard: u16, what: String },
}

/// Creates the ident file on first start, or checks it.
pub fn check_ident(data_dir: &Path, want: &Ident) -> Result<(), StoreError> {
    let path = data_dir.join("IDENT");
    let shown = path.display().to_string();
    let io = |e: std::io::Error| StoreError::Ident { path: shown.clone(), what: e.to_string() };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let found: Ident = serde_json::from_str(&text)
                .map_err(|e| StoreError::Ident { path: shown.clone(), what: format!("not an ident file: {e}") })?;
            if &found != want {
                return Err(StoreError::IdentMismatch { path: shown, found, want: want.clone() });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data_dir).map_err(io)?;
            let tmp = data_dir.join("IDENT.tmp");
            std::fs::write(&tmp, serde_json::to_string_pretty(want).expect("ident encodes")).map_err(io)?;
            std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io)?;
            std::fs::rename(&tmp, &path).map_err(io)?;
            std::fs::File::open(data_dir).and_then(|d| d.sync_all()).map_err(io)?;
            Ok(())
        }
        Err(e) => Err(io(e)),
    }
}

pub struct StoreOptions {
    pub spec: Arc<ClusterSpec>,
    pub store_id: u64,
    pub data_dir: PathBuf,
    pub stop: Arc<AtomicBool>,
    /// Memory the store's logs and state may use, split evenly over its
    /// shards; writes are refused past it. None: the default per shard.
    pub memory_limit_bytes: Option<usize>,
    /// Where to serve Prometheus metrics (`GET /metrics`), if anywhere.
    pub status_addr: Option<std::net::SocketAddr>,
    /// Applied log bytes past which a region snapshots (None: the default).
    pub snapshot_log_bytes_min: Option<usize>,
    /// Only to measure what batching buys (see `ShardLimits::batching`).
    pub no_batching: bool,
}

/// Runs every shard of the store until `stop` is set (or the process is killed).
pub fn run_store(opts: StoreOptions) -> Result<(), StoreError> {
    let me = opts.spec.store(opts.store_id).ok_or(StoreError::UnknownStore(opts.store_id))?.clone();
    let ident = Ident { cluster_id: opts.spec.cluster_id, store_id: opts.store_id, shards: me.shards };
    check_ident(&opts.data_dir, &ident)?;
    let metrics: crate::runtime::metrics::StoreMetrics = Arc::new((0..me.shards).map(|_| Arc::default()).collect());
    let status = match opts.status_addr {
        None => None,
        Some(addr) => Some(
            crate::runtime::metrics::serve(addr, opts.store_id, metrics.clone())
                .map_err(|e| StoreError::Status { addr, what: e.to_string() })?,
        ),
    };
    let (done_tx, done_rx) = std::sync::mpsc::channel::<(u16, Result<(), String>)>();
    let mut handles = vec![];
    for shard in 0..me.shards {
        // unpinned: on a small host the stores share the cores (DESIGN.md §8);
        // pinning a shard per core is an operator's choice for later
        let cfg = ShardConfig {
            spec: opts.spec.clone(),
            store_id: opts.store_id,
            shard,
            dir: opts.data_dir.join(format!("shard-{shard}")),
            seed: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
                ^ (u64::from(shard) << 48),
            tick: TICK,
            stop: opts.stop.clone(),
            memory_bytes_max: opts.memory_limit_bytes.map(|m| m / usize::from(me.shards)),
            snapshot_log_bytes_min: opts.snapshot_log_bytes_min,
            no_batching: opts.no_batching,
            metrics: metrics[usize::from(shard)].clone(),
        };
        let tx = done_tx.clone();
        let h = LocalExecutorBuilder::new(Placement::Unbound)
            .name(&format!("store{}-shard{shard}", opts.store_id))
            .io_memory(SHARD_IO_MEMORY_BYTES)
            .spawn(move || async move {
                let r = run_shard(cfg).await.map_err(|e| e.to_string());
                let _ = tx.send((shard, r));
            })
            .map_err(|e| StoreError::Executor { shard, what: e.to_string() })?;
        handles.push((shard, h));
    }
    drop(done_tx);
    // the first shard to end ends the store: a store with a dead shard must
    // not go on serving the others as if nothing happened
    let mut first_error = None;
    let mut ended = 0;
    while ended < handles.len() {
        match done_rx.recv() {
            Ok((shard, r)) => {
                ended += 1;
                opts.stop.store(true, std::sync::atomic::Ordering::Relaxed);
                if let Err(what) = r {
                    first_error.get_or_insert(StoreError::Shard { shard, what });
                }
            }
            Err(_) => break, // a shard's executor died without reporting (a panic)
        }
    }
    opts.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for (shard, h) in handles {
        if let Err(e) = h.join() {
            first_error.get_or_insert(StoreError::Shard { shard, what: format!("executor: {e}") });
        }
    }
    if let Some(s) = status {
        s.stop();
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    Ok(())
}
