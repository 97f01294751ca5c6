//! `ringraft wal verify`: would the server open this WAL, and if not, where
//! exactly is the first problem?
//!
//! It runs the `wal` crate's own [`Recovery`] in strict mode over every
//! segment in sequence order — the very code the server runs on open — so it
//! checks every record checksum, the record sequence numbers and every
//! region's index continuity, that no segment is shorter than its header
//! says, and that no entry a region still needs is gone — and it cannot
//! disagree with the server. On top of that it checks that every file the
//! log would read has the name the log looks for.
//!
//! A torn tail (a bad record with nothing valid after it) is a write that
//! never completed, not damage: it is reported as a warning and the WAL is
//! clean. Segments go to recovery straight from their read-only mappings.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;
use wal::recovery::{Recovery, RecoveryError, RecoveryMode};

use super::json::TornTail;
use super::open::WalDir;

/// The verdict on every WAL under DIR.
#[derive(Debug, Serialize)]
pub struct VerifyReport {
    pub dir: PathBuf,
    /// Every WAL is clean.
    pub ok: bool,
    pub wals: Vec<WalVerify>,
}

/// The verdict on one WAL.
#[derive(Debug, Serialize)]
pub struct WalVerify {
    pub shard: Option<u32>,
    pub dir: PathBuf,
    pub ok: bool,
    pub segments: usize,
    /// Bytes of all segment files.
    pub bytes: u64,
    /// Records, entries and regions recovered; absent after a problem.
    pub records: Option<u64>,
    pub entries: Option<u64>,
    pub regions: Option<usize>,
    /// A clean WAL may end in a torn write.
    pub torn_tail: Option<TornTail>,
    /// The first problem, in segment and offset order.
    pub problem: Option<Problem>,
    pub elapsed_us: u64,
}

/// Where the WAL first goes wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// `corruption`, `bad_header`, `seq_mismatch`, `truncated`, `malformed`,
    /// `log_continuity`, `lsn_gap` or `missing_entries`.
    pub kind: &'static str,
    /// Where it is; absent for a problem of a region's log as a whole
    /// (`missing_entries`: entries that were in a removed segment).
    pub segment: Option<u64>,
    pub file: Option<PathBuf>,
    pub offset: Option<u64>,
    pub message: String,
}

pub fn verify(dir: PathBuf, wals: &[WalDir]) -> VerifyReport {
    let wals: Vec<WalVerify> = wals.iter().map(verify_wal).collect();
    VerifyReport { dir, ok: wals.iter().all(|w| w.ok), wals }
}

fn verify_wal(wal: &WalDir) -> WalVerify {
    let start = Instant::now();
    let mut problem = None;
    let mut recovery = Recovery::new(RecoveryMode::Strict);
    if problem.is_none() {
        for seg in &wal.segments {
            if let Err(e) = recovery.add_segment(seg.seq, seg.bytes()) {
                problem = Some(from_recovery(wal, &e));
                break;
            }
        }
    }
    // After a problem recovery stopped early: what it holds is no result.
    let report = match problem {
        Some(_) => None,
        None => match recovery.finish() {
            Ok(recovered) => Some(recovered.report),
            Err(e) => {
                problem = Some(from_recovery(wal, &e));
                None
            }
        },
    };
    WalVerify {
        shard: wal.shard,
        dir: wal.path.clone(),
        ok: problem.is_none(),
        segments: wal.segments.len(),
        bytes: wal.total_bytes(),
        records: report.as_ref().map(|r| r.records),
        entries: report.as_ref().map(|r| r.entries_replayed),
        regions: report.as_ref().map(|r| r.regions),
        torn_tail: report.as_ref().and_then(|r| r.torn_tail.as_ref()).map(TornTail::from),
        problem,
        elapsed_us: start.elapsed().as_micros() as u64,
    }
}

fn from_recovery(wal: &WalDir, e: &RecoveryError) -> Problem {
    let (kind, at) = match e {
        RecoveryError::Corruption { seq, offset, .. } => ("corruption", Some((*seq, *offset))),
        RecoveryError::SegmentHeader { seq, .. } => ("bad_header", Some((*seq, 0))),
        RecoveryError::SeqMismatch { seq, .. } => ("seq_mismatch", Some((*seq, 0))),
        // where the missing bytes begin
        RecoveryError::Truncated { seq, len, .. } => ("truncated", Some((*seq, *len))),
        RecoveryError::Malformed { seq, offset, .. } => ("malformed", Some((*seq, *offset))),
        RecoveryError::Log { seq, offset, .. } => ("log_continuity", Some((*seq, *offset))),
        RecoveryError::LsnGap { seq, offset, .. } => ("lsn_gap", Some((*seq, *offset))),
        RecoveryError::MissingEntries { .. } => ("missing_entries", None),
    };
    let file = at.map(|(segment, _)| {
        wal.segments
            .iter()
            .find(|s| s.seq == segment)
            .map_or_else(|| wal.path.join(wal::layout::segment_name(segment)), |s| s.path.clone())
    });
    Problem { kind, segment: at.map(|a| a.0), file, offset: at.map(|a| a.1), message: e.to_string() }
}

/// Exit code: 0 when every WAL is clean (torn tails included), 1 otherwise.
pub fn exit_code(report: &VerifyReport) -> i32 {
    if report.ok {
        0
    } else {
        1
    }
}

pub fn write_text(report: &VerifyReport, out: &mut dyn Write) -> std::io::Result<()> {
    for w in &report.wals {
        let label = match w.shard {
            Some(i) => format!("shard-{i} ({})", w.dir.display()),
            None => w.dir.display().to_string(),
        };
        let secs = w.elapsed_us as f64 / 1e6;
        let mib = w.bytes as f64 / (1 << 20) as f64;
        let rate = if secs > 0.0 { format!("{:.0} MiB/s", mib / secs) } else { "-".into() };
        let n = |v: Option<u64>| v.map_or_else(|| "-".into(), |v| v.to_string());
        match &w.problem {
            None if w.segments == 0 => writeln!(out, "{label}: OK: no segments (an empty WAL)")?,
            None => writeln!(
                out,
                "{label}: OK: {} segments ({} bytes), {} records, {} entries, {} regions; read {mib:.1} MiB in {:.1} ms ({rate})",
                w.segments,
                w.bytes,
                n(w.records),
                n(w.entries),
                n(w.regions.map(|r| r as u64)),
                secs * 1e3
            )?,
            Some(Problem { segment: Some(seg), offset: Some(off), file, message, .. }) => {
                let file = file.as_ref().map_or_else(String::new, |f| format!(" ({})", f.display()));
                writeln!(out, "{label}: FAILED at segment {seg:016x} offset {off}{file}: {message}")?
            }
            Some(p) => writeln!(out, "{label}: FAILED: {}", p.message)?,
        }
        if let Some(t) = &w.torn_tail {
            writeln!(out, "  warning: {t}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::open::open;
    use crate::wal::testkit::{self, Plan};
    use wal::format::RECORD_HEADER_BYTES;
    use wal::layout::segment_name;

    fn run(dir: &std::path::Path) -> (VerifyReport, String) {
        let report = verify(dir.to_path_buf(), &open(dir).unwrap());
        let mut text = vec![];
        write_text(&report, &mut text).unwrap();
        (report, String::from_utf8(text).unwrap())
    }

    #[test]
    fn a_clean_wal_verifies_with_every_record_and_entry_counted() {
        let (dir, w) = testkit::build(&Plan::default());
        let (report, text) = run(dir.path());
        assert!(report.ok, "{text}");
        assert_eq!(exit_code(&report), 0);
        let v = &report.wals[0];
        assert_eq!(v.segments as u64, w.segments);
        assert_eq!(v.entries, Some(w.entries_written));
        assert_eq!(v.regions, Some(w.regions.len()));
        assert_eq!(v.bytes, w.segments * testkit::SEGMENT_BYTES);
        // one record per flush: one per round and the compaction, each
        // followed by its seal
        assert_eq!(w.records, 2 * (Plan::default().rounds + 1));
        assert_eq!(v.records, Some(w.records));
        assert!(v.torn_tail.is_none());
        let want = format!(
            ": OK: {} segments ({} bytes), {} records, {} entries, 4 regions;",
            w.segments, v.bytes, w.records, w.entries_written
        );
        assert!(text.contains(&want), "{text}");
    }

    #[test]
    fn a_flipped_byte_in_a_middle_record_fails_naming_segment_and_offset() {
        let (dir, _) = testkit::build(&Plan::default());
        let seg = dir.path().join(segment_name(1));
        let offsets = testkit::record_offsets(&seg, 1);
        let victim = offsets[2];
        testkit::flip_byte(&seg, victim + RECORD_HEADER_BYTES + 40);
        let (report, text) = run(dir.path());
        assert!(!report.ok);
        assert_eq!(exit_code(&report), 1);
        let p = report.wals[0].problem.as_ref().unwrap();
        assert_eq!((p.kind, p.segment.unwrap(), p.offset.unwrap()), ("corruption", 1, victim as u64));
        assert_eq!(p.file.as_ref(), Some(&seg));
        let want = format!("FAILED at segment 0000000000000001 offset {victim}");
        assert!(text.contains(&want), "{text}");
        assert!(text.contains("corruption, not a torn tail"), "{text}");
    }

    #[test]
    fn a_flipped_byte_in_the_tail_record_is_a_torn_tail_and_clean() {
        let (dir, w) = testkit::build(&Plan::default());
        let last = w.segments;
        let seg = dir.path().join(segment_name(last));
        // the last record: the seal of the compaction (a seal is all header:
        // a byte past it is padding no checksum covers)
        let tail = *testkit::record_offsets(&seg, last).last().unwrap();
        assert!(!testkit::batch_offsets(&seg, last).contains(&tail));
        testkit::damage_header(&seg, tail);
        let (report, text) = run(dir.path());
        assert!(report.ok, "{text}");
        assert_eq!(exit_code(&report), 0);
        let v = &report.wals[0];
        let t = v.torn_tail.as_ref().unwrap();
        assert_eq!((t.segment, t.offset), (last, tail as u64));
        assert_eq!((v.records, v.entries), (Some(w.records - 1), Some(w.entries_written)), "{text}");
        assert!(text.contains(&format!("warning: torn tail at segment {last:016x} offset {tail}")), "{text}");
    }

    /// The last batch holding entries is followed by its seal, which proves
    /// it was written whole (and acknowledged): damage, not a torn write.
    #[test]
    fn a_flipped_byte_in_the_last_batch_before_its_seal_is_corruption() {
        let (dir, w) = testkit::build(&Plan::default());
        let last = w.segments;
        let seg = dir.path().join(segment_name(last));
        let offsets = testkit::record_offsets(&seg, last);
        let victim = *testkit::batch_offsets(&seg, last).last().unwrap();
        let seal = offsets[offsets.iter().position(|&o| o == victim).unwrap() + 1];
        assert_eq!(seal, *offsets.last().unwrap());
        testkit::flip_byte(&seg, victim + RECORD_HEADER_BYTES + 40);
        let (report, text) = run(dir.path());
        assert_eq!(exit_code(&report), 1);
        let v = &report.wals[0];
        assert!(v.torn_tail.is_none(), "{text}");
        let p = v.problem.as_ref().unwrap();
        assert_eq!((p.kind, p.segment.unwrap(), p.offset.unwrap()), ("corruption", last, victim as u64));
        let want = format!("followed by valid data at segment {last:016x} offset {seal}: corruption, not a torn tail");
        assert!(text.contains(&want), "{text}");
    }

    #[test]
    fn a_truncated_segment_fails_at_the_offset_where_its_bytes_end() {
        let (dir, _) = testkit::build(&Plan::default());
        let seg = dir.path().join(segment_name(2));
        std::fs::OpenOptions::new().write(true).open(&seg).unwrap().set_len(24 << 10).unwrap();
        let (report, text) = run(dir.path());
        assert_eq!(exit_code(&report), 1);
        let p = report.wals[0].problem.as_ref().unwrap();
        assert_eq!((p.kind, p.segment.unwrap(), p.offset.unwrap()), ("truncated", 2, 24 << 10));
        assert!(text.contains("FAILED at segment 0000000000000002 offset 24576"), "{text}");
        assert!(text.contains("file is 24576 bytes but its header says 65536"), "{text}");
    }

    /// The last segment truncated mid-record looks exactly like a torn tail to
    /// recovery; only the header's size shows bytes are missing.
    #[test]
    fn a_truncated_last_segment_is_not_mistaken_for_a_torn_tail() {
        let (dir, w) = testkit::build(&Plan::default());
        let seg = dir.path().join(segment_name(w.segments));
        // the last record with a payload (the compaction; its seal, all
        // header, is cut off with it): the cut goes through its payload
        let tail = *testkit::batch_offsets(&seg, w.segments).last().unwrap();
        let bytes = std::fs::read(&seg).unwrap();
        let payload = wal::format::decode_record(&bytes, tail, w.segments).unwrap().header.payload_bytes as usize;
        assert!(RECORD_HEADER_BYTES + payload > 100, "the cut is inside the record");
        std::fs::OpenOptions::new().write(true).open(&seg).unwrap().set_len(tail as u64 + 100).unwrap();
        let (report, _) = run(dir.path());
        let p = report.wals[0].problem.as_ref().unwrap();
        assert_eq!((p.kind, p.segment.unwrap()), ("truncated", w.segments));
        assert!(report.wals[0].torn_tail.is_none());
    }

    #[test]
    fn a_garbage_file_named_like_a_segment_is_named_as_not_a_segment() {
        let (dir, w) = testkit::build(&Plan::default());
        let junk = dir.path().join(segment_name(w.segments + 1));
        std::fs::write(&junk, vec![0xa5u8; 8192]).unwrap();
        let (report, text) = run(dir.path());
        assert_eq!(exit_code(&report), 1);
        let p = report.wals[0].problem.as_ref().unwrap();
        assert_eq!((p.kind, p.segment.unwrap(), p.offset.unwrap()), ("bad_header", w.segments + 1, 0));
        assert_eq!(p.file.as_ref(), Some(&junk));
        assert!(text.contains("not a ringraft WAL segment (bad magic)"), "{text}");
    }

    #[test]
    fn a_missing_segment_in_the_middle_is_a_sequence_gap() {
        let (dir, _) = testkit::build(&Plan::default());
        std::fs::remove_file(dir.path().join(segment_name(2))).unwrap();
        let (report, text) = run(dir.path());
        let p = report.wals[0].problem.as_ref().unwrap();
        assert_eq!((p.kind, p.segment.unwrap()), ("lsn_gap", 3), "{text}");
    }

    /// Purge may drop the oldest segments, so recovery starts wherever the
    /// files start; entries a region still needs that were only there are lost.
    #[test]
    fn a_removed_oldest_segment_still_needed_is_missing_entries() {
        let (dir, _) = testkit::build(&Plan::default());
        std::fs::remove_file(dir.path().join(segment_name(1))).unwrap();
        let (report, text) = run(dir.path());
        assert_eq!(exit_code(&report), 1);
        let p = report.wals[0].problem.as_ref().unwrap();
        assert_eq!((p.kind, p.segment, p.offset), ("missing_entries", None, None));
        assert!(text.contains("FAILED: region 1: entries [1, ") && text.contains(") are missing"), "{text}");
    }

    #[test]
    fn a_shard_whose_wal_has_no_segments_yet_is_clean_and_says_so() {
        let store = tempfile::tempdir().unwrap();
        testkit::build_into(&Plan::default(), &store.path().join("shard-0/wal"));
        std::fs::create_dir_all(store.path().join("shard-1/wal")).unwrap();
        let (report, text) = run(store.path());
        assert_eq!(exit_code(&report), 0, "{text}");
        assert_eq!(report.wals.len(), 2);
        assert!(text.contains("shard-1 (") && text.contains(": OK: no segments (an empty WAL)"), "{text}");
    }

    #[test]
    fn every_shard_of_a_store_is_verified_and_one_bad_shard_fails_the_store() {
        let store = tempfile::tempdir().unwrap();
        for shard in 0..2 {
            testkit::build_into(&Plan::default(), &store.path().join(format!("shard-{shard}/wal")));
        }
        let seg = store.path().join("shard-1/wal").join(segment_name(1));
        let victim = testkit::record_offsets(&seg, 1)[1];
        testkit::flip_byte(&seg, victim + 7);
        let (report, text) = run(store.path());
        assert_eq!(exit_code(&report), 1);
        assert!(report.wals[0].ok && !report.wals[1].ok);
        assert!(text.contains("shard-0 (") && text.contains("shard-1 ("), "{text}");
    }
}
