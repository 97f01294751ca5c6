//! File names in a WAL directory.
//!
//! - `<seq:016x>.wal`  a segment (live, or a prepared spare with no records yet)
//! - `<seq:016x>.free` a purged segment kept for recycling (its old records
//!   carry its old sequence number and never validate again)
//! - `<seq:016x>.tmp`  a segment being zero-filled; deleted on open
//! - `LOCK`            held (flock) by the process that has the WAL open
//! - `PROBE`           one non-empty block, opened before any other DMA file to
//!   sidestep glommio's iopoll probe bug (docs/design.md, "The write-ahead log")

pub const SEGMENT_SUFFIX: &str = "wal";
pub const FREE_SUFFIX: &str = "free";
pub const TMP_SUFFIX: &str = "tmp";
pub const LOCK_FILE: &str = "LOCK";
pub const PROBE_FILE: &str = "PROBE";

/// What a file in a WAL directory is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FileKind {
    Segment(u64),
    Free(u64),
    Tmp(u64),
}

pub fn segment_name(seq: u64) -> String {
    format!("{seq:016x}.{SEGMENT_SUFFIX}")
}
pub fn free_name(seq: u64) -> String {
    format!("{seq:016x}.{FREE_SUFFIX}")
}
pub fn tmp_name(seq: u64) -> String {
    format!("{seq:016x}.{TMP_SUFFIX}")
}

/// Parses a file name; `None` for files the WAL does not own.
pub fn parse_name(name: &str) -> Option<FileKind> {
    let (stem, suffix) = name.split_once('.')?;
    if stem.len() != 16 {
        return None;
    }
    // exactly the names we write: 16 lowercase hex digits
    if !stem.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    let seq = u64::from_str_radix(stem, 16).ok()?;
    match suffix {
        SEGMENT_SUFFIX => Some(FileKind::Segment(seq)),
        FREE_SUFFIX => Some(FileKind::Free(seq)),
        TMP_SUFFIX => Some(FileKind::Tmp(seq)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_foreign_files_are_ignored() {
        assert_eq!(parse_name(&segment_name(0xab)), Some(FileKind::Segment(0xab)));
        assert_eq!(parse_name(&free_name(7)), Some(FileKind::Free(7)));
        assert_eq!(parse_name(&tmp_name(7)), Some(FileKind::Tmp(7)));
        assert_eq!(parse_name("LOCK"), None);
        assert_eq!(parse_name("0000000000000001.txt"), None);
        assert_eq!(parse_name("1.wal"), None);
        assert_eq!(parse_name("+000000000000003.wal"), None);
        assert_eq!(parse_name("00000000000000AB.wal"), None);
    }
}
