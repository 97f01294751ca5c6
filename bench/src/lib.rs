//! ringraft's benchmark harness, behind `ringraft bench ...`.
//!
//! Numbers in docs/benchmarks.md come from here, each with the command that
//! produced it. Every benchmark runs on the real runtime (glommio, O_DIRECT)
//! against the disk it is started on, measures what the design promises,
//! prints the disk's own figures beside ours so a slow disk is not mistaken
//! for a slow engine, and bounds every loop in time and count.
//!
//! - [`kv`]: puts and gets against a cluster (a local one by default); also
//!   `ringraft ctl load`'s simpler write load ([`kv::load`]).
//! - [`local`]: a local cluster of `ringraft server` processes.
//! - [`wal`]: one shard's WAL with many regions appending at once.
//! - [`transport`]: one shard's batched raft traffic over loopback, against a raw TCP pump.
//! - [`chaos`]: real processes under a nemesis, the history checked (`ringraft chaos`).
//! - [`split`]: what splitting a region of a given size costs the shard loop.

// `is_multiple_of` needs Rust 1.87; the workspace's rust-version is 1.85.
#![allow(clippy::manual_is_multiple_of)]

pub mod chaos;
pub mod kv;
pub mod latency;
pub mod local;
pub mod signals;
pub mod split;
pub mod transport;
pub mod units;
pub mod verify;
pub mod wal;
