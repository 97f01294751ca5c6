//! Damaged bytes on disk: a torn tail is cut and reported, damage followed
//! by valid records refuses to open (naming segment and offset) unless the
//! operator chose tolerant mode, which reports what it dropped.
//!
//! A write is acknowledged only once a record follows its own (the next
//! batch or a seal), so the last record of a log was never acknowledged
//! and the record that held the last acknowledged write has one after it.

mod common;

use common::*;
use wal::disk::MemDisk;
use wal::{OpenError, RecoveryError, RecoveryMode, WalOptions};

/// Five batches of region 1, each flushed and sealed on its own: records
/// 0, 2, 4, 6, 8 of segment 1, each followed by a seal.
fn five_batches() -> (MemDisk, Model) {
    let disk = MemDisk::new();
    let (mut wal, _) = open(&disk, small_options());
    for k in 0..5 {
        append_entries(&mut wal, 1, 3, 100, k as u8);
        flush_all(&mut wal);
    }
    let model = observe_all(&wal);
    (disk, model)
}

/// The process stops after a batch's write and fdatasync but before the seal
/// that acknowledges it; the batch's record is then damaged. Nothing
/// acknowledged was in it, so it is cut as a torn tail — whatever damaged it.
#[test]
fn a_last_record_never_sealed_was_never_acknowledged_and_is_cut_as_torn() {
    let (disk, full) = five_batches();
    let (mut wal, _) = open(&disk, small_options());
    append_entries(&mut wal, 1, 3, 100, 9);
    let ticket = wal.last_ticket();
    let f = start_flush(&mut wal).expect("the batch");
    let (seq, offset) = (f.seq, f.offset);
    let r = futures_lite::future::block_on(f.execute());
    wal.finish_flush(r).unwrap();
    assert!(wal.written_ticket() >= ticket, "on disk");
    assert!(wal.durable_ticket() < ticket, "not acknowledged before the seal");
    drop(wal); // the seal never runs
    disk.flip_byte(&wal::layout::segment_name(seq), offset + 100, 0x40);

    let (wal, report) = open(&disk, small_options());
    let torn = report.torn_tail.expect("the damaged tail is reported");
    assert_eq!((torn.seq, torn.offset), (seq, offset));
    assert!(report.dropped.is_empty() && !report.needs_catch_up);
    assert_eq!(observe_all(&wal), full, "everything acknowledged is there, the unacknowledged batch is not");
    drop(wal);

    // the cut is for good: the next open finds a clean log
    let (mut wal, report) = open(&disk, small_options());
    assert_eq!(report.torn_tail, None);
    append_entries(&mut wal, 1, 1, 10, 9);
    flush_all(&mut wal);
    drop(wal);
    let (wal, report) = open(&disk, small_options());
    assert_eq!(report.torn_tail, None);
    assert_eq!(wal.last_index(1), Some(16));
}

/// The record of the last acknowledged batch is damaged: its seal follows
/// it, so recovery knows it was written whole — damage, not a torn write.
#[test]
fn a_damaged_acknowledged_last_batch_is_corruption_because_its_seal_follows() {
    let (disk, _) = five_batches();
    let offsets = record_offsets(&disk, 1);
    assert_eq!(offsets.len(), 10, "five batches, five seals");
    let (batch, seal) = (offsets[8], offsets[9]);
    disk.flip_byte(&wal::layout::segment_name(1), batch as u64 + 100, 0x40);
    let err =
        futures_lite::future::block_on(wal::Wal::open(disk.clone(), small_options())).err().expect("open must fail");
    match err {
        OpenError::Recovery(RecoveryError::Corruption { seq, offset, next_offset, .. }) => {
            assert_eq!((seq, offset, next_offset), (1, batch as u64, seal as u64));
        }
        other => panic!("expected corruption, got {other}"),
    }
    // a damaged seal is only the end: it acknowledged a record that is intact
    let (disk, full) = five_batches();
    disk.flip_byte(&wal::layout::segment_name(1), seal as u64 + 17, 0x40);
    let (wal, report) = open(&disk, small_options());
    assert_eq!(report.torn_tail.map(|t| t.offset), Some(seal as u64));
    assert_eq!(observe_all(&wal), full);
}

#[test]
fn flipped_byte_in_a_middle_record_fails_open_naming_segment_and_offset() {
    let (disk, _) = five_batches();
    let offsets = record_offsets(&disk, 1);
    let victim = offsets[2];
    disk.flip_byte(&wal::layout::segment_name(1), victim as u64 + 40, 0x01);

    let err =
        futures_lite::future::block_on(wal::Wal::open(disk.clone(), small_options())).err().expect("open must fail");
    match &err {
        OpenError::Recovery(RecoveryError::Corruption { seq, offset, next_offset, .. }) => {
            assert_eq!((*seq, *offset), (1, victim as u64));
            assert_eq!(*next_offset, offsets[3] as u64);
        }
        other => panic!("expected corruption, got {other}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("segment 0000000000000001") && msg.contains(&format!("offset {victim}")), "{msg}");
}

#[test]
fn tolerant_mode_drops_the_bad_record_reports_it_and_asks_for_catch_up() {
    let (disk, _) = five_batches();
    let offsets = record_offsets(&disk, 1);
    let victim = offsets[2];
    disk.flip_byte(&wal::layout::segment_name(1), victim as u64 + 40, 0x01);

    let opts = WalOptions { recovery_mode: RecoveryMode::Tolerant, ..small_options() };
    let (wal, report) = open(&disk, opts);
    assert!(report.needs_catch_up && wal.needs_catch_up());
    assert_eq!(report.dropped.len(), 1, "{report}");
    assert_eq!((report.dropped[0].seq, report.dropped[0].offset), (1, victim as u64));
    assert!(report.to_string().contains("DROPPED"));
}

#[test]
fn damage_in_the_last_record_of_an_older_segment_is_corruption() {
    let disk = MemDisk::new();
    let (mut wal, _) = open(&disk, small_options());
    while wal.segment_seqs().len() < 3 {
        append_entries(&mut wal, 1, 4, 1000, 7);
        flush_all(&mut wal);
    }
    drop(wal);
    let last_of_first = *record_offsets(&disk, 1).last().unwrap();
    // (the record may be a seal: a header byte is damage in either)
    disk.flip_byte(&wal::layout::segment_name(1), last_of_first as u64 + 17, 0x80);
    let err =
        futures_lite::future::block_on(wal::Wal::open(disk.clone(), small_options())).err().expect("open must fail");
    match err {
        OpenError::Recovery(RecoveryError::Corruption { seq, offset, next_seq, next_offset, .. }) => {
            assert_eq!((seq, offset), (1, last_of_first as u64));
            assert_eq!((next_seq, next_offset), (2, 4096));
        }
        other => panic!("expected corruption, got {other}"),
    }
}

#[test]
fn a_file_that_is_not_a_segment_is_refused_with_a_clear_error() {
    let (disk, _) = five_batches();
    disk.flip_byte(&wal::layout::segment_name(1), 0, 0xff);
    let err =
        futures_lite::future::block_on(wal::Wal::open(disk.clone(), small_options())).err().expect("open must fail");
    assert!(err.to_string().contains("not a ringraft WAL segment"), "{err}");
}

/// Regression: damage to the header of the last record (its magic or sequence
/// number) once passed for the end of the log, losing an acknowledged record
/// without a word. A reused segment's old bytes never sit next to our last
/// record (each write into one carries a zero block after it), so a non-zero
/// bad block there is always reported.
#[test]
fn damage_to_the_last_records_header_is_reported_not_taken_for_the_end() {
    for byte in [0u64, 17] {
        let (disk, _) = five_batches();
        let last = *record_offsets(&disk, 1).last().unwrap();
        disk.flip_byte(&wal::layout::segment_name(1), last as u64 + byte, 0x10);
        let (_, report) = open(&disk, small_options());
        let torn = report.torn_tail.expect("reported");
        assert_eq!((torn.seq, torn.offset), (1, last as u64), "header byte {byte}");
    }
}

/// Zeroes one block of a file durably: that block of a write never reached the disk.
fn lose_block(disk: &MemDisk, name: &str, offset: usize) {
    let bytes = disk.contents(name).unwrap();
    for (i, &b) in bytes[offset..offset + wal::format::BLOCK_BYTES].iter().enumerate() {
        if b != 0 {
            disk.flip_byte(name, (offset + i) as u64, b);
        }
    }
}

/// Regression: a rolling flush once wrote two records (checkpoint, then the
/// batch) in one write. Its blocks may reach the disk in any order; with the
/// checkpoint's block lost and the batch's present, recovery saw damage
/// followed by a valid record and refused to open a log whose only damage was
/// a write never acknowledged. One write is now always one record.
#[test]
fn a_torn_rolling_write_is_a_torn_tail_whatever_blocks_landed() {
    let disk = MemDisk::new();
    let (mut wal, _) = open(&disk, small_options());
    append_entries(&mut wal, 1, 3, 100, 1);
    flush_all(&mut wal);
    let acknowledged = observe_all(&wal);
    drop(wal);

    let (mut wal, _) = open(&disk, small_options());
    append_entries(&mut wal, 1, 40, 100, 2); // several blocks
    let f = start_flush(&mut wal).unwrap();
    let (seq, offset) = (f.seq, f.offset);
    assert_eq!(offset, wal::format::SEGMENT_HEADER_BYTES as u64, "the first flush after open rolls");
    disk.fail_syncs(); // issued, never acknowledged
    let r = futures_lite::future::block_on(f.execute());
    assert!(wal.finish_flush(r).is_err());
    drop(wal);
    let disk = disk.crash(|n| n);
    lose_block(&disk, &wal::layout::segment_name(seq), offset as usize);

    let (wal, report) = open(&disk, small_options());
    assert!(report.dropped.is_empty(), "{report}");
    assert_eq!(observe_all(&wal), acknowledged);
}

/// Regression: tolerant mode marked the shard as needing catch-up only in
/// memory; the first purge removed the damaged segment and the next open said
/// all was well, with a region's term-5 vote silently back at term 4 — free
/// to vote again in term 5 (two leaders in one term).
#[test]
fn needs_catch_up_survives_restarts_and_the_purge_of_the_damaged_segment() {
    use wal::{HardState, RegionWrite};
    let disk = MemDisk::new();
    let (mut wal, _) = open(&disk, small_options());
    for (term, vote) in [(4, 1), (5, 3)] {
        let hs = HardState { term, vote, commit: 0 };
        wal.append(2, RegionWrite { hard_state: Some(hs), ..Default::default() }).unwrap();
        flush_all(&mut wal);
    }
    append_entries(&mut wal, 1, 2, 10, 1);
    flush_all(&mut wal);
    drop(wal);
    let victim = record_offsets(&disk, 1)[2]; // the term-5 vote (each write has its seal)
    disk.flip_byte(&wal::layout::segment_name(1), victim as u64 + 40, 1);

    let tolerant = WalOptions { recovery_mode: RecoveryMode::Tolerant, ..small_options() };
    let (mut wal, report) = open(&disk, tolerant);
    assert!(report.needs_catch_up && wal.needs_catch_up());
    let last = wal.last_index(1).unwrap();
    wal.compact_to(1, last + 1).unwrap();
    flush_all(&mut wal);
    let (purged, _) = purge(&mut wal);
    assert!(purged.contains(&1), "the damaged segment is gone: {purged:?}");
    drop(wal);

    let (mut wal, report) = open(&disk, small_options());
    assert!(report.dropped.is_empty());
    assert!(report.needs_catch_up && wal.needs_catch_up(), "the flag outlives the damaged segment");

    // once the engine says every region caught up, the next segment records it
    wal.clear_needs_catch_up();
    while wal.stats().segment_rolls == 0 {
        append_entries(&mut wal, 1, 4, 900, 3);
        flush_all(&mut wal);
    }
    drop(wal);
    let (wal, report) = open(&disk, small_options());
    assert!(!report.needs_catch_up && !wal.needs_catch_up());
}

#[test]
fn reopening_with_options_too_small_for_the_recorded_state_is_refused_clearly() {
    use bytes::Bytes;
    use wal::RegionWrite;
    let disk = MemDisk::new();
    let big = WalOptions { segment_bytes: 256 << 10, ..small_options() };
    let (mut wal, _) = open(&disk, big);
    for region in 0..5 {
        wal.append(region, RegionWrite { meta: Some(Bytes::from(vec![7u8; 12 << 10])), ..Default::default() }).unwrap();
        flush_all(&mut wal);
    }
    drop(wal);
    let err = futures_lite::future::block_on(wal::Wal::open(disk.clone(), small_options())).err().expect("refused");
    assert!(matches!(err, OpenError::Options(_)) && err.to_string().contains("use larger segments"), "{err}");
}
