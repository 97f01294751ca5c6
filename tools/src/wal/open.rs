//! Finding the WAL(s) under a directory and mapping their segments read-only.
//!
//! Every command starts here. DIR is either a WAL directory (it holds
//! `<seq:016x>.wal` segments) or a store data directory holding
//! `shard-<i>/wal/`, whose WALs are then reported one by one. Each segment is
//! mapped read-only with memmap2 and handed on as a slice, never copied:
//! recovery straight over the mappings is what lets `verify` run near raw
//! sequential read speed.
//!
//! Nothing here writes. A WAL whose `LOCK` is held by a running server is
//! refused, and a shared lock is held while the tool reads, so a server
//! cannot start on the files under our feet.

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::{Advice, Mmap};
use wal::format::{SegmentHeader, SegmentHeaderError};
use wal::layout::{parse_name, FileKind, LOCK_FILE, PROBE_FILE};

use super::error::ToolError;

/// Name of a shard's directory in a store data directory: `shard-<i>`.
const SHARD_PREFIX: &str = "shard-";
/// Name of the WAL directory inside a shard directory.
const SHARD_WAL_DIR: &str = "wal";

/// One WAL directory, its segments mapped.
pub struct WalDir {
    /// The shard it belongs to, when DIR was a store data directory.
    pub shard: Option<u32>,
    pub path: PathBuf,
    /// Segments in sequence order (the order recovery needs).
    pub segments: Vec<Segment>,
    /// Purged segments kept for recycling (`.free`).
    pub free: Vec<u64>,
    /// Segments whose zero-fill never finished (`.tmp`; the log deletes them on open).
    pub tmp: Vec<u64>,
    /// Files the log does not own.
    pub unknown: Vec<String>,
    /// Shared lock on `LOCK`, held while we read.
    _lock: Option<File>,
}

impl WalDir {
    /// Bytes of all segment files together.
    pub fn total_bytes(&self) -> u64 {
        self.segments.iter().map(Segment::file_bytes).sum()
    }
}

/// One segment file, mapped read-only.
pub struct Segment {
    /// Sequence number from the file name.
    pub seq: u64,
    pub path: PathBuf,
    map: Mmap,
    /// The decoded header, or why the file is not a segment.
    pub header: Result<SegmentHeader, SegmentHeaderError>,
}

/// What is wrong with a segment file as a whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SegmentProblem {
    /// Not a segment at all (bad magic, version, header checksum, too short).
    Header(SegmentHeaderError),
    /// A valid header that names another sequence number.
    SeqMismatch { header_seq: u64 },
    /// Shorter than the size its header gives: its end is lost.
    Truncated { file_bytes: u64, segment_bytes: u64 },
}

impl SegmentProblem {
    /// Where in the file the problem is.
    pub fn offset(&self) -> u64 {
        match self {
            SegmentProblem::Header(_) | SegmentProblem::SeqMismatch { .. } => 0,
            SegmentProblem::Truncated { file_bytes, .. } => *file_bytes,
        }
    }

    /// A stable name for scripts.
    pub fn kind(&self) -> &'static str {
        match self {
            SegmentProblem::Header(_) => "bad_header",
            SegmentProblem::SeqMismatch { .. } => "seq_mismatch",
            SegmentProblem::Truncated { .. } => "truncated",
        }
    }
}

impl fmt::Display for SegmentProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SegmentProblem::Header(e) => write!(f, "not a WAL segment: {e}"),
            SegmentProblem::SeqMismatch { header_seq } => {
                write!(f, "header says sequence {header_seq:016x}: file was renamed or copied by hand")
            }
            SegmentProblem::Truncated { file_bytes, segment_bytes } => write!(
                f,
                "truncated: file is {file_bytes} bytes but its header says {segment_bytes}; everything from offset {file_bytes} on is lost"
            ),
        }
    }
}

impl Segment {
    /// The whole file, straight from the mapping.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    pub fn file_bytes(&self) -> u64 {
        self.map.len() as u64
    }

    /// What is wrong with the file as a whole, if anything (records are
    /// checked by recovery, not here).
    pub fn problem(&self) -> Option<SegmentProblem> {
        match &self.header {
            Err(e) => Some(SegmentProblem::Header(e.clone())),
            Ok(h) if h.seq != self.seq => Some(SegmentProblem::SeqMismatch { header_seq: h.seq }),
            Ok(h) if h.segment_bytes > self.file_bytes() => {
                Some(SegmentProblem::Truncated { file_bytes: self.file_bytes(), segment_bytes: h.segment_bytes })
            }
            Ok(_) => None,
        }
    }
}

/// Finds the WAL(s) under `dir` and maps their segments.
///
/// `dir` with segment files is one WAL; otherwise its `shard-<i>/wal/`
/// directories are, in shard order. A store whose shards hold no segments
/// yet is returned as such (empty WALs); a directory with neither is an error.
pub fn open(dir: &Path) -> Result<Vec<WalDir>, ToolError> {
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return Err(ToolError::NotADirectory { path: dir.to_path_buf() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ToolError::DirNotFound { path: dir.to_path_buf() })
        }
        Err(e) => return Err(ToolError::io("stat", dir)(e)),
    }
    let names = list(dir)?;
    if names.iter().any(|n| is_segment_like(dir, n)) {
        return Ok(vec![open_wal(dir, None)?]);
    }
    let mut shards: Vec<(u32, PathBuf)> = names
        .iter()
        .filter_map(|n| {
            let i = n.strip_prefix(SHARD_PREFIX)?.parse::<u32>().ok()?;
            let wal = dir.join(n).join(SHARD_WAL_DIR);
            wal.is_dir().then_some((i, wal))
        })
        .collect();
    if shards.is_empty() {
        return Err(ToolError::NoSegments { path: dir.to_path_buf() });
    }
    shards.sort_unstable();
    shards.into_iter().map(|(i, wal)| open_wal(&wal, Some(i))).collect()
}

/// Names of the entries of a directory.
fn list(dir: &Path) -> Result<Vec<String>, ToolError> {
    let mut names = vec![];
    for entry in std::fs::read_dir(dir).map_err(ToolError::io("list", dir))? {
        let entry = entry.map_err(ToolError::io("list", dir))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort_unstable();
    Ok(names)
}

/// A regular file whose name the log reads as a segment.
fn is_segment_like(dir: &Path, name: &str) -> bool {
    matches!(parse_name(name), Some(FileKind::Segment(_))) && dir.join(name).is_file()
}

fn open_wal(path: &Path, shard: Option<u32>) -> Result<WalDir, ToolError> {
    let lock = lock_shared(path)?;
    let mut wal = WalDir {
        shard,
        path: path.to_path_buf(),
        segments: vec![],
        free: vec![],
        tmp: vec![],
        unknown: vec![],
        _lock: lock,
    };
    for name in list(path)? {
        let file_path = path.join(&name);
        if !file_path.is_file() {
            wal.unknown.push(name);
            continue;
        }
        // the log owns exactly the names it writes; anything else is not its
        let Some(kind) = parse_name(&name) else {
            if name != LOCK_FILE && name != PROBE_FILE {
                wal.unknown.push(name);
            }
            continue;
        };
        match kind {
            FileKind::Segment(seq) => wal.segments.push(map_segment(seq, file_path)?),
            FileKind::Free(seq) => wal.free.push(seq),
            FileKind::Tmp(seq) => wal.tmp.push(seq),
        }
    }
    wal.segments.sort_unstable_by_key(|s| s.seq);
    wal.free.sort_unstable();
    wal.tmp.sort_unstable();
    Ok(wal)
}

/// Takes a shared lock on the WAL's `LOCK` file, if there is one. The server
/// holds it exclusively while the WAL is open.
fn lock_shared(dir: &Path) -> Result<Option<File>, ToolError> {
    let path = dir.join(LOCK_FILE);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ToolError::io("open", path)(e)),
    };
    // File locking is std since 1.89; the wal crate already needs it (it
    // takes the exclusive lock the same way), so the workspace's declared
    // rust-version 1.85 is out of date, not this call.
    #[allow(clippy::incompatible_msrv)]
    let locked = file.try_lock_shared();
    match locked {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(ToolError::Locked { path: dir.to_path_buf() }),
        Err(std::fs::TryLockError::Error(e)) => Err(ToolError::io("lock", path)(e)),
    }
}

fn map_segment(seq: u64, path: PathBuf) -> Result<Segment, ToolError> {
    let file = File::open(&path).map_err(ToolError::io("open", &path))?;
    // SAFETY: the mapping is read-only and the file is never written by this
    // process. The server that owns the WAL is kept out by the lock taken in
    // `lock_shared`; it never truncates a segment in any case (segments are
    // recycled by rename and overwritten in place), so a page the mapping
    // covers cannot vanish while we read it.
    let map = unsafe { Mmap::map(&file) }.map_err(ToolError::io("map", &path))?;
    // A hint only: recovery reads each segment front to back once.
    let _ = map.advise(Advice::Sequential);
    let header = SegmentHeader::decode(&map);
    Ok(Segment { seq, path, map, header })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::testkit;
    use wal::layout::{free_name, segment_name, tmp_name};

    #[test]
    fn a_missing_directory_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("nope");
        let err = open(&missing).err().unwrap();
        assert!(matches!(err, ToolError::DirNotFound { .. }), "{err}");
        assert!(err.to_string().contains("nope: no such directory"), "{err}");
    }

    #[test]
    fn a_directory_without_segments_or_shards_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("LOCK"), b"").unwrap();
        std::fs::write(tmp.path().join(free_name(3)), b"").unwrap();
        let err = open(tmp.path()).err().unwrap();
        assert!(matches!(err, ToolError::NoSegments { .. }), "{err}");
        assert!(err.to_string().contains("no segment files"), "{err}");
    }

    #[test]
    fn a_file_given_as_the_directory_is_refused() {
        let (dir, _) = testkit::build(&testkit::Plan::default());
        let seg = dir.path().join(segment_name(1));
        let err = open(&seg).err().unwrap();
        assert!(matches!(err, ToolError::NotADirectory { .. }), "{err}");
    }

    #[test]
    fn a_store_directory_yields_each_shard_wal_in_shard_order() {
        let store = tempfile::tempdir().unwrap();
        for shard in [10, 2] {
            let wal_dir = store.path().join(format!("shard-{shard}")).join("wal");
            testkit::build_into(&testkit::Plan::default(), &wal_dir);
        }
        std::fs::create_dir_all(store.path().join("shard-5")).unwrap(); // no wal/ yet: ignored
        let wals = open(store.path()).unwrap();
        assert_eq!(wals.iter().map(|w| w.shard).collect::<Vec<_>>(), vec![Some(2), Some(10)]);
        assert!(wals.iter().all(|w| !w.segments.is_empty()));
    }

    #[test]
    fn files_are_sorted_into_segments_free_tmp_and_unknown() {
        let (dir, w) = testkit::build(&testkit::Plan::default());
        let d = dir.path();
        std::fs::write(d.join(free_name(0x40)), b"").unwrap();
        std::fs::write(d.join(tmp_name(0x41)), b"").unwrap();
        std::fs::write(d.join("00000000000000AB.wal"), b"").unwrap();
        std::fs::write(d.join("notes.txt"), b"").unwrap();
        std::fs::write(d.join(LOCK_FILE), b"").unwrap();
        let wals = open(d).unwrap();
        let wal = &wals[0];
        assert_eq!(wal.shard, None);
        let seqs: Vec<u64> = wal.segments.iter().map(|s| s.seq).collect();
        assert_eq!(seqs, (1..=w.segments).collect::<Vec<_>>());
        assert!(wal.segments.iter().all(|s| s.problem().is_none()));
        assert_eq!(wal.free, vec![0x40]);
        assert_eq!(wal.tmp, vec![0x41]);
        // a name the log would not write is not the log's file
        assert_eq!(wal.unknown, vec!["00000000000000AB.wal".to_string(), "notes.txt".to_string()]);
    }

    #[test]
    #[allow(clippy::incompatible_msrv)] // see lock_shared
    fn a_wal_held_by_a_running_server_is_refused() {
        let (dir, _) = testkit::build(&testkit::Plan::default());
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.path().join(LOCK_FILE))
            .unwrap();
        lock.try_lock().unwrap();
        let err = open(dir.path()).err().unwrap();
        assert!(matches!(err, ToolError::Locked { .. }), "{err}");
        lock.unlock().unwrap();
        assert!(open(dir.path()).is_ok());
    }

    #[test]
    fn truncated_and_foreign_segments_are_told_apart() {
        let (dir, _) = testkit::build(&testkit::Plan::default());
        let d = dir.path();
        let f = std::fs::OpenOptions::new().write(true).open(d.join(segment_name(2))).unwrap();
        f.set_len(20 << 10).unwrap();
        std::fs::write(d.join(segment_name(0x99)), b"hello, not a segment").unwrap();
        let wals = open(d).unwrap();
        let problems: Vec<_> = wals[0].segments.iter().map(|s| (s.seq, s.problem())).collect();
        assert_eq!(problems[1], (2, Some(SegmentProblem::Truncated { file_bytes: 20 << 10, segment_bytes: 64 << 10 })));
        let (seq, p) = problems.last().unwrap();
        assert_eq!(*seq, 0x99);
        assert_eq!(p.as_ref().map(SegmentProblem::kind), Some("bad_header"));
        assert!(p.as_ref().unwrap().to_string().contains("not a WAL segment: file is shorter than a segment header"));
    }
}
