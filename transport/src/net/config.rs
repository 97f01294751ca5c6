//! What an endpoint is and the bounds it keeps. Every bound has a default
//! sized for this project's machines and a field an operator can set.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::backoff::{BACKOFF_MAX, BACKOFF_MIN};
use crate::faults::FaultConfig;
use crate::outbox::OUTBOX_BYTES_MAX;
use crate::snapshot::SNAPSHOT_CHUNK_BYTES_MAX;

/// Default bound on bytes queued for one connection and not yet written.
pub const CONNECTION_QUEUED_BYTES_DEFAULT: usize = 64 << 20;
/// Most inbound connections one endpoint serves at once.
pub const CONNECTIONS_MAX: usize = 1024;
/// Most snapshots one endpoint sends, and receives, at once.
pub const SNAPSHOTS_IN_FLIGHT_MAX: usize = 4;
/// Largest single write the sender makes when frames have piled up.
pub const WRITE_BATCH_BYTES_MAX: usize = 4 << 20;

const _: () = assert!(CONNECTION_QUEUED_BYTES_DEFAULT >= OUTBOX_BYTES_MAX + 64, "one full frame always fits");

#[derive(Clone, Debug)]
pub struct EndpointConfig {
    pub cluster_id: u64,
    pub store_id: u64,
    pub shard: u16,
    /// Address to listen on (port 0: any free port; see `Endpoint::local_addr`).
    pub listen: SocketAddr,
    /// Bytes queued for one destination and not yet written; over it, frames
    /// are dropped and the destination reported unreachable.
    pub connection_queued_bytes_max: usize,
    pub connect_timeout: Duration,
    /// How long a new inbound connection has to send its handshake (and a
    /// caller to get the reply).
    pub handshake_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Received frames waiting for the shard; when full, reading stops (TCP
    /// pushes back on the senders).
    pub inbox_frames_max: usize,
    /// Received payload bytes waiting for the shard; same push-back.
    pub inbox_bytes_max: usize,
    /// An inbound raft connection with no frame for this long is closed (the
    /// sender reconnects when it next has something to say).
    pub idle_timeout: Duration,
    /// A write (one link batch, one snapshot frame) not done in this long
    /// fails the connection.
    pub write_timeout: Duration,
    /// Where received snapshot files are assembled and kept. One endpoint's
    /// own: leftover `*.part` files in it are removed at start.
    pub snapshot_dir: PathBuf,
    /// Snapshot stream rate per connection, bytes/s (0: unlimited).
    pub snapshot_bytes_per_sec: u64,
    pub snapshot_chunk_bytes: usize,
    /// How long a sender waits for the receiver to store and verify a
    /// snapshot, and the longest gap a receiver allows between a stream's frames.
    pub snapshot_ack_timeout: Duration,
    /// Seeded faults on the raft frames this endpoint sends (tests only;
    /// snapshot streams are not affected).
    pub faults: Option<FaultConfig>,
}

/// Why a configuration cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("transport config: {0}")]
pub struct ConfigError(pub String);

impl EndpointConfig {
    /// Defaults for everything but identity and addresses.
    pub fn new(cluster_id: u64, store_id: u64, shard: u16, listen: SocketAddr, snapshot_dir: PathBuf) -> Self {
        EndpointConfig {
            cluster_id,
            store_id,
            shard,
            listen,
            connection_queued_bytes_max: CONNECTION_QUEUED_BYTES_DEFAULT,
            connect_timeout: Duration::from_secs(1),
            handshake_timeout: Duration::from_secs(2),
            backoff_min: BACKOFF_MIN,
            backoff_max: BACKOFF_MAX,
            inbox_frames_max: 1024,
            inbox_bytes_max: 256 << 20,
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
            snapshot_dir,
            snapshot_bytes_per_sec: 128 << 20,
            snapshot_chunk_bytes: 256 << 10,
            snapshot_ack_timeout: Duration::from_secs(60),
            faults: None,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |s: String| Err(ConfigError(s));
        if self.connection_queued_bytes_max < OUTBOX_BYTES_MAX + 64 {
            return bad(format!(
                "connection_queued_bytes_max {} is below one full frame ({})",
                self.connection_queued_bytes_max,
                OUTBOX_BYTES_MAX + 64
            ));
        }
        if self.snapshot_chunk_bytes == 0 || self.snapshot_chunk_bytes > SNAPSHOT_CHUNK_BYTES_MAX {
            return bad(format!(
                "snapshot_chunk_bytes {} not in 1..={SNAPSHOT_CHUNK_BYTES_MAX}",
                self.snapshot_chunk_bytes
            ));
        }
        if self.inbox_frames_max == 0 {
            return bad("inbox_frames_max must be at least 1".into());
        }
        if self.inbox_bytes_max < OUTBOX_BYTES_MAX {
            return bad(format!(
                "inbox_bytes_max {} is below one full frame ({OUTBOX_BYTES_MAX})",
                self.inbox_bytes_max
            ));
        }
        if self.backoff_min.is_zero() || self.backoff_min > self.backoff_max {
            return bad(format!("backoff {:?}..{:?} is not a range", self.backoff_min, self.backoff_max));
        }
        for (name, d) in [
            ("connect_timeout", self.connect_timeout),
            ("handshake_timeout", self.handshake_timeout),
            ("snapshot_ack_timeout", self.snapshot_ack_timeout),
            ("idle_timeout", self.idle_timeout),
            ("write_timeout", self.write_timeout),
        ] {
            if d.is_zero() {
                return bad(format!("{name} must be above zero"));
            }
        }
        Ok(())
    }
}
