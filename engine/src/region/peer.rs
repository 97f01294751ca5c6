//! One replica of a region on this shard: raft-rs's `RawNode` over the
//! region's in-memory log view, the region's meta, its state machine, and
//! the client work in flight (writes batched for the next proposal,
//! proposals awaiting apply by (term, index), reads awaiting a ReadIndex).

use std::collections::BTreeMap;
use std::path::PathBuf;

use raft::{Config, RawNode, ReadOnlyOption};

use crate::kv::{Command, MemKv};
use crate::region::meta::{PeerMeta, RegionMeta};
use crate::region::storage::RegionStorage;
use crate::shard::io::Query;
use crate::snapshot::{RegionSnapshot, SnapshotId};

/// Ticks without a heartbeat before a follower campaigns (randomised in
/// [ELECTION_TICKS, 2·ELECTION_TICKS)).
pub const ELECTION_TICKS: usize = 10;
pub const HEARTBEAT_TICKS: usize = 2;
/// raft-rs limits: bytes per append message, appends in flight per follower,
/// uncommitted bytes a leader accepts before proposals are refused.
pub const RAFT_MSG_BYTES_MAX: u64 = 1 << 20;
pub const RAFT_INFLIGHT_MSGS_MAX: usize = 256;
pub const RAFT_UNCOMMITTED_BYTES_MAX: u64 = 32 << 20;
/// Client writes one region holds for its next proposal before it answers ServerIsBusy.
pub const PENDING_WRITES_MAX: usize = 4096;
/// Proposals one region tracks before it answers ServerIsBusy.
pub const PROPOSALS_MAX: usize = 1024;

const _: () = assert!(ELECTION_TICKS > HEARTBEAT_TICKS);

/// The reads of one ReadIndex round.
pub struct ReadBatch {
    pub term: u64,
    pub issued_tick: u64,
    pub reads: Vec<(u64, Query)>,
}

/// A batch of client writes proposed as one entry.
pub struct Proposal {
    pub term: u64,
    pub requests: Vec<u64>,
}

/// A snapshot being written: the membership and key range it holds, and
/// the applied bytes it accounts for (given back if the write fails).
pub struct SnapshotTaking {
    pub id: SnapshotId,
    pub conf: raft::eraftpb::ConfState,
    pub range: (bytes::Bytes, bytes::Bytes),
    pub bytes: usize,
}

pub struct Region {
    /// Which life of the region on this shard (a removed peer can be
    /// replaced by a new one of the same region): work of an earlier life
    /// that completes later is recognised and dropped.
    pub incarnation: u64,
    pub meta: RegionMeta,
    /// The meta's key range as shared bytes: every outgoing message's
    /// envelope carries it, and cloning these costs no allocation.
    pub key_range: (bytes::Bytes, bytes::Bytes),
    pub peer_id: u64,
    pub raw: RawNode<RegionStorage>,
    pub kv: MemKv,
    pub applied: u64,
    /// The term the randomised election timeout was last drawn for.
    pub timeout_term: u64,
    pub pending_writes: Vec<(u64, Command)>,
    pub pending_write_bytes: usize,
    /// By log index.
    pub proposals: BTreeMap<u64, Proposal>,
    pub pending_reads: Vec<(u64, Query)>,
    /// Reads waiting for their ReadIndex, by request context.
    pub read_batches: BTreeMap<u64, ReadBatch>,
    /// ReadIndex answers: (context, index), served once applied ≥ index.
    pub ready_reads: Vec<(u64, u64)>,
    /// Readies of this region handed to raft but not yet durable.
    pub readies_awaiting: usize,
    /// The snapshot a restart would load (recorded in the WAL, or staged to be).
    pub snapshot: Option<SnapshotId>,
    /// The snapshot being written, if one is.
    pub snapshot_taking: Option<SnapshotTaking>,
    /// The key range of the state a restart begins from (its snapshot's, or
    /// the one it was created with): a restart replays every split since,
    /// creating each child again — one whose tombstone is collected too
    /// (`shard::tombstone` waits until no such range overlaps it).
    pub replay_range: (bytes::Bytes, bytes::Bytes),
    /// After a failed snapshot write, the tick before which none is retried.
    pub snapshot_retry_tick: u64,
    /// Entry bytes applied since the last snapshot (the trigger's measure).
    pub applied_bytes_since_snapshot: usize,
    /// Entry bytes this peer applied in its life (its write rate, for PD).
    pub applied_bytes_total: u64,
    /// The WAL's purge named this region as holding old segments: snapshot
    /// and compact as soon as possible.
    pub compact_wanted: bool,
    /// A received snapshot stepped into raft, until raft installs it (or it
    /// turns out stale): its state and the file it arrived in.
    pub receiving: Option<(Box<RegionSnapshot>, PathBuf)>,
    /// Why this replica of the region is fenced (`shard::fence`): a
    /// committed entry it could not decode. It applies nothing more.
    pub fenced: Option<String>,
    /// This replica may have lost entries it acknowledged (`shard::catch_up`):
    /// it neither votes nor campaigns until an entry of a term above this one
    /// is durable in its log.
    pub catching_up: Option<u64>,
    /// Its state machine may still hold keys a split gave the other half
    /// (`shard::split` trims them a few at a time): read it by range only.
    pub untrimmed: bool,
    /// Children split off this region whose initial state is not durable
    /// yet: until it is, a restart re-derives them by replaying this
    /// region's split, so it takes no snapshot, installs none and is not
    /// destroyed (`shard::split`).
    pub children_unrecorded: std::collections::BTreeSet<u64>,
    /// A child of a split whose initial state is not durable yet: its parent.
    pub initial_state_of: Option<u64>,
    /// Removed while children were unrecorded: destroyed once they are.
    pub destroy_deferred: bool,
    /// This peer applied the change that removed it, and waits to be told
    /// to go (`shard::removal`): it applies nothing more and takes or
    /// installs no snapshot, but still answers votes and appends.
    pub removal_applied: bool,
    /// The HardState raft holds moved past the one last staged, by its
    /// commit index only: it rides on the region's next write
    /// (`shard::persist::stage_hard_state`).
    pub hard_state_unstaged: bool,
    /// The `conf_ver` of the newest meta of this region durable in the WAL
    /// (`shard::removal`: a removal notice waits for it).
    pub conf_ver_durable: u64,
    /// Peers this region removed, to be told so once the change that
    /// removed them is durable here (`shard::removal`).
    pub removal_notices_waiting: Vec<crate::region::meta::PeerMeta>,
    /// A new child's leader sends no snapshot before this tick: followers
    /// that have not applied the split yet get the time to (`shard::split`).
    pub snapshot_hold_until_tick: Option<u64>,
    /// A split child on the store that led its parent, campaigning: PD
    /// hears of it with its parent (so routing never has a gap), before it
    /// has won its first election.
    pub born_leading: bool,
    /// The tick a size-driven split started (finding its key, PD allocating
    /// its ids): none other starts until it is proposed or times out.
    pub split_check_tick: Option<u64>,
    /// The index of this leader's split proposal not yet applied.
    pub split_proposed: Option<u64>,
    /// The last few regions split off this one (`shard::split`).
    pub split_off: std::collections::VecDeque<u64>,
    /// The shard tick at which each peer's last message arrived (whether a
    /// leader sees a peer up: `shard::membership::is_healthy`).
    pub heard_at_tick: BTreeMap<u64, u64>,
    /// Where the peers that wrote to this replica and that its meta does not
    /// name yet live: a replica that missed the changes adding a new leader
    /// answers it here, or it would never catch up (TiKV's peer cache).
    pub learned_peers: BTreeMap<u64, PeerMeta>,
    /// The shard tick at which a leader's message last arrived (or this
    /// peer led): a follower silent too long asks PD (`shard::stale`).
    pub leader_heard_tick: Option<u64>,
    /// When it last asked PD whether it is still a member.
    pub membership_asked_tick: Option<u64>,
    /// The newest `conf_ver` a leader's message to this peer carried: the
    /// peer was a member then (an uninitialized peer's meta says nothing).
    pub member_at_conf_ver: u64,
}

/// raft-rs configuration of one peer.
pub fn raft_config(peer_id: u64, applied: u64) -> Config {
    Config {
        id: peer_id,
        election_tick: ELECTION_TICKS,
        heartbeat_tick: HEARTBEAT_TICKS,
        applied,
        max_size_per_msg: RAFT_MSG_BYTES_MAX,
        max_inflight_msgs: RAFT_INFLIGHT_MSGS_MAX,
        max_uncommitted_size: RAFT_UNCOMMITTED_BYTES_MAX,
        check_quorum: true,
        pre_vote: true,
        // (followers learn a commit from the next append or heartbeat, as in
        // TiKV; raft-rs still broadcasts one while a membership change is
        // pending: an answer per commit woke every leader for nothing)
        skip_bcast_commit: true,
        read_only_option: ReadOnlyOption::Safe,
        ..Default::default()
    }
}

impl Region {
    pub fn new(
        meta: RegionMeta,
        peer_id: u64,
        storage: RegionStorage,
        applied: u64,
        kv: MemKv,
    ) -> Result<Region, raft::Error> {
        let config = raft_config(peer_id, applied);
        config.validate()?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raw = RawNode::new(&config, storage, &logger)?;
        let key_range = (meta.start_key.clone().into(), meta.end_key.clone().into());
        Ok(Region {
            incarnation: 0,
            key_range: key_range.clone(),
            meta,
            peer_id,
            raw,
            kv,
            applied,
            timeout_term: u64::MAX,
            pending_writes: vec![],
            pending_write_bytes: 0,
            proposals: BTreeMap::new(),
            pending_reads: vec![],
            read_batches: BTreeMap::new(),
            ready_reads: vec![],
            readies_awaiting: 0,
            snapshot: None,
            snapshot_taking: None,
            replay_range: key_range.clone(),
            snapshot_retry_tick: 0,
            applied_bytes_since_snapshot: 0,
            applied_bytes_total: 0,
            compact_wanted: false,
            receiving: None,
            fenced: None,
            catching_up: None,
            untrimmed: false,
            children_unrecorded: Default::default(),
            initial_state_of: None,
            destroy_deferred: false,
            removal_applied: false,
            hard_state_unstaged: false,
            conf_ver_durable: 0,
            removal_notices_waiting: vec![],
            snapshot_hold_until_tick: None,
            born_leading: false,
            split_check_tick: None,
            split_proposed: None,
            split_off: Default::default(),
            heard_at_tick: BTreeMap::new(),
            learned_peers: BTreeMap::new(),
            leader_heard_tick: None,
            membership_asked_tick: None,
            member_at_conf_ver: 0,
        })
    }

    pub fn id(&self) -> u64 {
        self.meta.id
    }

    pub fn is_leader(&self) -> bool {
        self.raw.raft.state == raft::StateRole::Leader
    }

    pub fn term(&self) -> u64 {
        self.raw.raft.term
    }

    /// Every key and value of the region's range (its state machine may
    /// hold more while a split's other side is trimmed).
    pub fn rows(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.kv.rows_in(&self.meta.start_key, &self.meta.end_key).map(|(k, v)| (k, v.to_vec())).collect()
    }

    /// The leader this peer knows of, as a peer of the region.
    pub fn leader(&self) -> Option<crate::region::meta::PeerMeta> {
        let id = self.raw.raft.leader_id;
        (id != raft::INVALID_ID).then(|| self.meta.peer(id).copied()).flatten()
    }
}
