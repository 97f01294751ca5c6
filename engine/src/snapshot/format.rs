//! A snapshot file, byte by byte (all integers little-endian):
//!
//! ```text
//! magic        8 bytes  "RRSNAP\0\x02" (the last byte: the format version)
//! header_len   u32      ≤ HEADER_BYTES_MAX
//! header       bincode  region id, index, term, region meta, ConfState, row count
//! rows         row_count × ( u32 key_len | u32 value_len | key | value ), keys strictly increasing
//! crc          u32      CRC32C of every byte before it
//! ```
//!
//! The reader checks everything it can before trusting a byte: lengths
//! against their limits before allocating, keys in order and inside the
//! region's range, the row count, the checksum, and that nothing follows.
//! A failure names the byte offset where the file stopped making sense.

use std::io::{self, Read, Write};

use bincode::{Decode, Encode};

use crate::kv::{MemKv, StateMachine, ENTRY_BYTES_MAX};
use crate::region::meta::RegionMeta;
use crate::snapshot::{RegionSnapshot, SnapshotConf};

/// Its last byte is the format version (2: peers in the meta carry a role).
pub const MAGIC: [u8; 8] = *b"RRSNAP\0\x02";
/// Largest header (a meta with `PEERS_MAX` peers and its key range).
pub const HEADER_BYTES_MAX: u32 = 1 << 20;
/// Largest key or value in a row (a command never carries more than an entry holds).
pub const ROW_PART_BYTES_MAX: u32 = ENTRY_BYTES_MAX as u32;

#[derive(Encode, Decode)]
struct Header {
    region: u64,
    index: u64,
    term: u64,
    meta: RegionMeta,
    conf_state: SnapshotConf,
    rows: u64,
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_little_endian().with_fixed_int_encoding().with_limit::<{ 1 << 20 }>()
}

/// Why bytes are not a snapshot.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("at byte {offset}: {what}")]
    Invalid { offset: u64, what: String },
    #[error("at byte {offset}: {source}")]
    Io { offset: u64, source: io::Error },
}

/// A writer that checksums and counts what passes through it.
struct Summing<W> {
    inner: W,
    crc: u32,
    offset: u64,
}

impl<W: Write> Summing<W> {
    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.inner.write_all(bytes)?;
        self.crc = crc32c::crc32c_append(self.crc, bytes);
        self.offset += bytes.len() as u64;
        Ok(())
    }
}

/// Writes `snap` to `out`; returns the bytes written.
pub fn encode(snap: &RegionSnapshot, out: impl Write) -> io::Result<u64> {
    let header = Header {
        region: snap.meta.id,
        index: snap.index,
        term: snap.term,
        meta: snap.meta.clone(),
        conf_state: snap.conf_state.clone(),
        // (a split half may still hold the other side's keys: only its range is its state)
        rows: snap.kv.rows_in(&snap.meta.start_key, &snap.meta.end_key).count() as u64,
    };
    let header_rows = header.rows;
    let header = bincode::encode_to_vec(&header, config()).expect("a snapshot header always encodes");
    assert!(header.len() as u32 <= HEADER_BYTES_MAX, "snapshot header of {} bytes", header.len());
    let mut w = Summing { inner: out, crc: 0, offset: 0 };
    w.put(&MAGIC)?;
    w.put(&(header.len() as u32).to_le_bytes())?;
    w.put(&header)?;
    let mut rows = 0u64;
    for (key, value) in snap.kv.rows_in(&snap.meta.start_key, &snap.meta.end_key) {
        // the state machine only ever holds what a command could carry
        assert!(key.len() as u32 <= ROW_PART_BYTES_MAX && value.len() as u32 <= ROW_PART_BYTES_MAX);
        w.put(&(key.len() as u32).to_le_bytes())?;
        w.put(&(value.len() as u32).to_le_bytes())?;
        w.put(&key)?;
        w.put(value)?;
        rows += 1;
    }
    assert_eq!(rows, header_rows, "region {}: the rows counted are the rows written", snap.meta.id);
    let crc = w.crc;
    w.put(&crc.to_le_bytes())?;
    w.inner.flush()?;
    Ok(w.offset)
}

/// A reader that checksums and counts what it hands out.
struct Checked<R> {
    inner: R,
    crc: u32,
    offset: u64,
}

impl<R: Read> Checked<R> {
    fn take(&mut self, buf: &mut [u8]) -> Result<(), DecodeError> {
        self.inner.read_exact(buf).map_err(|source| match source.kind() {
            io::ErrorKind::UnexpectedEof => DecodeError::Invalid {
                offset: self.offset,
                what: format!("the file ends while {} more bytes were expected", buf.len()),
            },
            _ => DecodeError::Io { offset: self.offset, source },
        })?;
        self.crc = crc32c::crc32c_append(self.crc, buf);
        self.offset += buf.len() as u64;
        Ok(())
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        let mut b = [0u8; 4];
        self.take(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn bytes(&mut self, len: u32) -> Result<Vec<u8>, DecodeError> {
        let mut v = vec![0u8; len as usize];
        self.take(&mut v)?;
        Ok(v)
    }

    fn invalid(&self, what: impl Into<String>) -> DecodeError {
        DecodeError::Invalid { offset: self.offset, what: what.into() }
    }
}

/// Reads and checks a whole snapshot.
pub fn decode(input: impl Read) -> Result<RegionSnapshot, DecodeError> {
    let mut r = Checked { inner: input, crc: 0, offset: 0 };
    let mut magic = [0u8; 8];
    r.take(&mut magic)?;
    if magic[..7] == MAGIC[..7] && magic[7] != MAGIC[7] {
        let what = format!("a snapshot of format version {}, this build reads {}", magic[7], MAGIC[7]);
        return Err(DecodeError::Invalid { offset: 7, what });
    }
    if magic != MAGIC {
        return Err(DecodeError::Invalid { offset: 0, what: format!("not a ringraft snapshot (magic {magic:02x?})") });
    }
    let header_len = r.u32()?;
    if header_len > HEADER_BYTES_MAX {
        return Err(r.invalid(format!("header of {header_len} bytes is over HEADER_BYTES_MAX ({HEADER_BYTES_MAX})")));
    }
    let at = r.offset;
    let bytes = r.bytes(header_len)?;
    let (h, used): (Header, usize) = bincode::decode_from_slice(&bytes, config())
        .map_err(|e| DecodeError::Invalid { offset: at, what: format!("header does not decode: {e}") })?;
    if used != bytes.len() {
        return Err(DecodeError::Invalid {
            offset: at,
            what: format!("{} bytes after the header", bytes.len() - used),
        });
    }
    if h.region != h.meta.id {
        return Err(DecodeError::Invalid {
            offset: at,
            what: format!("header names region {} but carries the meta of {}", h.region, h.meta.id),
        });
    }
    if h.index == 0 {
        return Err(DecodeError::Invalid { offset: at, what: "a snapshot at index 0".into() });
    }
    let mut rows = Vec::with_capacity(h.rows.min(1 << 16) as usize);
    for n in 0..h.rows {
        let (key_len, value_len) = (r.u32()?, r.u32()?);
        if key_len > ROW_PART_BYTES_MAX || value_len > ROW_PART_BYTES_MAX {
            return Err(r.invalid(format!(
                "row {n}: a key of {key_len} or value of {value_len} bytes is over {ROW_PART_BYTES_MAX}"
            )));
        }
        let at = r.offset;
        let key = r.bytes(key_len)?;
        let value = r.bytes(value_len)?;
        let in_order = rows.last().is_none_or(|(prev, _): &(Vec<u8>, Vec<u8>)| *prev < key);
        if !in_order || !h.meta.contains(&key) {
            return Err(DecodeError::Invalid {
                offset: at,
                what: format!("row {n}: key {key:?} out of order or outside the region's range"),
            });
        }
        rows.push((key, value));
    }
    let expected = r.crc;
    let stored = r.u32()?;
    if stored != expected {
        return Err(r.invalid(format!("checksum {stored:08x} stored, {expected:08x} computed")));
    }
    let mut rest = [0u8; 1];
    match r.inner.read(&mut rest) {
        Ok(0) => {}
        Ok(_) => return Err(r.invalid("bytes after the checksum")),
        Err(source) => return Err(DecodeError::Io { offset: r.offset, source }),
    }
    Ok(RegionSnapshot {
        meta: h.meta,
        index: h.index,
        term: h.term,
        conf_state: h.conf_state,
        kv: MemKv::from_rows(rows),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::CommandRef;
    use crate::region::meta::PeerMeta;

    fn sample() -> RegionSnapshot {
        let mut kv = MemKv::default();
        for i in 0..100u32 {
            let key = format!("k{i:03}-{}", "x".repeat(i as usize % 20)).into_bytes();
            kv.apply(CommandRef::Put { key: &key, value: &vec![i as u8; i as usize] });
        }
        RegionSnapshot {
            meta: RegionMeta {
                id: 7,
                start_key: b"k".to_vec(),
                end_key: b"l".to_vec(),
                conf_ver: 2,
                version: 3,
                peers: vec![PeerMeta::voter(71, 1, 0)],
                max_peer_id: 71,
            },
            index: 42,
            term: 5,
            conf_state: SnapshotConf { voters: vec![71], ..Default::default() },
            kv,
        }
    }

    #[test]
    fn a_snapshot_round_trips_and_every_damage_is_refused_with_its_offset() {
        let snap = sample();
        let mut bytes = vec![];
        let n = encode(&snap, &mut bytes).unwrap();
        assert_eq!(n, bytes.len() as u64);
        assert_eq!(decode(&bytes[..]).unwrap(), snap);
        // every truncation and every single-bit flip is caught
        for cut in [0, 5, 12, bytes.len() / 2, bytes.len() - 1] {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for at in (0..bytes.len()).step_by(7) {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            assert!(decode(&bad[..]).is_err(), "flip at {at}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        match decode(&longer[..]) {
            Err(DecodeError::Invalid { offset, .. }) => assert_eq!(offset, bytes.len() as u64),
            other => panic!("trailing byte: {other:?}"),
        }
        // a length over its limit is refused before anything is allocated
        let mut huge = bytes.clone();
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        match decode(&huge[..]) {
            Err(DecodeError::Invalid { offset: 12, what }) => assert!(what.contains("HEADER_BYTES_MAX"), "{what}"),
            other => panic!("huge header: {other:?}"),
        }
        // a file another format wrote names both versions
        let mut older = bytes.clone();
        older[7] = 1;
        match decode(&older[..]) {
            Err(DecodeError::Invalid { offset: 7, what }) => assert!(what.contains("format version 1"), "{what}"),
            other => panic!("an older format: {other:?}"),
        }
    }

    #[test]
    fn an_empty_state_is_a_valid_snapshot() {
        let snap = RegionSnapshot { kv: MemKv::default(), ..sample() };
        let mut bytes = vec![];
        encode(&snap, &mut bytes).unwrap();
        assert_eq!(decode(&bytes[..]).unwrap(), snap);
    }
}
