//! PD's wire protocol: transport frames (kind `PdRequest` / `PdResponse`,
//! length + CRC32C like every frame) carrying bincode 2 messages. A caller
//! may keep many requests in flight on one connection; each answer names
//! its request's id. Every request carries the cluster id the caller
//! belongs to; a different one is answered with `ClusterMismatch` and the
//! connection closed. 0 ("not known yet") is accepted only where a caller
//! cannot know it yet — asking for the cluster (`GetCluster`) and a new
//! store's first registration — and learned from the answer; any other
//! request naming 0 is refused the same way. Bytes that are not frames, or frames that are not requests,
//! close the connection and are counted.

use std::net::SocketAddr;

use bincode::{Decode, Encode};

use crate::meta::{Epoch, PeerInfo, RegionInfo, RegionStats, StoreInfo, StoreStats};

/// Largest request or answer payload.
pub const PD_MESSAGE_BYTES_MAX: usize = transport::message::MESSAGE_BYTES_MAX;
/// Most regions one scan answers with.
pub const SCAN_REGIONS_MAX: u32 = 4096;
/// Most region reports in one `RegionHeartbeats` (a store sends more in several).
pub const REGION_REPORTS_MAX: usize = 1024;
/// Bytes of regions one scan answers with, about (keys and peers; it stops
/// after the region that passes this, so an answer stays far below the limit).
pub const SCAN_BYTES_MAX: usize = 1 << 20;
/// Most ids one `AllocIds` hands out.
pub const ALLOC_IDS_MAX: u32 = 1 << 20;

const _: () = assert!(PD_MESSAGE_BYTES_MAX <= transport::FRAME_BYTES_MAX);

#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct RequestFrame {
    pub id: u64,
    /// The cluster the caller belongs to; 0 while it does not know yet.
    pub cluster_id: u64,
    pub body: PdRequest,
}

#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct ResponseFrame {
    pub id: u64,
    pub cluster_id: u64,
    pub result: Result<PdResponse, PdError>,
}

impl PdRequest {
    /// Whether a caller may send it before it knows the cluster id (0):
    /// asking for the cluster, and a new store's first registration.
    pub fn may_omit_cluster_id(&self) -> bool {
        matches!(self, PdRequest::GetCluster | PdRequest::RegisterStore { store_id: 0, .. })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum PdRequest {
    /// A store introduces itself: `store_id` 0 on its first start (PD
    /// assigns one), its own id afterwards.
    RegisterStore {
        store_id: u64,
        token: u64,
        shards: u16,
        peer_addr: SocketAddr,
        client_addr: SocketAddr,
        capacity_bytes: u64,
    },
    /// The regions a store starts with at its first bootstrap (only then).
    BootstrapRegions {
        store_id: u64,
    },
    StoreHeartbeat {
        store_id: u64,
        stats: StoreStats,
    },
    /// Reports of the regions the store leads, batched.
    RegionHeartbeats {
        store_id: u64,
        reports: Vec<RegionReport>,
    },
    AllocIds {
        count: u32,
    },
    GetCluster,
    GetStores,
    GetStore {
        store_id: u64,
    },
    GetRegionByKey {
        key: Vec<u8>,
    },
    GetRegionById {
        region_id: u64,
    },
    /// Regions in key order from the one holding `start_key`, at most `limit`.
    ScanRegions {
        start_key: Vec<u8>,
        limit: u32,
    },
    /// Moves the region's replica on `from_store` to `to_store` (an
    /// operator by hand; it replaces any other of the region).
    MoveRegion {
        region_id: u64,
        from_store: u64,
        to_store: u64,
    },
    /// The operators under way.
    GetOperators,
    /// Moves every replica off the store, then removes it from the cluster.
    DrainStore {
        store_id: u64,
    },
}

/// What a leader tells PD of its region.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct RegionReport {
    pub region: RegionInfo,
    pub leader: PeerInfo,
    pub term: u64,
    pub stats: RegionStats,
    /// Peers the leader has not heard from lately, or that are still catching up.
    pub pending_peers: Vec<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum PdResponse {
    Registered {
        store_id: u64,
        bootstrapped: bool,
    },
    Regions(Vec<RegionView>),
    Heartbeat {
        /// Bumped whenever a store registers or changes address: refresh the directory then.
        stores_version: u64,
    },
    RegionHeartbeats {
        /// One per report, in order: accepted, or why not.
        outcomes: Vec<Result<(), PdError>>,
        directives: Vec<Directive>,
    },
    Ids {
        first: u64,
        count: u32,
    },
    Cluster(ClusterView),
    Stores {
        stores: Vec<StoreView>,
        stores_version: u64,
    },
    Store(StoreView),
    Region(RegionView),
    Operators(Vec<OperatorView>),
}

/// A region as PD sees it: its durable description and the latest report.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct RegionView {
    pub region: RegionInfo,
    /// None until a leader reports (after a PD restart, until the next heartbeat).
    pub leader: Option<PeerInfo>,
    pub term: u64,
    pub stats: RegionStats,
    pub pending_peers: Vec<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct StoreView {
    pub store: StoreInfo,
    /// Milliseconds since its last heartbeat; None: none since PD started.
    pub last_heartbeat_ms_ago: Option<u64>,
    /// Heard from within `--store-down-after`.
    pub up: bool,
    /// Silent past `--max-store-down-time` (counted from PD's start when
    /// not heard from since): its replicas are rebuilt elsewhere.
    pub down: bool,
    pub stats: StoreStats,
}

#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct ClusterView {
    pub cluster_id: u64,
    pub bootstrapped: bool,
    pub replicas: u32,
    pub initial_regions: u32,
    pub stores: u32,
    pub regions: u32,
}

/// Work PD asks a region's leader to do, valid only at `epoch`: a store
/// that has moved past it ignores the directive.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Directive {
    pub region_id: u64,
    pub epoch: Epoch,
    pub action: DirectiveAction,
}

#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum DirectiveAction {
    TransferLeader {
        to_store: u64,
    },
    /// Add a voter at once (by hand; operators add learners).
    AddPeer(PeerInfo),
    RemovePeer(PeerInfo),
    AddLearner(PeerInfo),
    PromoteLearner(PeerInfo),
    /// One joint change: the learner `promote` in, the voter `demote` out.
    EnterJoint {
        promote: PeerInfo,
        demote: PeerInfo,
    },
    LeaveJoint,
}

/// An operator under way, for `ctl operators`.
#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct OperatorView {
    pub id: u64,
    pub region_id: u64,
    pub kind: String,
    pub steps: Vec<String>,
    /// The step under way (an index into `steps`).
    pub current: u32,
    pub age_ms: u64,
    pub step_age_ms: u64,
}

/// PD's errors, each with what a caller needs to act on it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Encode, Decode)]
pub enum PdError {
    #[error("this PD serves cluster {ours}; the request was for cluster {theirs} (0: a caller that did not ask for the id first)")]
    ClusterMismatch { theirs: u64, ours: u64 },
    #[error("the cluster is not bootstrapped yet: {registered} of the {needed} stores it needs have registered")]
    NotBootstrapped { registered: u32, needed: u32 },
    #[error("store {store_id} is not registered")]
    UnknownStore { store_id: u64 },
    #[error("address {addr} is already used by store {store_id}")]
    DuplicateStoreAddress { addr: SocketAddr, store_id: u64 },
    #[error("store {store_id}: {reason}")]
    StoreMismatch { store_id: u64, reason: String },
    #[error("region {region_id} is not known")]
    UnknownRegion { region_id: u64 },
    #[error("key {key:?} is in no known region")]
    KeyNotInAnyRegion { key: Vec<u8> },
    /// The report is older than what PD holds (`current`, possibly one of
    /// several regions overlapping it).
    #[error("region {region_id}: reported epoch {reported:?} is stale (PD has region {} at {:?})", .current.id, .current.epoch)]
    StaleEpoch { region_id: u64, reported: Epoch, current: Box<RegionInfo> },
    #[error("invalid: {0}")]
    Invalid(String),
    /// PD could not make the change durable (it stops: nothing was answered as done).
    #[error("PD storage: {0}")]
    Storage(String),
}

/// Why a frame's payload is not a PD message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("PD message: {0}")]
pub struct ProtocolError(pub String);

pub use transport::message::{encode, encode_frame};

pub fn decode<T: Decode<()>>(payload: &[u8]) -> Result<T, ProtocolError> {
    transport::message::decode_exact(payload, PD_MESSAGE_BYTES_MAX).map_err(ProtocolError)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_garbage_is_an_error() {
        let q = RequestFrame { id: 3, cluster_id: 9, body: PdRequest::GetRegionByKey { key: b"k".to_vec() } };
        let mut out = vec![];
        encode_frame(&mut out, transport::FrameKind::PdRequest, &q);
        let mut d = transport::FrameDecoder::new();
        d.push(&out);
        let f = d.next_frame().unwrap().unwrap();
        assert_eq!(f.kind, transport::FrameKind::PdRequest);
        assert_eq!(decode::<RequestFrame>(&f.payload), Ok(q));
        let r = ResponseFrame { id: 3, cluster_id: 9, result: Err(PdError::KeyNotInAnyRegion { key: b"k".to_vec() }) };
        let mut out = vec![];
        encode_frame(&mut out, transport::FrameKind::PdResponse, &r);
        assert_eq!(decode::<ResponseFrame>(&out[transport::FRAME_HEADER_BYTES..]), Ok(r));
        assert!(decode::<RequestFrame>(&[0xff; 40]).is_err());
    }
}
