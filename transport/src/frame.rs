//! Frames: `u32 payload length | u32 CRC32C(kind, payload) | u8 kind | payload`,
//! little-endian. The decoder takes bytes as TCP delivers them (any
//! chunking) and yields whole frames; a length over [`FRAME_BYTES_MAX`] is
//! refused before a byte of it is buffered.

use bytes::{Buf, Bytes, BytesMut};

/// Bytes before the payload.
pub const FRAME_HEADER_BYTES: usize = 9;
/// Largest payload a peer may send; checked before any allocation.
pub const FRAME_BYTES_MAX: usize = 16 << 20;
/// Bytes the decoder reads ahead of a frame it is assembling.
const READ_AHEAD_BYTES: usize = 256 << 10;

const _: () = assert!(FRAME_BYTES_MAX <= u32::MAX as usize);

/// What a frame carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// The first frame of a connection (bincode `Handshake`).
    Handshake = 1,
    /// Raft messages for one destination shard.
    Raft = 2,
    /// The receiver's answer to a handshake (bincode `HandshakeReply`).
    HandshakeReply = 3,
    /// Opens a snapshot stream: what is coming and the `MsgSnapshot` it belongs to.
    SnapshotHeader = 4,
    /// `u64 offset | data` of a snapshot file.
    SnapshotChunk = 5,
    /// The whole file's length and CRC32C.
    SnapshotEnd = 6,
    /// The receiver's verdict on a whole snapshot (bincode `SnapshotAck`).
    SnapshotAck = 7,
    /// A client's request to a shard's client port (the engine's bincode payload).
    ClientRequest = 8,
    /// A shard's answer to a client request.
    ClientResponse = 9,
    /// A request to the placement driver (the `pd` crate's bincode payload).
    PdRequest = 10,
    /// The placement driver's answer.
    PdResponse = 11,
}

impl FrameKind {
    fn from_u8(b: u8) -> Option<FrameKind> {
        match b {
            1 => Some(FrameKind::Handshake),
            2 => Some(FrameKind::Raft),
            3 => Some(FrameKind::HandshakeReply),
            4 => Some(FrameKind::SnapshotHeader),
            5 => Some(FrameKind::SnapshotChunk),
            6 => Some(FrameKind::SnapshotEnd),
            7 => Some(FrameKind::SnapshotAck),
            8 => Some(FrameKind::ClientRequest),
            9 => Some(FrameKind::ClientResponse),
            10 => Some(FrameKind::PdRequest),
            11 => Some(FrameKind::PdResponse),
            _ => None,
        }
    }
}

/// A whole frame; the payload shares the decoder's buffer (zero-copy).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub kind: FrameKind,
    pub payload: Bytes,
}

/// Why a byte stream is not a ringraft frame stream. Any of these closes
/// the connection; the caller counts it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("frame of {len} bytes announced, over the limit of {limit} for this point of the connection")]
    Oversized { len: u64, limit: usize },
    #[error("frame checksum mismatch")]
    Checksum,
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("connection closed inside a frame ({buffered} bytes buffered)")]
    Truncated { buffered: usize },
}

impl DecodeError {
    /// A short stable name, for counters.
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::Oversized { .. } => "oversized",
            DecodeError::Checksum => "checksum",
            DecodeError::UnknownKind(_) => "unknown_kind",
            DecodeError::Truncated { .. } => "truncated",
        }
    }
}

fn frame_crc(kind: u8, payload_parts: &[&[u8]]) -> u32 {
    let mut c = crc32c::crc32c(&[kind]);
    for p in payload_parts {
        c = crc32c::crc32c_append(c, p);
    }
    c
}

/// Appends one frame whose payload is the concatenation of `parts` to `out`
/// (the caller then writes `out` with one write call).
pub fn encode_frame(out: &mut Vec<u8>, kind: FrameKind, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    assert!(len <= FRAME_BYTES_MAX, "frame of {len} bytes: callers cap what goes into a frame");
    out.reserve(FRAME_HEADER_BYTES + len);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&frame_crc(kind as u8, parts).to_le_bytes());
    out.push(kind as u8);
    for p in parts {
        out.extend_from_slice(p);
    }
}

/// Starts a frame in `out` whose payload the caller appends next; returns
/// where the frame starts, for [`finish_frame`]. Lets a payload be encoded
/// in place instead of built apart and copied.
pub fn begin_frame(out: &mut Vec<u8>) -> usize {
    let at = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
    at
}

/// Fills in the header of the frame begun at `at`: its payload is
/// everything appended since.
pub fn finish_frame(out: &mut [u8], at: usize, kind: FrameKind) {
    let len = out.len() - at - FRAME_HEADER_BYTES;
    assert!(len <= FRAME_BYTES_MAX, "frame of {len} bytes: callers cap what goes into a frame");
    let crc = frame_crc(kind as u8, &[&out[at + FRAME_HEADER_BYTES..]]);
    out[at..at + 4].copy_from_slice(&(len as u32).to_le_bytes());
    out[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
    out[at + 8] = kind as u8;
}

/// Turns a byte stream into frames.
pub struct FrameDecoder {
    buf: BytesMut,
    /// Largest payload accepted now: small until a connection's handshake is
    /// accepted, so an unchecked caller cannot make the receiver buffer a
    /// 16 MiB "handshake".
    limit: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder { buf: BytesMut::new(), limit: FRAME_BYTES_MAX }
    }
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A decoder accepting payloads of at most `limit` bytes (≤ FRAME_BYTES_MAX).
    pub fn with_limit(limit: usize) -> Self {
        FrameDecoder { buf: BytesMut::new(), limit: limit.min(FRAME_BYTES_MAX) }
    }

    /// Changes the limit for the frames still to come.
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit.min(FRAME_BYTES_MAX);
    }

    /// Bytes held that are not yet a whole frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Feeds bytes as they arrived.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// How many bytes the next read may usefully ask for: the rest of the
    /// frame being assembled (never more than its announced, checked length)
    /// plus some read-ahead.
    pub fn want(&self) -> usize {
        if self.buf.len() >= FRAME_HEADER_BYTES {
            let len = u32::from_le_bytes(self.buf[0..4].try_into().unwrap()) as usize;
            if len <= self.limit {
                return (FRAME_HEADER_BYTES + len).saturating_sub(self.buf.len()) + READ_AHEAD_BYTES;
            }
        }
        READ_AHEAD_BYTES
    }

    /// The next whole frame, `None` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, DecodeError> {
        if self.buf.len() < FRAME_HEADER_BYTES {
            return Ok(None);
        }
        let len = u32::from_le_bytes(self.buf[0..4].try_into().unwrap()) as usize;
        if len > self.limit {
            return Err(DecodeError::Oversized { len: len as u64, limit: self.limit });
        }
        if self.buf.len() < FRAME_HEADER_BYTES + len {
            return Ok(None);
        }
        let crc = u32::from_le_bytes(self.buf[4..8].try_into().unwrap());
        let kind_byte = self.buf[8];
        let mut frame = self.buf.split_to(FRAME_HEADER_BYTES + len);
        frame.advance(FRAME_HEADER_BYTES);
        let payload = frame.freeze();
        if crc != frame_crc(kind_byte, &[&payload]) {
            return Err(DecodeError::Checksum);
        }
        let kind = FrameKind::from_u8(kind_byte).ok_or(DecodeError::UnknownKind(kind_byte))?;
        Ok(Some(Frame { kind, payload }))
    }

    /// The stream ended: an error if it ended inside a frame.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Truncated { buffered: self.buf.len() })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oversized_length_is_refused_before_anything_is_buffered_for_it() {
        let mut d = FrameDecoder::new();
        let mut header = ((FRAME_BYTES_MAX + 1) as u32).to_le_bytes().to_vec();
        header.extend_from_slice(&[0; 5]);
        d.push(&header);
        assert!(d.want() <= READ_AHEAD_BYTES, "no read sized by the bogus length");
        assert_eq!(
            d.next_frame(),
            Err(DecodeError::Oversized { len: FRAME_BYTES_MAX as u64 + 1, limit: FRAME_BYTES_MAX })
        );
        let mut small = FrameDecoder::with_limit(100);
        let mut out = vec![];
        encode_frame(&mut out, FrameKind::Handshake, &[&[0; 101]]);
        small.push(&out[..FRAME_HEADER_BYTES]);
        assert_eq!(small.next_frame(), Err(DecodeError::Oversized { len: 101, limit: 100 }));
        assert!(d.buffered() < 64, "nothing was allocated for it");
    }

    #[test]
    fn a_flipped_payload_byte_is_a_checksum_error_and_a_cut_stream_is_truncated() {
        let mut out = vec![];
        encode_frame(&mut out, FrameKind::Raft, &[b"hello", b" world"]);
        let mut d = FrameDecoder::new();
        d.push(&out[..out.len() - 1]);
        assert_eq!(d.next_frame(), Ok(None));
        assert_eq!(d.finish(), Err(DecodeError::Truncated { buffered: out.len() - 1 }));
        let mut bad = out.clone();
        bad[FRAME_HEADER_BYTES + 2] ^= 1;
        let mut d = FrameDecoder::new();
        d.push(&bad);
        assert_eq!(d.next_frame(), Err(DecodeError::Checksum));
        let mut d = FrameDecoder::new();
        d.push(&out);
        let f = d.next_frame().unwrap().unwrap();
        assert_eq!((f.kind, &f.payload[..]), (FrameKind::Raft, &b"hello world"[..]));
        assert_eq!(d.finish(), Ok(()));
    }
}
