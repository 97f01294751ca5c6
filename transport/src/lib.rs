//! ringraft's transport, the sans-IO part: how raft messages travel between
//! shards of different stores.
//!
//! - [`frame`]: length, CRC32C, kind, payload; a streaming decoder that
//!   checks the length before allocating anything.
//! - [`handshake`]: the first frame of every connection, checked against
//!   what the receiver is (cluster, store, shard).
//! - [`envelope`]: a raft message with its routing envelope; a raft frame
//!   carries every message one shard has for one destination (store, shard).
//! - [`outbox`]: per-destination batching with bounds: one frame per
//!   destination per loop iteration; over a bound, messages are dropped and
//!   the destination reported unreachable (raft retransmits), the shard loop
//!   never blocks.
//!
//! No sockets here: bytes in, frames out. The TCP tasks around it, the
//! snapshot stream and fault injection are the next steps (DESIGN.md §5).

pub mod envelope;
pub mod frame;
pub mod handshake;
pub mod outbox;

pub use envelope::{decode_raft_batch, encode_raft_batch, Envelope, Epoch, Peer, Target};
pub use frame::{DecodeError, Frame, FrameDecoder, FrameKind, FRAME_BYTES_MAX, FRAME_HEADER_BYTES};
pub use handshake::{Handshake, HandshakeError, PROTOCOL_VERSION};
pub use outbox::{Destination, FlushedFrame, OutboxStats, Outboxes, PushError};
