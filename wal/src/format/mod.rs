//! The on-disk format, byte by byte (docs/wal-format.md is the prose twin of
//! this module; keep them in step).
//!
//! A segment is a file of fixed size: one 4 KiB header block, then records.
//! Every record starts on a 4 KiB boundary and is padded with zeros to the
//! next one, so bytes that were acknowledged as durable are never rewritten.
//! Each record's CRC32C covers the segment's sequence number and random
//! nonce, the header and the payload: bytes left over from the segment's
//! previous life (segments are recycled), or entry data crafted to look like
//! a record, never validate. One write is always one record.
//!
//! All integers are little-endian. The encoding is hand-written rather than
//! bincode so that the layout is fixed, documented and zero-copy to decode.

mod checkpoint;
mod record;
mod section;
mod segment_header;

pub use checkpoint::{
    checkpoint_entry_bytes, decode_checkpoint, encode_checkpoint, Checkpoint, RegionCheckpoint, CHECKPOINT_HEAD_BYTES,
    SHARD_NEEDS_CATCH_UP,
};
pub use record::{
    decode_record, encode_record_header, record_offsets, RecordError, RecordHeader, RecordKind, RecordView,
    RECORD_MAGIC,
};
pub use section::{decode_batch, encode_section, section_bytes, BatchSection, EntryRef, SectionHead};
pub use segment_header::{SegmentHeader, SegmentHeaderError};

/// Unit of alignment for every write: O_DIRECT needs it, and padding records
/// to it is what keeps acknowledged bytes from ever being overwritten.
pub const BLOCK_BYTES: usize = 4096;
/// The segment header occupies the first block.
pub const SEGMENT_HEADER_BYTES: usize = BLOCK_BYTES;
/// Fixed size of a record header.
pub const RECORD_HEADER_BYTES: usize = 32;
/// Largest payload of one entry. An entry plus its transport envelope must fit
/// one network frame; the engine splits larger client batches before this.
pub const ENTRY_DATA_BYTES_MAX: usize = 8 << 20;
/// Largest opaque region meta the log stores.
pub const META_BYTES_MAX: usize = 64 << 10;
/// Largest number of peer ids in one ConfState (all four lists together).
pub const CONF_PEERS_MAX: usize = 1024;
/// Largest number of entries in one section.
pub const SECTION_ENTRIES_MAX: usize = 1 << 20;

const _: () = assert!(RECORD_HEADER_BYTES < BLOCK_BYTES);
const _: () = assert!(SEGMENT_HEADER_BYTES.is_multiple_of(BLOCK_BYTES));
const _: () = assert!(ENTRY_DATA_BYTES_MAX <= u32::MAX as usize);

/// Rounds `n` up to the next block boundary.
pub const fn align_up(n: usize) -> usize {
    n.div_ceil(BLOCK_BYTES) * BLOCK_BYTES
}

/// A bounds-checked little-endian reader over a payload. Every read that would
/// run past the end is an error, never a panic: the bytes come from disk.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// A payload that parses past its own end or holds impossible values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed payload at byte {at}: {what}")]
pub struct Malformed {
    pub at: usize,
    pub what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }
    pub(crate) fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Malformed> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(Malformed { at: self.pos, what }),
        }
    }
    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, Malformed> {
        Ok(self.bytes(1, what)?[0])
    }
    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, Malformed> {
        Ok(u16::from_le_bytes(self.bytes(2, what)?.try_into().unwrap()))
    }
    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, Malformed> {
        Ok(u32::from_le_bytes(self.bytes(4, what)?.try_into().unwrap()))
    }
    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, Malformed> {
        Ok(u64::from_le_bytes(self.bytes(8, what)?.try_into().unwrap()))
    }
}

/// Appends little-endian values to a buffer being encoded.
pub(crate) struct Writer<'a> {
    pub(crate) buf: &'a mut [u8],
    pub(crate) pos: usize,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        Writer { buf, pos: 0 }
    }
    pub(crate) fn put(&mut self, b: &[u8]) {
        self.buf[self.pos..self.pos + b.len()].copy_from_slice(b);
        self.pos += b.len();
    }
    pub(crate) fn u8(&mut self, v: u8) {
        self.put(&[v]);
    }
    pub(crate) fn u16(&mut self, v: u16) {
        self.put(&v.to_le_bytes());
    }
    pub(crate) fn u32(&mut self, v: u32) {
        self.put(&v.to_le_bytes());
    }
    pub(crate) fn u64(&mut self, v: u64) {
        self.put(&v.to_le_bytes());
    }
}

/// Size of an encoded ConfState.
pub(crate) fn conf_state_bytes(cs: &crate::ConfState) -> usize {
    1 + 4 * 2 + 8 * cs.peer_count()
}

pub(crate) fn encode_conf_state(w: &mut Writer<'_>, cs: &crate::ConfState) {
    w.u8(cs.auto_leave as u8);
    for list in [&cs.voters, &cs.learners, &cs.voters_outgoing, &cs.learners_next] {
        w.u16(list.len() as u16);
        for id in list {
            w.u64(*id);
        }
    }
}

pub(crate) fn decode_conf_state(r: &mut Reader<'_>) -> Result<crate::ConfState, Malformed> {
    let auto_leave = match r.u8("conf_state.auto_leave")? {
        0 => false,
        1 => true,
        _ => return Err(Malformed { at: r.pos() - 1, what: "conf_state.auto_leave is not 0 or 1" }),
    };
    let mut lists: [Vec<u64>; 4] = Default::default();
    let mut total = 0usize;
    for list in lists.iter_mut() {
        let n = r.u16("conf_state list length")? as usize;
        total += n;
        if total > CONF_PEERS_MAX {
            return Err(Malformed { at: r.pos(), what: "conf_state has more peers than CONF_PEERS_MAX" });
        }
        list.reserve(n);
        for _ in 0..n {
            list.push(r.u64("conf_state peer id")?);
        }
    }
    let [voters, learners, voters_outgoing, learners_next] = lists;
    Ok(crate::ConfState { voters, learners, voters_outgoing, learners_next, auto_leave })
}

pub(crate) fn encode_hard_state(w: &mut Writer<'_>, hs: &crate::HardState) {
    w.u64(hs.term);
    w.u64(hs.vote);
    w.u64(hs.commit);
}

pub(crate) fn decode_hard_state(r: &mut Reader<'_>) -> Result<crate::HardState, Malformed> {
    Ok(crate::HardState {
        term: r.u64("hard_state.term")?,
        vote: r.u64("hard_state.vote")?,
        commit: r.u64("hard_state.commit")?,
    })
}

pub(crate) fn decode_meta(r: &mut Reader<'_>) -> Result<bytes::Bytes, Malformed> {
    let n = r.u32("meta length")? as usize;
    if n > META_BYTES_MAX {
        return Err(Malformed { at: r.pos() - 4, what: "meta longer than META_BYTES_MAX" });
    }
    Ok(bytes::Bytes::copy_from_slice(r.bytes(n, "meta bytes")?))
}
