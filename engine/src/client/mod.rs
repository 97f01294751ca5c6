//! Clients' side of the engine: the protocol on a shard's client port, the
//! retry policy every KV client follows (no I/O), and the KV client library
//! that routes, retries by that policy and reports outcomes.

pub mod kv_client;
pub mod one_shot;
pub mod policy;
pub mod protocol;
