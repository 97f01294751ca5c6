//! Where a shard's snapshot files live and how they get there durably.
//!
//! `<shard dir>/snapshots/region-<id>-index-<index>-term-<term>.snap` is
//! the snapshot a region's WAL state names (one per region; older ones are
//! removed once a newer one is recorded). A file is written as `*.tmp`,
//! fdatasynced, renamed and the directory fsynced: a name without `.tmp`
//! always holds a whole, durable file. Snapshots received from a leader
//! arrive in `snapshots/incoming/` (the transport's directory) and are
//! renamed into place before the WAL records their install. At start,
//! everything the WAL does not name is removed (a crash between writing a
//! file and recording it leaves one behind).
//!
//! These functions block: the runtime calls them on glommio's blocking pool.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter};
use std::path::{Path, PathBuf};

use crate::snapshot::format::{self, DecodeError};
use crate::snapshot::{RegionSnapshot, SnapshotId};

/// Buffer of the writer and reader (snapshot rows are small and many).
const IO_BUFFER_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: io::Error },
    #[error("snapshot {path} is damaged: {source}")]
    Damaged { path: PathBuf, source: DecodeError },
    #[error("snapshot {path} holds region {region} at ({index}, {term}), not the one asked for")]
    Mismatch { path: PathBuf, region: u64, index: u64, term: u64 },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SnapshotFileError + 'a {
    move |source| SnapshotFileError::Io { op, path: path.to_path_buf(), source }
}

/// The directory of a shard's snapshots.
pub fn snapshot_dir(shard_dir: &Path) -> PathBuf {
    shard_dir.join("snapshots")
}

/// Where the transport puts snapshots it receives.
pub fn incoming_dir(shard_dir: &Path) -> PathBuf {
    snapshot_dir(shard_dir).join("incoming")
}

pub fn file_name(id: SnapshotId) -> String {
    format!("region-{}-index-{}-term-{}.snap", id.region, id.index, id.term)
}

pub fn path_of(dir: &Path, id: SnapshotId) -> PathBuf {
    dir.join(file_name(id))
}

/// The snapshot a file name stands for (`None`: not a snapshot's name).
pub fn parse_name(name: &str) -> Option<SnapshotId> {
    let rest = name.strip_prefix("region-")?.strip_suffix(".snap")?;
    let mut parts = rest.split('-');
    let region = parts.next()?.parse().ok()?;
    let index = (parts.next()? == "index").then(|| parts.next()?.parse().ok()).flatten()?;
    let term = (parts.next()? == "term").then(|| parts.next()?.parse().ok()).flatten()?;
    parts.next().is_none().then_some(SnapshotId { region, index, term })
}

fn sync_dir(dir: &Path) -> Result<(), SnapshotFileError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("fsync directory", dir))
}

/// Writes `snap` to its place in `dir`, durably; returns the file's size.
pub fn write(dir: &Path, snap: &RegionSnapshot) -> Result<u64, SnapshotFileError> {
    let path = path_of(dir, snap.id());
    let tmp = path.with_extension("snap.tmp");
    // a crash may have left a partial file of this very snapshot
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_err("remove", &tmp)(e)),
        _ => {}
    }
    let file = OpenOptions::new().write(true).create_new(true).open(&tmp).map_err(io_err("create", &tmp))?;
    let written = (|| {
        let mut out = BufWriter::with_capacity(IO_BUFFER_BYTES, &file);
        let n = format::encode(snap, &mut out).map_err(io_err("write", &tmp))?;
        drop(out);
        file.sync_data().map_err(io_err("fdatasync", &tmp))?;
        fs::rename(&tmp, &path).map_err(io_err("rename", &tmp))?;
        Ok(n)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    let n = written?;
    sync_dir(dir)?;
    Ok(n)
}

/// Reads and checks the snapshot file at `path`.
pub fn read_path(path: &Path) -> Result<RegionSnapshot, SnapshotFileError> {
    let file = File::open(path).map_err(io_err("open", path))?;
    format::decode(BufReader::with_capacity(IO_BUFFER_BYTES, file))
        .map_err(|source| SnapshotFileError::Damaged { path: path.to_path_buf(), source })
}

/// Reads the snapshot `id` from `dir`, checking it is the one named.
pub fn read(dir: &Path, id: SnapshotId) -> Result<RegionSnapshot, SnapshotFileError> {
    let path = path_of(dir, id);
    let snap = read_path(&path)?;
    if snap.id() != id {
        let s = snap.id();
        return Err(SnapshotFileError::Mismatch { path, region: s.region, index: s.index, term: s.term });
    }
    Ok(snap)
}

/// Moves a received snapshot into its place in `dir`, durably.
pub fn install(from: &Path, dir: &Path, id: SnapshotId) -> Result<(), SnapshotFileError> {
    let to = path_of(dir, id);
    fs::rename(from, &to).map_err(io_err("rename", from))?;
    sync_dir(dir)
}

/// Removes a snapshot file that is no longer needed (missing is fine).
pub fn remove(path: &Path) -> Result<(), SnapshotFileError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove", path)(e)),
        _ => Ok(()),
    }
}

/// Creates the directories and removes every file the WAL does not name:
/// partial writes, snapshots never recorded or replaced, and received
/// snapshots never installed. Returns how many files went.
pub fn sweep(shard_dir: &Path, keep: &BTreeSet<SnapshotId>) -> Result<usize, SnapshotFileError> {
    let (dir, incoming) = (snapshot_dir(shard_dir), incoming_dir(shard_dir));
    fs::create_dir_all(&incoming).map_err(io_err("create directory", &incoming))?;
    let mut removed = 0;
    for d in [&dir, &incoming] {
        for entry in fs::read_dir(d).map_err(io_err("list", d))? {
            let entry = entry.map_err(io_err("list", d))?;
            let path = entry.path();
            if path.is_dir() {
                continue;
            }
            let named = path.file_name().and_then(|n| n.to_str()).and_then(parse_name).filter(|_| d == &dir);
            if named.is_none_or(|id| !keep.contains(&id)) {
                remove(&path)?;
                removed += 1;
            }
        }
        sync_dir(d)?;
    }
    // the snapshot directory's own entry (just created, on a first start)
    sync_dir(shard_dir)?;
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{CommandRef, MemKv, StateMachine};
    use crate::region::meta::{PeerMeta, RegionMeta};
    use crate::snapshot::SnapshotConf;

    #[test]
    fn names_parse_back_and_nothing_else_does() {
        let id = SnapshotId { region: 12, index: 3456, term: 7 };
        assert_eq!(parse_name(&file_name(id)), Some(id));
        for bad in ["region-1-index-2.snap", "region-1-index-2-term-3.snap.tmp", "x", "region-a-index-2-term-3.snap"] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn written_snapshots_read_back_and_the_sweep_keeps_only_what_is_named() {
        let shard = tempfile::tempdir().unwrap();
        let dir = snapshot_dir(shard.path());
        assert_eq!(sweep(shard.path(), &BTreeSet::new()).unwrap(), 0);
        let mut kv = MemKv::default();
        kv.apply(CommandRef::Put { key: b"a", value: b"1" });
        let meta = RegionMeta {
            id: 3,
            start_key: vec![],
            end_key: vec![],
            conf_ver: 1,
            version: 1,
            peers: vec![PeerMeta::voter(31, 1, 0)],
            max_peer_id: 31,
        };
        let snap = |index| RegionSnapshot {
            meta: meta.clone(),
            index,
            term: 2,
            conf_state: SnapshotConf { voters: vec![31], ..Default::default() },
            kv: kv.clone(),
        };
        write(&dir, &snap(10)).unwrap();
        write(&dir, &snap(20)).unwrap();
        assert_eq!(read(&dir, snap(20).id()).unwrap(), snap(20));
        assert!(matches!(read(&dir, snap(30).id()), Err(SnapshotFileError::Io { op: "open", .. })));
        fs::write(dir.join("region-3-index-40-term-2.snap.tmp"), b"partial").unwrap();
        fs::write(incoming_dir(shard.path()).join("x.snap"), b"never installed").unwrap();
        let removed = sweep(shard.path(), &[snap(20).id()].into()).unwrap();
        assert_eq!(removed, 3);
        let left: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left.len(), 2, "the kept snapshot and the incoming directory: {left:?}");
        // a damaged file is reported with its path
        let path = path_of(&dir, snap(20).id());
        let mut bytes = fs::read(&path).unwrap();
        bytes[20] ^= 1;
        fs::write(&path, bytes).unwrap();
        match read(&dir, snap(20).id()) {
            Err(e @ SnapshotFileError::Damaged { .. }) => assert!(e.to_string().contains("region-3-index-20"), "{e}"),
            other => panic!("{other:?}"),
        }
    }
}
