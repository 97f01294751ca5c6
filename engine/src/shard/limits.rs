//! The shard's named limits and the counters it keeps: every queue, batch
//! and retry of the shard loop has its bound here, next to how the bounds
//! relate to the WAL the shard writes into.

use crate::kv::ENTRY_BYTES_MAX;
use crate::region::peer::ELECTION_TICKS;

/// How long a client should wait before retrying a busy region.
pub const BUSY_BACKOFF_MS: u64 = 10;
/// Bytes staged for the next persist batch past which client writes are
/// refused (ServerIsBusy) until the disk catches up.
pub const STAGED_BYTES_MAX: usize = 64 << 20;
/// Outputs' capacity a shard keeps between iterations (`recycle_outputs`).
pub const OUTPUTS_KEPT_MAX: usize = 64 << 10;
/// Ticks a ReadIndex may stay unanswered before its reads are failed (the
/// leader may have lost its lease of the term without noticing yet).
pub const READ_TIMEOUT_TICKS: u64 = 2 * ELECTION_TICKS as u64;
pub use crate::client::protocol::SCAN_ROWS_MAX;
/// Default memory limit of one shard.
pub const MEMORY_BYTES_DEFAULT: usize = 4 << 30;
/// Bytes a WAL record needs beyond a region write's entry data (record and
/// section headers, per-entry headers are counted per entry).
pub const RECORD_OVERHEAD_BYTES: usize = 4096;
pub const ENTRY_OVERHEAD_BYTES: usize = 32;
/// A region snapshots once the entries it applied since its last snapshot
/// reach this many bytes and 1/SNAPSHOT_STATE_DIVISOR of its state's size
/// (small regions do not snapshot on every write; large ones not too often).
pub const SNAPSHOT_LOG_BYTES_MIN_DEFAULT: usize = 4 << 20;
pub const SNAPSHOT_STATE_DIVISOR: usize = 2;
/// Snapshots one shard writes at a time (the others wait for a later iteration).
pub const SNAPSHOT_WRITES_IN_FLIGHT_MAX: usize = 2;
/// Entries a leader keeps below its snapshot for followers that are only a
/// little behind (so they get appends, not a whole snapshot).
pub const COMPACT_LAG_ENTRIES_MAX: u64 = 1024;
/// Every region starts from a snapshot of the empty state at this index and
/// term (as TiKV's do), never from an empty log: a peer added later, which
/// knows nothing of the region, is then always sent a snapshot first — it
/// never replays membership changes onto a meta it does not have.
pub const RAFT_INIT_INDEX: u64 = 5;
pub const RAFT_INIT_TERM: u64 = 5;
/// Regions (live and tombstoned) one shard tracks; messages that would
/// create more are dropped (the WAL holds at most this many).
pub const SHARD_REGIONS_MAX: usize = wal::options::REGIONS_MAX;
/// Ticks a region waits after a failed snapshot write before it tries again.
pub const SNAPSHOT_RETRY_TICKS: u64 = 4 * ELECTION_TICKS as u64;
/// A region whose oldest needed WAL entry lies this many segments or more
/// behind the one being written is asked to snapshot and compact, so that
/// idle or slow regions do not keep the WAL from being purged.
pub const COMPACT_PIN_SEGMENTS_MAX: u64 = 2;

/// A region whose state passes this many bytes splits in two (TiKV's default).
pub const REGION_SPLIT_BYTES_DEFAULT: u64 = 96 << 20;
/// Ticks a size-driven split may take from finding its key to being
/// proposed (PD allocating its ids) before the region asks again.
pub const SPLIT_ASK_TIMEOUT_TICKS: u64 = 5 * ELECTION_TICKS as u64;
/// A region that could not split (PD unreachable, the split refused) and
/// grows past this many times the split size refuses writes
/// (`ServerIsBusy`) instead of growing without bound, as CockroachDB's do.
pub const REGION_SPLIT_BACKPRESSURE_FACTOR: u64 = 2;

/// Sizes the shard keeps under so that everything it stages fits its WAL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardLimits {
    /// Largest entry payload a region proposes.
    pub entry_bytes_max: usize,
    /// Largest region write (entries and HardState) handed to the WAL in one piece.
    pub write_bytes_max: usize,
    /// Memory (every region's in-memory log and state) past which writes are refused.
    pub memory_bytes_max: usize,
    /// Applied log bytes below which a region does not snapshot.
    pub snapshot_log_bytes_min: usize,
    /// State bytes past which a region's leader splits it.
    pub region_split_bytes: u64,
    /// `false` only to measure what batching buys (`--no-batching`): one
    /// fdatasync per region ready and one frame per message.
    pub batching: bool,
}

impl ShardLimits {
    /// The limits that fit a WAL opened with `opts`.
    pub fn for_wal(opts: &wal::WalOptions) -> ShardLimits {
        let write_bytes_max = opts.batch_bytes_max - RECORD_OVERHEAD_BYTES;
        let entry_bytes_max = ENTRY_BYTES_MAX.min(write_bytes_max - ENTRY_OVERHEAD_BYTES);
        ShardLimits {
            entry_bytes_max,
            write_bytes_max,
            memory_bytes_max: MEMORY_BYTES_DEFAULT,
            snapshot_log_bytes_min: SNAPSHOT_LOG_BYTES_MIN_DEFAULT,
            region_split_bytes: REGION_SPLIT_BYTES_DEFAULT,
            batching: true,
        }
    }

    pub fn with_batching(self, batching: bool) -> ShardLimits {
        ShardLimits { batching, ..self }
    }

    pub fn with_memory_limit(self, memory_bytes_max: usize) -> ShardLimits {
        ShardLimits { memory_bytes_max, ..self }
    }

    pub fn with_snapshot_log_min(self, snapshot_log_bytes_min: usize) -> ShardLimits {
        ShardLimits { snapshot_log_bytes_min, ..self }
    }

    pub fn with_region_split_bytes(self, region_split_bytes: u64) -> ShardLimits {
        ShardLimits { region_split_bytes, ..self }
    }
}

/// Counters of the shard's batching (for metrics and benchmarks).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardStats {
    pub iterations: u64,
    pub proposals: u64,
    pub writes_proposed: u64,
    pub persist_batches: u64,
    pub region_writes_persisted: u64,
    /// Distinct regions in each persist batch, summed (÷ batches: regions per fsync).
    pub regions_persisted: u64,
    pub entries_applied: u64,
    pub snapshots_taken: u64,
    pub snapshots_sent: u64,
    pub snapshots_installed: u64,
    pub regions_created: u64,
    pub regions_removed: u64,
    pub splits_applied: u64,
    /// Size checks that found a region past the split size and a key to split it at.
    pub split_checks: u64,
    /// Vote requests kept for a split child not split off here yet (stepped once it is).
    pub early_votes_kept: u64,
    /// Peers removed because PD said they were no longer members (`stale.rs`).
    pub stale_peers_removed: u64,
    /// Tombstones PD's word let go, forgotten by the WAL (`tombstone.rs`).
    pub tombstones_collected: u64,
    /// Client writes refused because the WAL's disk is full (`Input::DiskFull`).
    pub writes_refused_disk_full: u64,
    /// Peers created for a candidate's vote request once PD named them (`vouched.rs`).
    pub peers_vouched: u64,
}
