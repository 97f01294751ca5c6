//! `ringraft wal ...` as an operator runs it: the real binary, on WAL
//! directories written by the `wal` crate itself (through its in-memory disk,
//! then copied to a temporary directory), checked by exit code and output.

use std::future::Future;
use std::path::Path;
use std::process::{Command, Output};
use std::task::{Context, Poll, Waker};

use wal::disk::MemDisk;
use wal::format::RECORD_HEADER_BYTES;
use wal::layout::segment_name;
use wal::{Entry, FlushStart, HardState, RegionWrite, Wal, WalOptions};

/// Regions written, and entries per region.
const REGIONS: u64 = 2;
const ENTRIES_PER_REGION: u64 = 80;

/// Runs a future the in-memory disk drives: it never waits, so one poll finishes it.
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("an in-memory disk operation waited"),
    }
}

/// Writes a WAL of a few 64 KiB segments into `dir`; returns the number of segments.
fn write_wal(dir: &Path) -> u64 {
    let disk = MemDisk::new();
    let opts = WalOptions { segment_bytes: 64 << 10, batch_bytes_max: 16 << 10, ..Default::default() };
    let (mut wal, _) = ready(Wal::open(disk.clone(), opts)).expect("open an empty WAL");
    for index in 1..=ENTRIES_PER_REGION {
        for region in 1..=REGIONS {
            let entry = Entry { index, term: 1, entry_type: 0, data: vec![region as u8; 600].into() };
            let hard_state = Some(HardState { term: 1, vote: region, commit: index });
            wal.append(region, RegionWrite { entries: vec![entry], hard_state, ..Default::default() }).unwrap();
        }
        loop {
            match wal.start_flush() {
                FlushStart::Flush(f) => {
                    let done = ready(f.execute());
                    wal.finish_flush(done).unwrap();
                }
                FlushStart::NeedSpare => {
                    let spare = ready(wal.spare_job().expect("no spare job in flight").run());
                    wal.add_spare(spare).unwrap();
                }
                FlushStart::Idle => break,
            }
        }
    }
    let names = disk.file_names();
    for name in &names {
        std::fs::write(dir.join(name), disk.contents(name).unwrap()).unwrap();
    }
    let segments = names.iter().filter(|n| n.ends_with(".wal")).count() as u64;
    assert!(segments >= 3, "the test needs a few segments, got {names:?}");
    segments
}

/// Offsets of the valid records of a segment file.
fn record_offsets(path: &Path, seq: u64) -> Vec<usize> {
    wal::format::record_offsets(&std::fs::read(path).unwrap(), seq)
}

fn ringraft(args: &[&str]) -> (i32, String, String) {
    let Output { status, stdout, stderr } =
        Command::new(env!("CARGO_BIN_EXE_ringraft")).args(args).output().expect("run ringraft");
    let code = status.code().expect("ringraft exited, not killed by a signal");
    (code, String::from_utf8(stdout).unwrap(), String::from_utf8(stderr).unwrap())
}

fn arg(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

#[test]
fn verify_passes_a_clean_wal_and_fails_a_damaged_one_naming_segment_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let segments = write_wal(dir.path());
    let (code, out, err) = ringraft(&["wal", "verify", arg(dir.path())]);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    // one record per flush (a roll adds no record), each followed by its seal
    let records = (2 * ENTRIES_PER_REGION).to_string();
    assert!(out.contains(&format!(": OK: {segments} segments")), "{out}");
    assert!(
        out.contains(&format!(" {records} records, {} entries, {REGIONS} regions", REGIONS * ENTRIES_PER_REGION)),
        "{out}"
    );

    let seg = dir.path().join(segment_name(1));
    let victim = record_offsets(&seg, 1)[2]; // a batch (each odd one is a seal)
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[victim + RECORD_HEADER_BYTES + 17] ^= 0x01;
    std::fs::write(&seg, bytes).unwrap();

    let (code, out, err) = ringraft(&["wal", "verify", arg(dir.path())]);
    assert_eq!(code, 1, "stdout: {out}\nstderr: {err}");
    assert!(out.contains(&format!("FAILED at segment 0000000000000001 offset {victim}")), "{out}");
    assert!(out.contains("corruption, not a torn tail"), "{out}");

    let (code, out, _) = ringraft(&["wal", "verify", "--json", arg(dir.path())]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).expect("verify --json prints JSON");
    assert_eq!(v["ok"], false);
    let problem = &v["wals"][0]["problem"];
    assert_eq!((problem["kind"].as_str(), problem["segment"].as_u64()), (Some("corruption"), Some(1)));
    assert_eq!(problem["offset"].as_u64(), Some(victim as u64));
}

#[test]
fn stat_json_parses_and_counts_what_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let segments = write_wal(dir.path());
    let (code, out, err) = ringraft(&["wal", "stat", "--json", arg(dir.path())]);
    assert_eq!(code, 0, "stderr: {err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("stat --json prints JSON");
    let wal = &v["wals"][0];
    assert_eq!(wal["segments"].as_array().unwrap().len() as u64, segments);
    let regions = wal["regions"].as_array().unwrap();
    assert_eq!(regions.len() as u64, REGIONS);
    for (r, id) in regions.iter().zip(1..) {
        assert_eq!(r["region"], id);
        assert_eq!(r["entries"], ENTRIES_PER_REGION);
        assert_eq!((r["first_index"].as_u64(), r["last_index"].as_u64()), (Some(1), Some(ENTRIES_PER_REGION)));
        assert_eq!(r["live_bytes"], ENTRIES_PER_REGION * 600);
        assert_eq!(r["hard_state"]["commit"], ENTRIES_PER_REGION);
        assert_eq!(r["blocks_purge"], true);
    }
    assert_eq!(wal["recovery"]["complete"], true);
    assert!(wal["recovery"]["torn_tail"].is_null());
}

#[test]
fn dump_filters_and_a_missing_directory_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    write_wal(dir.path());
    let (code, out, _) = ringraft(&["wal", "dump", "--region", "2", "--from", "10", "--to", "12", arg(dir.path())]);
    assert_eq!(code, 0);
    let entries: Vec<&str> = out.lines().map(str::trim_start).filter(|l| l.starts_with("entry ")).collect();
    assert_eq!(entries.len(), 3, "{out}");
    assert!(entries[0].starts_with("entry region=2 index=10 term=1 type=normal data_bytes=600"), "{out}");

    let missing = dir.path().join("nope");
    let (code, out, err) = ringraft(&["wal", "stat", arg(&missing)]);
    assert_eq!(code, 2, "{out}");
    assert!(err.contains("nope: no such directory"), "{err}");
}
