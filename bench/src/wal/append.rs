//! One timed append run against a real WAL: many regions of one shard
//! appending at once through `wal::GroupCommit`, each write waiting until it
//! is durable, as a raft region waits before it acknowledges.
//!
//! With `sync_each` a first-come-first-served gate lets a single append be
//! staged at a time, so every write+fdatasync carries exactly one append:
//! group commit off, on the same code path, so the two modes differ in
//! nothing else. (glommio's `Semaphore` is not fair: the task that releases
//! a permit takes it straight back, so one region would do all the work and
//! the latency figures would hide the queue.)
//!
//! Runs end by time or, for `--recovery`'s fill phase, by bytes written;
//! every loop also has a count or time bound.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::future::poll_fn;
use std::path::Path;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::timer::sleep;
use wal::disk::GlommioDisk;
use wal::{AppendError, Entry, GroupCommit, HardState, RegionId, RegionWrite, WalOptions, WalStats};

use crate::latency::{Latency, LatencySummary};

mod open_loop;

/// A region compacts its log every this many entries (to its durable index),
/// so purge can recycle segments and disk use stays bounded on long runs.
const COMPACT_INTERVAL_ENTRIES: u64 = 256;
/// Pause before retrying an append the log refused as `Busy`.
const BUSY_BACKOFF: Duration = Duration::from_micros(200);
/// Longest an append may keep being refused as `Busy` before the run fails.
const BUSY_WAIT_MAX: Duration = Duration::from_secs(30);
/// Longest the first segment may take to be created and synced.
const FIRST_SEGMENT_WAIT_MAX: Duration = Duration::from_secs(60);
/// Longest the appenders may take to finish what they have in flight after the end.
const DRAIN_WAIT_MAX: Duration = Duration::from_secs(60);
/// How often a run that ends by bytes checks how much was written.
const BYTES_POLL_INTERVAL: Duration = Duration::from_millis(5);
/// Most appends one task issues in a run (a bound beside the clock).
const APPENDS_PER_TASK_MAX: u64 = 1 << 40;

/// When a run stops measuring.
#[derive(Clone, Copy, Debug)]
pub enum Until {
    /// After this long.
    Elapsed(Duration),
    /// Once the log has written this many bytes, or after the time limit.
    DiskBytes { bytes: u64, time_max: Duration },
}

/// One run's setup.
#[derive(Clone, Debug)]
pub struct AppendConfig {
    pub regions: usize,
    pub inflight: usize,
    pub entry_bytes: usize,
    pub sync_each: bool,
    pub warmup: Duration,
    pub until: Until,
    pub options: WalOptions,
    /// Compact and let purge recycle segments (off when the data must stay
    /// for a recovery measurement).
    pub compact: bool,
    /// Open loop: this many appends per second in all, round-robin over the
    /// regions, whatever the log does; latency counts from each append's
    /// intended start, so a stall is not hidden (no coordinated omission).
    /// `None`: closed loop, `inflight` appends per region.
    pub rate_per_sec: Option<f64>,
}

/// What one run measured (the warm-up excluded).
#[derive(Clone, Debug)]
pub struct AppendResult {
    pub elapsed: Duration,
    /// Appends that became durable during the measurement.
    pub appends: u64,
    /// Entry data bytes of those appends.
    pub payload_bytes: u64,
    /// WAL stats accrued during the measurement.
    pub wal: WalStats,
    pub latency: LatencySummary,
    /// The log's write + fdatasync per flush, during the measurement.
    pub flush_latency: LatencySummary,
}

impl AppendResult {
    fn per_sec(&self, n: u64) -> f64 {
        n as f64 / self.elapsed.as_secs_f64()
    }
    pub fn appends_per_sec(&self) -> f64 {
        self.per_sec(self.appends)
    }
    /// Entry data, in MB (10^6 bytes) per second.
    pub fn mb_per_sec(&self) -> f64 {
        self.per_sec(self.payload_bytes) / 1e6
    }
    /// Everything the log wrote: record headers, HardStates, checkpoints, 4 KiB padding.
    pub fn disk_mb_per_sec(&self) -> f64 {
        self.per_sec(self.wal.bytes_written) / 1e6
    }
    pub fn fsyncs_per_sec(&self) -> f64 {
        self.per_sec(self.wal.flushes)
    }
    fn per_fsync(&self, n: u64) -> f64 {
        if self.wal.flushes == 0 {
            0.0
        } else {
            n as f64 / self.wal.flushes as f64
        }
    }
    pub fn regions_per_fsync(&self) -> f64 {
        self.per_fsync(self.wal.regions_flushed)
    }
    pub fn appends_per_fsync(&self) -> f64 {
        self.per_fsync(self.wal.writes_flushed)
    }
    pub fn bytes_per_fsync(&self) -> f64 {
        self.per_fsync(self.wal.bytes_written)
    }
}

/// Lets one holder through at a time, in arrival order.
#[derive(Default)]
struct FifoGate {
    next_turn: Cell<u64>,
    serving: Cell<u64>,
    waiting: RefCell<BTreeMap<u64, Waker>>,
}

/// Holding the gate; dropping it lets the next in line through.
struct GateTurn<'a>(&'a FifoGate);

impl FifoGate {
    async fn enter(&self) -> GateTurn<'_> {
        let turn = self.next_turn.replace(self.next_turn.get() + 1);
        poll_fn(|cx| {
            if self.serving.get() == turn {
                Poll::Ready(())
            } else {
                self.waiting.borrow_mut().insert(turn, cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        GateTurn(self)
    }
}

impl Drop for GateTurn<'_> {
    fn drop(&mut self) {
        let gate = self.0;
        gate.serving.set(gate.serving.get() + 1);
        if let Some(w) = gate.waiting.borrow_mut().remove(&gate.serving.get()) {
            w.wake();
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Warmup,
    Measure,
    Stop,
}

#[derive(Default)]
struct RegionCounters {
    /// Last index staged (indexes are handed out at append time, so the
    /// appends of one region are staged in index order).
    last_index: Cell<u64>,
    /// Highest index known durable.
    durable_index: Cell<u64>,
}

pub(super) struct Shared {
    gc: GroupCommit<GlommioDisk>,
    cfg: AppendConfig,
    phase: Cell<Phase>,
    /// Held from staging to durability in `sync_each` mode.
    gate: Option<FifoGate>,
    data: Bytes,
    regions: Vec<RegionCounters>,
    latency: RefCell<Latency>,
    appends: Cell<u64>,
}

pub(super) fn region_id(slot: usize) -> RegionId {
    slot as RegionId + 1
}

/// Stages the next entry of a region; retries while the log is `Busy`.
pub(super) async fn stage_next(s: &Shared, slot: usize) -> Result<(wal::Ticket, u64), String> {
    let region = region_id(slot);
    let counters = &s.regions[slot];
    let busy_since = Instant::now();
    loop {
        let index = counters.last_index.get() + 1;
        let durable = counters.durable_index.get();
        let compact_to = (s.cfg.compact && index % COMPACT_INTERVAL_ENTRIES == 0 && durable > 0).then_some(durable + 1);
        let write = RegionWrite {
            entries: vec![Entry { index, term: 1, entry_type: 0, data: s.data.clone() }],
            hard_state: Some(HardState { term: 1, vote: 1, commit: durable }),
            compact_to,
            ..Default::default()
        };
        match s.gc.append(region, write) {
            Ok(ticket) => {
                counters.last_index.set(index);
                return Ok((ticket, index));
            }
            Err(AppendError::Busy { .. }) if busy_since.elapsed() < BUSY_WAIT_MAX => sleep(BUSY_BACKOFF).await,
            Err(e) => return Err(format!("append to region {region} at index {index}: {e}")),
        }
    }
}

/// One appender: stage, wait until durable, record, again.
async fn appender(s: Rc<Shared>, slot: usize) -> Result<(), String> {
    for _ in 0..APPENDS_PER_TASK_MAX {
        if s.phase.get() == Phase::Stop {
            break;
        }
        // Latency runs from the moment the region wants to write: in
        // sync-each mode that includes waiting for the gate.
        let start = Instant::now();
        let _turn = match &s.gate {
            Some(g) => Some(g.enter().await),
            None => None,
        };
        if s.phase.get() == Phase::Stop {
            break;
        }
        let (ticket, index) = stage_next(&s, slot).await?;
        s.gc.wait(ticket).await.map_err(|e| e.to_string())?;
        let took = start.elapsed();
        let counters = &s.regions[slot];
        counters.durable_index.set(counters.durable_index.get().max(index));
        s.gc.wal().release_cache(region_id(slot), index);
        if s.phase.get() == Phase::Measure {
            s.latency.borrow_mut().record(took);
            s.appends.set(s.appends.get() + 1);
        }
    }
    Ok(())
}

fn stats_delta(a: &WalStats, b: &WalStats) -> WalStats {
    WalStats {
        flushes: b.flushes - a.flushes,
        bytes_written: b.bytes_written - a.bytes_written,
        writes_flushed: b.writes_flushed - a.writes_flushed,
        regions_flushed: b.regions_flushed - a.regions_flushed,
        segment_rolls: b.segment_rolls - a.segment_rolls,
        roll_stalls: b.roll_stalls - a.roll_stalls,
        seals: b.seals - a.seals,
        segments_recycled: b.segments_recycled - a.segments_recycled,
        segments_removed: b.segments_removed - a.segments_removed,
        spares_created: b.spares_created - a.spares_created,
        spares_recycled: b.spares_recycled - a.spares_recycled,
        spare_failures: b.spare_failures - a.spare_failures,
    }
}

/// Runs `fut` for at most `limit`; `None` if it did not finish.
async fn within<T>(limit: Duration, fut: impl std::future::Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(fut.await) }, async {
        sleep(limit).await;
        None
    })
    .await
}

/// Opens (or creates) the WAL in `dir`, runs the appenders, and returns what
/// was measured. The log is stopped and closed on return; `dir` is kept.
///
/// Must run inside a glommio executor whose first DMA file was a
/// `GlommioDisk`'s (see `GlommioDisk::open`).
pub async fn run_appends(dir: &Path, cfg: AppendConfig) -> Result<AppendResult, String> {
    let disk = GlommioDisk::open(dir).await.map_err(|e| format!("open WAL directory: {e}"))?;
    let (log, _report) = wal::Wal::open(disk, cfg.options.clone()).await.map_err(|e| format!("open WAL: {e}"))?;
    let gc = GroupCommit::new(log);
    let writer = {
        let gc = gc.clone();
        glommio::spawn_local(async move { gc.run().await })
    };
    // (a shard's raft tick drives its group commit's retries of a failed
    // spare segment; here a timer does; dropped, and so cancelled, on return)
    let _ticker = {
        let gc = gc.clone();
        glommio::spawn_local(async move {
            loop {
                sleep(Duration::from_millis(100)).await;
                gc.tick();
            }
        })
    };
    let s = Rc::new(Shared {
        gc: gc.clone(),
        phase: Cell::new(Phase::Warmup),
        gate: cfg.sync_each.then(FifoGate::default),
        data: Bytes::from((0..cfg.entry_bytes).map(|i| (i * 31 + 7) as u8).collect::<Vec<u8>>()),
        regions: (0..cfg.regions).map(|_| RegionCounters::default()).collect(),
        latency: RefCell::new(Latency::default()),
        appends: Cell::new(0),
        cfg,
    });
    let outcome = measure(&s).await;

    // Stop whatever happened, so no task outlives the run.
    s.phase.set(Phase::Stop);
    gc.stop();
    let stopped = within(DRAIN_WAIT_MAX, writer).await;
    let result = outcome?;
    match stopped {
        None => return Err(format!("the WAL writer did not stop within {DRAIN_WAIT_MAX:?}")),
        Some(Err(e)) => return Err(format!("WAL writer: {e}")),
        Some(Ok(())) => {}
    }
    Ok(result)
}

async fn measure(s: &Rc<Shared>) -> Result<AppendResult, String> {
    // The first append makes the log create, zero-fill and sync its first
    // segment; then it prepares a spare. Neither belongs in the measurement.
    let (ticket, index) = stage_next(s, 0).await?;
    within(FIRST_SEGMENT_WAIT_MAX, s.gc.wait(ticket))
        .await
        .ok_or("the first WAL segment was not ready within a minute")?
        .map_err(|e| e.to_string())?;
    s.regions[0].durable_index.set(index);
    let spare_by = Instant::now() + FIRST_SEGMENT_WAIT_MAX;
    while !s.gc.wal().has_spare() && Instant::now() < spare_by {
        sleep(Duration::from_millis(1)).await;
    }

    let tasks: Vec<_> = match s.cfg.rate_per_sec {
        None => (0..s.cfg.regions * s.cfg.inflight)
            .map(|k| glommio::spawn_local(appender(s.clone(), k % s.cfg.regions)))
            .collect(),
        Some(rate) => open_loop::spawn(s.clone(), rate),
    };
    let failed = Rc::new(RefCell::new(None::<String>));
    // Watch the tasks so a failure ends the run at once instead of at the deadline.
    let joined = {
        let failed = failed.clone();
        let s = s.clone();
        glommio::spawn_local(async move {
            for t in tasks {
                if let Err(e) = t.await {
                    failed.borrow_mut().get_or_insert(e);
                    s.phase.set(Phase::Stop);
                }
            }
        })
    };

    sleep(s.cfg.warmup).await;
    let before = s.gc.wal().stats().clone();
    s.gc.wal().reset_flush_latency();
    let start = Instant::now();
    if s.phase.get() == Phase::Warmup {
        s.phase.set(Phase::Measure);
    }
    match s.cfg.until {
        Until::Elapsed(d) => {
            let end = start + d;
            while Instant::now() < end && s.phase.get() == Phase::Measure {
                sleep((end - Instant::now()).min(Duration::from_millis(50))).await;
            }
        }
        Until::DiskBytes { bytes, time_max } => {
            while s.gc.wal().stats().bytes_written - before.bytes_written < bytes
                && start.elapsed() < time_max
                && s.phase.get() == Phase::Measure
            {
                sleep(BYTES_POLL_INTERVAL).await;
            }
        }
    }
    let measuring = s.phase.replace(Phase::Stop) == Phase::Measure;
    let elapsed = start.elapsed();
    let after = s.gc.wal().stats().clone();
    let flush_latency = {
        let w = s.gc.wal();
        let h = w.flush_latency_us();
        LatencySummary {
            count: h.len(),
            p50_us: h.value_at_quantile(0.5),
            p90_us: h.value_at_quantile(0.9),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
        }
    };

    if within(DRAIN_WAIT_MAX, joined).await.is_none() {
        return Err(format!("appenders did not finish within {DRAIN_WAIT_MAX:?} of the end of the run"));
    }
    if let Some(e) = failed.borrow_mut().take() {
        return Err(e);
    }
    assert!(measuring, "the run ended early without an error");
    let appends = s.appends.get();
    Ok(AppendResult {
        elapsed,
        appends,
        payload_bytes: appends * s.cfg.entry_bytes as u64,
        wal: stats_delta(&before, &after),
        latency: s.latency.borrow().summary(),
        flush_latency,
    })
}
