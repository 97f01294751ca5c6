//! What a peer sends besides raft messages — the handshake and its reply,
//! the frames of a snapshot stream — is decoded by code that must answer
//! bytes it did not make with an error, never a panic (the `frame_decoder`
//! fuzz target drives the same decoders under nightly; this runs in `cargo
//! test`; codec.rs feeds the frame decoder and raft batches noise). For each
//! payload: a valid one decodes to what was encoded; cut short or lengthened
//! it is refused; damaged (bytes flipped, then cut or lengthened) or
//! replaced by noise it is answered, Ok or Err. And a stream holding a frame
//! of every kind comes out whole through the frame decoder and each kind's
//! decoder, however TCP chunks it, and damaged is answered the same way.

use bytes::Bytes;
use proptest::prelude::*;
use transport::envelope::EnvelopeError;
use transport::frame::encode_frame;
use transport::snapshot::{decode_chunk, encode_chunk_header, SnapshotAck, SnapshotEnd, SnapshotHeader};
use transport::{
    decode_raft_batch, encode_raft_batch, Envelope, Epoch, FrameDecoder, FrameKind, Handshake, HandshakeReply, Peer,
    Purpose, Target,
};

#[path = "../../tests/support/decode_mutations.rs"]
mod decode_mutations;
use decode_mutations::{any_bytes, check, mutations};

fn envelope() -> impl Strategy<Value = Envelope> {
    // region, conf_ver, version, from peer and store, to peer and store; then the two shards
    (any::<[u64; 7]>(), any::<[u16; 2]>(), any_bytes(0..16), any_bytes(0..16), any_bytes(0..256)).prop_map(
        |(n, shard, start, end, message)| Envelope {
            region_id: n[0],
            start_key: Bytes::from(start),
            end_key: Bytes::from(end),
            epoch: Epoch { conf_ver: n[1], version: n[2] },
            from: Peer { peer_id: n[3], store_id: n[4], shard: shard[0] },
            to: Target { peer_id: n[5], store_id: n[6], shard: shard[1] },
            message: Bytes::from(message),
        },
    )
}

/// A refusal reason from any bytes (the reply and the ack cut it to their limit).
fn reason(bytes: Option<Vec<u8>>) -> Option<String> {
    bytes.map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Feeds `stream` to a frame decoder `chunk` bytes at a time and decodes
/// every frame by its kind, as the connection tasks do (the receiver is
/// cluster 7, store 2, shard 3): how many decoded, or the first frame error.
fn decode_stream(stream: &[u8], chunk: usize) -> Result<usize, String> {
    let mut decoder = FrameDecoder::new();
    let mut decoded = 0;
    for piece in stream.chunks(chunk) {
        decoder.push(piece);
        while let Some(f) = decoder.next_frame().map_err(|e| e.to_string())? {
            decoded += usize::from(match f.kind {
                FrameKind::Handshake => Handshake::accept(&f.payload, 7, 2, 3).is_ok(),
                FrameKind::HandshakeReply => HandshakeReply::decode(&f.payload).is_ok(),
                FrameKind::Raft => decode_raft_batch(&f.payload).is_ok(),
                FrameKind::SnapshotHeader => SnapshotHeader::decode(&f.payload).is_ok(),
                FrameKind::SnapshotChunk => decode_chunk(&f.payload).is_ok(),
                FrameKind::SnapshotEnd => SnapshotEnd::decode(&f.payload).is_ok(),
                FrameKind::SnapshotAck => SnapshotAck::decode(&f.payload).is_ok(),
                // the engine's and PD's payloads: their own crates check them
                FrameKind::ClientRequest | FrameKind::ClientResponse | FrameKind::PdRequest | FrameKind::PdResponse => {
                    false
                }
            });
        }
    }
    decoder.finish().map_err(|e| e.to_string())?;
    Ok(decoded)
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::with_cases(512) })]

    #[test]
    fn handshakes_and_replies_round_trip_and_damaged_ones_are_answered(
        ids in any::<(u64, u64, u64, u16)>(),
        snapshot in any::<bool>(),
        refused in prop::option::of(any_bytes(0..300)),
        m in mutations(),
    ) {
        let (cluster, from, to, shard) = ids;
        let h = Handshake::new(cluster, from, to, shard, if snapshot { Purpose::Snapshot } else { Purpose::Raft });
        // accepted by the store and shard it names, as it was sent
        check(|b: &[u8]| Handshake::accept(b, cluster, to, shard), &h, &h.encode(), &m)?;
        let reply = reason(refused).map_or_else(HandshakeReply::accepted, |r| HandshakeReply::refused(&r));
        check(HandshakeReply::decode, &reply, &reply.encode(), &m)?;
    }

    #[test]
    fn snapshot_frames_round_trip_and_damaged_ones_are_answered(
        envelope in envelope(),
        ids in any::<(u64, u64, u32)>(),
        refused in prop::option::of(any_bytes(0..300)),
        m in mutations(),
    ) {
        let (snapshot_id, total_bytes, crc) = ids;
        let header = SnapshotHeader { snapshot_id, total_bytes, envelope };
        check(|b: &[u8]| SnapshotHeader::decode(&Bytes::copy_from_slice(b)), &header, &header.encode(), &m)?;
        let end = SnapshotEnd { total_bytes, crc32c: crc };
        check(SnapshotEnd::decode, &end, &end.encode(), &m)?;
        let ack = reason(refused).map_or_else(SnapshotAck::accepted, |r| SnapshotAck::refused(&r));
        check(SnapshotAck::decode, &ack, &ack.encode(), &m)?;
        // a chunk is its offset and whatever follows: any 8 bytes or more are one
        let chunk = Bytes::from([&encode_chunk_header(total_bytes)[..], &m.noise[..]].concat());
        let data = Bytes::from(m.noise.clone());
        prop_assert_eq!(decode_chunk(&chunk), Ok::<_, EnvelopeError>((total_bytes, data)));
        prop_assert!(decode_chunk(&chunk.slice(..m.cut % 8)).is_err());
    }

    #[test]
    fn a_stream_of_every_kind_of_frame_comes_out_whole_and_damaged_is_answered(
        envelope in envelope(),
        chunk in 1usize..700,
        m in mutations(),
    ) {
        let mut raft = vec![];
        encode_raft_batch(&mut raft, std::iter::once(&envelope));
        let header = SnapshotHeader { snapshot_id: 1, total_bytes: 4, envelope };
        let payloads = [
            (FrameKind::Handshake, Handshake::new(7, 1, 2, 3, Purpose::Raft).encode()),
            (FrameKind::HandshakeReply, HandshakeReply::refused("no room").encode()),
            (FrameKind::Raft, raft),
            (FrameKind::SnapshotHeader, header.encode()),
            (FrameKind::SnapshotChunk, [&encode_chunk_header(0)[..], &b"data"[..]].concat()),
            (FrameKind::SnapshotEnd, SnapshotEnd { total_bytes: 4, crc32c: crc32c::crc32c(b"data") }.encode()),
            (FrameKind::SnapshotAck, SnapshotAck::accepted().encode()),
        ];
        let mut stream = vec![];
        for (kind, payload) in &payloads {
            encode_frame(&mut stream, *kind, &[&payload[..]]);
        }
        prop_assert_eq!(decode_stream(&stream, chunk), Ok::<_, String>(payloads.len()));
        let flipped = m.flipped(&stream);
        let _ = decode_stream(&flipped, chunk);
        let _ = decode_stream(&flipped[..m.cut % flipped.len()], chunk);
        let _ = decode_stream(&[&flipped[..], &m.tail[..]].concat(), chunk);
        let _ = decode_stream(&m.noise, chunk);
    }
}
