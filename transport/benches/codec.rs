//! CPU cost of the peer-connection codec, without sockets: what a shard pays
//! to batch its raft messages for one destination (outbox push, then flush:
//! envelope encoding, the frame header and its CRC32C) and what the receiver
//! pays to get them back (the decoder copying the bytes in, the checksum,
//! then every envelope, zero-copy).
//!
//! Three shapes, all for one destination (store, shard):
//! - `64x128B`: the WAL headline benchmark's traffic, 64 regions each with
//!   one 128 B message (an append with one small entry);
//! - `10000x32B`: one heartbeat round of a store hosting 10,000 regions;
//! - `16x64KiB`: catch-up appends carrying large entries.
//!
//! Every envelope has 16-byte start/end keys, an epoch and both peers, as a
//! real region's would. Throughput is the frame's bytes on the wire. The
//! `decode_chunked` group feeds the `64x128B` frame in 1,500-byte pieces
//! (one Ethernet MTU, as TCP tends to deliver it), asking for a frame after
//! every piece as the connection task does after every read.
//!
//! Run with `cargo bench -p transport --bench codec`.

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use transport::frame::encode_frame;
use transport::{
    decode_raft_batch, encode_raft_batch, Destination, Envelope, Epoch, FrameDecoder, FrameKind, Outboxes, Peer,
    RaftBatch, Target,
};

/// (name, messages, message bytes)
const SHAPES: [(&str, usize, usize); 3] = [("64x128B", 64, 128), ("10000x32B", 10_000, 32), ("16x64KiB", 16, 64 << 10)];
/// The shape `decode_chunked` feeds piecewise.
const CHUNKED_SHAPE: usize = 0;
/// Bytes per piece fed to the decoder in `decode_chunked`: one Ethernet MTU.
const CHUNK_BYTES: usize = 1500;

const TO: Destination = Destination { store_id: 2, shard: 0 };

/// One message per region, regions numbered from 1, all for [`TO`].
fn envelopes(messages: usize, message_bytes: usize) -> Vec<Envelope> {
    let message = Bytes::from((0..message_bytes).map(|i| i as u8).collect::<Vec<u8>>());
    (1..=messages as u64)
        .map(|region| Envelope {
            region_id: region,
            // adjacent ranges of a table keyspace: `t` + 15 digits
            start_key: Bytes::from(format!("t{:015}", region * 1000)),
            end_key: Bytes::from(format!("t{:015}", (region + 1) * 1000)),
            epoch: Epoch { conf_ver: 5, version: 12 + region % 7 },
            from: Peer { peer_id: region * 3 + 1, store_id: 1, shard: 0 },
            to: Target { peer_id: region * 3 + 2, store_id: TO.store_id, shard: TO.shard },
            message: message.clone(),
        })
        .collect()
}

/// Pushes every envelope for [`TO`] and flushes: the single frame's bytes.
fn push_flush(outboxes: &mut Outboxes, envs: &[Envelope]) -> Vec<u8> {
    for e in envs {
        outboxes.push(TO, e).expect("the shapes fit one outbox");
    }
    let mut frames = outboxes.flush();
    assert_eq!(frames.len(), 1, "one destination, one frame");
    frames.pop().unwrap().bytes
}

/// Feeds `frame` to the decoder in pieces of `chunk_bytes`, asking for a
/// frame after each, and decodes the raft batch it holds.
fn decode(decoder: &mut FrameDecoder, frame: &[u8], chunk_bytes: usize) -> Vec<Envelope> {
    let mut got = None;
    for piece in frame.chunks(chunk_bytes) {
        decoder.push(piece);
        if let Some(f) = decoder.next_frame().expect("valid frame") {
            got = Some(f);
        }
    }
    let f = got.expect("the whole frame was fed");
    assert_eq!(f.kind, FrameKind::Raft);
    decode_raft_batch(&f.payload).expect("valid raft batch")
}

fn codec(c: &mut Criterion) {
    let mut encode_group = c.benchmark_group("outbox_push_flush");
    let mut frames = vec![];
    for (name, messages, message_bytes) in SHAPES {
        let envs = envelopes(messages, message_bytes);
        let mut outboxes = Outboxes::new();
        let frame = push_flush(&mut outboxes, &envs);
        // the frame is what `encode_frame` makes of what `encode_raft_batch` makes
        let mut payload = vec![];
        encode_raft_batch(&mut payload, envs.iter());
        let mut expected = vec![];
        encode_frame(&mut expected, FrameKind::Raft, &[&payload]);
        assert_eq!(frame, expected, "{name}: outbox frame differs from the batch encoding");
        encode_group.throughput(Throughput::Bytes(frame.len() as u64));
        // the shard pushes by reference: each message is encoded into the frame as it is pushed
        encode_group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| push_flush(&mut outboxes, black_box(&envs)))
        });
        frames.push((name, envs, frame));
    }
    encode_group.finish();

    let mut decode_group = c.benchmark_group("decode");
    for (name, envs, frame) in &frames {
        let mut decoder = FrameDecoder::new();
        assert_eq!(&decode(&mut decoder, frame, frame.len()), envs, "{name}: round trip");
        assert_eq!(decoder.finish(), Ok(()));
        decode_group.throughput(Throughput::Bytes(frame.len() as u64));
        decode_group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| decode(&mut decoder, black_box(frame), frame.len()))
        });
    }
    decode_group.finish();

    // what the receive path does: check the frame, index the batch, read each message in place
    let mut in_place_group = c.benchmark_group("decode_in_place");
    for (name, envs, frame) in &frames {
        let mut decoder = FrameDecoder::new();
        let read = |decoder: &mut FrameDecoder| {
            decoder.push(frame);
            let f = decoder.next_frame().expect("valid frame").expect("whole frame");
            let batch = RaftBatch::decode(f.payload).expect("valid raft batch");
            batch.iter().map(|e| e.region_id() as usize + e.message().len()).sum::<usize>()
        };
        let want: usize = envs.iter().map(|e| e.region_id as usize + e.message.len()).sum();
        assert_eq!(read(&mut decoder), want, "{name}: read in place");
        in_place_group.throughput(Throughput::Bytes(frame.len() as u64));
        in_place_group.bench_function(BenchmarkId::from_parameter(name), |b| b.iter(|| read(&mut decoder)));
    }
    in_place_group.finish();

    let mut chunked_group = c.benchmark_group("decode_chunked");
    let (name, envs, frame) = &frames[CHUNKED_SHAPE];
    let mut decoder = FrameDecoder::new();
    assert_eq!(&decode(&mut decoder, frame, CHUNK_BYTES), envs, "{name}: round trip in {CHUNK_BYTES} B pieces");
    assert_eq!(decoder.finish(), Ok(()));
    chunked_group.throughput(Throughput::Bytes(frame.len() as u64));
    chunked_group.bench_function(BenchmarkId::new(*name, format!("{CHUNK_BYTES}B_chunks")), |b| {
        b.iter(|| decode(&mut decoder, black_box(frame), CHUNK_BYTES))
    });
    chunked_group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
