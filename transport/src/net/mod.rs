//! The TCP runtime around the sans-IO codec: glommio tasks on the shard's
//! executor. [`Endpoint`] is the shard's handle; the rest are its tasks:
//! `accept` (inbound connections, handshake checks, raft frames into the
//! inbox), `link` (one outgoing connection per destination, reconnect with
//! backoff), `snapshot_send` / `snapshot_recv` (the snapshot stream).

mod accept;
mod config;
mod endpoint;
mod inbox;
mod io;
mod link;
mod snapshot_recv;
mod snapshot_send;
mod socket;
mod stats;
mod sync;

pub use config::{
    ConfigError, EndpointConfig, CONNECTIONS_MAX, CONNECTION_QUEUED_BYTES_DEFAULT, SNAPSHOTS_IN_FLIGHT_MAX,
    WRITE_BATCH_BYTES_MAX,
};
pub use endpoint::{Endpoint, SnapshotReport, StartError};
pub use inbox::{Inbox, Incoming};
pub use io::{FrameReader, ReadError};
pub use link::ConnectError;
pub use socket::{listen, tune, KEEPALIVE_COUNT, KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, USER_TIMEOUT};
pub use stats::TransportStats;
pub use sync::Notify;
