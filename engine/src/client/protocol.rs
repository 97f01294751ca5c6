//! The client protocol on a shard's client port: transport frames (kind
//! ClientRequest / ClientResponse, length + CRC32C as every frame) carrying
//! bincode 2 messages. Many requests may be in flight on one connection;
//! answers come back in any order, matched by request id.

use bincode::{Decode, Encode};

use crate::error::RegionError;
use crate::kv::Command;
use crate::region::meta::{Epoch, PeerChange, RegionMeta};

/// Most rows one scan request returns (a shard caps `limit` at this).
pub const SCAN_ROWS_MAX: usize = 10_000;

/// Largest client frame payload.
pub const CLIENT_MESSAGE_BYTES_MAX: usize = transport::message::MESSAGE_BYTES_MAX;

#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum ClientOp {
    Get {
        key: Vec<u8>,
    },
    /// A put, delete or compare-and-swap: the command as it goes into the log.
    Write(Command),
    /// Rows of [start, end) within the request's region, at most `limit`.
    Scan {
        start: Vec<u8>,
        end: Vec<u8>,
        limit: u32,
    },
    /// Hand the region's leadership to its peer `to_peer` (admin).
    TransferLeader {
        to_peer: u64,
    },
    /// Add or remove a peer (admin; answered once the change is applied on the leader).
    ChangePeer(PeerChange),
    /// The region's meta as its leader has it (range, epoch, peers).
    DescribeRegion,
    /// Split the region at a key, with ids PD allocated (admin; answered once
    /// the split is applied on the leader).
    Split(crate::shard::SplitRequest),
}

impl ClientOp {
    /// Whether the operation goes to the region holding its key (else it
    /// names its region: admin operations).
    pub fn routes_by_key(&self) -> bool {
        !matches!(
            self,
            ClientOp::TransferLeader { .. } | ClientOp::ChangePeer(_) | ClientOp::DescribeRegion | ClientOp::Split(_)
        )
    }

    pub fn key(&self) -> &[u8] {
        match self {
            ClientOp::Get { key } => key,
            ClientOp::Write(c) => c.key(),
            ClientOp::Scan { start, .. } => start,
            ClientOp::TransferLeader { .. }
            | ClientOp::ChangePeer(_)
            | ClientOp::DescribeRegion
            | ClientOp::Split(_) => &[],
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct ClientRequest {
    /// Chosen by the client, unique on its connection.
    pub id: u64,
    /// The cluster the client means to reach (learned from PD, or its
    /// spec's): a store of another cluster answers `ClusterNotMatch`.
    pub cluster_id: u64,
    /// The store the client means to reach (a client with another cluster's
    /// spec, or a stale one, is told `StoreNotMatch`).
    pub store_id: u64,
    pub region: u64,
    /// The region epoch the client routed by.
    pub conf_ver: u64,
    pub version: u64,
    pub op: ClientOp,
}

impl ClientRequest {
    pub fn epoch(&self) -> Epoch {
        Epoch { conf_ver: self.conf_ver, version: self.version }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub enum ClientReply {
    Done,
    Cas(bool),
    Value(Option<Vec<u8>>),
    Rows(Rows),
    Region(Box<RegionMeta>),
    /// A split applied: the region as it is now, and the new one.
    Split(Box<(RegionMeta, RegionMeta)>),
}

/// Keys and values, in key order.
pub type Rows = Vec<(Vec<u8>, Vec<u8>)>;

#[derive(Clone, Debug, PartialEq, Eq, Encode, Decode)]
pub struct ClientResponse {
    pub id: u64,
    pub result: Result<ClientReply, RegionError>,
}

/// Why a client frame's payload is not a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("client message: {0}")]
pub struct ProtocolError(pub String);

pub use transport::message::{encode, encode_frame, encoded_len};

/// Bytes a request adds around its op, at most (id, cluster, store, region and epoch varints).
pub const REQUEST_OVERHEAD_BYTES_MAX: usize = 6 * 9;

pub fn decode<T: Decode<()>>(payload: &[u8]) -> Result<T, ProtocolError> {
    transport::message::decode_exact(payload, CLIENT_MESSAGE_BYTES_MAX).map_err(ProtocolError)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_responses_round_trip_and_garbage_is_an_error() {
        let q = ClientRequest {
            id: 9,
            cluster_id: 4,
            store_id: 1,
            region: 3,
            conf_ver: 1,
            version: 2,
            op: ClientOp::Write(Command::Cas { key: b"k".to_vec(), expect: None, new: Some(b"v".to_vec()) }),
        };
        assert_eq!(decode::<ClientRequest>(&encode(&q)), Ok(q));
        let r = ClientResponse { id: 9, result: Err(RegionError::NotLeader { region: 3, leader: None }) };
        assert_eq!(decode::<ClientResponse>(&encode(&r)), Ok(r));
        assert!(decode::<ClientRequest>(&[0xff; 40]).is_err());
    }
}
