//! Why `ringraft wal` could not do its job at all (exit code 2).
//!
//! Problems *in* a WAL (a bad checksum, a truncated segment, a file that is
//! not a segment) are findings, reported in the output with exit code 1 by
//! `verify`. A `ToolError` is about the invocation or the machine: the
//! directory is missing, holds no WAL, is in use, or cannot be read.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error("{}: no such directory", path.display())]
    DirNotFound { path: PathBuf },
    #[error("{}: not a directory (give the WAL directory, or the store data directory holding shard-<i>/wal/)", path.display())]
    NotADirectory { path: PathBuf },
    #[error(
        "{}: no WAL here: no segment files (<16 hex digits>.wal) and no shard-<i>/wal/ directories",
        path.display()
    )]
    NoSegments { path: PathBuf },
    #[error("{}: the WAL is locked by a running process; stop the server first (these tools only read stopped WALs)", path.display())]
    Locked { path: PathBuf },
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Usage(String),
    #[error("writing output: {0}")]
    Output(#[source] io::Error),
}

impl ToolError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> ToolError {
        let path = path.into();
        move |source| ToolError::Io { op, path, source }
    }
}
