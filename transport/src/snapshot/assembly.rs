//! The receiver's bookkeeping for one incoming snapshot: chunks must arrive
//! in order, without gaps or overlap, never past the announced size, and the
//! whole must match the sender's length and CRC32C. The file I/O is the
//! caller's; this says whether each step is acceptable.

use crate::snapshot::format::{SnapshotEnd, SnapshotHeader, SNAPSHOT_BYTES_MAX, SNAPSHOT_CHUNK_BYTES_MAX};

/// Why a snapshot stream was refused. The partial file is removed, the
/// sender told (ack) and the `MsgSnapshot` never reaches raft.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot of {bytes} bytes announced, over SNAPSHOT_BYTES_MAX ({SNAPSHOT_BYTES_MAX})")]
    TooLarge { bytes: u64 },
    #[error("chunk at offset {got}, expected {want} (chunks must arrive in order)")]
    OutOfOrder { got: u64, want: u64 },
    #[error("chunk of {bytes} bytes over SNAPSHOT_CHUNK_BYTES_MAX ({SNAPSHOT_CHUNK_BYTES_MAX})")]
    ChunkTooLarge { bytes: usize },
    #[error("chunk ends at {end}, past the announced {total} bytes")]
    PastEnd { end: u64, total: u64 },
    #[error("stream ended at {got} bytes, {want} announced")]
    Short { got: u64, want: u64 },
    #[error("whole-file checksum {got:08x}, sender computed {want:08x}")]
    Checksum { got: u32, want: u32 },
}

/// One snapshot being received.
#[derive(Debug)]
pub struct Assembly {
    pub header: SnapshotHeader,
    received: u64,
    crc: u32,
}

impl Assembly {
    pub fn start(header: SnapshotHeader) -> Result<Assembly, SnapshotError> {
        if header.total_bytes > SNAPSHOT_BYTES_MAX {
            return Err(SnapshotError::TooLarge { bytes: header.total_bytes });
        }
        Ok(Assembly { header, received: 0, crc: 0 })
    }

    /// Bytes accepted so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Checks a chunk before the caller writes it at `offset`.
    pub fn chunk(&mut self, offset: u64, data: &[u8]) -> Result<(), SnapshotError> {
        if data.len() > SNAPSHOT_CHUNK_BYTES_MAX {
            return Err(SnapshotError::ChunkTooLarge { bytes: data.len() });
        }
        if offset != self.received {
            return Err(SnapshotError::OutOfOrder { got: offset, want: self.received });
        }
        let end = offset + data.len() as u64;
        if end > self.header.total_bytes {
            return Err(SnapshotError::PastEnd { end, total: self.header.total_bytes });
        }
        self.crc = crc32c::crc32c_append(self.crc, data);
        self.received = end;
        Ok(())
    }

    /// Checks the sender's summary against what arrived; `Ok(crc)` means the
    /// caller may fsync, re-read and compare against `crc` before accepting.
    pub fn finish(&self, end: &SnapshotEnd) -> Result<u32, SnapshotError> {
        if self.received != self.header.total_bytes || end.total_bytes != self.header.total_bytes {
            return Err(SnapshotError::Short {
                got: self.received,
                want: end.total_bytes.max(self.header.total_bytes),
            });
        }
        if self.crc != end.crc32c {
            return Err(SnapshotError::Checksum { got: self.crc, want: end.crc32c });
        }
        Ok(self.crc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Envelope;
    use bytes::Bytes;

    fn header(total: u64) -> SnapshotHeader {
        SnapshotHeader {
            snapshot_id: 9,
            total_bytes: total,
            envelope: Envelope { region_id: 3, message: Bytes::from_static(b"msg"), ..Default::default() },
        }
    }

    #[test]
    fn in_order_chunks_with_the_right_checksum_are_accepted() {
        let data = b"hello snapshot world".to_vec();
        let mut a = Assembly::start(header(data.len() as u64)).unwrap();
        a.chunk(0, &data[..5]).unwrap();
        a.chunk(5, &data[5..]).unwrap();
        let crc = crc32c::crc32c(&data);
        assert_eq!(a.finish(&SnapshotEnd { total_bytes: data.len() as u64, crc32c: crc }), Ok(crc));
        assert_eq!(
            a.finish(&SnapshotEnd { total_bytes: data.len() as u64, crc32c: crc ^ 1 }),
            Err(SnapshotError::Checksum { got: crc, want: crc ^ 1 })
        );
    }

    #[test]
    fn gaps_overlaps_overruns_and_short_streams_are_refused() {
        let mut a = Assembly::start(header(10)).unwrap();
        assert_eq!(a.chunk(1, b"x"), Err(SnapshotError::OutOfOrder { got: 1, want: 0 }));
        a.chunk(0, b"abcd").unwrap();
        assert_eq!(a.chunk(2, b"x"), Err(SnapshotError::OutOfOrder { got: 2, want: 4 }));
        assert_eq!(a.chunk(4, &[0; 7]), Err(SnapshotError::PastEnd { end: 11, total: 10 }));
        assert!(matches!(a.finish(&SnapshotEnd { total_bytes: 10, crc32c: 0 }), Err(SnapshotError::Short { .. })));
        assert!(matches!(Assembly::start(header(SNAPSHOT_BYTES_MAX + 1)), Err(SnapshotError::TooLarge { .. })));
    }

    #[test]
    fn header_end_and_ack_round_trip() {
        let h = header(1 << 30);
        assert_eq!(SnapshotHeader::decode(&Bytes::from(h.encode())).unwrap(), h);
        let e = SnapshotEnd { total_bytes: 5, crc32c: 7 };
        assert_eq!(SnapshotEnd::decode(&e.encode()).unwrap(), e);
        assert!(SnapshotEnd::decode(&[1, 2, 3]).is_err());
        assert!(SnapshotHeader::decode(&Bytes::from_static(&[255, 255, 255, 255, 0])).is_err());
    }
}
