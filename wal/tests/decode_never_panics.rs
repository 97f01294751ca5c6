//! The WAL's decoders answer bytes they did not write with an error, never a
//! panic: segments come off a disk that can rot, tear a write, or hold a
//! record whose checksum passes over bytes a bug wrote (recovery reports
//! those as malformed). Checked here: sections and checkpoints round-trip,
//! and are refused cut short (and sections lengthened); noise, alone or
//! behind a valid segment header, is answered by every decoder and by
//! recovery; a log whose newest segment has bytes flipped opens or refuses
//! to, and one that opened opens again; recovery answers a record damaged
//! behind a valid checksum, and a segment cut short. A panic fails the test.

mod common;

use bytes::Bytes;
use common::{flush_all, open, random_write, small_options, Model, Rng};
use futures_lite::future::block_on;
use proptest::prelude::*;
use wal::disk::MemDisk;
use wal::format::{
    checkpoint_entry_bytes, decode_batch, decode_checkpoint, decode_record, encode_checkpoint, encode_record_header,
    encode_section, record_offsets, section_bytes, BatchSection, Checkpoint, EntryRef, Malformed, RegionCheckpoint,
    SectionHead, SegmentHeader, BLOCK_BYTES, CHECKPOINT_HEAD_BYTES, RECORD_HEADER_BYTES, RECORD_MAGIC,
    SEGMENT_HEADER_BYTES,
};
use wal::layout::segment_name;
use wal::{
    ConfState, Entry, HardState, Recovered, Recovery, RecoveryError, RecoveryMode, RegionWrite, SnapshotMarker, Wal,
    WalOptions,
};

fn any_bytes(len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), len)
}

/// Byte offsets (taken modulo a length) and non-zero masks to XOR there.
fn byte_flips() -> impl Strategy<Value = Vec<(usize, u8)>> {
    prop::collection::vec((any::<usize>(), 1..=u8::MAX), 1..6)
}

/// A region write with any of its parts but `forget` (which stands alone),
/// and the term its section records for a compaction.
fn region_write() -> impl Strategy<Value = (u64, RegionWrite, u64)> {
    (any::<u64>(), 1..1u64 << 40, prop::collection::vec(any_bytes(0..64), 0..4), any::<u8>(), any::<u64>()).prop_map(
        |(region, first, data, parts, n)| {
            let entries = data.into_iter().enumerate();
            let write = RegionWrite {
                snapshot: (parts & 1 != 0).then_some(SnapshotMarker { index: n, term: n >> 8 }),
                entries: entries
                    .map(|(i, d)| Entry { index: first + i as u64, term: n >> 4, entry_type: i as u8, data: d.into() })
                    .collect(),
                compact_to: (parts & 2 != 0).then_some(n >> 1),
                hard_state: (parts & 4 != 0).then_some(HardState { term: n, vote: n % 5, commit: n >> 2 }),
                conf_state: (parts & 8 != 0).then(|| ConfState {
                    voters: vec![1, n],
                    learners: vec![n >> 3],
                    auto_leave: parts & 16 != 0,
                    ..Default::default()
                }),
                meta: (parts & 32 != 0).then(|| Bytes::from(vec![parts; n as usize % 100])),
                tombstone: parts & 64 != 0,
                forget: false,
            };
            (region, write, n % 11)
        },
    )
}

fn region_checkpoint() -> impl Strategy<Value = RegionCheckpoint> {
    (any::<u64>(), 1..u64::MAX, any::<u8>(), any::<u64>()).prop_map(|(region, first_index, parts, n)| {
        RegionCheckpoint {
            region,
            first_index,
            prev_term: n % 13,
            hard_state: (parts & 1 != 0).then_some(HardState { term: n, vote: 1, commit: n >> 1 }),
            conf_state: (parts & 2 != 0).then(|| ConfState {
                voters: vec![n, 2],
                voters_outgoing: vec![3],
                ..Default::default()
            }),
            meta: (parts & 4 != 0).then(|| Bytes::from(vec![parts; n as usize % 64])),
            snapshot: (parts & 8 != 0).then_some(SnapshotMarker { index: n, term: 1 }),
            tombstone: parts & 16 != 0,
        }
    })
}

/// A log of two lives on the in-memory disk: four regions' entries, votes,
/// memberships, metas, compactions, snapshots and tombstones, flushed now and
/// then; the second life's segment opens with a checkpoint of them all.
/// Returns the disk and its live segments, oldest first.
fn written_log() -> (MemDisk, Vec<u64>) {
    let disk = MemDisk::new();
    let (mut rng, mut model, mut max_term) = (Rng(7), Model::new(), 1);
    let mut seqs = vec![];
    for _life in 0..2 {
        let (mut wal, _) = open(&disk, small_options());
        for _ in 0..20 {
            let region = rng.below(4);
            let m = model.entry(region).or_default();
            let w = random_write(&mut rng, m, &mut max_term);
            wal.append(region, w.clone()).expect("a write valid for the model");
            m.apply(&w);
            if rng.chance(30) {
                flush_all(&mut wal);
            }
        }
        flush_all(&mut wal);
        seqs = wal.segment_seqs();
    }
    (disk, seqs)
}

fn recover(segments: &[(u64, Vec<u8>)], mode: RecoveryMode) -> Result<Recovered, RecoveryError> {
    let mut recovery = Recovery::new(mode);
    for (seq, bytes) in segments {
        recovery.add_segment(*seq, bytes)?;
    }
    recovery.finish()
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::with_cases(256) })]

    #[test]
    fn sections_and_checkpoints_round_trip_and_damaged_ones_are_answered(
        writes in prop::collection::vec(region_write(), 1..4),
        checkpoints in prop::collection::vec(region_checkpoint(), 0..4),
        needs_catch_up in any::<bool>(),
        cut in any::<usize>(),
        flips in byte_flips(),
    ) {
        let (mut payload, mut want): (Vec<u8>, Vec<BatchSection>) = (vec![], vec![]);
        for (region, write, prev_term) in &writes {
            let (base, mut at) = (payload.len(), vec![]);
            let mut section = vec![0u8; section_bytes(write)];
            encode_section(&mut section, *region, write, *prev_term, |_, offset| at.push(base + offset));
            payload.extend_from_slice(&section);
            let head = SectionHead {
                snapshot: write.snapshot,
                compact: write.compact_to.map(|to| (to, *prev_term)),
                hard_state: write.hard_state,
                conf_state: write.conf_state.clone(),
                meta: write.meta.clone(),
                tombstone: write.tombstone,
                forget: false,
            };
            let entries = write.entries.iter().zip(at).map(|(e, data_offset)| EntryRef {
                index: e.index,
                term: e.term,
                entry_type: e.entry_type,
                data_offset,
                data_len: e.data.len(),
            });
            want.push(BatchSection { region: *region, head, entries: entries.collect() });
        }
        let count = writes.len() as u32;
        prop_assert_eq!(decode_batch(&payload, count), Ok::<_, Malformed>(want));
        prop_assert!(decode_batch(&payload[..cut % payload.len()], count).is_err());
        let mut longer = payload.clone();
        longer.push(0);
        prop_assert!(decode_batch(&longer, count).is_err(), "a byte after the last section");

        let size = CHECKPOINT_HEAD_BYTES + checkpoints.iter().map(checkpoint_entry_bytes).sum::<usize>();
        let mut checkpoint = vec![0u8; size];
        encode_checkpoint(&mut checkpoint, needs_catch_up, checkpoints.len() as u32, checkpoints.iter());
        // a checkpoint record holds the checkpoint, then a batch: the checkpoint knows its own end
        let record = [&checkpoint[..], &payload[..]].concat();
        let want = Ok::<_, Malformed>((Checkpoint { needs_catch_up, regions: checkpoints }, size));
        prop_assert_eq!(decode_checkpoint(&record), want);
        prop_assert!(decode_checkpoint(&checkpoint[..cut % size]).is_err());

        // the record with bytes flipped, whole or cut short
        let mut damaged = record;
        for &(at, mask) in &flips {
            let at = at % damaged.len();
            damaged[at] ^= mask;
        }
        let short = cut % (damaged.len() + 1);
        let _ = decode_checkpoint(&damaged);
        let _ = decode_checkpoint(&damaged[..short]);
        let _ = decode_batch(&damaged[size..], count);
        let _ = decode_batch(&damaged[size..short.max(size)], count);
    }

    #[test]
    fn noise_is_answered_by_every_decoder_and_by_recovery(noise in any_bytes(0..2 * BLOCK_BYTES), count in 0u32..8) {
        let _ = decode_batch(&noise, count);
        let _ = decode_checkpoint(&noise);
        let _ = SegmentHeader::decode(&noise);
        let _ = decode_record(&noise, 0, 1);
        // behind a valid segment header, starting as a record does, it is a record to recovery
        let mut segment = vec![0u8; SEGMENT_HEADER_BYTES];
        segment.extend_from_slice(&RECORD_MAGIC.to_le_bytes());
        segment.extend_from_slice(&noise);
        segment.resize(segment.len().next_multiple_of(BLOCK_BYTES) + BLOCK_BYTES, 0);
        SegmentHeader { seq: 1, segment_bytes: segment.len() as u64, nonce: 9 }.encode(&mut segment);
        for mode in [RecoveryMode::Strict, RecoveryMode::Tolerant] {
            let _ = recover(&[(1, segment.clone())], mode);
        }
    }

    #[test]
    fn a_log_whose_newest_segment_has_bytes_flipped_opens_or_refuses_and_once_open_opens_again(
        flips in byte_flips(),
        tolerant in any::<bool>(),
    ) {
        let (disk, seqs) = written_log();
        let newest = *seqs.last().expect("a live segment");
        let name = segment_name(newest);
        // damage past the last record would only flip zeros
        let bytes = disk.contents(&name).expect("the newest segment");
        let last = *record_offsets(&bytes, newest).last().expect("records in the newest segment");
        let end = decode_record(&bytes, last, newest).expect("a valid record").next_offset();
        for (at, mask) in flips {
            disk.flip_byte(&name, (SEGMENT_HEADER_BYTES + at % (end - SEGMENT_HEADER_BYTES)) as u64, mask);
        }
        let mode = if tolerant { RecoveryMode::Tolerant } else { RecoveryMode::Strict };
        let opts = WalOptions { recovery_mode: mode, ..small_options() };
        if block_on(Wal::open(disk.clone(), opts.clone())).is_ok() {
            // what the open cut (a torn tail) or dropped stays so: the log opens again
            let again = block_on(Wal::open(disk.clone(), opts)).err();
            prop_assert!(again.is_none(), "opened once, then: {:?}", again);
        }
    }

    #[test]
    fn recovery_answers_a_record_damaged_behind_a_valid_checksum_and_a_segment_cut_short(
        pick in any::<usize>(),
        flips in byte_flips(),
        sections in 0u32..4,
        cut in any::<usize>(),
    ) {
        let (disk, seqs) = written_log();
        let mut segments: Vec<(u64, Vec<u8>)> =
            seqs.iter().map(|&seq| (seq, disk.contents(&segment_name(seq)).expect("a live segment"))).collect();
        match recover(&segments, RecoveryMode::Strict) {
            Ok(r) => prop_assert!(r.report.dropped.is_empty() && r.report.torn_tail.is_none(), "{}", r.report),
            Err(e) => return Err(TestCaseError::fail(format!("the log as written does not recover: {e}"))),
        }
        // a record of the newest segment: payload bytes flipped, its section count changed, its checksum made valid
        let (seq, bytes) = segments.last_mut().expect("a live segment");
        let seq = *seq;
        let nonce = SegmentHeader::decode(&bytes[..]).expect("a valid header").nonce;
        let offsets = record_offsets(&bytes[..], seq);
        let at = offsets[pick % offsets.len()];
        let mut header = decode_record(&bytes[..], at, seq).expect("a valid record").header;
        if header.payload_bytes > 0 {
            for &(i, mask) in &flips {
                bytes[at + RECORD_HEADER_BYTES + i % header.payload_bytes as usize] ^= mask;
            }
        }
        header.section_count ^= sections;
        encode_record_header(&mut bytes[at..], seq, nonce, &header);
        for mode in [RecoveryMode::Strict, RecoveryMode::Tolerant] {
            let _ = recover(&segments, mode);
        }
        // and the newest segment cut short anywhere, as a file can be
        let (seq, bytes) = segments.pop().expect("a live segment");
        segments.push((seq, bytes[..cut % (bytes.len() + 1)].to_vec()));
        for mode in [RecoveryMode::Strict, RecoveryMode::Tolerant] {
            let _ = recover(&segments, mode);
        }
    }
}
