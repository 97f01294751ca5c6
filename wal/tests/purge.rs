//! Purge keeps what regions need and recycles the rest; it names the regions
//! holding it back; it never loses a region's HardState, ConfState, meta or
//! tombstone until it is forgotten, and then never brings it back; and bytes
//! left in a recycled segment never pass for records.

mod common;

use bytes::Bytes;
use common::*;
use wal::disk::MemDisk;
use wal::{ConfState, HardState, RegionWrite};

const BUSY: u64 = 1;
const IDLE: u64 = 2;
const GONE: u64 = 3;

/// Writes to BUSY until the log has rolled through `segments` more segments,
/// compacting BUSY behind itself and purging as it goes.
fn churn(wal: &mut wal::Wal<MemDisk>, segments: usize) {
    let target = wal.stats().segment_rolls as usize + segments;
    while (wal.stats().segment_rolls as usize) < target {
        append_entries(wal, BUSY, 4, 900, 0xb5);
        flush_all(wal);
        let last = wal.last_index(BUSY).unwrap();
        wal.compact_to(BUSY, last.saturating_sub(8).max(1)).unwrap();
        flush_all(wal);
        purge(wal);
    }
}

#[test]
fn purge_recycles_what_no_region_needs_and_names_the_region_that_blocks_it() {
    let disk = MemDisk::new();
    let (mut wal, _) = open(&disk, small_options());
    append_entries(&mut wal, IDLE, 2, 50, 1); // pins the first segment
    flush_all(&mut wal);
    churn(&mut wal, 4);
    let (purged, blocking) = purge(&mut wal);
    assert!(purged.is_empty(), "IDLE's entries pin segment 1 and everything after it");
    assert_eq!(blocking.first(), Some(&(IDLE, 1)), "the region holding back purge is named with its oldest segment");
    assert!(wal.segment_seqs().len() >= 5);

    // IDLE snapshots and compacts: its old segments are no longer needed
    wal.compact_to(IDLE, 3).unwrap();
    flush_all(&mut wal);
    let (purged, blocking) = purge(&mut wal);
    assert!(purged.contains(&1), "segment 1 is recycled once IDLE moved on: {purged:?}");
    assert!(blocking.iter().all(|&(r, _)| r != IDLE));
    assert!(wal.free_segments() > 0);
    let model = observe_all(&wal);
    drop(wal);

    let (wal, report) = open(&disk, small_options());
    assert_eq!(report.torn_tail, None);
    assert_eq!(observe_all(&wal), model, "everything live survives purge and restart");
}

#[test]
fn an_idle_regions_vote_conf_meta_and_a_tombstone_survive_any_number_of_purges_and_restarts() {
    let disk = MemDisk::new();
    let (mut wal, _) = open(&disk, small_options());
    let hs = HardState { term: 7, vote: 3, commit: 0 };
    let cs = ConfState { voters: vec![1, 2, 3], learners: vec![4], ..Default::default() };
    let meta = Bytes::from_static(b"range [a, m) epoch 2/5");
    wal.append(
        IDLE,
        RegionWrite {
            hard_state: Some(hs),
            conf_state: Some(cs.clone()),
            meta: Some(meta.clone()),
            ..Default::default()
        },
    )
    .unwrap();
    wal.append(
        GONE,
        RegionWrite { meta: Some(Bytes::from_static(b"last meta")), tombstone: true, ..Default::default() },
    )
    .unwrap();
    flush_all(&mut wal);
    let first_segment = wal.segment_seqs()[0];
    for _ in 0..4 {
        churn(&mut wal, 3);
        assert!(!wal.segment_seqs().contains(&first_segment), "the segment that held the only vote record was purged");
        drop(wal);
        let (w, report) = open(&disk, small_options());
        wal = w;
        assert_eq!(report.torn_tail, None);
        assert_eq!(wal.hard_state(IDLE), Some(hs), "a lost vote would allow two leaders in one term");
        assert_eq!(wal.conf_state(IDLE), Some(&cs));
        assert_eq!(wal.meta(IDLE), Some(&meta));
        assert!(wal.is_tombstone(GONE));
        assert_eq!(wal.meta(GONE).map(|m| &m[..]), Some(&b"last meta"[..]));
    }
}

#[test]
fn a_forgotten_tombstone_stays_gone_through_restarts_rolls_and_purges() {
    let disk = MemDisk::new();
    let (mut wal, _) = open(&disk, small_options());
    let forget = RegionWrite { forget: true, ..Default::default() };
    append_entries(&mut wal, GONE, 3, 50, 7);
    flush_all(&mut wal);
    // only a tombstone is forgotten, and alone in its write
    assert!(wal.append(GONE, forget.clone()).is_err(), "a live region is never forgotten");
    wal.append(
        GONE,
        RegionWrite { meta: Some(Bytes::from_static(b"last meta")), tombstone: true, ..Default::default() },
    )
    .unwrap();
    flush_all(&mut wal);
    let with_meta = RegionWrite { meta: Some(Bytes::from_static(b"m")), forget: true, ..Default::default() };
    assert!(wal.append(GONE, with_meta).is_err());
    churn(&mut wal, 2); // the tombstone now lives in checkpoints only
    assert!(wal.is_tombstone(GONE));

    wal.append(GONE, forget).unwrap();
    flush_all(&mut wal);
    assert!(!wal.regions().any(|r| r == GONE), "forgotten once its record is written");
    // restart before any checkpoint after it: the record replays over the checkpoint's tombstone
    drop(wal);
    let (w, report) = open(&disk, small_options());
    wal = w;
    assert_eq!(report.torn_tail, None);
    assert!(!wal.regions().any(|r| r == GONE), "the forget record replays");
    // and after it is purged, no checkpoint names the region again
    for _ in 0..3 {
        churn(&mut wal, 3);
        drop(wal);
        let (w, _) = open(&disk, small_options());
        wal = w;
        assert!(!wal.regions().any(|r| r == GONE));
        assert!(!wal.is_tombstone(GONE));
    }
    // the region may come back later, as any new one
    append_entries(&mut wal, GONE, 2, 50, 9);
    flush_all(&mut wal);
    drop(wal);
    let (wal, _) = open(&disk, small_options());
    assert_eq!(wal.last_index(GONE), Some(2));
}

#[test]
fn a_recycled_segments_stale_bytes_are_never_taken_for_records() {
    let disk = MemDisk::new();
    let (mut wal, _) = open(&disk, small_options());
    churn(&mut wal, 6);
    assert!(wal.stats().spares_recycled > 0, "segments were reused: {:?}", wal.stats());
    // leave the active (recycled) segment half full: old records lie past its end
    append_entries(&mut wal, BUSY, 1, 10, 1);
    flush_all(&mut wal);
    let model = observe_all(&wal);
    drop(wal);
    for _ in 0..3 {
        let (wal, report) = open(&disk, small_options());
        assert_eq!(report.torn_tail, None, "stale bytes are not a torn write");
        assert!(report.dropped.is_empty());
        assert_eq!(observe_all(&wal), model);
    }
}

/// Regression: purge jobs queued back to back could run newest first; a
/// crash between them left a hole in the middle of the log, which strict
/// recovery reads as lost records. One purge job runs at a time.
#[test]
fn one_purge_job_at_a_time_so_segments_always_go_oldest_first() {
    let disk = MemDisk::new();
    let (mut wal, _) = open(&disk, small_options());
    for (region, segments) in [(1, 2), (2, 3), (3, 4)] {
        while wal.segment_seqs().len() < segments {
            append_entries(&mut wal, region, 4, 3000, region as u8);
            flush_all(&mut wal);
        }
    }
    let last = wal.last_index(1).unwrap();
    wal.compact_to(1, last + 1).unwrap();
    flush_all(&mut wal);
    let mut first = wal.purge();
    let job = first.take_job().expect("segment 1 is free to go");
    assert_eq!(first.segments, vec![1]);

    let last = wal.last_index(2).unwrap();
    wal.compact_to(2, last + 1).unwrap();
    flush_all(&mut wal);
    let mut second = wal.purge();
    assert!(second.take_job().is_none() && second.segments.is_empty(), "waits for the first job");

    let done = futures_lite::future::block_on(job.run());
    wal.purge_done(done).unwrap();
    let (purged, _) = purge(&mut wal);
    assert_eq!(purged, vec![2]);
    drop(wal);
    let (_, report) = open(&disk, small_options());
    assert!(report.dropped.is_empty());
}
