//! A checkpoint record: the latest state of every region the log knows,
//! written as the first record of each new segment, followed in the same
//! record by the batch that opened the segment (one write is one record, so
//! a torn write is always one torn record). With it, no older
//! segment ever holds the only copy of a HardState, ConfState, meta or
//! tombstone, so purging old segments can never lose a vote.

use super::*;
use crate::{ConfState, HardState, RegionId, SnapshotMarker};

const C_HARD_STATE: u8 = 0x01;
const C_CONF_STATE: u8 = 0x02;
const C_META: u8 = 0x04;
const C_SNAPSHOT: u8 = 0x08;
const C_TOMBSTONE: u8 = 0x10;
const C_ALL: u8 = 0x1f;

/// Bytes before the region entries: shard flags and the region count.
pub const CHECKPOINT_HEAD_BYTES: usize = 8;
/// Shard flag: recovery once dropped records, so no region of this shard may
/// vote until a leader has caught it up. Kept in every checkpoint until the
/// engine clears it, so it survives the purge of the damaged segment.
pub const SHARD_NEEDS_CATCH_UP: u32 = 0x1;
const SHARD_FLAGS_ALL: u32 = SHARD_NEEDS_CATCH_UP;

/// The checkpoint part of a checkpoint record.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checkpoint {
    pub needs_catch_up: bool,
    pub regions: Vec<RegionCheckpoint>,
}

/// A region's state as recorded in a checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegionCheckpoint {
    pub region: RegionId,
    /// First index of the region's log; entries below are gone.
    pub first_index: u64,
    /// Term of `first_index - 1` (0 when nothing was ever compacted).
    pub prev_term: u64,
    pub hard_state: Option<HardState>,
    pub conf_state: Option<ConfState>,
    pub meta: Option<bytes::Bytes>,
    pub snapshot: Option<SnapshotMarker>,
    pub tombstone: bool,
}

/// Encoded size of one region's checkpoint entry.
pub fn checkpoint_entry_bytes(c: &RegionCheckpoint) -> usize {
    8 + 1
        + 16
        + c.hard_state.map_or(0, |_| 24)
        + c.conf_state.as_ref().map_or(0, conf_state_bytes)
        + c.meta.as_ref().map_or(0, |m| 4 + m.len())
        + c.snapshot.map_or(0, |_| 16)
}

/// Encodes the checkpoint part (head and `count` regions) into `buf`,
/// returning the bytes written.
pub fn encode_checkpoint<'a>(
    buf: &mut [u8],
    needs_catch_up: bool,
    count: u32,
    regions: impl Iterator<Item = &'a RegionCheckpoint>,
) -> usize {
    let mut w = Writer::new(buf);
    w.u32(if needs_catch_up { SHARD_NEEDS_CATCH_UP } else { 0 });
    w.u32(count);
    let mut written = 0;
    for c in regions {
        written += 1;
        w.u64(c.region);
        let mut flags = 0;
        for (on, f) in [
            (c.hard_state.is_some(), C_HARD_STATE),
            (c.conf_state.is_some(), C_CONF_STATE),
            (c.meta.is_some(), C_META),
            (c.snapshot.is_some(), C_SNAPSHOT),
            (c.tombstone, C_TOMBSTONE),
        ] {
            if on {
                flags |= f;
            }
        }
        w.u8(flags);
        w.u64(c.first_index);
        w.u64(c.prev_term);
        if let Some(hs) = &c.hard_state {
            encode_hard_state(&mut w, hs);
        }
        if let Some(cs) = &c.conf_state {
            encode_conf_state(&mut w, cs);
        }
        if let Some(m) = &c.meta {
            w.u32(m.len() as u32);
            w.put(m);
        }
        if let Some(s) = &c.snapshot {
            w.u64(s.index);
            w.u64(s.term);
        }
    }
    debug_assert_eq!(written, count);
    w.pos
}

/// Decodes the checkpoint part at the start of a checkpoint record's
/// payload; returns it and the offset where the batch sections begin.
pub fn decode_checkpoint(payload: &[u8]) -> Result<(Checkpoint, usize), Malformed> {
    let mut r = Reader::new(payload);
    let flags = r.u32("checkpoint.shard_flags")?;
    if flags & !SHARD_FLAGS_ALL != 0 {
        return Err(Malformed { at: 0, what: "unknown shard flags" });
    }
    let count = r.u32("checkpoint.region_count")?;
    let mut out = Vec::with_capacity((count as usize).min(payload.len() / 25 + 1));
    for _ in 0..count {
        let region = r.u64("checkpoint.region")?;
        let flags = r.u8("checkpoint.flags")?;
        if flags & !C_ALL != 0 {
            return Err(Malformed { at: r.pos() - 1, what: "unknown checkpoint flags" });
        }
        let first_index = r.u64("checkpoint.first_index")?;
        let prev_term = r.u64("checkpoint.prev_term")?;
        if first_index == 0 {
            return Err(Malformed { at: r.pos() - 16, what: "checkpoint first_index is 0" });
        }
        let hard_state = if flags & C_HARD_STATE != 0 { Some(decode_hard_state(&mut r)?) } else { None };
        let conf_state = if flags & C_CONF_STATE != 0 { Some(decode_conf_state(&mut r)?) } else { None };
        let meta = if flags & C_META != 0 { Some(decode_meta(&mut r)?) } else { None };
        let snapshot = if flags & C_SNAPSHOT != 0 {
            Some(SnapshotMarker {
                index: r.u64("checkpoint.snapshot.index")?,
                term: r.u64("checkpoint.snapshot.term")?,
            })
        } else {
            None
        };
        out.push(RegionCheckpoint {
            region,
            first_index,
            prev_term,
            hard_state,
            conf_state,
            meta,
            snapshot,
            tombstone: flags & C_TOMBSTONE != 0,
        });
    }
    Ok((Checkpoint { needs_catch_up: flags & SHARD_NEEDS_CATCH_UP != 0, regions: out }, r.pos()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_round_trips() {
        let regions = vec![
            RegionCheckpoint { region: 1, first_index: 1, ..Default::default() },
            RegionCheckpoint {
                region: 2,
                first_index: 50,
                prev_term: 4,
                hard_state: Some(HardState { term: 5, vote: 2, commit: 60 }),
                conf_state: Some(ConfState { voters: vec![1, 2], ..Default::default() }),
                meta: Some(bytes::Bytes::from_static(b"range")),
                snapshot: Some(SnapshotMarker { index: 49, term: 4 }),
                tombstone: true,
            },
        ];
        let n: usize = CHECKPOINT_HEAD_BYTES + regions.iter().map(checkpoint_entry_bytes).sum::<usize>();
        let mut buf = vec![0; n];
        assert_eq!(encode_checkpoint(&mut buf, true, 2, regions.iter()), n);
        let (cp, used) = decode_checkpoint(&buf).unwrap();
        assert_eq!((cp.regions, cp.needs_catch_up, used), (regions, true, n));
        assert!(decode_checkpoint(&buf[..n - 1]).is_err());
    }
}
