//! Record framing: a 32-byte header, the payload, zero padding to the block.

use super::{align_up, Reader, RECORD_HEADER_BYTES};

/// "RREC" in little-endian byte order.
pub const RECORD_MAGIC: u32 = u32::from_le_bytes(*b"RREC");

/// What a record's payload holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    /// One group-commit batch: sections of region writes (none: a seal,
    /// which only acknowledges the record before it).
    Batch = 1,
    /// The state of every region, then the batch of the flush that opened the
    /// segment (perhaps a seal's empty one): the first record of each segment.
    Checkpoint = 2,
}

impl RecordKind {
    fn from_u8(b: u8) -> Option<RecordKind> {
        match b {
            1 => Some(RecordKind::Batch),
            2 => Some(RecordKind::Checkpoint),
            _ => None,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            RecordKind::Batch => "batch",
            RecordKind::Checkpoint => "checkpoint",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHeader {
    pub kind: RecordKind,
    pub payload_bytes: u32,
    /// Log sequence number of the record: +1 for every record the log writes.
    pub lsn: u64,
    pub section_count: u32,
}

impl RecordHeader {
    /// Bytes the record occupies on disk, padding included.
    pub fn disk_bytes(&self) -> usize {
        align_up(RECORD_HEADER_BYTES + self.payload_bytes as usize)
    }
}

/// A record that validated, borrowed from the segment bytes.
#[derive(Clone, Copy, Debug)]
pub struct RecordView<'a> {
    pub header: RecordHeader,
    /// Offset of the record in its segment.
    pub offset: usize,
    pub payload: &'a [u8],
}

impl RecordView<'_> {
    /// Offset of the payload's first byte in the segment.
    pub fn payload_offset(&self) -> usize {
        self.offset + RECORD_HEADER_BYTES
    }
    pub fn next_offset(&self) -> usize {
        self.offset + self.header.disk_bytes()
    }
}

/// Why no valid record starts at an offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("no record (zeroed block)")]
    Zero,
    #[error("record header truncated by the end of the segment")]
    Truncated,
    #[error("bad record magic")]
    BadMagic,
    #[error("unknown record kind {0}")]
    BadKind(u8),
    #[error("record length {payload_bytes} runs past the end of the segment")]
    BadLength { payload_bytes: u32 },
    #[error("record checksum mismatch")]
    Checksum,
}

/// Checksum of a record: the segment's sequence number and nonce, the header
/// after the checksum field, and the payload.
fn record_crc(seq: u64, nonce: u64, header_tail: &[u8], payload: &[u8]) -> u32 {
    let c = crc32c::crc32c(&seq.to_le_bytes());
    let c = crc32c::crc32c_append(c, &nonce.to_le_bytes());
    let c = crc32c::crc32c_append(c, header_tail);
    crc32c::crc32c_append(c, payload)
}

/// Writes the header of a record whose payload already sits in
/// `record[RECORD_HEADER_BYTES..]`, computing the checksum over it.
pub fn encode_record_header(record: &mut [u8], seq: u64, nonce: u64, header: &RecordHeader) {
    let payload_end = RECORD_HEADER_BYTES + header.payload_bytes as usize;
    record[0..4].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
    record[8] = header.kind as u8;
    record[9] = 0;
    record[10..12].copy_from_slice(&0u16.to_le_bytes());
    record[12..16].copy_from_slice(&header.payload_bytes.to_le_bytes());
    record[16..24].copy_from_slice(&header.lsn.to_le_bytes());
    record[24..28].copy_from_slice(&header.section_count.to_le_bytes());
    record[28..32].copy_from_slice(&0u32.to_le_bytes());
    let crc = record_crc(seq, nonce, &record[8..RECORD_HEADER_BYTES], &record[RECORD_HEADER_BYTES..payload_end]);
    record[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// Decodes and verifies the record starting at `offset` of a segment whose
/// sequence number is `seq` (`segment` is the whole file: the nonce is read
/// from its header). Never panics on bad bytes.
pub fn decode_record(segment: &[u8], offset: usize, seq: u64) -> Result<RecordView<'_>, RecordError> {
    let nonce = segment
        .get(super::segment_header::NONCE_OFFSET..super::segment_header::NONCE_OFFSET + 8)
        .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap()));
    let Some(head) = segment.get(offset..offset + RECORD_HEADER_BYTES) else {
        return Err(RecordError::Truncated);
    };
    let mut r = Reader::new(head);
    let magic = r.u32("magic").unwrap();
    if magic != RECORD_MAGIC {
        return Err(if head.iter().all(|&b| b == 0) { RecordError::Zero } else { RecordError::BadMagic });
    }
    let crc = r.u32("crc").unwrap();
    let kind_byte = r.u8("kind").unwrap();
    let _reserved = r.bytes(3, "reserved").unwrap();
    let payload_bytes = r.u32("payload_bytes").unwrap();
    let lsn = r.u64("lsn").unwrap();
    let section_count = r.u32("section_count").unwrap();
    let payload_start = offset + RECORD_HEADER_BYTES;
    let Some(payload) =
        payload_start.checked_add(payload_bytes as usize).and_then(|end| segment.get(payload_start..end))
    else {
        return Err(RecordError::BadLength { payload_bytes });
    };
    if crc != record_crc(seq, nonce, &head[8..], payload) {
        return Err(RecordError::Checksum);
    }
    // The checksum passed, so these bytes are what we wrote; a bad kind now
    // means a newer writer, not damage.
    let kind = RecordKind::from_u8(kind_byte).ok_or(RecordError::BadKind(kind_byte))?;
    Ok(RecordView { header: RecordHeader { kind, payload_bytes, lsn, section_count }, offset, payload })
}

/// Offsets of the valid records at the start of a segment, in order, up to
/// the first block that is not one (for tools and tests that aim at records).
pub fn record_offsets(segment: &[u8], seq: u64) -> Vec<usize> {
    let mut out = vec![];
    let mut offset = super::SEGMENT_HEADER_BYTES;
    while let Ok(rec) = decode_record(segment, offset, seq) {
        out.push(offset);
        offset = rec.next_offset();
    }
    out
}
