//! Stores and regions as PD keeps them. PD knows nothing of the engine's
//! types: stores report in these, and convert at their edge.

use std::net::SocketAddr;

use bincode::{Decode, Encode};
use serde::{Deserialize, Serialize};

/// Most replicas a region may have (the engine's limit too).
pub const PEERS_MAX: usize = 7;
/// Longest key PD accepts as a region boundary or a routing key.
pub const KEY_BYTES_MAX: usize = 64 << 10;
/// Most shards a store may run.
pub const SHARDS_MAX: u16 = 256;

/// A region's version of its membership (`conf_ver`, +1 per change) and of
/// its range (`version`, +1 per split).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode, Serialize, Deserialize)]
pub struct Epoch {
    pub conf_ver: u64,
    pub version: u64,
}

impl Epoch {
    /// Behind `other` in either part: a report carrying it is stale.
    pub fn is_behind(&self, other: &Epoch) -> bool {
        self.conf_ver < other.conf_ver || self.version < other.version
    }

    /// Ahead of `other` in one part and behind in neither.
    pub fn is_ahead(&self, other: &Epoch) -> bool {
        !self.is_behind(other) && self != other
    }
}

/// One replica: which peer, on which store and shard, in which role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode, Serialize, Deserialize)]
pub struct PeerInfo {
    pub peer_id: u64,
    pub store_id: u64,
    pub shard: u16,
    #[serde(default)]
    pub role: PeerRole,
}

impl PeerInfo {
    pub const fn voter(peer_id: u64, store_id: u64, shard: u16) -> PeerInfo {
        PeerInfo { peer_id, store_id, shard, role: PeerRole::Voter }
    }

    /// Whether it counts for the region's quorum once any joint state is
    /// left (a voter, or a learner being promoted).
    pub fn is_voter_after_joint(&self) -> bool {
        matches!(self.role, PeerRole::Voter | PeerRole::IncomingVoter)
    }
}

/// A peer's part in its region's raft group (the engine's roles, TiKV's
/// names): voters count for quorum; learners are replicated to and count for
/// nothing; in a joint configuration a learner being promoted is an
/// incoming voter and a voter being demoted a demoting voter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PeerRole {
    #[default]
    Voter,
    Learner,
    IncomingVoter,
    DemotingVoter,
}

impl PeerRole {
    pub fn name(self) -> &'static str {
        match self {
            PeerRole::Voter => "voter",
            PeerRole::Learner => "learner",
            PeerRole::IncomingVoter => "incoming-voter",
            PeerRole::DemotingVoter => "demoting-voter",
        }
    }
}

/// A region's durable description: the part PD keeps across restarts.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
pub struct RegionInfo {
    pub id: u64,
    /// Inclusive; empty = the start of the key space.
    pub start_key: Vec<u8>,
    /// Exclusive; empty = the end of the key space.
    pub end_key: Vec<u8>,
    pub epoch: Epoch,
    pub peers: Vec<PeerInfo>,
    /// The largest peer id the region ever had (ids are never reused).
    pub max_peer_id: u64,
}

impl RegionInfo {
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start_key.as_slice() && (self.end_key.is_empty() || key < self.end_key.as_slice())
    }

    /// Whether the ranges of `self` and `other` share a key.
    pub fn overlaps(&self, other: &RegionInfo) -> bool {
        let starts_before_other_ends = other.end_key.is_empty() || self.start_key < other.end_key;
        let other_starts_before_self_ends = self.end_key.is_empty() || other.start_key < self.end_key;
        starts_before_other_ends && other_starts_before_self_ends
    }

    pub fn peer_on(&self, store_id: u64) -> Option<&PeerInfo> {
        self.peers.iter().find(|p| p.store_id == store_id)
    }

    pub fn peer(&self, peer_id: u64) -> Option<&PeerInfo> {
        self.peers.iter().find(|p| p.peer_id == peer_id)
    }

    /// Whether the region is between entering and leaving a joint configuration.
    pub fn is_joint(&self) -> bool {
        self.peers.iter().any(|p| matches!(p.role, PeerRole::IncomingVoter | PeerRole::DemotingVoter))
    }

    /// Its voters once any joint state is left (the replica count PD keeps).
    pub fn voters(&self) -> impl Iterator<Item = &PeerInfo> {
        self.peers.iter().filter(|p| p.is_voter_after_joint())
    }

    /// Checks what holds for every region, whatever reported it.
    pub fn validate(&self) -> Result<(), String> {
        if self.id == 0 {
            return Err("region id 0".into());
        }
        if !self.end_key.is_empty() && self.start_key >= self.end_key {
            return Err(format!("region {}: start key is not before its end key", self.id));
        }
        if self.start_key.len() > KEY_BYTES_MAX || self.end_key.len() > KEY_BYTES_MAX {
            return Err(format!("region {}: a boundary key is over {KEY_BYTES_MAX} bytes", self.id));
        }
        if self.peers.is_empty() || self.peers.len() > PEERS_MAX {
            return Err(format!("region {}: {} peers (1..={PEERS_MAX} allowed)", self.id, self.peers.len()));
        }
        for (i, p) in self.peers.iter().enumerate() {
            if p.peer_id == 0 || p.store_id == 0 {
                return Err(format!("region {}: a peer with id 0 or on store 0", self.id));
            }
            if p.peer_id > self.max_peer_id {
                return Err(format!(
                    "region {}: peer {} is above its max_peer_id {}",
                    self.id, p.peer_id, self.max_peer_id
                ));
            }
            if self.peers[..i].iter().any(|q| q.store_id == p.store_id || q.peer_id == p.peer_id) {
                return Err(format!("region {}: two peers with id {} or on store {}", self.id, p.peer_id, p.store_id));
            }
        }
        Ok(())
    }
}

/// What a region leader measures of its region.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
pub struct RegionStats {
    pub approximate_bytes: u64,
    pub approximate_keys: u64,
    /// Entries' bytes applied since the last report.
    pub written_bytes: u64,
}

/// A store as it registered: where its shards listen and what it can hold.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
pub struct StoreInfo {
    pub id: u64,
    /// Base peer address: shard i listens on port + i.
    pub peer_addr: SocketAddr,
    /// Base client address: shard i listens on port + i.
    pub client_addr: SocketAddr,
    pub shards: u16,
    pub capacity_bytes: u64,
    /// Drawn by the store when it first registers: a registration repeated
    /// after a crash (before the store wrote down its id) is recognised by it.
    pub token: u64,
    /// Serving, being emptied, or emptied and gone for good (durable: an
    /// operator said so; whether it is heard from is the liveness PD sees).
    #[serde(default)]
    pub state: StoreState,
}

/// What an operator decided of a store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StoreState {
    #[default]
    Serving,
    /// `ctl drain-store`: its replicas move to other stores, then it is removed.
    Draining,
    /// Drained: it holds nothing and may not come back under its id (its
    /// addresses are free for a new store).
    Removed,
}

impl StoreState {
    pub fn name(self) -> &'static str {
        match self {
            StoreState::Serving => "serving",
            StoreState::Draining => "draining",
            StoreState::Removed => "removed",
        }
    }
}

/// Shard `shard`'s address of a store whose shards listen from `base` on.
pub fn shard_addr(base: SocketAddr, shard: u16) -> SocketAddr {
    SocketAddr::new(base.ip(), base.port().saturating_add(shard))
}

impl StoreInfo {
    pub fn peer_addr_of(&self, shard: u16) -> SocketAddr {
        shard_addr(self.peer_addr, shard)
    }

    pub fn client_addr_of(&self, shard: u16) -> SocketAddr {
        shard_addr(self.client_addr, shard)
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.shards == 0 || self.shards > SHARDS_MAX {
            return Err(format!("{} shards (1..={SHARDS_MAX} allowed)", self.shards));
        }
        for (what, a) in [("peer", self.peer_addr), ("client", self.client_addr)] {
            if a.port() == 0 || u32::from(a.port()) + u32::from(self.shards) > 65_536 {
                return Err(format!("{what} ports {}..+{} do not fit 1..=65535", a.port(), self.shards));
            }
        }
        let overlap = self.peer_addr.ip() == self.client_addr.ip()
            && self.peer_addr.port().abs_diff(self.client_addr.port()) < self.shards;
        if overlap {
            return Err("peer and client port ranges overlap".into());
        }
        Ok(())
    }

    /// An address `self` and `other` would both listen on, if any.
    pub fn shared_address(&self, other: &StoreInfo) -> Option<SocketAddr> {
        let ports = |s: &StoreInfo| {
            (0..s.shards).flat_map(move |i| [s.peer_addr_of(i), s.client_addr_of(i)]).collect::<Vec<_>>()
        };
        let mine = ports(self);
        ports(other).into_iter().find(|a| mine.contains(a))
    }
}

/// What a store says of itself in each heartbeat.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
pub struct StoreStats {
    pub region_count: u64,
    pub leader_count: u64,
    pub capacity_bytes: u64,
    pub used_bytes: u64,
    /// Client writes per second over the last interval.
    pub writes_per_sec: u64,
    /// Regions fenced on this store: a committed entry did not decode there,
    /// so that replica applies and votes nothing more and must be replaced
    /// (the store's log names them).
    #[serde(default)]
    pub regions_fenced: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(start: &str, end: &str) -> RegionInfo {
        RegionInfo {
            id: 1,
            start_key: start.into(),
            end_key: end.into(),
            epoch: Epoch { conf_ver: 1, version: 1 },
            peers: vec![PeerInfo::voter(5, 1, 0)],
            max_peer_id: 5,
        }
    }

    #[test]
    fn ranges_contain_and_overlap_with_open_ends() {
        assert!(region("", "").contains(b"anything"));
        assert!(region("b", "d").contains(b"b") && !region("b", "d").contains(b"d"));
        assert!(region("b", "d").overlaps(&region("c", "")));
        assert!(!region("b", "d").overlaps(&region("d", "")));
        assert!(!region("", "b").overlaps(&region("b", "c")));
        assert!(region("", "").overlaps(&region("x", "y")));
    }

    #[test]
    fn epochs_compare_part_by_part() {
        let e = |c, v| Epoch { conf_ver: c, version: v };
        assert!(e(1, 2).is_ahead(&e(1, 1)) && e(2, 1).is_ahead(&e(1, 1)));
        assert!(e(2, 1).is_behind(&e(1, 2)) && !e(2, 1).is_ahead(&e(1, 2)));
        assert!(!e(1, 1).is_ahead(&e(1, 1)) && !e(1, 1).is_behind(&e(1, 1)));
    }

    #[test]
    fn invalid_regions_and_stores_are_named() {
        let mut r = region("b", "a");
        assert!(r.validate().unwrap_err().contains("start key"));
        r = region("", "");
        r.peers.push(PeerInfo::voter(5, 2, 0));
        r.max_peer_id = 9;
        assert!(r.validate().unwrap_err().contains("two peers"));
        let s = StoreInfo {
            id: 1,
            peer_addr: "127.0.0.1:100".parse().unwrap(),
            client_addr: "127.0.0.1:101".parse().unwrap(),
            shards: 2,
            capacity_bytes: 0,
            token: 1,
            state: StoreState::Serving,
        };
        assert!(s.validate().unwrap_err().contains("overlap"));
    }
}
