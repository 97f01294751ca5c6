//! A WAL segment of any bytes: recovery (strict and tolerant) reads it to
//! a state or refuses it naming the segment and offset — never a panic.
//! The first input byte says how the rest is laid out: as a whole segment
//! file, or as records behind a valid segment header (where most of the
//! decoding is). The section, checkpoint and record decoders get the raw
//! bytes too.
//!
//! `scripts/fuzz.sh wal_recovery 10` runs it for ten minutes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use wal::format::{decode_batch, decode_checkpoint, decode_record, SegmentHeader, BLOCK_BYTES, SEGMENT_HEADER_BYTES};
use wal::{Recovery, RecoveryMode};

fuzz_target!(|data: &[u8]| {
    let Some((&layout, rest)) = data.split_first() else { return };
    let _ = decode_batch(rest, u32::from(layout % 8));
    let _ = decode_checkpoint(rest);
    let _ = decode_record(rest, 0, 1);
    let segment = if layout & 1 == 0 {
        rest.to_vec()
    } else {
        let mut s = vec![0u8; SEGMENT_HEADER_BYTES];
        s.extend_from_slice(rest);
        s.resize(s.len().next_multiple_of(BLOCK_BYTES) + BLOCK_BYTES, 0);
        let segment_bytes = s.len() as u64;
        SegmentHeader { seq: 1, segment_bytes, nonce: 9 }.encode(&mut s);
        s
    };
    for mode in [RecoveryMode::Strict, RecoveryMode::Tolerant] {
        let mut recovery = Recovery::new(mode);
        if recovery.add_segment(1, &segment).is_ok() {
            let _ = recovery.finish();
        }
    }
});
