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
/// Longest key a region may split at: a region's bounds ride in every
/// raft message's envelope and every admin command.
pub const SPLIT_KEY_BYTES_MAX: usize = 4096;

/// A membership change of one region (an admin command, one at a time).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub enum PeerChange {
    /// Add a voter; it starts empty and is sent a snapshot.
    AddVoter(PeerMeta),
    /// Remove a voter (never the leader: transfer leadership first). The
    /// removed peer leaves a tombstone on its shard.
    RemoveVoter(PeerMeta),
}

impl RegionMeta {
    /// The meta after `change` (conf_ver + 1), or why it cannot be made.
    pub fn changed(&self, change: PeerChange) -> Result<RegionMeta, String> {
        let mut next = self.clone();
        next.conf_ver += 1;
        match change {
            PeerChange::AddVoter(p) => {
                if self.peer_on(p.store_id).is_some() {
                    return Err(format!("store {} already has a peer of the region", p.store_id));
                }
                if p.peer_id <= self.max_peer_id {
                    return Err(format!(
                        "peer id {} is not new: the region has had ids up to {} (ids are never reused)",
                        p.peer_id, self.max_peer_id
                    ));
                }
                next.max_peer_id = p.peer_id;
                if self.peers.len() >= PEERS_MAX {
                    return Err(format!("the region already has PEERS_MAX ({PEERS_MAX}) peers"));
                }
                next.peers.push(p);
            }
            PeerChange::RemoveVoter(p) => {
                if self.peer(p.peer_id) != Some(&p) {
                    return Err(format!("{p:?} is not a member"));
                }
                if self.peers.len() == 1 {
                    return Err("the region's last peer cannot be removed".into());
                }
                next.peers.retain(|q| q.peer_id != p.peer_id);
            }
        }
        Ok(next)
    }
}

impl RegionMeta {
    /// The two regions a split of this one at `key` makes: this region
    /// keeps its id and [start, key), the new one gets `new_region_id` and
    /// [key, end), with `new_peer_ids` on this region's stores and shards
    /// (in the order of `peers`); both take `version` + 1. Or why the split
    /// is not one: the same rule at propose and at apply, on every replica.
    pub fn split(
        &self,
        key: &[u8],
        new_region_id: u64,
        new_peer_ids: &[u64],
    ) -> Result<(RegionMeta, RegionMeta), String> {
        if key.len() > SPLIT_KEY_BYTES_MAX {
            return Err(format!(
                "a split key of {} bytes is over SPLIT_KEY_BYTES_MAX ({SPLIT_KEY_BYTES_MAX})",
                key.len()
            ));
        }
        if key <= self.start_key.as_slice() || !self.contains(key) {
            return Err(format!(
                "split key \"{}\" is not inside region {} [\"{}\", \"{}\") (a region cannot split at its start)",
                key.escape_ascii(),
                self.id,
                self.start_key.escape_ascii(),
                self.end_key.escape_ascii()
            ));
        }
        if new_region_id == self.id || new_region_id == 0 {
            return Err(format!("{new_region_id} is not a new region id"));
        }
        if new_peer_ids.len() != self.peers.len() {
            return Err(format!("{} new peer ids for a region of {} peers", new_peer_ids.len(), self.peers.len()));
        }
        let mut sorted = new_peer_ids.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != new_peer_ids.len() || sorted[0] == 0 {
            return Err(format!("new peer ids {new_peer_ids:?} are not distinct and non-zero"));
        }
        let left = RegionMeta { end_key: key.to_vec(), version: self.version + 1, ..self.clone() };
        let right = RegionMeta {
            id: new_region_id,
            start_key: key.to_vec(),
            end_key: self.end_key.clone(),
            conf_ver: self.conf_ver,
            version: self.version + 1,
            peers: self
                .peers
                .iter()
                .zip(new_peer_ids)
                .map(|(p, &peer_id)| PeerMeta { peer_id, store_id: p.store_id, shard: p.shard })
                .collect(),
            max_peer_id: *sorted.last().expect("a region has peers"),
        };
        Ok((left, right))
    }

    /// Whether `self` and [start, end) share a key (end empty: unbounded).
    pub fn overlaps(&self, start: &[u8], end: &[u8]) -> bool {
        let starts_before_end = end.is_empty() || self.start_key.as_slice() < end;
        let ends_after_start = self.end_key.is_empty() || start < self.end_key.as_slice();
        starts_before_end && ends_after_start
    }
}

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
    /// The largest peer id the region ever had: a new peer's id must be
    /// larger (ids are never reused, so a message of a removed peer's life
    /// can never be taken for a new peer's).
    pub max_peer_id: u64,
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
/// A tombstone's names the peer that was removed: no message to that peer
/// id or an older one may create the region here again.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct RegionLocalState {
    pub meta: RegionMeta,
    pub snapshot: Option<(u64, u64)>,
    pub removed_peer: Option<u64>,
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

// PD knows nothing of the engine: regions cross to it and back in its own types.
impl From<pd::PeerInfo> for PeerMeta {
    fn from(p: pd::PeerInfo) -> PeerMeta {
        PeerMeta { peer_id: p.peer_id, store_id: p.store_id, shard: p.shard }
    }
}

impl From<PeerMeta> for pd::PeerInfo {
    fn from(p: PeerMeta) -> pd::PeerInfo {
        pd::PeerInfo { peer_id: p.peer_id, store_id: p.store_id, shard: p.shard }
    }
}

impl From<&pd::RegionInfo> for RegionMeta {
    fn from(r: &pd::RegionInfo) -> RegionMeta {
        RegionMeta {
            id: r.id,
            start_key: r.start_key.clone(),
            end_key: r.end_key.clone(),
            conf_ver: r.epoch.conf_ver,
            version: r.epoch.version,
            peers: r.peers.iter().map(|p| PeerMeta::from(*p)).collect(),
            max_peer_id: r.max_peer_id,
        }
    }
}

impl From<&RegionMeta> for pd::RegionInfo {
    fn from(m: &RegionMeta) -> pd::RegionInfo {
        pd::RegionInfo {
            id: m.id,
            start_key: m.start_key.clone(),
            end_key: m.end_key.clone(),
            epoch: pd::Epoch { conf_ver: m.conf_ver, version: m.version },
            peers: m.peers.iter().map(|p| pd::PeerInfo::from(*p)).collect(),
            max_peer_id: m.max_peer_id,
        }
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
            max_peer_id: 31,
        };
        assert_eq!(RegionMeta::decode(&m.encode()), Ok(m.clone()));
        assert!(m.contains(b"b") && m.contains(b"c") && !m.contains(b"d") && !m.contains(b"a"));
        let all = RegionMeta { start_key: vec![], end_key: vec![], ..m.clone() };
        assert!(all.contains(b"") && all.contains(b"\xff\xff"));
        assert!(RegionMeta::decode(&[1, 2, 3]).is_err());
        let state = RegionLocalState { meta: m.clone(), snapshot: Some((40, 3)), removed_peer: Some(7) };
        assert_eq!(RegionLocalState::decode(&state.encode()), Ok(state));
    }

    #[test]
    fn a_split_cuts_the_range_at_the_key_and_bumps_both_versions() {
        let p = |peer_id, store_id| PeerMeta { peer_id, store_id, shard: store_id as u16 % 2 };
        let m = RegionMeta {
            id: 1,
            start_key: b"b".to_vec(),
            end_key: b"f".to_vec(),
            conf_ver: 3,
            version: 7,
            peers: vec![p(11, 1), p(12, 2), p(13, 3)],
            max_peer_id: 13,
        };
        let (left, right) = m.split(b"d", 9, &[91, 92, 93]).unwrap();
        assert_eq!(
            (left.id, left.start_key.as_slice(), left.end_key.as_slice(), left.epoch()),
            (1, &b"b"[..], &b"d"[..], Epoch { conf_ver: 3, version: 8 })
        );
        assert_eq!(
            (right.id, right.start_key.as_slice(), right.end_key.as_slice(), right.epoch()),
            (9, &b"d"[..], &b"f"[..], Epoch { conf_ver: 3, version: 8 })
        );
        assert_eq!(right.peers, vec![p(91, 1), p(92, 2), p(93, 3)], "the same stores and shards, the new ids");
        assert_eq!((left.peers, right.max_peer_id), (m.peers.clone(), 93));
        assert!(m.split(b"b", 9, &[91, 92, 93]).unwrap_err().contains("its start"), "at the start");
        assert!(m.split(b"a", 9, &[91, 92, 93]).is_err() && m.split(b"f", 9, &[91, 92, 93]).is_err(), "outside");
        assert!(m.split(b"c", 9, &[91, 92]).is_err() && m.split(b"c", 9, &[91, 91, 93]).is_err());
        assert!(m.split(b"c", 1, &[91, 92, 93]).is_err(), "its own id");
        let long = [b"c".to_vec(), vec![b'x'; SPLIT_KEY_BYTES_MAX]].concat();
        assert!(m.split(&long, 9, &[91, 92, 93]).unwrap_err().contains("SPLIT_KEY_BYTES_MAX"));
        let whole = RegionMeta { start_key: vec![], end_key: vec![], ..m.clone() };
        assert!(whole.split(b"", 9, &[91, 92, 93]).is_err() && whole.split(b"\0", 9, &[91, 92, 93]).is_ok());
        assert!(m.overlaps(b"a", b"c") && m.overlaps(b"e", b"") && !m.overlaps(b"f", b"") && !m.overlaps(b"a", b"b"));
    }

    #[test]
    fn membership_changes_bump_the_epoch_and_never_reuse_a_peer_id() {
        let p = |peer_id, store_id| PeerMeta { peer_id, store_id, shard: 0 };
        let m = RegionMeta {
            id: 1,
            start_key: vec![],
            end_key: vec![],
            conf_ver: 1,
            version: 1,
            peers: vec![p(11, 1), p(12, 2), p(13, 3)],
            max_peer_id: 13,
        };
        let removed = m.changed(PeerChange::RemoveVoter(p(13, 3))).unwrap();
        assert_eq!((removed.conf_ver, removed.peers.len(), removed.max_peer_id), (2, 2, 13));
        assert!(removed.changed(PeerChange::AddVoter(p(13, 3))).unwrap_err().contains("never reused"));
        assert!(removed.changed(PeerChange::AddVoter(p(14, 2))).unwrap_err().contains("already has a peer"));
        let added = removed.changed(PeerChange::AddVoter(p(14, 3))).unwrap();
        assert_eq!((added.conf_ver, added.max_peer_id, added.peer_on(3)), (3, 14, Some(&p(14, 3))));
        assert!(m.changed(PeerChange::RemoveVoter(p(12, 9))).is_err(), "a peer as it is not");
        let alone = RegionMeta { peers: vec![p(11, 1)], ..m };
        assert!(alone.changed(PeerChange::RemoveVoter(p(11, 1))).is_err(), "the last peer stays");
    }
}
