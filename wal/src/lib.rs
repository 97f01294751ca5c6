//! ringraft's write-ahead log: one per shard (core), shared by every region
//! of that shard, so one fdatasync makes a whole batch of regions durable.
//!
//! - [`format`]: the on-disk bytes (segments, records, sections, checkpoints).
//! - [`disk`]: the file-system seam, with the glommio and in-memory disks.
//! - [`recovery`]: rebuilding state from segments, without I/O of its own.
//! - [`Wal`]: staging, group-commit flushes, segment rolls, purge, reads.
//! - [`GroupCommit`]: a driver for many tasks of one executor.
//!
//! The design and its rules are in docs/design.md, "The write-ahead log"; the format byte by
//! byte in docs/wal-format.md.

pub mod disk;
pub mod error;
pub mod format;
pub mod group_commit;
pub mod layout;
pub mod options;
pub mod recovery;
mod region;
mod types;
mod wal;

pub use error::{AppendError, FatalError, MaintenanceError, OpenError, ReadError};
pub use group_commit::GroupCommit;
pub use options::WalOptions;
pub use recovery::{Recovered, Recovery, RecoveryError, RecoveryMode, RecoveryReport};
pub use region::{IndexEntry, LogError};
pub use types::{ConfState, Entry, HardState, RegionId, RegionWrite, SnapshotMarker, Ticket, RECOVERED_TICKET};
pub use wal::{
    Flush, FlushDone, FlushStart, PurgeDone, PurgeJob, PurgePlan, ReadJob, Spare, SpareFailure, SpareJob, Wal, WalStats,
};
