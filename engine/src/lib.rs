//! ringraft's engine: shards of regions replicated with raft-rs, writing
//! through the shard's WAL and talking through the batched transport.
//!
//! - [`region`]: a region's meta, raft-rs's view of its log, and its peer.
//! - [`kv`]: client writes as log entries, and the state machine.
//! - [`shard`]: the sans-IO loop iteration (docs/design.md, "The shard loop") for all regions of a core.
//! - [`snapshot`]: state-machine snapshots, their files and their format.
//! - [`sim`]: a deterministic simulator running real shards with a fake
//!   disk, network and clock from one seed.

pub mod client;
pub mod directory;
pub mod driver;
pub mod error;
pub mod kv;
pub mod region;
pub mod runtime;
pub mod shard;
pub mod sim;
pub mod snapshot;
pub mod spec;
pub mod votes;

pub use error::RegionError;
