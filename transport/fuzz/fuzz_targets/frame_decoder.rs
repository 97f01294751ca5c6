//! Bytes from a peer, as TCP may deliver them, must never panic the
//! receiver: every malformed stream is a `DecodeError`, `EnvelopeError` or
//! `HandshakeError`, which closes the connection.
//!
//! The first two input bytes choose the chunk size (1 to 65,536 bytes) the
//! rest is fed to the `FrameDecoder` in; after every chunk every whole frame
//! is taken out and decoded by its kind, as the connection tasks do. A raft
//! batch, an accepted handshake, a reply or a snapshot header that decodes
//! must encode back to the same payload bytes: the decoders accept exactly
//! what the encoders make, no more.
//!
//! Run from `transport/` with `cargo +nightly fuzz run frame_decoder`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use transport::snapshot::{decode_chunk, SnapshotAck, SnapshotEnd, SnapshotHeader};
use transport::{decode_raft_batch, encode_raft_batch, FrameDecoder, FrameKind, Handshake, HandshakeReply};

/// The receiver's identity the handshakes are checked against.
const CLUSTER_ID: u64 = 7;
const STORE_ID: u64 = 2;
const SHARD: u16 = 3;

fuzz_target!(|data: &[u8]| {
    let Some((split, stream)) = data.split_first_chunk::<2>() else {
        return;
    };
    let chunk_bytes = u16::from_le_bytes(*split) as usize + 1;
    let mut decoder = FrameDecoder::new();
    for chunk in stream.chunks(chunk_bytes) {
        decoder.push(chunk);
        let _ = decoder.want();
        loop {
            let frame = match decoder.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                // the connection closes: nothing after a bad frame is read
                Err(_) => return,
            };
            match frame.kind {
                FrameKind::Raft => {
                    if let Ok(envelopes) = decode_raft_batch(&frame.payload) {
                        let mut again = Vec::with_capacity(frame.payload.len());
                        encode_raft_batch(&mut again, envelopes.iter());
                        assert_eq!(again, frame.payload, "a decoded raft batch re-encodes to other bytes");
                    }
                }
                FrameKind::Handshake => {
                    if let Ok(h) = Handshake::accept(&frame.payload, CLUSTER_ID, STORE_ID, SHARD) {
                        assert_eq!(h.encode(), frame.payload, "an accepted handshake re-encodes to other bytes");
                    }
                }
                FrameKind::HandshakeReply => {
                    if let Ok(r) = HandshakeReply::decode(&frame.payload) {
                        assert_eq!(r.encode(), frame.payload, "a decoded reply re-encodes to other bytes");
                    }
                }
                FrameKind::SnapshotHeader => {
                    if let Ok(h) = SnapshotHeader::decode(&frame.payload) {
                        assert_eq!(h.encode(), frame.payload, "a decoded snapshot header re-encodes to other bytes");
                    }
                }
                FrameKind::SnapshotChunk => {
                    let _ = decode_chunk(&frame.payload);
                }
                FrameKind::SnapshotEnd => {
                    let _ = SnapshotEnd::decode(&frame.payload);
                }
                FrameKind::SnapshotAck => {
                    let _ = SnapshotAck::decode(&frame.payload);
                }
                // the engine's client protocol and PD's: decoded (and fuzzed) by
                // their own crates (fuzz/: client_protocol, pd_protocol)
                FrameKind::ClientRequest | FrameKind::ClientResponse | FrameKind::PdRequest | FrameKind::PdResponse => {}
            }
        }
    }
    let _ = decoder.finish();
});
