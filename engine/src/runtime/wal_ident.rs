//! Whose WAL this is. A replica must never rejoin its regions having
//! forgotten what it acknowledged or whom it voted for (Protocol-Aware
//! Recovery, FAST '18): a store whose shard WAL was deleted, swapped for
//! another, or cut short would otherwise start with its old peer ids, an
//! empty or shorter log and no vote — and one more fault then loses
//! committed data or elects two leaders in one term.
//!
//! So every shard's WAL directory holds `WAL_IDENT`: the cluster, store and
//! shard it belongs to, a nonce drawn when the WAL was created, and the last
//! segment sequence the WAL had reached (rewritten, durably, whenever the
//! shard sees its WAL move to a new segment). The store's `IDENT` records
//! each shard's nonce once every WAL was created durably and before the
//! store first served anyone (`data_dir::Ident::wals`): from then on the
//! store is *initialized*, and every start checks, before it contacts PD or
//! any peer, that each shard's WAL is there, is the one recorded, and did
//! not lose its newest segments — or refuses to start, naming the WAL.
//!
//! Whether a WAL holds regions is never the test: a store added after
//! bootstrap, or a shard that was given no region, legitimately has none.
//! The recorded segment may lag the WAL (it is written after the roll), so
//! the check can miss a cut that happened right after a roll, but it never
//! refuses a WAL that is whole.
//!
//! Rebuilding a replica on purpose is an operator's act, never something a
//! store does on its own: drain the store (or let PD replace its replicas),
//! wipe its data directory and start it as a new store (docs/quickstart.md,
//! "When a store refuses to start").

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::runtime::data_dir::{self, DataDirError, Ident};

/// The identity file in each shard's WAL directory.
pub const WAL_IDENT_FILE: &str = "WAL_IDENT";

/// What a shard's WAL directory says of itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalIdent {
    pub cluster_id: u64,
    pub store_id: u64,
    pub shard: u16,
    /// Drawn when the WAL was created; recorded in the store's IDENT.
    pub nonce: u64,
    /// The newest segment the WAL had reached when this was written (0:
    /// none yet). A WAL whose newest segment is older lost segments.
    pub last_segment: u64,
}

/// Why a store refuses to start with one of its shards' WALs.
#[derive(Debug, thiserror::Error)]
pub enum WalRefusal {
    #[error(
        "{}: shard {shard}'s WAL is missing, but this store is initialized (its IDENT records one): {REBUILD}",
        .wal.display()
    )]
    Missing { wal: PathBuf, shard: u16 },
    #[error(
        "{}: a WAL of cluster {}, store {}, shard {}, not of this store (cluster {cluster_id}, store {store_id}, shard {shard}): {REBUILD}",
        .wal.display(), .found.cluster_id, .found.store_id, .found.shard
    )]
    OtherOwner { wal: PathBuf, found: WalIdent, cluster_id: u64, store_id: u64, shard: u16 },
    #[error(
        "{}: another WAL than the one this store created (nonce {:016x}; its IDENT records {recorded:016x}): {REBUILD}",
        .wal.display(), .found.nonce
    )]
    OtherNonce { wal: PathBuf, found: WalIdent, recorded: u64 },
    #[error(
        "{}: the WAL ends at segment {} but had reached segment {recorded}: its newest segments are gone: {REBUILD}",
        .wal.display(), .last.map_or("none".to_string(), |s| s.to_string())
    )]
    Truncated { wal: PathBuf, last: Option<u64>, recorded: u64 },
    #[error("the store's IDENT records {recorded} WALs for {shards} shards")]
    Count { recorded: usize, shards: u16 },
    #[error(transparent)]
    File(#[from] DataDirError),
}

/// What the refusals tell the operator to do instead.
const REBUILD: &str = "refusing to start, since a replica that forgot what it acknowledged must not rejoin; \
to rebuild this store on purpose, drain it (or let PD replace its replicas), wipe its data directory and \
start it as a new store";

/// Shard `shard`'s WAL directory in a store's data directory.
pub fn wal_dir(data_dir: &Path, shard: u16) -> PathBuf {
    data_dir::shard_dir(data_dir, shard).join("wal")
}

pub fn read(wal_dir: &Path) -> Result<Option<WalIdent>, DataDirError> {
    data_dir::read_json(&wal_dir.join(WAL_IDENT_FILE), "a WAL identity file")
}

/// Writes the identity durably (the directory is created if need be, and
/// fsynced with its parent: the WAL's own directory must survive a crash).
pub fn write(wal_dir: &Path, ident: &WalIdent) -> Result<(), DataDirError> {
    let text = serde_json::to_string_pretty(ident).expect("an identity encodes");
    data_dir::write_durably(wal_dir, WAL_IDENT_FILE, text.as_bytes())?;
    if let Some(parent) = wal_dir.parent() {
        std::fs::File::open(parent).and_then(|d| d.sync_all()).map_err(|source| DataDirError::Io {
            op: "fsync",
            path: parent.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

/// The newest segment file in a WAL directory, if any (`None` also when the
/// directory itself is gone).
pub fn last_segment_on_disk(wal_dir: &Path) -> Result<Option<u64>, DataDirError> {
    let entries = match std::fs::read_dir(wal_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(DataDirError::Io { op: "list", path: wal_dir.to_path_buf(), source }),
    };
    let mut last = None;
    for entry in entries {
        let entry = entry.map_err(|source| DataDirError::Io { op: "list", path: wal_dir.to_path_buf(), source })?;
        if let Some(wal::layout::FileKind::Segment(seq)) = entry.file_name().to_str().and_then(wal::layout::parse_name)
        {
            last = last.max(Some(seq));
        }
    }
    Ok(last)
}

/// The decision for one shard of an initialized store, without I/O: the
/// WAL identity `found` in `wal` (None: no identity file) and its newest
/// segment on disk, against what the store's IDENT recorded.
pub fn verify(
    ident: &Ident,
    shard: u16,
    recorded_nonce: u64,
    wal: &Path,
    found: Option<WalIdent>,
    last_segment: Option<u64>,
) -> Result<(), WalRefusal> {
    let wal = wal.to_path_buf();
    let Some(found) = found else { return Err(WalRefusal::Missing { wal, shard }) };
    if (found.cluster_id, found.store_id, found.shard) != (ident.cluster_id, ident.store_id, shard) {
        let (cluster_id, store_id) = (ident.cluster_id, ident.store_id);
        return Err(WalRefusal::OtherOwner { wal, found, cluster_id, store_id, shard });
    }
    if found.nonce != recorded_nonce {
        return Err(WalRefusal::OtherNonce { wal, found, recorded: recorded_nonce });
    }
    if found.last_segment > 0 && last_segment.is_none_or(|last| last < found.last_segment) {
        return Err(WalRefusal::Truncated { wal, last: last_segment, recorded: found.last_segment });
    }
    Ok(())
}

/// Checks every shard's WAL of an initialized store (its IDENT records
/// their nonces); a store not yet initialized has nothing to check.
pub fn check_store(data_dir: &Path, ident: &Ident) -> Result<(), WalRefusal> {
    let Some(nonces) = &ident.wals else { return Ok(()) };
    if nonces.len() != usize::from(ident.shards) {
        return Err(WalRefusal::Count { recorded: nonces.len(), shards: ident.shards });
    }
    for (shard, nonce) in (0..ident.shards).zip(nonces) {
        let dir = wal_dir(data_dir, shard);
        verify(ident, shard, *nonce, &dir, read(&dir)?, last_segment_on_disk(&dir)?)?;
    }
    Ok(())
}

/// Shard `shard`'s WAL identity as the shard starts: checked against the
/// store's IDENT if the store is initialized; otherwise the one a first
/// start that did not finish already made, or a new one (written durably
/// before the WAL holds anything).
pub fn prepare(dir: &Path, ident: &Ident, shard: u16) -> Result<WalIdent, WalRefusal> {
    let dir = dir.to_path_buf();
    let found = read(&dir)?;
    if let Some(nonces) = &ident.wals {
        let nonce = *nonces
            .get(usize::from(shard))
            .ok_or(WalRefusal::Count { recorded: nonces.len(), shards: ident.shards })?;
        verify(ident, shard, nonce, &dir, found, last_segment_on_disk(&dir)?)?;
        return Ok(found.expect("verified"));
    }
    match found {
        Some(f) if (f.cluster_id, f.store_id, f.shard) == (ident.cluster_id, ident.store_id, shard) => Ok(f),
        Some(f) => Err(WalRefusal::OtherOwner {
            wal: dir,
            found: f,
            cluster_id: ident.cluster_id,
            store_id: ident.store_id,
            shard,
        }),
        None => {
            let new = WalIdent {
                cluster_id: ident.cluster_id,
                store_id: ident.store_id,
                shard,
                nonce: data_dir::fresh_nonce(ident.store_id << 16 | u64::from(shard)),
                last_segment: 0,
            };
            write(&dir, &new)?;
            Ok(new)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(wals: Option<Vec<u64>>) -> Ident {
        Ident {
            format: crate::runtime::data_dir::DATA_FORMAT_VERSION,
            cluster_id: 7,
            store_id: 2,
            shards: 1,
            token: 0,
            wals,
        }
    }

    fn found(nonce: u64, last_segment: u64) -> WalIdent {
        WalIdent { cluster_id: 7, store_id: 2, shard: 0, nonce, last_segment }
    }

    #[test]
    fn a_whole_wal_of_this_store_passes_whether_or_not_it_holds_regions() {
        let id = ident(Some(vec![9]));
        let wal = Path::new("d/shard-0/wal");
        verify(&id, 0, 9, wal, Some(found(9, 0)), None).expect("a WAL that never reached a segment");
        verify(&id, 0, 9, wal, Some(found(9, 3)), Some(3)).expect("at the recorded segment");
        verify(&id, 0, 9, wal, Some(found(9, 3)), Some(5)).expect("past it (the record lags the WAL)");
    }

    #[test]
    fn a_missing_swapped_foreign_or_cut_wal_is_refused_naming_it() {
        let id = ident(Some(vec![9]));
        let wal = Path::new("d/shard-0/wal");
        let e = verify(&id, 0, 9, wal, None, None).unwrap_err();
        assert!(matches!(e, WalRefusal::Missing { .. }), "{e}");
        assert!(e.to_string().contains("d/shard-0/wal") && e.to_string().contains("wipe"), "{e}");
        let e = verify(&id, 0, 9, wal, Some(found(8, 0)), None).unwrap_err();
        assert!(matches!(e, WalRefusal::OtherNonce { recorded: 9, .. }), "{e}");
        let other = WalIdent { store_id: 3, ..found(9, 0) };
        assert!(matches!(verify(&id, 0, 9, wal, Some(other), None), Err(WalRefusal::OtherOwner { .. })));
        let e = verify(&id, 0, 9, wal, Some(found(9, 4)), Some(3)).unwrap_err();
        assert!(matches!(e, WalRefusal::Truncated { last: Some(3), recorded: 4, .. }), "{e}");
        let e = verify(&id, 0, 9, wal, Some(found(9, 4)), None).unwrap_err();
        assert!(matches!(e, WalRefusal::Truncated { last: None, .. }), "{e}");
    }

    #[test]
    fn a_first_start_creates_the_identity_once_and_a_later_check_holds_it_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let fresh = ident(None);
        let wal = wal_dir(dir.path(), 0);
        let made = prepare(&wal, &fresh, 0).unwrap();
        assert_ne!(made.nonce, 0);
        // a first start that crashed before the store was initialized keeps its identity
        assert_eq!(prepare(&wal, &fresh, 0).unwrap(), made);
        let initialized = ident(Some(vec![made.nonce]));
        check_store(dir.path(), &initialized).expect("the WAL it recorded");
        assert_eq!(prepare(&wal, &initialized, 0).unwrap(), made);

        std::fs::remove_dir_all(&wal).unwrap();
        let e = check_store(dir.path(), &initialized).unwrap_err();
        assert!(matches!(e, WalRefusal::Missing { shard: 0, .. }), "{e}");
        assert!(matches!(prepare(&wal, &initialized, 0), Err(WalRefusal::Missing { .. })));
    }

    #[test]
    fn segments_cut_from_the_end_are_found_by_listing_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let wal = wal_dir(dir.path(), 0);
        std::fs::create_dir_all(&wal).unwrap();
        assert_eq!(last_segment_on_disk(&wal).unwrap(), None);
        for name in [wal::layout::segment_name(3), wal::layout::segment_name(4), wal::layout::free_name(9)] {
            std::fs::write(wal.join(name), b"").unwrap();
        }
        std::fs::write(wal.join("LOCK"), b"").unwrap();
        assert_eq!(last_segment_on_disk(&wal).unwrap(), Some(4), "a free segment is not the WAL's end");
        let id = ident(Some(vec![9]));
        write(&wal, &found(9, 4)).unwrap();
        check_store(dir.path(), &id).expect("whole");
        std::fs::remove_file(wal.join(wal::layout::segment_name(4))).unwrap();
        assert!(matches!(check_store(dir.path(), &id), Err(WalRefusal::Truncated { last: Some(3), .. })));
    }
}
