//! A region: one raft group owning one key range. Its meta, raft-rs's view
//! of its log, and the peer that ties them to raft.

pub mod meta;
pub mod peer;
pub mod storage;
pub mod wal_convert;

pub use meta::{PeerMeta, RegionMeta};
pub use peer::Region;
pub use storage::RegionStorage;
