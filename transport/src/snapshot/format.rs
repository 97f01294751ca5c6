//! Payloads of the snapshot frames. Header, end and ack are bincode 2; a
//! chunk is `u64 offset | data` (raw, so the data is not copied to encode
//! it), protected by its frame's CRC32C.

use bincode::{Decode, Encode};
use bytes::Bytes;

use crate::envelope::{decode_raft_batch, encode_raft_batch, Envelope, EnvelopeError};
use crate::frame::FRAME_BYTES_MAX;

/// Largest data in one chunk frame.
pub const SNAPSHOT_CHUNK_BYTES_MAX: usize = 4 << 20;
/// Bytes of a chunk payload before its data.
pub const SNAPSHOT_CHUNK_HEADER_BYTES: usize = 8;
/// Largest snapshot file accepted (a sanity bound: a region is split long before).
pub const SNAPSHOT_BYTES_MAX: u64 = 1 << 40;
/// Largest bincode part of a header, end or ack frame.
const CONTROL_BYTES_MAX: usize = 4 << 10;

const _: () = assert!(SNAPSHOT_CHUNK_BYTES_MAX + SNAPSHOT_CHUNK_HEADER_BYTES <= FRAME_BYTES_MAX);

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_little_endian().with_fixed_int_encoding().with_limit::<CONTROL_BYTES_MAX>()
}

fn decode<T: Decode<()>>(payload: &[u8], what: &'static str) -> Result<T, EnvelopeError> {
    let (v, used) =
        bincode::decode_from_slice(payload, config()).map_err(|_| EnvelopeError::Malformed { at: 0, what })?;
    if used != payload.len() {
        return Err(EnvelopeError::Malformed { at: used, what });
    }
    Ok(v)
}

/// Opens a stream: which snapshot, how big, and the raft message it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotHeader {
    /// Unique per sending endpoint; names the receiver's file.
    pub snapshot_id: u64,
    pub total_bytes: u64,
    /// The `MsgSnapshot` (metadata and descriptor), stepped into raft once the data is in.
    pub envelope: Envelope,
}

#[derive(Encode, Decode)]
struct HeaderFixed {
    snapshot_id: u64,
    total_bytes: u64,
}

impl SnapshotHeader {
    /// `u32 fixed length | bincode(snapshot_id, total_bytes) | raft batch of the one envelope`.
    pub fn encode(&self) -> Vec<u8> {
        let fixed = bincode::encode_to_vec(
            HeaderFixed { snapshot_id: self.snapshot_id, total_bytes: self.total_bytes },
            config(),
        )
        .expect("a snapshot header always encodes");
        let mut out = Vec::with_capacity(4 + fixed.len() + self.envelope.encoded_bytes() + 4);
        out.extend_from_slice(&(fixed.len() as u32).to_le_bytes());
        out.extend_from_slice(&fixed);
        encode_raft_batch(&mut out, std::iter::once(&self.envelope));
        out
    }

    pub fn decode(payload: &Bytes) -> Result<SnapshotHeader, EnvelopeError> {
        let bad = |what| EnvelopeError::Malformed { at: 0, what };
        if payload.len() < 4 {
            return Err(bad("snapshot header"));
        }
        let n = u32::from_le_bytes(payload[..4].try_into().unwrap()) as usize;
        if n > CONTROL_BYTES_MAX || payload.len() < 4 + n {
            return Err(bad("snapshot header length"));
        }
        let fixed: HeaderFixed = decode(&payload[4..4 + n], "snapshot header")?;
        let mut envelopes = decode_raft_batch(&payload.slice(4 + n..))?;
        if envelopes.len() != 1 {
            return Err(bad("a snapshot header carries exactly one message"));
        }
        Ok(SnapshotHeader {
            snapshot_id: fixed.snapshot_id,
            total_bytes: fixed.total_bytes,
            envelope: envelopes.pop().unwrap(),
        })
    }
}

/// Closes a stream: the sender's length and CRC32C of the whole file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub struct SnapshotEnd {
    pub total_bytes: u64,
    pub crc32c: u32,
}

impl SnapshotEnd {
    pub fn encode(&self) -> Vec<u8> {
        bincode::encode_to_vec(self, config()).expect("a snapshot end always encodes")
    }

    pub fn decode(payload: &[u8]) -> Result<SnapshotEnd, EnvelopeError> {
        decode(payload, "snapshot end")
    }
}

/// The receiver's verdict, sent after the file is durable and verified.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct SnapshotAck {
    /// `None`: stored and handed to raft. `Some(reason)`: refused.
    pub refused: Option<String>,
}

impl SnapshotAck {
    pub fn accepted() -> Self {
        SnapshotAck { refused: None }
    }

    /// A refusal, its reason cut to `REFUSAL_BYTES_MAX` (a long path must not
    /// make the ack undecodable).
    pub fn refused(reason: &str) -> Self {
        SnapshotAck { refused: Some(crate::handshake::cap_reason(reason)) }
    }

    pub fn encode(&self) -> Vec<u8> {
        bincode::encode_to_vec(self, config()).expect("a snapshot ack always encodes")
    }

    pub fn decode(payload: &[u8]) -> Result<SnapshotAck, EnvelopeError> {
        decode(payload, "snapshot ack")
    }
}

/// The header of a chunk payload; the data follows (sent as a second slice
/// of the same frame, no copy).
pub fn encode_chunk_header(offset: u64) -> [u8; SNAPSHOT_CHUNK_HEADER_BYTES] {
    offset.to_le_bytes()
}

/// A chunk's offset and data (sharing the frame's memory).
pub fn decode_chunk(payload: &Bytes) -> Result<(u64, Bytes), EnvelopeError> {
    if payload.len() < SNAPSHOT_CHUNK_HEADER_BYTES {
        return Err(EnvelopeError::Malformed { at: 0, what: "snapshot chunk" });
    }
    let offset = u64::from_le_bytes(payload[..8].try_into().unwrap());
    Ok((offset, payload.slice(SNAPSHOT_CHUNK_HEADER_BYTES..)))
}
