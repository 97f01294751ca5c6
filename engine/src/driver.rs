//! What the shard's two drivers — the glommio runtime (`crate::runtime`)
//! and the simulator (`crate::sim`) — share beyond the shard itself: the
//! persist path. Its boot path is `crate::shard::boot`.
//!
//! A persist batch (`Output::Persist`) is made durable the same way under
//! both: received snapshot files go into place first (the batch's writes
//! record them), then every region write is appended to the WAL through its
//! `GroupCommit` in staging order; the batch is written (the shard may
//! issue the next) when the last one's ticket is on disk, and durable when
//! the WAL acknowledges it — once the next batch, or a seal, is on disk too. The group commit issues one write and one fdatasync for
//! whatever was appended meanwhile, prepares spare segments beside it and
//! plans purges; an appender that finds the staged bytes full waits for
//! the next flush to take them (woken by it, never by a timer).
//!
//! Before a booted shard runs, what the WAL recovered must be acknowledged
//! too (`seal_recovered`): the log acknowledges a record only once another
//! follows it, and a replica answering from a last record with nothing
//! after it could lose what it answered to a later recovery's cut.

use std::path::PathBuf;

use wal::disk::Disk;
use wal::{AppendError, FatalError, GroupCommit};

use crate::snapshot::files::SnapshotFileError;
use crate::snapshot::{SnapshotId, SnapshotStore};
use crate::votes::{VoteStore, VoteTable};

/// Why a persist batch could not be made durable. Every case is fatal to
/// the store: the shard's state and its log would part ways.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("region {region}: installing a received snapshot: {source}")]
    Install { region: u64, source: SnapshotFileError },
    #[error("region {region}: the WAL refused a shard write: {source}")]
    Append { region: u64, source: AppendError },
    #[error("the WAL failed: {0}")]
    Fatal(#[from] FatalError),
    #[error("writing the vote table: {0}")]
    Votes(String),
}

/// The shard's input when its WAL's disk filled up or has room again since
/// it was last told (`told`); both drivers ask once per loop iteration.
pub fn disk_full_change<D: Disk>(gc: &GroupCommit<D>, told: &mut bool) -> Option<crate::shard::Input> {
    let full = gc.disk_full();
    (full != *told).then(|| {
        *told = full;
        crate::shard::Input::DiskFull { full }
    })
}

/// Waits until what the WAL recovered is durable (`wal::RECOVERED_TICKET`:
/// the group commit's first flush after open follows it). A driver calls
/// this after starting the group commit and before the shard sends or
/// answers anything: an append response or a vote may rest on any entry
/// recovered, and the last record recovered may have nothing after it yet.
pub async fn seal_recovered<D: Disk>(gc: &GroupCommit<D>) -> Result<(), PersistError> {
    Ok(gc.wait(wal::RECOVERED_TICKET).await?)
}

/// Makes one persist batch durable: `installs` into place, then `writes`
/// through the group commit — after the vote table, when the batch changes a
/// vote (`crate::votes`: a vote is durable in two places before any answer
/// that depends on it leaves); calls `written` once the writes are on disk
/// and returns once all of it is durable.
pub async fn persist_batch<D: Disk, S: SnapshotStore + VoteStore>(
    gc: &GroupCommit<D>,
    files: &S,
    writes: Vec<(u64, wal::RegionWrite)>,
    installs: Vec<(PathBuf, SnapshotId)>,
    votes: Option<VoteTable>,
    written: impl FnOnce(),
) -> Result<(), PersistError> {
    install_received(files, installs).await?;
    write_votes(files, votes).await?;
    append_and_wait(gc, writes, written).await
}

/// The vote table, if the batch carries one, durably.
pub async fn write_votes<S: VoteStore>(files: &S, votes: Option<VoteTable>) -> Result<(), PersistError> {
    match votes {
        Some(table) => files.write_votes(table).await.map_err(PersistError::Votes),
        None => Ok(()),
    }
}

/// A persist batch's first half: the received snapshot files its writes
/// record, moved into place (durably) before any of those writes.
pub async fn install_received<S: SnapshotStore>(
    files: &S,
    installs: Vec<(PathBuf, SnapshotId)>,
) -> Result<(), PersistError> {
    for (from, id) in installs {
        files.install(from, id).await.map_err(|source| PersistError::Install { region: id.region, source })?;
    }
    Ok(())
}

/// A persist batch's second half: its writes appended through the group
/// commit in staging order; calls `written` once the last one is on disk,
/// returns once it is durable.
pub async fn append_and_wait<D: Disk>(
    gc: &GroupCommit<D>,
    writes: Vec<(u64, wal::RegionWrite)>,
    written: impl FnOnce(),
) -> Result<(), PersistError> {
    let mut last = None;
    for (region, write) in writes {
        let ticket =
            gc.append_when_room(region, write).await.map_err(|source| PersistError::Append { region, source })?;
        last = Some(ticket);
    }
    // (a batch with no write is durable with everything appended before it)
    let ticket = last.unwrap_or_else(|| gc.wal().last_ticket());
    gc.wait_written(ticket).await?;
    written();
    gc.wait(ticket).await?;
    Ok(())
}
