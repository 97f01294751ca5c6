//! A batch record's payload: one section per staged region write.

use super::*;
use crate::{ConfState, HardState, RegionId, RegionWrite, SnapshotMarker};

const F_SNAPSHOT: u8 = 0x01;
const F_ENTRIES: u8 = 0x02;
const F_COMPACT: u8 = 0x04;
const F_HARD_STATE: u8 = 0x08;
const F_CONF_STATE: u8 = 0x10;
const F_META: u8 = 0x20;
const F_TOMBSTONE: u8 = 0x40;
const F_FORGET: u8 = 0x80;
// (every bit of the flags byte has a meaning)

/// Bytes of one entry's fixed part (term, type, length).
pub const ENTRY_HEAD_BYTES: usize = 8 + 1 + 4;

/// Encoded size of a section.
pub fn section_bytes(write: &RegionWrite) -> usize {
    let mut n = 8 + 1;
    if write.snapshot.is_some() {
        n += 16;
    }
    if !write.entries.is_empty() {
        n += 8 + 4 + write.entries.iter().map(|e| ENTRY_HEAD_BYTES + e.data.len()).sum::<usize>();
    }
    if write.compact_to.is_some() {
        n += 16;
    }
    if write.hard_state.is_some() {
        n += 24;
    }
    if let Some(cs) = &write.conf_state {
        n += conf_state_bytes(cs);
    }
    if let Some(m) = &write.meta {
        n += 4 + m.len();
    }
    n
}

/// Encodes one section at the start of `buf` (exactly `section_bytes(write)`
/// long). `compact_prev_term` is the term of `compact_to - 1`, which the log
/// must remember after the entry itself is gone. Calls `on_entry(i, offset)`
/// with each entry's data offset within `buf` so the caller can index it.
pub fn encode_section(
    buf: &mut [u8],
    region: RegionId,
    write: &RegionWrite,
    compact_prev_term: u64,
    mut on_entry: impl FnMut(usize, usize),
) -> usize {
    let mut w = Writer::new(buf);
    w.u64(region);
    let mut flags = 0;
    for (on, f) in [
        (write.snapshot.is_some(), F_SNAPSHOT),
        (!write.entries.is_empty(), F_ENTRIES),
        (write.compact_to.is_some(), F_COMPACT),
        (write.hard_state.is_some(), F_HARD_STATE),
        (write.conf_state.is_some(), F_CONF_STATE),
        (write.meta.is_some(), F_META),
        (write.tombstone, F_TOMBSTONE),
        (write.forget, F_FORGET),
    ] {
        if on {
            flags |= f;
        }
    }
    w.u8(flags);
    if let Some(s) = &write.snapshot {
        w.u64(s.index);
        w.u64(s.term);
    }
    if let Some(first) = write.entries.first() {
        w.u64(first.index);
        w.u32(write.entries.len() as u32);
        for (i, e) in write.entries.iter().enumerate() {
            debug_assert_eq!(e.index, first.index + i as u64, "entries of a section are consecutive");
            w.u64(e.term);
            w.u8(e.entry_type);
            w.u32(e.data.len() as u32);
            on_entry(i, w.pos);
            w.put(&e.data);
        }
    }
    if let Some(c) = write.compact_to {
        w.u64(c);
        w.u64(compact_prev_term);
    }
    if let Some(hs) = &write.hard_state {
        encode_hard_state(&mut w, hs);
    }
    if let Some(cs) = &write.conf_state {
        encode_conf_state(&mut w, cs);
    }
    if let Some(m) = &write.meta {
        w.u32(m.len() as u32);
        w.put(m);
    }
    w.pos
}

/// One entry as found in a payload: its data is `payload[data_offset..][..data_len]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryRef {
    pub index: u64,
    pub term: u64,
    pub entry_type: u8,
    pub data_offset: usize,
    pub data_len: usize,
}

/// The fixed part of a section (everything but the entries).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SectionHead {
    pub snapshot: Option<SnapshotMarker>,
    /// (new first index, term of the entry before it)
    pub compact: Option<(u64, u64)>,
    pub hard_state: Option<HardState>,
    pub conf_state: Option<ConfState>,
    pub meta: Option<bytes::Bytes>,
    pub tombstone: bool,
    pub forget: bool,
}

/// A decoded section; entry data stays in the payload (zero-copy).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchSection {
    pub region: RegionId,
    pub head: SectionHead,
    pub entries: Vec<EntryRef>,
}

/// Decodes a batch payload holding `count` sections.
pub fn decode_batch(payload: &[u8], count: u32) -> Result<Vec<BatchSection>, Malformed> {
    let mut r = Reader::new(payload);
    let mut out = Vec::with_capacity((count as usize).min(payload.len() / 9 + 1));
    for _ in 0..count {
        out.push(decode_section(&mut r)?);
    }
    if !r.is_empty() {
        return Err(Malformed { at: r.pos(), what: "bytes after the last section" });
    }
    Ok(out)
}

fn decode_section(r: &mut Reader<'_>) -> Result<BatchSection, Malformed> {
    let region = r.u64("section.region")?;
    let flags = r.u8("section.flags")?;
    if flags & F_FORGET != 0 && flags != F_FORGET {
        return Err(Malformed { at: r.pos() - 1, what: "a forget section with other parts" });
    }
    let mut head = SectionHead::default();
    if flags & F_SNAPSHOT != 0 {
        head.snapshot = Some(SnapshotMarker { index: r.u64("snapshot.index")?, term: r.u64("snapshot.term")? });
    }
    let mut entries = Vec::new();
    if flags & F_ENTRIES != 0 {
        let first = r.u64("entries.first_index")?;
        let count = r.u32("entries.count")? as usize;
        if count == 0 || count > SECTION_ENTRIES_MAX {
            return Err(Malformed { at: r.pos() - 4, what: "entry count is 0 or over SECTION_ENTRIES_MAX" });
        }
        if first == 0 || first.checked_add(count as u64).is_none() {
            return Err(Malformed { at: r.pos() - 12, what: "entry index out of range" });
        }
        entries.reserve(count.min(r.buf.len() / ENTRY_HEAD_BYTES + 1));
        for i in 0..count {
            let term = r.u64("entry.term")?;
            let entry_type = r.u8("entry.type")?;
            let data_len = r.u32("entry.len")? as usize;
            if data_len > ENTRY_DATA_BYTES_MAX {
                return Err(Malformed { at: r.pos() - 4, what: "entry longer than ENTRY_DATA_BYTES_MAX" });
            }
            let data_offset = r.pos();
            r.bytes(data_len, "entry data")?;
            entries.push(EntryRef { index: first + i as u64, term, entry_type, data_offset, data_len });
        }
    }
    if flags & F_COMPACT != 0 {
        head.compact = Some((r.u64("compact.index")?, r.u64("compact.prev_term")?));
    }
    if flags & F_HARD_STATE != 0 {
        head.hard_state = Some(decode_hard_state(r)?);
    }
    if flags & F_CONF_STATE != 0 {
        head.conf_state = Some(decode_conf_state(r)?);
    }
    if flags & F_META != 0 {
        head.meta = Some(decode_meta(r)?);
    }
    head.tombstone = flags & F_TOMBSTONE != 0;
    head.forget = flags & F_FORGET != 0;
    Ok(BatchSection { region, head, entries })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Entry;
    use bytes::Bytes;

    #[test]
    fn section_round_trips_every_part() {
        let write = RegionWrite {
            snapshot: Some(SnapshotMarker { index: 9, term: 2 }),
            entries: (10..13)
                .map(|i| Entry {
                    index: i,
                    term: 3,
                    entry_type: (i % 3) as u8,
                    data: Bytes::from(vec![i as u8; i as usize]),
                })
                .collect(),
            compact_to: Some(11),
            hard_state: Some(HardState { term: 3, vote: 7, commit: 10 }),
            conf_state: Some(ConfState {
                voters: vec![1, 2, 3],
                learners: vec![4],
                auto_leave: true,
                ..Default::default()
            }),
            meta: Some(Bytes::from_static(b"meta")),
            tombstone: true,
            forget: false,
        };
        let n = section_bytes(&write);
        let mut buf = vec![0u8; n];
        let mut offsets = vec![];
        assert_eq!(encode_section(&mut buf, 77, &write, 3, |i, off| offsets.push((i, off))), n);
        let sections = decode_batch(&buf, 1).unwrap();
        let s = &sections[0];
        assert_eq!(s.region, 77);
        assert_eq!(s.head.snapshot, write.snapshot);
        assert_eq!(s.head.compact, Some((11, 3)));
        assert_eq!(s.head.hard_state, write.hard_state);
        assert_eq!(s.head.conf_state, write.conf_state);
        assert_eq!(s.head.meta, write.meta);
        assert!(s.head.tombstone);
        assert!(!s.head.forget);
        for (e, r) in write.entries.iter().zip(&s.entries) {
            assert_eq!((e.index, e.term, e.entry_type), (r.index, r.term, r.entry_type));
            assert_eq!(&buf[r.data_offset..r.data_offset + r.data_len], &e.data[..]);
        }
        assert_eq!(
            offsets.iter().map(|o| o.1).collect::<Vec<_>>(),
            s.entries.iter().map(|e| e.data_offset).collect::<Vec<_>>()
        );
        // every truncation is an error, never a panic
        for cut in 0..n {
            assert!(decode_batch(&buf[..cut], 1).is_err());
        }
    }

    #[test]
    fn a_forget_section_is_alone_or_malformed() {
        let forget = RegionWrite { forget: true, ..Default::default() };
        let mut buf = vec![0u8; section_bytes(&forget)];
        encode_section(&mut buf, 9, &forget, 0, |_, _| {});
        let s = &decode_batch(&buf, 1).unwrap()[0];
        assert_eq!((s.region, s.head.forget), (9, true));
        let with_meta = RegionWrite { meta: Some(Bytes::from_static(b"m")), ..forget };
        let mut buf = vec![0u8; section_bytes(&with_meta)];
        encode_section(&mut buf, 9, &with_meta, 0, |_, _| {});
        assert!(decode_batch(&buf, 1).is_err());
    }
}
