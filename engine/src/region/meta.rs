//! A region's metadata: its id, key range [start, end), epoch, and peers.
//! Persisted through the WAL (bincode 2, inside the region's opaque meta
//! bytes, as a `RegionLocalState`) with every change, so a restart knows
//! exactly which regions this shard hosts, who their peers are, and which
//! snapshot their state restarts from.

use bincode::{Decode, Encode};
use bytes::Bytes;

pub use transport::Epoch;

/// One replica of a region: which peer, on which store and shard, in which role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub struct PeerMeta {
    pub peer_id: u64,
    pub store_id: u64,
    pub shard: u16,
    pub role: PeerRole,
}

impl PeerMeta {
    pub const fn voter(peer_id: u64, store_id: u64, shard: u16) -> PeerMeta {
        PeerMeta { peer_id, store_id, shard, role: PeerRole::Voter }
    }

    pub const fn learner(peer_id: u64, store_id: u64, shard: u16) -> PeerMeta {
        PeerMeta { peer_id, store_id, shard, role: PeerRole::Learner }
    }

    /// The same peer in `role`.
    pub const fn with_role(self, role: PeerRole) -> PeerMeta {
        PeerMeta { role, ..self }
    }

    /// Whether `other` is the same replica, whatever the role of either.
    pub fn same_replica(&self, other: &PeerMeta) -> bool {
        (self.peer_id, self.store_id, self.shard) == (other.peer_id, other.store_id, other.shard)
    }
}

/// A peer's part in its region's raft group (TiKV's roles): PD's own type,
/// so a region's meta crosses to PD and back as it is. The roles of a
/// region's peers say all of its raft configuration (`RegionMeta::conf_state`).
pub use pd::PeerRole;

/// Largest number of replicas a region may have (learners included).
pub const PEERS_MAX: usize = 7;
/// Longest key a region may split at: a region's bounds ride in every
/// raft message's envelope and every admin command.
pub const SPLIT_KEY_BYTES_MAX: usize = 4096;

/// A membership change of one region (an admin command, one at a time).
/// Moving a replica is a sequence of them (PD's operator): add a learner,
/// enter a joint configuration that promotes it and demotes the old
/// voter, leave it, remove the demoted peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub enum PeerChange {
    /// Add a voter; it starts empty and is sent a snapshot.
    AddVoter(PeerMeta),
    /// Add a learner: it starts empty, is sent a snapshot and the log, and
    /// counts for nothing until promoted.
    AddLearner(PeerMeta),
    /// Make a learner that caught up a voter (one voter more).
    PromoteLearner(PeerMeta),
    /// Remove a peer, voter or learner (never the leader: transfer
    /// leadership first). The removed peer leaves a tombstone on its shard.
    RemovePeer(PeerMeta),
    /// Replace a voter, in one joint-consensus change: `promote` (a learner
    /// that caught up) becomes a voter while `demote` (a voter) becomes a
    /// learner. Until `LeaveJoint` applies, both the old and the new voters
    /// must each have a quorum.
    EnterJoint { promote: PeerMeta, demote: PeerMeta },
    /// Leaves the joint configuration: only the new voters count.
    LeaveJoint,
}

impl PeerChange {
    pub fn name(&self) -> &'static str {
        match self {
            PeerChange::AddVoter(_) => "add-voter",
            PeerChange::AddLearner(_) => "add-learner",
            PeerChange::PromoteLearner(_) => "promote-learner",
            PeerChange::RemovePeer(_) => "remove-peer",
            PeerChange::EnterJoint { .. } => "enter-joint",
            PeerChange::LeaveJoint => "leave-joint",
        }
    }
}

impl RegionMeta {
    /// The meta after `change` (conf_ver + 1), or why it cannot be made:
    /// the one rule for the leader at propose and every replica at apply.
    pub fn changed(&self, change: PeerChange) -> Result<RegionMeta, String> {
        let mut next = self.clone();
        next.conf_ver += 1;
        if self.is_joint() && change != PeerChange::LeaveJoint {
            return Err(format!(
                "region {} is in a joint configuration: it must leave it first ({} refused)",
                self.id,
                change.name()
            ));
        }
        let member = |p: &PeerMeta, role: PeerRole| match self.peer(p.peer_id) {
            Some(q) if q.same_replica(p) && q.role == role => Ok(()),
            Some(q) if q.same_replica(p) => {
                Err(format!("peer {} is a {}, not a {}", p.peer_id, q.role.name(), role.name()))
            }
            _ => Err(format!("peer {} on store {} is not a member", p.peer_id, p.store_id)),
        };
        let set_role = |next: &mut RegionMeta, id: u64, role: PeerRole| {
            next.peers.iter_mut().filter(|q| q.peer_id == id).for_each(|q| q.role = role)
        };
        match change {
            PeerChange::AddVoter(p) | PeerChange::AddLearner(p) => {
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
                let role = if matches!(change, PeerChange::AddVoter(_)) { PeerRole::Voter } else { PeerRole::Learner };
                next.peers.push(p.with_role(role));
            }
            PeerChange::PromoteLearner(p) => {
                member(&p, PeerRole::Learner)?;
                set_role(&mut next, p.peer_id, PeerRole::Voter);
            }
            PeerChange::RemovePeer(p) => {
                match self.peer(p.peer_id) {
                    Some(q) if q.same_replica(&p) => {}
                    _ => return Err(format!("peer {} on store {} is not a member", p.peer_id, p.store_id)),
                }
                next.peers.retain(|q| q.peer_id != p.peer_id);
                if next.voters().count() == 0 {
                    return Err("the region's last voter cannot be removed".into());
                }
            }
            PeerChange::EnterJoint { promote, demote } => {
                member(&promote, PeerRole::Learner)?;
                member(&demote, PeerRole::Voter)?;
                set_role(&mut next, promote.peer_id, PeerRole::IncomingVoter);
                set_role(&mut next, demote.peer_id, PeerRole::DemotingVoter);
            }
            PeerChange::LeaveJoint => {
                if !self.is_joint() {
                    return Err(format!("region {} is not in a joint configuration", self.id));
                }
                for q in next.peers.iter_mut() {
                    q.role = match q.role {
                        PeerRole::IncomingVoter => PeerRole::Voter,
                        PeerRole::DemotingVoter => PeerRole::Learner,
                        other => other,
                    };
                }
            }
        }
        Ok(next)
    }

    /// Whether the region is in a joint configuration (between `EnterJoint`
    /// and `LeaveJoint`).
    pub fn is_joint(&self) -> bool {
        self.peers.iter().any(|p| matches!(p.role, PeerRole::IncomingVoter | PeerRole::DemotingVoter))
    }

    /// The voters of the configuration the region is in or entering (the
    /// incoming one, when joint).
    pub fn voters(&self) -> impl Iterator<Item = &PeerMeta> {
        self.peers.iter().filter(|p| matches!(p.role, PeerRole::Voter | PeerRole::IncomingVoter))
    }

    /// The voters of the configuration a joint region leaves (empty when not joint).
    pub fn outgoing_voters(&self) -> impl Iterator<Item = &PeerMeta> {
        let joint = self.is_joint();
        self.peers.iter().filter(move |p| joint && matches!(p.role, PeerRole::Voter | PeerRole::DemotingVoter))
    }

    /// Whether the peer is a voter of the configuration the region is in,
    /// or of either half of a joint one.
    pub fn is_voter(&self, peer_id: u64) -> bool {
        self.peer(peer_id).is_some_and(|p| p.role != PeerRole::Learner)
    }

    /// Whether the peer may lead or campaign after the region leaves any
    /// joint state: a voter of both configurations.
    pub fn is_lasting_voter(&self, peer_id: u64) -> bool {
        self.peer(peer_id).is_some_and(|p| p.role == PeerRole::Voter)
    }

    /// Where a client sends a request when it knows no leader: a voter (a
    /// learner never leads).
    pub fn first_voter(&self) -> &PeerMeta {
        self.voters().next().or(self.peers.first()).expect("a region has peers")
    }

    /// The voter after the one on `store_id`, in peer order (no leader
    /// known: the next one may know it).
    pub fn next_voter_after(&self, store_id: u64) -> &PeerMeta {
        let voters: Vec<&PeerMeta> = self.voters().collect();
        match voters.iter().position(|p| p.store_id == store_id) {
            Some(i) => voters[(i + 1) % voters.len()],
            None => self.first_voter(),
        }
    }

    /// raft's configuration, as the roles of the peers say it.
    pub fn conf_state(&self) -> raft::eraftpb::ConfState {
        let ids = |role: &dyn Fn(PeerRole) -> bool| {
            let mut v: Vec<u64> = self.peers.iter().filter(|p| role(p.role)).map(|p| p.peer_id).collect();
            v.sort_unstable();
            v
        };
        let joint = self.is_joint();
        raft::eraftpb::ConfState {
            voters: ids(&|r| matches!(r, PeerRole::Voter | PeerRole::IncomingVoter)),
            learners: ids(&|r| r == PeerRole::Learner),
            voters_outgoing: if joint {
                ids(&|r| matches!(r, PeerRole::Voter | PeerRole::DemotingVoter))
            } else {
                vec![]
            },
            learners_next: ids(&|r| r == PeerRole::DemotingVoter),
            auto_leave: false,
            ..Default::default()
        }
    }
}

/// Whether two raft configurations have the same members in the same parts
/// (raft keeps its lists in no particular order).
pub fn same_conf(a: &raft::eraftpb::ConfState, b: &raft::eraftpb::ConfState) -> bool {
    let sorted = |v: &[u64]| {
        let mut v = v.to_vec();
        v.sort_unstable();
        v
    };
    sorted(&a.voters) == sorted(&b.voters)
        && sorted(&a.learners) == sorted(&b.learners)
        && sorted(&a.voters_outgoing) == sorted(&b.voters_outgoing)
        && sorted(&a.learners_next) == sorted(&b.learners_next)
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
        if self.is_joint() {
            return Err(format!("region {} is in a joint configuration: it splits once it left it", self.id));
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
            peers: self.peers.iter().zip(new_peer_ids).map(|(p, &peer_id)| PeerMeta { peer_id, ..*p }).collect(),
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

    /// Whether a voter on another store than `store_id` could lead the
    /// region and send a replica there what it lost (learners count for
    /// nothing: they elect no leader).
    pub fn has_voter_off(&self, store_id: u64) -> bool {
        self.peers.iter().any(|p| p.store_id != store_id && p.role != PeerRole::Learner)
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
#[derive(Clone, Debug, PartialEq, Eq, Encode)]
pub struct RegionLocalState {
    pub meta: RegionMeta,
    pub snapshot: Option<(u64, u64)>,
    pub removed_peer: Option<u64>,
    /// The `conf_ver` of the leader's message that created this peer
    /// uninitialized (0 for any other): its meta says nothing yet, and PD's
    /// word about an older epoch must not remove it after a restart
    /// (`shard::stale`). Written last; states written before it existed
    /// end before it and read as 0.
    pub member_at_conf_ver: u64,
}

impl RegionLocalState {
    pub fn encode(&self) -> Bytes {
        assert!(self.meta.peers.len() <= PEERS_MAX, "region {} has {} peers", self.meta.id, self.meta.peers.len());
        Bytes::from(bincode::encode_to_vec(self, config()).expect("a region's local state always encodes"))
    }

    pub fn decode(bytes: &[u8]) -> Result<RegionLocalState, MetaDecodeError> {
        type Head = (RegionMeta, Option<(u64, u64)>, Option<u64>);
        let err = |e: bincode::error::DecodeError| MetaDecodeError(e.to_string());
        let ((meta, snapshot, removed_peer), used): (Head, usize) =
            bincode::decode_from_slice(bytes, config()).map_err(err)?;
        let rest = &bytes[used..];
        let member_at_conf_ver = if rest.is_empty() {
            0
        } else {
            let (v, used): (u64, usize) = bincode::decode_from_slice(rest, config()).map_err(err)?;
            if used != rest.len() {
                return Err(MetaDecodeError(format!("{} trailing bytes", rest.len() - used)));
            }
            v
        };
        Ok(RegionLocalState { meta, snapshot, removed_peer, member_at_conf_ver })
    }
}

// PD knows nothing of the engine: regions cross to it and back in its own types.
impl From<pd::PeerInfo> for PeerMeta {
    fn from(p: pd::PeerInfo) -> PeerMeta {
        PeerMeta { peer_id: p.peer_id, store_id: p.store_id, shard: p.shard, role: p.role }
    }
}

impl From<PeerMeta> for pd::PeerInfo {
    fn from(p: PeerMeta) -> pd::PeerInfo {
        pd::PeerInfo { peer_id: p.peer_id, store_id: p.store_id, shard: p.shard, role: p.role }
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
            peers: vec![PeerMeta::voter(31, 1, 0)],
            max_peer_id: 31,
        };
        assert_eq!(RegionMeta::decode(&m.encode()), Ok(m.clone()));
        assert!(m.contains(b"b") && m.contains(b"c") && !m.contains(b"d") && !m.contains(b"a"));
        let all = RegionMeta { start_key: vec![], end_key: vec![], ..m.clone() };
        assert!(all.contains(b"") && all.contains(b"\xff\xff"));
        assert!(RegionMeta::decode(&[1, 2, 3]).is_err());
        let state =
            RegionLocalState { meta: m.clone(), snapshot: Some((40, 3)), removed_peer: Some(7), member_at_conf_ver: 9 };
        assert_eq!(RegionLocalState::decode(&state.encode()), Ok(state.clone()));
        // (a state written before `member_at_conf_ver` existed reads as 0)
        let old = bincode::encode_to_vec((&state.meta, state.snapshot, state.removed_peer), config()).unwrap();
        let read = RegionLocalState::decode(&old).expect("an older state decodes");
        assert_eq!(read, RegionLocalState { member_at_conf_ver: 0, ..state });
    }

    #[test]
    fn a_split_cuts_the_range_at_the_key_and_bumps_both_versions() {
        let p = |peer_id, store_id| PeerMeta::voter(peer_id, store_id, store_id as u16 % 2);
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
    fn a_replica_moves_through_a_learner_and_a_joint_configuration() {
        let m = RegionMeta {
            id: 1,
            start_key: vec![],
            end_key: vec![],
            conf_ver: 1,
            version: 1,
            peers: vec![PeerMeta::voter(11, 1, 0), PeerMeta::voter(12, 2, 0), PeerMeta::voter(13, 3, 0)],
            max_peer_id: 13,
        };
        let (new, old) = (PeerMeta::voter(14, 4, 0), PeerMeta::voter(13, 3, 0));
        let learning = m.changed(PeerChange::AddLearner(new)).unwrap();
        assert_eq!(learning.peer(14).map(|p| p.role), Some(PeerRole::Learner));
        assert_eq!((learning.voters().count(), learning.conf_state().learners), (3, vec![14]));
        assert!(learning.changed(PeerChange::EnterJoint { promote: old, demote: new }).is_err(), "roles swapped");
        assert!(learning.changed(PeerChange::LeaveJoint).unwrap_err().contains("not in a joint"));

        let joint = learning.changed(PeerChange::EnterJoint { promote: new, demote: old }).unwrap();
        assert!(joint.is_joint() && joint.conf_ver == 3);
        let cs = joint.conf_state();
        assert_eq!(
            (cs.voters, cs.voters_outgoing, cs.learners, cs.learners_next),
            (vec![11, 12, 14], vec![11, 12, 13], vec![], vec![13])
        );
        assert!(!joint.is_lasting_voter(13) && !joint.is_lasting_voter(14) && joint.is_lasting_voter(11));
        for refused in [PeerChange::AddLearner(PeerMeta::voter(15, 5, 0)), PeerChange::RemovePeer(old)] {
            assert!(joint.changed(refused).unwrap_err().contains("leave it first"), "{refused:?}");
        }
        assert!(joint.split(b"k", 9, &[91, 92, 93, 94]).unwrap_err().contains("joint"));

        let left = joint.changed(PeerChange::LeaveJoint).unwrap();
        assert!(!left.is_joint());
        assert_eq!(left.peer(13).map(|p| p.role), Some(PeerRole::Learner));
        assert_eq!(left.peer(14).map(|p| p.role), Some(PeerRole::Voter));
        let done = left.changed(PeerChange::RemovePeer(old)).unwrap();
        assert_eq!(done.voters().map(|p| p.store_id).collect::<Vec<_>>(), vec![1, 2, 4]);
        assert_eq!(done.conf_state().voters, vec![11, 12, 14]);
        // a promotion, simply
        let promoted = learning.changed(PeerChange::PromoteLearner(new)).unwrap();
        assert_eq!((promoted.voters().count(), promoted.is_joint()), (4, false));
        assert!(promoted.changed(PeerChange::PromoteLearner(new)).unwrap_err().contains("is a voter"));
        // the meta with its roles round-trips
        assert_eq!(RegionMeta::decode(&joint.encode()), Ok(joint));
    }

    #[test]
    fn membership_changes_bump_the_epoch_and_never_reuse_a_peer_id() {
        let p = |peer_id, store_id| PeerMeta::voter(peer_id, store_id, 0);
        let m = RegionMeta {
            id: 1,
            start_key: vec![],
            end_key: vec![],
            conf_ver: 1,
            version: 1,
            peers: vec![p(11, 1), p(12, 2), p(13, 3)],
            max_peer_id: 13,
        };
        let removed = m.changed(PeerChange::RemovePeer(p(13, 3))).unwrap();
        assert_eq!((removed.conf_ver, removed.peers.len(), removed.max_peer_id), (2, 2, 13));
        assert!(removed.changed(PeerChange::AddVoter(p(13, 3))).unwrap_err().contains("never reused"));
        assert!(removed.changed(PeerChange::AddVoter(p(14, 2))).unwrap_err().contains("already has a peer"));
        let added = removed.changed(PeerChange::AddVoter(p(14, 3))).unwrap();
        assert_eq!((added.conf_ver, added.max_peer_id, added.peer_on(3)), (3, 14, Some(&p(14, 3))));
        assert!(m.changed(PeerChange::RemovePeer(p(12, 9))).is_err(), "a peer as it is not");
        let alone = RegionMeta { peers: vec![p(11, 1)], ..m };
        assert!(alone.changed(PeerChange::RemovePeer(p(11, 1))).is_err(), "the last peer stays");
    }
}
