//! The flags of `ringraft bench transport`, their defaults and their limits.

use std::path::PathBuf;
use std::time::Duration;

use crate::units::{check_duration_range, check_range, format_duration, parse_duration};

/// Most regions sending each iteration.
pub const BENCH_REGIONS_MAX: usize = 100_000;
/// Most destination shards (each its own endpoint on the receiving side).
pub const DESTINATIONS_MAX: usize = 64;
/// Smallest message: it carries its frame's send time in its first 8 bytes.
pub const MESSAGE_BYTES_MIN: usize = 8;
/// Largest message the benchmark sends.
pub const MESSAGE_BYTES_MAX: usize = 1 << 20;
pub const DURATION_MIN: Duration = Duration::from_millis(100);
pub const DURATION_MAX: Duration = Duration::from_secs(3600);
pub const WARMUP_MAX: Duration = Duration::from_secs(60);
pub const ROUNDS_MAX: usize = 20;

const _: () = assert!(MESSAGE_BYTES_MAX <= transport::envelope::MESSAGE_BYTES_MAX);

/// `ringraft bench transport`: one shard's endpoint sending raft-sized
/// messages to another store over loopback, against a plain TCP pump.
#[derive(clap::Args, Clone, Debug)]
pub struct TransportBenchArgs {
    /// Bytes of each raft message (the envelope comes on top: region, epoch,
    /// peers and two 16-byte range keys).
    #[arg(long, default_value_t = 128)]
    pub message_bytes: usize,
    /// Regions sending one message each per loop iteration; each iteration is
    /// flushed as one frame per destination.
    #[arg(long, default_value_t = 256)]
    pub regions: usize,
    /// Destination shards of the receiving store; regions are spread over them.
    #[arg(long, default_value_t = 1)]
    pub destinations: usize,
    /// How long each run is measured ("10s", "500ms").
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Sending before the measurement starts, not counted.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Rounds, each one run of ours then one of the raw TCP pump; medians are reported.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Also write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

impl TransportBenchArgs {
    pub fn validate(&self) -> Result<(), String> {
        let range = check_range;
        range("message-bytes", self.message_bytes, MESSAGE_BYTES_MIN, MESSAGE_BYTES_MAX)?;
        range("regions", self.regions, 1, BENCH_REGIONS_MAX)?;
        range("destinations", self.destinations, 1, DESTINATIONS_MAX)?;
        range("rounds", self.rounds, 1, ROUNDS_MAX)?;
        if self.destinations > self.regions {
            return Err(format!(
                "--destinations {} is more than --regions {}: every destination needs a region",
                self.destinations, self.regions
            ));
        }
        check_duration_range("duration", self.duration, DURATION_MIN, DURATION_MAX)?;
        if self.warmup > WARMUP_MAX {
            return Err(format!("--warmup {} is over {}", format_duration(self.warmup), format_duration(WARMUP_MAX)));
        }
        Ok(())
    }

    /// The command line that reproduces this run (printed with the results).
    pub fn command(&self) -> String {
        format!(
            "ringraft bench transport --message-bytes {} --regions {} --destinations {} --duration {} --warmup {} --rounds {}",
            self.message_bytes,
            self.regions,
            self.destinations,
            format_duration(self.duration),
            format_duration(self.warmup),
            self.rounds
        )
    }
}
