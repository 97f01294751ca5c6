//! The runtime's `SnapshotStore` and `VoteStore`: a shard's snapshot files
//! on disk (`crate::snapshot::files`) and its vote table (`VOTES.0` and
//! `VOTES.1` in the shard's directory, `crate::votes`), every operation run
//! on glommio's blocking pool so that no file I/O ever blocks the shard
//! loop's thread.

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::snapshot::files::{self, SnapshotFileError};
use crate::snapshot::{RegionSnapshot, SnapshotId, SnapshotStore};
use crate::votes::{self, VoteStore, VoteTable};

/// Runs blocking file work on glommio's blocking pool.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    glommio::executor().spawn_blocking(f).await
}

/// One shard's snapshot files, under its directory.
#[derive(Clone)]
pub struct ShardFiles {
    /// The shard's directory (its WAL and snapshots live inside).
    shard_dir: PathBuf,
    /// Where its snapshots are (`files::snapshot_dir`).
    snap_dir: PathBuf,
}

impl ShardFiles {
    pub fn new(shard_dir: PathBuf) -> ShardFiles {
        let snap_dir = files::snapshot_dir(&shard_dir);
        ShardFiles { shard_dir, snap_dir }
    }

    /// Where snapshot `id`'s file is.
    pub fn path_of(&self, id: SnapshotId) -> PathBuf {
        files::path_of(&self.snap_dir, id)
    }
}

impl SnapshotStore for ShardFiles {
    async fn write(&self, snap: RegionSnapshot) -> Result<u64, SnapshotFileError> {
        let dir = self.snap_dir.clone();
        blocking(move || files::write(&dir, &snap)).await
    }

    async fn read(&self, id: SnapshotId) -> Result<RegionSnapshot, SnapshotFileError> {
        let dir = self.snap_dir.clone();
        blocking(move || files::read(&dir, id)).await
    }

    async fn install(&self, from: PathBuf, id: SnapshotId) -> Result<(), SnapshotFileError> {
        let dir = self.snap_dir.clone();
        blocking(move || files::install(&from, &dir, id)).await
    }

    async fn sweep(&self, keep: BTreeSet<SnapshotId>) -> Result<usize, SnapshotFileError> {
        let dir = self.shard_dir.clone();
        blocking(move || files::sweep(&dir, &keep)).await
    }
}

impl ShardFiles {
    fn votes_path(&self, slot: usize) -> PathBuf {
        self.shard_dir.join(format!("VOTES.{slot}"))
    }
}

impl VoteStore for ShardFiles {
    async fn write_votes(&self, table: VoteTable) -> Result<(), String> {
        let path = self.votes_path(votes::slot_of(table.generation));
        let dir = self.shard_dir.clone();
        blocking(move || {
            use std::io::Write;
            let what = |op: &str, e: std::io::Error| format!("{op} {}: {e}", path.display());
            let created = !path.exists();
            let mut f = std::fs::File::create(&path).map_err(|e| what("create", e))?;
            f.write_all(&table.encode()).map_err(|e| what("write", e))?;
            f.sync_data().map_err(|e| what("fdatasync", e))?;
            if created {
                std::fs::File::open(&dir).and_then(|d| d.sync_all()).map_err(|e| what("fsync the directory of", e))?;
            }
            Ok(())
        })
        .await
    }

    async fn read_votes(&self) -> Result<Option<VoteTable>, String> {
        let paths = [self.votes_path(0), self.votes_path(1)];
        blocking(move || {
            let mut bytes = [None, None];
            for (slot, path) in paths.iter().enumerate() {
                bytes[slot] = match std::fs::read(path) {
                    Ok(b) => Some(b),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(e) => return Err(format!("read {}: {e}", path.display())),
                };
            }
            votes::pick([bytes[0].as_deref(), bytes[1].as_deref()])
                .map_err(|e| format!("{} and {}: {e}", paths[0].display(), paths[1].display()))
        })
        .await
    }
}
