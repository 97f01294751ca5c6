//! ringraft's placement driver (docs/design.md, "The placement driver"): the one place that knows
//! which stores and regions exist, where each region's replicas live and
//! who leads them, and which ids have been handed out.
//!
//! - [`meta`]: stores and regions as PD keeps them.
//! - [`cluster`]: the logic, without I/O — registration, bootstrap,
//!   heartbeats, routing, the id allocator. Every change goes through
//!   [`storage::MetaStore`] before it is answered.
//! - [`storage`]: where the state is kept durable (one file, replaced
//!   atomically; an in-memory one for tests). Replicating PD through raft
//!   later means another `MetaStore` (docs/pd.md).
//! - [`protocol`]: requests and answers on the wire (transport frames,
//!   bincode 2), and the typed errors a caller acts on.
//! - [`schedule`]: operators that move replicas, and the checkers that
//!   make them (learners, joint changes, the replica count).
//! - [`server`] and [`client`]: a blocking TCP server and client.
//!
//! PD knows nothing of the engine: stores report to it in its own terms.

pub mod client;
pub mod cluster;
pub mod meta;
pub mod protocol;
pub mod schedule;
pub mod server;
pub mod storage;

pub use client::{PdClient, PdClientError};
pub use cluster::Cluster;
pub use meta::{Epoch, PeerInfo, PeerRole, RegionInfo, RegionStats, StoreInfo};
pub use protocol::{PdError, PdRequest, PdResponse};
