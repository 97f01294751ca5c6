//! CPU cost of a group-commit record, without I/O: encoding a batch (one
//! section per region write, then the header and its CRC32C) and decoding it
//! again (checksum, then every section), as the shard loop and recovery do.
//!
//! Two shapes: the headline benchmark's batch (64 regions, each one 128 B
//! entry and a HardState) and a large one (1024 such sections with 1 KiB
//! entries, the `--inflight 16` throughput case).
//!
//! Run with `cargo bench -p wal --bench record`.

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use wal::format::{
    align_up, decode_batch, decode_record, encode_record_header, encode_section, section_bytes, RecordHeader,
    RecordKind, SegmentHeader, RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES,
};
use wal::{Entry, HardState, RegionWrite};

/// Segment sequence number and nonce mixed into every checksum.
const SEQ: u64 = 7;
const NONCE: u64 = 0x5eed;
/// The record sits where a segment's first record goes, after its header.
const AT: usize = SEGMENT_HEADER_BYTES;

/// (name, sections, entry bytes)
const SHAPES: [(&str, usize, usize); 2] = [("64x128B", 64, 128), ("1024x1KiB", 1024, 1024)];

fn writes(sections: usize, entry_bytes: usize) -> Vec<(u64, RegionWrite)> {
    let data = Bytes::from((0..entry_bytes).map(|i| i as u8).collect::<Vec<u8>>());
    (0..sections)
        .map(|k| {
            let region = (k % 64) as u64 + 1;
            let index = (k / 64) as u64 + 1000;
            let write = RegionWrite {
                entries: vec![Entry { index, term: 3, entry_type: 0, data: data.clone() }],
                hard_state: Some(HardState { term: 3, vote: 1, commit: index - 1 }),
                ..Default::default()
            };
            (region, write)
        })
        .collect()
}

/// Encodes the writes as one batch record into `buf`, as `Wal::start_flush` does.
fn encode(buf: &mut [u8], writes: &[(u64, RegionWrite)], payload_bytes: usize) {
    let mut pos = RECORD_HEADER_BYTES;
    for (region, w) in writes {
        pos += encode_section(&mut buf[pos..], *region, w, 0, |_, _| {});
    }
    debug_assert_eq!(pos, RECORD_HEADER_BYTES + payload_bytes);
    buf[pos..].fill(0);
    let header = RecordHeader {
        kind: RecordKind::Batch,
        payload_bytes: payload_bytes as u32,
        lsn: 1,
        section_count: writes.len() as u32,
    };
    encode_record_header(buf, SEQ, NONCE, &header);
}

fn record(c: &mut Criterion) {
    let mut group = c.benchmark_group("record");
    for (name, sections, entry_bytes) in SHAPES {
        let ws = writes(sections, entry_bytes);
        let payload_bytes: usize = ws.iter().map(|(_, w)| section_bytes(w)).sum();
        // a segment: its header (the nonce lives there), then the record
        let mut buf = vec![0u8; AT + align_up(RECORD_HEADER_BYTES + payload_bytes)];
        SegmentHeader { seq: SEQ, segment_bytes: buf.len() as u64, nonce: NONCE }.encode(&mut buf[..AT]);
        group.throughput(Throughput::Bytes((buf.len() - AT) as u64));

        group.bench_function(BenchmarkId::new("encode", name), |b| {
            b.iter(|| encode(black_box(&mut buf[AT..]), black_box(&ws), payload_bytes))
        });

        encode(&mut buf[AT..], &ws, payload_bytes);
        let check = decode_record(&buf, AT, SEQ).expect("encoded record decodes");
        assert_eq!(decode_batch(check.payload, check.header.section_count).expect("sections decode").len(), sections);
        group.bench_function(BenchmarkId::new("decode", name), |b| {
            b.iter(|| {
                let rec = decode_record(black_box(&buf), AT, SEQ).expect("valid record");
                decode_batch(rec.payload, rec.header.section_count).expect("valid sections")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, record);
criterion_main!(benches);
