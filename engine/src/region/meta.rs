//! A region's metadata: its id, key range [start, end), epoch, and peers.
//! Persisted through the WAL (bincode 2, inside the region's opaque meta
//! bytes, as a `RegionLocalState`) with every change, so a restart knows
//! exactly which regions this shard hosts, who their peers are, and which
//! snapshot their state restarts from.

use bincode::{Decode, Encode};
use bytes::Bytes;

pub use transport::Epoch;

/// One replica of a region: which peer, on which store and shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub struct PeerMeta {
    pub peer_id: u64,
    pub store_id: u64,
    pub shard: u16,
}

/// Largest number of replicas a region may have.
pub const PEERS_MAX: usize = 7;

#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct RegionMeta {
    pub id: u64,
    /// Inclusive; empty = the start of the key space.
    pub start_key: Vec<u8>,
    /// Exclusive; empty = the end of the key space.
    pub end_key: Vec<u8>,
    pub conf_ver: u64,
    pub version: u64,
    pub peers: Vec<PeerMeta>,
}

/// Why stored meta bytes are not a region meta.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("region meta does not decode: {0}")]
pub struct MetaDecodeError(String);

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_little_endian().with_fixed_int_encoding().with_limit::<{ 1 << 20 }>()
}

impl RegionMeta {
    pub fn epoch(&self) -> Epoch {
        Epoch { conf_ver: self.conf_ver, version: self.version }
    }

    /// Whether `key` falls in [start, end).
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start_key.as_slice() && (self.end_key.is_empty() || key < self.end_key.as_slice())
    }

    pub fn peer(&self, peer_id: u64) -> Option<&PeerMeta> {
        self.peers.iter().find(|p| p.peer_id == peer_id)
    }

    /// This region's peer on `store`.
    pub fn peer_on(&self, store_id: u64) -> Option<&PeerMeta> {
        self.peers.iter().find(|p| p.store_id == store_id)
    }

    pub fn encode(&self) -> Bytes {
        assert!(self.peers.len() <= PEERS_MAX, "region {} has {} peers", self.id, self.peers.len());
        Bytes::from(bincode::encode_to_vec(self, config()).expect("a region meta always encodes"))
    }

    pub fn decode(bytes: &[u8]) -> Result<RegionMeta, MetaDecodeError> {
        let (meta, used): (RegionMeta, usize) =
            bincode::decode_from_slice(bytes, config()).map_err(|e| MetaDecodeError(e.to_string()))?;
        if used != bytes.len() {
            return Err(MetaDecodeError(format!("{} trailing bytes", bytes.len() - used)));
        }
        Ok(meta)
    }
}

/// What a region keeps in the WAL's (opaque to it) meta bytes: its meta and
/// the snapshot its state machine restarts from, as (index, term). Written
/// whenever either changes, so a restart knows both without another file.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct RegionLocalState {
    pub meta: RegionMeta,
    pub snapshot: Option<(u64, u64)>,
}

impl RegionLocalState {
    pub fn encode(&self) -> Bytes {
        assert!(self.meta.peers.len() <= PEERS_MAX, "region {} has {} peers", self.meta.id, self.meta.peers.len());
        Bytes::from(bincode::encode_to_vec(self, config()).expect("a region's local state always encodes"))
    }

    pub fn decode(bytes: &[u8]) -> Result<RegionLocalState, MetaDecodeError> {
        let (state, used): (RegionLocalState, usize) =
            bincode::decode_from_slice(bytes, config()).map_err(|e| MetaDecodeError(e.to_string()))?;
        if used != bytes.len() {
            return Err(MetaDecodeError(format!("{} trailing bytes", bytes.len() - used)));
        }
        Ok(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips_and_ranges_are_half_open() {
        let m = RegionMeta {
            id: 3,
            start_key: b"b".to_vec(),
            end_key: b"d".to_vec(),
            conf_ver: 1,
            version: 2,
            peers: vec![PeerMeta { peer_id: 31, store_id: 1, shard: 0 }],
        };
        assert_eq!(RegionMeta::decode(&m.encode()), Ok(m.clone()));
        assert!(m.contains(b"b") && m.contains(b"c") && !m.contains(b"d") && !m.contains(b"a"));
        let all = RegionMeta { start_key: vec![], end_key: vec![], ..m.clone() };
        assert!(all.contains(b"") && all.contains(b"\xff\xff"));
        assert!(RegionMeta::decode(&[1, 2, 3]).is_err());
        let state = RegionLocalState { meta: m, snapshot: Some((40, 3)) };
        assert_eq!(RegionLocalState::decode(&state.encode()), Ok(state));
    }
}
