//! `--recovery`: how fast a shard comes back. Fill a WAL with
//! `--recovery-bytes` of entries (no compaction, so all of it must be
//! replayed), close it, then time `Wal::open` — read every segment, verify
//! every checksum, rebuild every region's index — against a raw O_DIRECT read
//! of the same files. Rounds alternate the two and the medians are reported.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;
use wal::disk::GlommioDisk;

use super::append::{run_appends, AppendConfig, Until};
use super::args::WalBenchArgs;
use super::raw::sequential_read;
use super::report::median;

/// Longest the fill phase may take, however much was asked for.
const FILL_TIME_MAX: Duration = Duration::from_secs(600);

/// One round: our open and the raw read of the same files.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct RecoveryRound {
    pub open_ms: f64,
    pub open_mb_per_sec: f64,
    pub raw_read_ms: f64,
    pub raw_read_mb_per_sec: f64,
}

/// What `--recovery` measured.
#[derive(Clone, Debug, Serialize)]
pub struct RecoveryResult {
    /// Bytes of the segment files both read (all `*.wal` files, whole).
    pub segment_file_bytes: u64,
    pub segments: usize,
    pub records: u64,
    pub entries_replayed: u64,
    pub regions: usize,
    pub recovery_mb_per_sec: f64,
    pub raw_read_mb_per_sec: f64,
    /// Ours over raw (medians); the target is at least 0.5.
    pub ratio_to_raw: f64,
    pub rounds: Vec<RecoveryRound>,
}

pub async fn run_recovery(args: &WalBenchArgs, root: &Path) -> Result<RecoveryResult, String> {
    let dir = root.join("recovery-wal");
    let fill = run_appends(
        &dir,
        AppendConfig {
            regions: args.regions,
            inflight: args.inflight,
            entry_bytes: args.entry_bytes,
            sync_each: false,
            warmup: Duration::ZERO,
            until: Until::DiskBytes { bytes: args.recovery_bytes, time_max: FILL_TIME_MAX },
            options: args.wal_options(),
            compact: false,
            rate_per_sec: None,
        },
    )
    .await?;
    println!(
        "filled {:.1} MB in {:.2}s ({:.0} appends/s); reopening {} times",
        fill.wal.bytes_written as f64 / 1e6,
        fill.elapsed.as_secs_f64(),
        fill.appends_per_sec(),
        args.rounds
    );

    let mut rounds = vec![];
    let mut report = None;
    for round in 0..args.rounds {
        let disk = GlommioDisk::open(&dir).await.map_err(|e| format!("open WAL directory: {e}"))?;
        let start = Instant::now();
        let (log, r) = wal::Wal::open(disk, args.wal_options()).await.map_err(|e| format!("recover WAL: {e}"))?;
        let open = start.elapsed();
        assert!(r.torn_tail.is_none() && r.dropped.is_empty(), "a cleanly closed WAL recovered with damage: {r}");
        drop(log);
        let raw = sequential_read(&dir).await?;
        let mb = |d: Duration| raw.bytes as f64 / d.as_secs_f64().max(1e-9) / 1e6;
        let rr = RecoveryRound {
            open_ms: open.as_secs_f64() * 1e3,
            open_mb_per_sec: mb(open),
            raw_read_ms: raw.elapsed.as_secs_f64() * 1e3,
            raw_read_mb_per_sec: mb(raw.elapsed),
        };
        println!(
            "round {}: Wal::open {:.1} ms ({:.0} MB/s), raw read {:.1} ms ({:.0} MB/s) of {} files, {:.1} MB",
            round + 1,
            rr.open_ms,
            rr.open_mb_per_sec,
            rr.raw_read_ms,
            rr.raw_read_mb_per_sec,
            raw.files,
            raw.bytes as f64 / 1e6
        );
        rounds.push(rr);
        report = Some((r, raw));
    }
    let (r, raw) = report.expect("at least one round");
    let recovery_mb_per_sec = median(rounds.iter().map(|r| r.open_mb_per_sec));
    let raw_read_mb_per_sec = median(rounds.iter().map(|r| r.raw_read_mb_per_sec));
    Ok(RecoveryResult {
        segment_file_bytes: raw.bytes,
        segments: r.segments,
        records: r.records,
        entries_replayed: r.entries_replayed,
        regions: r.regions,
        recovery_mb_per_sec,
        raw_read_mb_per_sec,
        ratio_to_raw: recovery_mb_per_sec / raw_read_mb_per_sec,
        rounds,
    })
}
