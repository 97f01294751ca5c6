//! Where a driver keeps a shard's snapshot files: the seam between the
//! shard's boot and persist paths, which both drivers run, and the files
//! themselves — real files on the runtime's blocking pool
//! (`crate::runtime`), a map that survives simulated crashes in the
//! simulator (`crate::sim`).

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::files::SnapshotFileError;
use super::{RegionSnapshot, SnapshotId};

/// A shard's snapshot files. Every operation is durable when it returns
/// (file and directory fsynced).
// (`async fn` in a public trait: both drivers are single-threaded, so no
// caller needs the futures to be `Send`)
#[allow(async_fn_in_trait)]
pub trait SnapshotStore {
    /// Writes a snapshot of this shard's own; returns the file's size.
    async fn write(&self, snap: RegionSnapshot) -> Result<u64, SnapshotFileError>;
    /// Reads back the snapshot `id`, checking it is the one named.
    async fn read(&self, id: SnapshotId) -> Result<RegionSnapshot, SnapshotFileError>;
    /// Moves a received snapshot file into its place as `id`.
    async fn install(&self, from: PathBuf, id: SnapshotId) -> Result<(), SnapshotFileError>;
    /// Removes every file but the snapshots in `keep` (partial writes,
    /// replaced snapshots, received files never installed); returns how
    /// many went.
    async fn sweep(&self, keep: BTreeSet<SnapshotId>) -> Result<usize, SnapshotFileError>;
}
