//! The snapshot stream, sans-IO: what travels on a snapshot connection and
//! the receiver's checks. A raft `MsgSnapshot` can describe hundreds of MiB,
//! far over a frame; it travels on its own connection as
//!
//! `Handshake(purpose=Snapshot) → SnapshotHeader → SnapshotChunk* → SnapshotEnd`
//!
//! and the receiver answers `SnapshotAck` once the file is on its disk,
//! fsynced and verified. Only then is the `MsgSnapshot` handed to the engine:
//! raft never sees a snapshot whose data is not durably there.
//!
//! The TCP side is `net::snapshot_send` / `net::snapshot_recv`.

mod assembly;
mod format;

pub use assembly::{Assembly, SnapshotError};
pub use format::{
    decode_chunk, encode_chunk_header, SnapshotAck, SnapshotEnd, SnapshotHeader, SNAPSHOT_BYTES_MAX,
    SNAPSHOT_CHUNK_BYTES_MAX, SNAPSHOT_CHUNK_HEADER_BYTES,
};
