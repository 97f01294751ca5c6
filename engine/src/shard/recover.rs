//! A shard's regions as its WAL recovered them: meta, membership, vote, the
//! snapshot their state restarts from, and every live entry (read back into
//! memory: raft-rs reads its log synchronously). The caller loads each
//! snapshot (an I/O of its own); the shard then re-applies the committed
//! entries after it.

use wal::disk::Disk;
use wal::{ReadError, Wal};

use crate::region::meta::{MetaDecodeError, RegionLocalState, RegionMeta};
use crate::region::wal_convert::{conf_state_from_wal, entry_from_wal, hard_state_from_wal};
use crate::region::RegionStorage;
use crate::snapshot::SnapshotId;

/// Entries read per WAL request while loading.
const LOAD_READ_BYTES: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("region {region}: {source}")]
    Meta { region: u64, source: MetaDecodeError },
    #[error(
        "region {region} has a log but no meta: the WAL record holding it is missing (dropped as damaged by a \
         tolerant recovery, or never written by this engine); rebuild this store from its peers"
    )]
    NoMeta { region: u64 },
    #[error("region {region}: reading entries [{lo}, {hi}): {source}")]
    Read { region: u64, lo: u64, hi: u64, source: ReadError },

    #[error(
        "region {region}: its log starts at {first_index}, after its snapshot at {snapshot_index}: entries are lost"
    )]
    LogGap { region: u64, first_index: u64, snapshot_index: u64 },
}

/// One recovered region: its meta, its log view, and the snapshot to load.
pub struct LoadedRegion {
    pub meta: RegionMeta,
    /// A split child whose initial state was not durable yet (an
    /// initialized meta that names no snapshot): replaying its parent's
    /// split creates it again, with this log and vote (`shard::split`).
    pub pending_child: bool,
    pub storage: RegionStorage,
    pub snapshot: Option<SnapshotId>,
    /// Its log was lost back to its snapshot (records dropped): the WAL's
    /// log must be reset to the snapshot before anything is appended.
    pub log_lost: bool,
}

/// The regions the WAL holds as removed from this shard: (region, the peer
/// that was removed — messages to it, or to an older peer id, are dropped —,
/// its last meta).
pub fn load_tombstones<D: Disk>(wal: &Wal<D>) -> Result<Vec<(u64, u64, RegionMeta)>, LoadError> {
    let mut out = vec![];
    for region in wal.regions().filter(|r| wal.is_tombstone(*r)) {
        let bytes = wal.meta(region).ok_or(LoadError::NoMeta { region })?;
        let state = RegionLocalState::decode(bytes).map_err(|source| LoadError::Meta { region, source })?;
        out.push((region, state.removed_peer.unwrap_or(0), state.meta));
    }
    Ok(out)
}

/// Every live (non-tombstone) region of the WAL. When the WAL lost records
/// (`lost_records`: its needs-catch-up flag), a region whose log no longer
/// reaches back to its snapshot restarts from the snapshot with no log, and
/// a commit index past what is left is lowered to it: the region is
/// suspect (`shard::catch_up`) and its leader sends the rest again.
pub async fn load_regions<D: Disk>(wal: &Wal<D>, lost_records: bool) -> Result<Vec<LoadedRegion>, LoadError> {
    let mut out = vec![];
    let ids: Vec<u64> = wal.regions().collect();
    for region in ids {
        if wal.is_tombstone(region) {
            continue;
        }
        let meta_bytes = wal.meta(region).ok_or(LoadError::NoMeta { region })?;
        let state = RegionLocalState::decode(meta_bytes).map_err(|source| LoadError::Meta { region, source })?;
        let mut hs = wal.hard_state(region).map(|h| hard_state_from_wal(&h)).unwrap_or_default();
        let cs = wal.conf_state(region).map(conf_state_from_wal).unwrap_or_default();
        // the log starts after its last compaction or installed snapshot
        let first_index = wal.first_index(region).unwrap_or(1);
        let has_entries = wal.last_index(region).is_some_and(|last| last >= first_index);
        let snapshot = state.snapshot.map(|(index, term)| SnapshotId { region, index, term });
        let snapshot_index = snapshot.map_or(0, |s| s.index);
        // (an uninitialized peer's meta has conf_ver 0; every other region's names a snapshot)
        let pending_child = snapshot.is_none() && state.meta.conf_ver > 0;
        let gap = has_entries && first_index > snapshot_index + 1 && !pending_child;
        // the records that held the entries between were dropped: keep the
        // snapshot, let the leader send the log again
        let lost_back_to_snapshot = gap && lost_records;
        if lost_back_to_snapshot {
            tracing::warn!(region, first_index, snapshot_index, "log lost back to the snapshot: restarting from it");
        }
        let base = if lost_back_to_snapshot {
            snapshot.map_or((0, 0), |s| (s.index, s.term))
        } else if snapshot.is_none() && !has_entries && !pending_child {
            // a peer created for a region it has no state of yet (its log
            // may still start where an earlier, removed peer's ended)
            (0, 0)
        } else if gap {
            return Err(LoadError::LogGap { region, first_index, snapshot_index });
        } else {
            let term = wal.term(region, first_index - 1).expect("the WAL keeps the term before its first entry");
            (first_index - 1, term)
        };
        // the snapshot is committed; its record carries a commit at least
        // this high, and raft refuses to start with applied > commit
        hs.commit = hs.commit.max(snapshot_index);
        let mut entries = vec![];
        if let (false, Some(first), Some(last)) =
            (lost_back_to_snapshot, wal.first_index(region), wal.last_index(region))
        {
            let (mut lo, hi) = (first, last + 1);
            while lo < hi {
                let got = match wal.entries(region, lo, hi, LOAD_READ_BYTES) {
                    Ok(es) => es,
                    Err(ReadError::NotCached { .. }) => {
                        let job = wal.fetch(region, lo, hi, LOAD_READ_BYTES).map_err(|source| LoadError::Read {
                            region,
                            lo,
                            hi,
                            source,
                        })?;
                        job.run().await.map_err(|source| LoadError::Read { region, lo, hi, source })?
                    }
                    Err(source) => return Err(LoadError::Read { region, lo, hi, source }),
                };
                assert!(!got.is_empty(), "region {region}: a WAL read returns at least one entry");
                lo += got.len() as u64;
                entries.extend(got.iter().map(entry_from_wal));
            }
        }
        if lost_records {
            // a commit index recorded after records that were dropped may be
            // past the log that is left (raft refuses to start so)
            let last = entries.last().map_or(base.0, |e: &raft::eraftpb::Entry| e.index);
            hs.commit = hs.commit.min(last).max(snapshot_index);
        }
        let storage = RegionStorage::new(hs, cs, base, entries);
        out.push(LoadedRegion { meta: state.meta, pending_child, storage, snapshot, log_lost: lost_back_to_snapshot });
    }
    Ok(out)
}
