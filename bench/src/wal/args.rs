//! The flags of `ringraft bench wal`, their defaults and their limits.
//!
//! One command, several modes: a plain run (group commit, or `--sync-each`),
//! `--compare` (both, interleaved), `--recovery` (how fast `Wal::open`
//! replays what was written), with `--baseline` and the disk probe as
//! references measured in the same run.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::units::{check_duration_range, check_range, format_duration, parse_bytes, parse_duration};

/// Most regions one benchmark drives (well under the WAL's own `REGIONS_MAX`).
pub const BENCH_REGIONS_MAX: usize = 16 << 10;
/// Most appends one region keeps in flight.
pub const INFLIGHT_MAX: usize = 1024;
/// Most appending tasks (regions × in flight) on the one executor.
pub const APPEND_TASKS_MAX: usize = 64 << 10;
/// Largest entry the benchmark writes.
pub const ENTRY_BYTES_MAX: usize = 1 << 20;
/// Shortest measured run: below it the timer and warm-up dominate.
pub const DURATION_MIN: Duration = Duration::from_millis(100);
/// Longest measured run.
pub const DURATION_MAX: Duration = Duration::from_secs(3600);
/// Longest warm-up.
pub const WARMUP_MAX: Duration = Duration::from_secs(60);
/// Highest open-loop rate (appends per second, all regions together).
pub const RATE_MAX: f64 = 10e6;
/// Most rounds of `--compare` and `--recovery`.
pub const ROUNDS_MAX: usize = 20;
/// Most 4 KiB probe writes before and after a run.
pub const PROBE_OPS_MAX: usize = 100_000;
/// Smallest and largest amount `--recovery` writes before reopening.
pub const RECOVERY_BYTES_MIN: u64 = 1 << 20;
pub const RECOVERY_BYTES_MAX: u64 = 64 << 30;

const _: () = assert!(BENCH_REGIONS_MAX <= wal::options::REGIONS_MAX);
const _: () = assert!(ENTRY_BYTES_MAX <= wal::format::ENTRY_DATA_BYTES_MAX);
const _: () = assert!(APPEND_TASKS_MAX >= BENCH_REGIONS_MAX);

/// `ringraft bench wal`: one shard's WAL, many regions appending at once.
#[derive(clap::Args, Clone, Debug)]
pub struct WalBenchArgs {
    /// Regions appending concurrently to the one WAL.
    #[arg(long, default_value_t = 64)]
    pub regions: usize,
    /// Data bytes in each entry (every append is one entry plus a HardState).
    #[arg(long, default_value_t = 128)]
    pub entry_bytes: usize,
    /// How long each run is measured ("10s", "500ms", "2m").
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Appending before the measurement starts, not counted.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Appends each region keeps in flight (each waits for durability before its next).
    #[arg(long, default_value_t = 1)]
    pub inflight: usize,
    /// Group commit off: one append, one write, one fdatasync at a time.
    #[arg(long)]
    pub sync_each: bool,
    /// Open loop: this many appends per second in all, whatever the log does,
    /// with latency counted from each append's intended start (a stall shows
    /// in the percentiles). Without it, each region keeps `--inflight` appends
    /// in flight (closed loop).
    #[arg(long, value_name = "APPENDS_PER_SEC", conflicts_with_all = ["sync_each", "compare", "recovery"])]
    pub rate: Option<f64>,
    /// Also write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Where to put the WAL: a fresh directory is made inside DIR and removed
    /// afterwards [default: the current directory, so the disk under test is
    /// the one you run from, not a tmpfs /tmp].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Keep the scratch directory (its path is printed) instead of removing
    /// it, e.g. to run `ringraft wal verify` on what `--recovery` wrote.
    #[arg(long)]
    pub keep: bool,
    /// WAL segment size ("64MiB", "1M", bytes).
    #[arg(long, default_value = "64MiB", value_parser = parse_bytes)]
    pub segment_bytes: u64,
    /// Also measure plain sequential O_DIRECT 1 MiB writes, one fdatasync per
    /// MiB (half before, half after the run) and report our MB/s as a share.
    #[arg(long, conflicts_with_all = ["compare", "recovery"])]
    pub baseline: bool,
    /// 4 KiB write+fdatasync probes into a written file before and after the
    /// runs, printed beside our latencies to expose disk slow spells (0: off).
    #[arg(long, default_value_t = 200)]
    pub probe_ops: usize,
    /// Interleave group-commit and --sync-each runs --rounds times; report the
    /// medians and their ratio.
    #[arg(long, conflicts_with_all = ["sync_each", "recovery"])]
    pub compare: bool,
    /// Rounds of --compare and --recovery.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Recovery speed: write --recovery-bytes of entries, then time `Wal::open`
    /// against a raw O_DIRECT read of the same segment files.
    #[arg(long, conflicts_with = "sync_each")]
    pub recovery: bool,
    /// How much --recovery writes before reopening ("256MiB").
    #[arg(long, default_value = "256MiB", value_parser = parse_bytes)]
    pub recovery_bytes: u64,
}

/// Parses an argument list into `WalBenchArgs` (clap needs a command around it).
#[derive(Parser)]
struct Standalone {
    #[command(flatten)]
    args: WalBenchArgs,
}

impl WalBenchArgs {
    /// What `ringraft bench` runs with no subcommand: the flag defaults, but
    /// a 3 s measurement, so it finishes in about 5 s.
    pub fn default_run() -> WalBenchArgs {
        let mut a = Standalone::parse_from(["ringraft-bench-wal"]).args;
        a.duration = Duration::from_secs(3);
        a
    }

    /// Checks every limit before anything touches the disk.
    pub fn validate(&self) -> Result<(), String> {
        let range = check_range;
        range("regions", self.regions, 1, BENCH_REGIONS_MAX)?;
        range("inflight", self.inflight, 1, INFLIGHT_MAX)?;
        range("entry-bytes", self.entry_bytes, 1, ENTRY_BYTES_MAX)?;
        range("rounds", self.rounds, 1, ROUNDS_MAX)?;
        range("probe-ops", self.probe_ops, 0, PROBE_OPS_MAX)?;
        if self.regions * self.inflight > APPEND_TASKS_MAX {
            return Err(format!(
                "--regions {} × --inflight {} = {} appending tasks, over APPEND_TASKS_MAX ({APPEND_TASKS_MAX})",
                self.regions,
                self.inflight,
                self.regions * self.inflight
            ));
        }
        check_duration_range("duration", self.duration, DURATION_MIN, DURATION_MAX)?;
        if let Some(rate) = self.rate {
            if !(1.0..=RATE_MAX).contains(&rate) {
                return Err(format!("--rate {rate} is out of range 1..={RATE_MAX} appends per second"));
            }
        }
        if self.warmup > WARMUP_MAX {
            return Err(format!("--warmup {} is over {}", format_duration(self.warmup), format_duration(WARMUP_MAX)));
        }
        if !(RECOVERY_BYTES_MIN..=RECOVERY_BYTES_MAX).contains(&self.recovery_bytes) {
            return Err(format!(
                "--recovery-bytes {} is out of range {RECOVERY_BYTES_MIN}..={RECOVERY_BYTES_MAX}",
                self.recovery_bytes
            ));
        }
        self.wal_options().validate().map_err(|e| format!("--segment-bytes {}: {e}", self.segment_bytes))?;
        Ok(())
    }

    /// The log's options: the defaults, with the batch limit shrunk to fit
    /// small segments (a batch must fit half a segment).
    pub fn wal_options(&self) -> wal::WalOptions {
        let defaults = wal::WalOptions::default();
        let half_segment = (self.segment_bytes / 2) as usize;
        let batch_bytes_max = defaults
            .batch_bytes_max
            .min(half_segment.saturating_sub(wal::format::BLOCK_BYTES))
            .max(wal::format::BLOCK_BYTES);
        wal::WalOptions { segment_bytes: self.segment_bytes, batch_bytes_max, ..defaults }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(argv: &[&str]) -> Result<WalBenchArgs, clap::Error> {
        Standalone::try_parse_from(std::iter::once("bench").chain(argv.iter().copied())).map(|s| s.args)
    }

    #[test]
    fn issue_command_line_parses() {
        let a =
            parse(&["--regions", "64", "--entry-bytes", "128", "--duration", "10s", "--inflight", "16", "--sync-each"])
                .unwrap();
        assert_eq!((a.regions, a.entry_bytes, a.inflight, a.sync_each), (64, 128, 16, true));
        assert_eq!(a.duration, Duration::from_secs(10));
        a.validate().unwrap();
    }

    #[test]
    fn default_run_is_short_and_valid() {
        let a = WalBenchArgs::default_run();
        a.validate().unwrap();
        assert!(a.duration + a.warmup <= Duration::from_secs(5));
        assert!(!a.compare && !a.recovery && !a.sync_each);
    }

    #[test]
    fn conflicting_modes_and_out_of_range_values_are_refused() {
        assert!(parse(&["--compare", "--sync-each"]).is_err());
        assert!(parse(&["--recovery", "--baseline"]).is_err());
        assert!(parse(&["--regions", "0"]).unwrap().validate().is_err());
        assert!(parse(&["--duration", "10ms"]).unwrap().validate().is_err());
        assert!(parse(&["--segment-bytes", "1000"]).unwrap().validate().is_err());
        assert!(parse(&["--rate", "1000", "--sync-each"]).is_err());
        assert!(parse(&["--rate", "0"]).unwrap().validate().is_err());
        assert!(parse(&["--rate", "NaN"]).unwrap().validate().is_err());
        assert!(parse(&["--rate", "50000"]).unwrap().validate().is_ok());
    }

    #[test]
    fn small_segments_get_a_batch_limit_that_fits() {
        let a = parse(&["--segment-bytes", "256K"]).unwrap();
        a.validate().unwrap();
        assert!(a.wal_options().batch_bytes_max <= 128 << 10);
    }
}
