//! Store metrics in Prometheus text format on `--status-addr` (`GET
//! /metrics`). Each shard publishes its counters into atomics once per loop
//! iteration; a small HTTP thread renders them on request. Ratios
//! (writes per entry, regions per fsync, messages per frame) are for the
//! scraper to derive from the counters.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

pub use transport::status::StatusServer;

/// One shard's published figures.
#[derive(Default)]
pub struct ShardMetrics {
    pub regions: AtomicU64,
    pub leaders: AtomicU64,
    /// Regions fenced on this shard (a committed entry that does not decode).
    pub regions_fenced: AtomicU64,
    /// Regions that may not vote until a leader caught them up (the WAL lost records).
    pub regions_catching_up: AtomicU64,
    pub proposals: AtomicU64,
    pub writes_proposed: AtomicU64,
    pub persist_batches: AtomicU64,
    pub region_writes_persisted: AtomicU64,
    pub entries_applied: AtomicU64,
    pub memory_bytes: AtomicU64,
    pub raft_frames_sent: AtomicU64,
    pub raft_messages_sent: AtomicU64,
    pub raft_frames_dropped: AtomicU64,
    pub fsync_latency_us_p50: AtomicU64,
    pub fsync_latency_us_p99: AtomicU64,
    pub client_requests: AtomicU64,
    /// CPU time of the shard's thread; divided by writes it is the CPU cost per write.
    pub cpu_us: AtomicU64,
    /// Committed entries not yet applied, over all regions.
    pub apply_lag_entries: AtomicU64,
    pub snapshots_taken: AtomicU64,
    pub snapshots_sent: AtomicU64,
    pub snapshots_installed: AtomicU64,
    pub wal_segments_purged: AtomicU64,
    /// Spare segments made by zero-filling a new file, and by reusing a purged one.
    pub wal_spares_created: AtomicU64,
    pub wal_spares_recycled: AtomicU64,
    /// WAL flushes that carried no write: each acknowledged the record before.
    pub wal_seals: AtomicU64,
    /// Loop iterations (each steps the shard once with what arrived).
    pub iterations: AtomicU64,
    /// The longest loop iteration since the store started (stepping the
    /// shard and carrying out its outputs), in microseconds.
    pub iteration_us_max: AtomicU64,
    /// Splits applied on this shard's replicas (leaders and followers).
    pub splits_applied: AtomicU64,
    /// Splits this shard's leaders proposed and saw applied, and the
    /// longest of them from proposal to applied, in microseconds.
    pub splits_led: AtomicU64,
    pub split_us_max: AtomicU64,
    /// 1 while the WAL waits for disk space to start a new segment.
    pub disk_full: AtomicU64,
    pub writes_refused_disk_full: AtomicU64,
    /// Spare WAL segments that could not be prepared (a full disk, most often).
    pub wal_spare_failures: AtomicU64,
}

/// The store's shards, by index.
pub type StoreMetrics = Arc<Vec<Arc<ShardMetrics>>>;

/// A metric's name, type, help text, and where a shard keeps it.
type Metric = (&'static str, &'static str, &'static str, fn(&ShardMetrics) -> &AtomicU64);

/// Renders every shard's figures.
pub fn render(store_id: u64, shards: &[Arc<ShardMetrics>]) -> String {
    let mut out = String::new();
    let metrics: [Metric; 33] = [
        ("ringraft_regions", "gauge", "regions hosted", |m| &m.regions),
        ("ringraft_leaders", "gauge", "regions led", |m| &m.leaders),
        ("ringraft_regions_fenced", "gauge", "regions fenced on this replica: a committed entry did not decode", |m| {
            &m.regions_fenced
        }),
        (
            "ringraft_regions_catching_up",
            "gauge",
            "regions that neither vote nor campaign until a leader caught them up: the WAL lost records",
            |m| &m.regions_catching_up,
        ),
        ("ringraft_proposals_total", "counter", "raft proposals (one entry each)", |m| &m.proposals),
        ("ringraft_writes_proposed_total", "counter", "client writes carried by those proposals", |m| {
            &m.writes_proposed
        }),
        ("ringraft_fsyncs_total", "counter", "persist batches (one WAL write + fdatasync each)", |m| {
            &m.persist_batches
        }),
        ("ringraft_region_writes_persisted_total", "counter", "region writes in those batches", |m| {
            &m.region_writes_persisted
        }),
        ("ringraft_entries_applied_total", "counter", "raft entries applied", |m| &m.entries_applied),
        ("ringraft_memory_bytes", "gauge", "memory held by region logs and state", |m| &m.memory_bytes),
        ("ringraft_raft_frames_sent_total", "counter", "peer frames written", |m| &m.raft_frames_sent),
        ("ringraft_raft_messages_sent_total", "counter", "raft messages in those frames", |m| &m.raft_messages_sent),
        ("ringraft_raft_frames_dropped_total", "counter", "peer frames dropped (unreachable)", |m| {
            &m.raft_frames_dropped
        }),
        ("ringraft_fsync_latency_us_p50", "gauge", "WAL write+fdatasync latency, median", |m| &m.fsync_latency_us_p50),
        ("ringraft_fsync_latency_us_p99", "gauge", "WAL write+fdatasync latency, 99th percentile", |m| {
            &m.fsync_latency_us_p99
        }),
        ("ringraft_client_requests_total", "counter", "client requests received", |m| &m.client_requests),
        (
            "ringraft_shard_cpu_us_total",
            "counter",
            "CPU time of the shard's thread (per write: / writes proposed)",
            |m| &m.cpu_us,
        ),
        ("ringraft_apply_lag_entries", "gauge", "committed entries not yet applied", |m| &m.apply_lag_entries),
        ("ringraft_snapshots_taken_total", "counter", "snapshots written and recorded (log compacted)", |m| {
            &m.snapshots_taken
        }),
        ("ringraft_snapshots_sent_total", "counter", "snapshots sent to followers behind the log", |m| {
            &m.snapshots_sent
        }),
        ("ringraft_snapshots_installed_total", "counter", "snapshots received from leaders and installed", |m| {
            &m.snapshots_installed
        }),
        ("ringraft_wal_segments_purged_total", "counter", "WAL segments recycled or removed", |m| {
            &m.wal_segments_purged
        }),
        (
            "ringraft_wal_spares_created_total",
            "counter",
            "WAL segments made by zero-filling a new file (a write and an fdatasync per MiB)",
            |m| &m.wal_spares_created,
        ),
        ("ringraft_wal_spares_recycled_total", "counter", "WAL segments made by reusing a purged one", |m| {
            &m.wal_spares_recycled
        }),
        (
            "ringraft_wal_seals_total",
            "counter",
            "WAL flushes with no write of their own: each acknowledged the record before it (an idle log's last write)",
            |m| &m.wal_seals,
        ),
        (
            "ringraft_loop_iterations_total",
            "counter",
            "shard loop iterations (writes per iteration: / writes proposed)",
            |m| &m.iterations,
        ),
        ("ringraft_loop_iteration_us_max", "gauge", "the longest shard loop iteration since the start", |m| {
            &m.iteration_us_max
        }),
        ("ringraft_splits_applied_total", "counter", "region splits applied on this shard's replicas", |m| {
            &m.splits_applied
        }),
        ("ringraft_splits_led_total", "counter", "splits this shard's leaders proposed and applied", |m| &m.splits_led),
        ("ringraft_split_us_max", "gauge", "the longest of those splits, from proposal to applied", |m| {
            &m.split_us_max
        }),
        (
            "ringraft_disk_full",
            "gauge",
            "1 while the WAL cannot start a new segment for lack of disk space (writes other than deletes refused)",
            |m| &m.disk_full,
        ),
        ("ringraft_writes_refused_disk_full_total", "counter", "client writes refused: the disk is full", |m| {
            &m.writes_refused_disk_full
        }),
        (
            "ringraft_wal_spare_failures_total",
            "counter",
            "WAL segments that could not be prepared (each tried again after a backoff)",
            |m| &m.wal_spare_failures,
        ),
    ];
    for (name, kind, help, get) in metrics {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
        for (i, m) in shards.iter().enumerate() {
            out.push_str(&format!("{name}{{store=\"{store_id}\",shard=\"{i}\"}} {}\n", get(m).load(Relaxed)));
        }
    }
    // (the process's, not a shard's: the honest CPU figure per write, which
    // work moved off the shard threads — to io_uring's kernel workers, the
    // transport, other threads — does not hide)
    let name = "ringraft_process_cpu_us_total";
    out.push_str(&format!(
        "# HELP {name} CPU time of the store process, every thread, user and system (per write: / writes proposed)\n\
         # TYPE {name} counter\n{name}{{store=\"{store_id}\"}} {}\n",
        process_cpu_us()
    ));
    out
}

/// User and system CPU time of this process, all its threads (io_uring's
/// workers included: they are threads of the process), in µs.
fn process_cpu_us() -> u64 {
    cpu_us(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// CPU time on one of the kernel's CPU-time clocks (the calling thread's,
/// or the process's), in µs; 0 if the clock cannot be read.
pub(crate) fn cpu_us(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec we own
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// Serves the store's metrics on `addr` (`GET /metrics`) until stopped,
/// and with `fault_injection` the faults of `runtime::fault_control`
/// (`/faults`).
pub fn serve(
    addr: SocketAddr,
    store_id: u64,
    shards: StoreMetrics,
    fault_injection: bool,
) -> std::io::Result<StatusServer> {
    use transport::status::StatusReply;
    transport::status::serve(addr, format!("store{store_id}-status"), move |method, target| {
        if let Some(reply) = crate::runtime::fault_control::handle(fault_injection, method, target) {
            return reply;
        }
        match (method, target) {
            ("GET", "/metrics") => StatusReply::ok(render(store_id, &shards)),
            _ => StatusReply::not_found("try GET /metrics\n"),
        }
    })
}
