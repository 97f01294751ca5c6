//! A checkpoint record: the latest state of every region the log knows,
//! written as the first record of each new segment. With it, no older
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

/// Encodes regions into `buf`, returning the bytes written.
pub fn encode_checkpoint<'a>(buf: &mut [u8], regions: impl Iterator<Item = &'a RegionCheckpoint>) -> usize {
    let mut w = Writer::new(buf);
    for c in regions {
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
    w.pos
}

/// Decodes a checkpoint payload holding `count` regions.
pub fn decode_checkpoint(payload: &[u8], count: u32) -> Result<Vec<RegionCheckpoint>, Malformed> {
    let mut r = Reader::new(payload);
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
    if !r.is_empty() {
        return Err(Malformed { at: r.pos(), what: "bytes after the last checkpoint entry" });
    }
    Ok(out)
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
        let n: usize = regions.iter().map(checkpoint_entry_bytes).sum();
        let mut buf = vec![0; n];
        assert_eq!(encode_checkpoint(&mut buf, regions.iter()), n);
        assert_eq!(decode_checkpoint(&buf, 2).unwrap(), regions);
        assert!(decode_checkpoint(&buf[..n - 1], 2).is_err());
    }
}
