//! A shard: the regions one core owns, driven in batched loop iterations.
//! `core` is the logic without I/O; `io` its inputs and outputs.

pub mod core;
pub mod io;
pub mod recover;

pub use self::core::{Shard, ShardLimits, ShardStats};
pub use io::{Input, Output, Query, Response};
