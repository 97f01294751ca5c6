//! Errors, one enum per operation family; each says what was being done.

use std::io;

use crate::recovery::RecoveryError;
use crate::region::LogError;
use crate::RegionId;

/// Opening (and recovering) a log failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("invalid WAL options: {0}")]
    Options(String),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Recovery(#[from] RecoveryError),
}

/// A write was refused; nothing of it was staged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    #[error("write of {bytes} bytes exceeds the batch limit of {max} bytes")]
    TooLarge { bytes: usize, max: usize },
    #[error("entry {index} of region {region} has {bytes} bytes, over ENTRY_DATA_BYTES_MAX ({max})")]
    EntryTooLarge { region: RegionId, index: u64, bytes: usize, max: usize },
    #[error("region {region}: {what}")]
    Invalid { region: RegionId, what: String },
    #[error("{staged_bytes} bytes already wait for the disk (limit {max}): retry after the next flush")]
    Busy { staged_bytes: usize, max: usize },
    #[error("region state would make a segment checkpoint exceed {max} bytes (too many regions, or meta too large)")]
    CheckpointFull { max: usize },
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Fatal(#[from] FatalError),
}

/// A failed write or fdatasync. The log accepts nothing after it, ever: an
/// fdatasync error may have dropped dirty pages the kernel will not retry,
/// so nothing written since the last good sync can be trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("WAL is stopped after a failed {op} of segment {seq:016x} at offset {offset}: {message}")]
pub struct FatalError {
    pub op: &'static str,
    pub seq: u64,
    pub offset: u64,
    pub message: String,
}

/// A read of entries failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("region {0} is not in this log")]
    UnknownRegion(RegionId),
    #[error("entries below {first_index} were compacted")]
    Compacted { first_index: u64 },
    #[error("entries up to {hi} requested but the log ends at {last_index}")]
    Unavailable { hi: u64, last_index: u64 },
    #[error("entries from {from} are not in memory: fetch them")]
    NotCached { from: u64 },
    #[error("entry {index} changed on disk while being read (its segment was purged): retry")]
    Changed { index: u64 },
    #[error("read {path} at offset {offset}: {message}")]
    Io { path: String, offset: u64, message: String },
}

/// Preparing a spare segment or purging failed (not fatal: retried later).
#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {source}")]
pub struct MaintenanceError {
    pub op: &'static str,
    pub path: String,
    #[source]
    pub source: io::Error,
}

impl MaintenanceError {
    /// The file system is out of space (ENOSPC) or over a quota (EDQUOT) —
    /// or a zero-fill's write was cut short, which is how a full disk shows
    /// to a write that got part of its bytes in.
    pub fn is_disk_full(&self) -> bool {
        let kind = self.source.kind();
        matches!(kind, io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
            || (kind == io::ErrorKind::WriteZero && self.op == "zero-fill")
    }
}
