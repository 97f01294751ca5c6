//! The engine on real I/O: a store runs one glommio executor per shard,
//! each driving its `Shard` with the WAL, the transport and the client port.

pub mod client_service;
pub mod control;
pub mod data_dir;
pub mod directives;
pub mod fault_control;
pub mod metrics;
pub mod pd_worker;
pub mod shard_task;
pub mod snapshot_files;
pub mod store;
pub mod wal_ident;
