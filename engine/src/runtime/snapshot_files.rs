//! The runtime's `SnapshotStore`: a shard's snapshot files on disk
//! (`crate::snapshot::files`), every operation run on glommio's blocking
//! pool so that no file I/O ever blocks the shard loop's thread.

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::snapshot::files::{self, SnapshotFileError};
use crate::snapshot::{RegionSnapshot, SnapshotId, SnapshotStore};

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
