//! The first block of every segment: what the file is and which life of it
//! this is (its sequence number).

use super::{Reader, Writer};

pub const SEGMENT_MAGIC: [u8; 8] = *b"RRWALSEG";
pub const FORMAT_VERSION: u32 = 1;
/// Bytes of the header that carry meaning; the rest of the block is zero.
pub const SEGMENT_HEADER_USED_BYTES: usize = 64;

/// Decoded segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// Sequence number of this segment; also its file name. Never reused.
    pub seq: u64,
    /// Size of the segment file in bytes.
    pub segment_bytes: u64,
    /// Random, new each time the segment is (re)used; mixed into every
    /// record's checksum with `seq`, so that no bytes written by anyone else
    /// (a reused segment's old life, or entry data crafted to look like a
    /// record) can pass for a record of this segment.
    pub nonce: u64,
}

/// Offset of `nonce` in the header (read directly by `decode_record`).
pub(crate) const NONCE_OFFSET: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SegmentHeaderError {
    #[error("file is shorter than a segment header ({len} bytes)")]
    TooShort { len: usize },
    #[error("not a ringraft WAL segment (bad magic)")]
    BadMagic,
    #[error("unsupported segment format version {version} (this build reads {FORMAT_VERSION})")]
    Version { version: u32 },
    #[error("segment header checksum mismatch")]
    Checksum,
}

impl SegmentHeader {
    /// Writes the header into the first `SEGMENT_HEADER_USED_BYTES` of `block`;
    /// the caller zeroes the rest of the block.
    pub fn encode(&self, block: &mut [u8]) {
        let mut w = Writer::new(&mut block[..SEGMENT_HEADER_USED_BYTES]);
        w.put(&SEGMENT_MAGIC);
        w.u32(FORMAT_VERSION);
        w.u32(0); // checksum, filled below
        w.u64(self.seq);
        w.u64(self.segment_bytes);
        w.u64(self.nonce);
        w.put(&[0u8; SEGMENT_HEADER_USED_BYTES - 40]);
        let crc = crc32c::crc32c(&block[16..SEGMENT_HEADER_USED_BYTES]);
        block[12..16].copy_from_slice(&crc.to_le_bytes());
    }

    pub fn decode(bytes: &[u8]) -> Result<SegmentHeader, SegmentHeaderError> {
        if bytes.len() < SEGMENT_HEADER_USED_BYTES {
            return Err(SegmentHeaderError::TooShort { len: bytes.len() });
        }
        let mut r = Reader::new(&bytes[..SEGMENT_HEADER_USED_BYTES]);
        let short = |_| SegmentHeaderError::TooShort { len: bytes.len() };
        if r.bytes(8, "magic").map_err(short)? != SEGMENT_MAGIC {
            return Err(SegmentHeaderError::BadMagic);
        }
        let version = r.u32("version").map_err(short)?;
        if version != FORMAT_VERSION {
            return Err(SegmentHeaderError::Version { version });
        }
        let crc = r.u32("crc").map_err(short)?;
        if crc != crc32c::crc32c(&bytes[16..SEGMENT_HEADER_USED_BYTES]) {
            return Err(SegmentHeaderError::Checksum);
        }
        let seq = r.u64("seq").map_err(short)?;
        let segment_bytes = r.u64("segment_bytes").map_err(short)?;
        let nonce = r.u64("nonce").map_err(short)?;
        Ok(SegmentHeader { seq, segment_bytes, nonce })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_rejects_a_flipped_byte() {
        let mut block = vec![0u8; super::super::SEGMENT_HEADER_BYTES];
        let h = SegmentHeader { seq: 42, segment_bytes: 64 << 20, nonce: 0x1234_5678_9abc_def0 };
        h.encode(&mut block);
        assert_eq!(SegmentHeader::decode(&block), Ok(h));
        block[20] ^= 1;
        assert_eq!(SegmentHeader::decode(&block), Err(SegmentHeaderError::Checksum));
        block[0] = b'X';
        assert_eq!(SegmentHeader::decode(&block), Err(SegmentHeaderError::BadMagic));
    }
}
