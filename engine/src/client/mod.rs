//! Clients' side of the engine: the protocol on a shard's client port, and
//! the KV client library that routes, retries and reports outcomes.

pub mod kv_client;
pub mod one_shot;
pub mod protocol;
