//! ringraft's transport: how raft messages travel between shards of
//! different stores (docs/design.md, "The transport").
//!
//! Sans-IO (bytes in, frames out; no sockets, clocks or files):
//! - [`frame`]: length, CRC32C, kind, payload; a streaming decoder that
//!   checks the length before allocating anything.
//! - [`handshake`]: the first frame of every connection, checked against
//!   what the receiver is (cluster, store, shard), and the reply.
//! - [`envelope`]: a raft message with its routing envelope; a raft frame
//!   carries every message one shard has for one destination (store, shard).
//! - [`outbox`]: per-destination batching with bounds: one frame per
//!   destination per loop iteration.
//! - [`snapshot`]: the frames of a snapshot stream and the receiver's checks.
//! - [`backoff`], [`rate_limit`], [`faults`]: reconnect pacing, the snapshot
//!   token bucket, and seeded fault injection for tests and simulations.
//! - [`down_log`]: when a peer that is down is worth a log line (its state
//!   changes, then a reminder per interval, not every reconnect attempt).
//!
//! The runtime, [`net`]: glommio TCP tasks around the above — one
//! [`net::Endpoint`] per shard. Over a bound, messages are dropped and the
//! destination reported unreachable (raft retransmits); the shard loop never
//! waits on the network.

pub mod backoff;
pub mod down_log;
pub mod envelope;
pub mod faults;
pub mod frame;
pub mod handshake;
pub mod injected;
pub mod message;
pub mod net;
pub mod outbox;
pub mod rate_limit;
mod seeded;
pub mod snapshot;
pub mod status;

pub use envelope::{decode_raft_batch, encode_raft_batch, Envelope, EnvelopeRef, Epoch, Peer, RaftBatch, Target};
pub use faults::{FaultConfig, FaultStats, Faults};
pub use frame::{DecodeError, Frame, FrameDecoder, FrameKind, FRAME_BYTES_MAX, FRAME_HEADER_BYTES};
pub use handshake::{Handshake, HandshakeError, HandshakeReply, Purpose, PROTOCOL_VERSION};
pub use net::{Endpoint, EndpointConfig, Inbox, Incoming, TransportStats};
pub use outbox::{Destination, FlushedFrame, OutboxStats, Outboxes, PushError};
pub use seeded::SeededRng;
