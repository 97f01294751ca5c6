//! `ringraft bench transport`: how fast one shard's batched raft traffic
//! crosses loopback, measured against a plain TCP pump in the same run.
//!
//! Each round runs ours, then the raw pump writing buffers the size our
//! frames averaged in that round; medians over rounds are reported, and
//! the ratio of the two byte rates is the headline (docs/benchmarks.md).
//! MB is 10^6 bytes; "wire" bytes are whole frames (header, envelopes and
//! messages), what a socket carries.

mod args;
mod ours;
mod placement;
mod raw;

pub use args::TransportBenchArgs;

use serde::Serialize;

use crate::wal::report::median;

/// Share of the raw pump's byte rate the transport is built to reach.
pub const TARGET_RATIO_TO_RAW: f64 = 0.70;

/// One round's figures (or the per-figure medians of several).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Figures {
    pub messages_per_sec: f64,
    pub frames_per_sec: f64,
    pub messages_per_frame: f64,
    /// Frame bytes per second (what the socket carried).
    pub mb_per_sec: f64,
    /// Raft message bytes per second (envelopes excluded).
    pub message_mb_per_sec: f64,
    /// The raw pump, same round, same write size.
    pub raw_tcp_mb_per_sec: f64,
    pub raw_write_bytes: f64,
    pub ratio_to_raw: f64,
    /// Flush to decoded on the receiving shard, per frame.
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    /// Frames each loop iteration produced (= destinations when batching works).
    pub frames_per_iteration: f64,
    pub dropped_frames: f64,
}

#[derive(Serialize)]
struct Report<'a> {
    command: String,
    message_bytes: usize,
    regions: usize,
    destinations: usize,
    duration_s: f64,
    rounds: usize,
    target_ratio_to_raw: f64,
    #[serde(flatten)]
    median: &'a Figures,
    each_round: &'a [Figures],
}

pub fn run(args: TransportBenchArgs) -> Result<(), String> {
    args.validate()?;
    println!("{}", args.command());
    println!(
        "{} regions x {} B messages per iteration -> {} destination shard(s); sender and receiver on {}",
        args.regions,
        args.message_bytes,
        args.destinations,
        if placement::cpus() >= 2 { "CPUs 0 and 1" } else { "one CPU (unpinned)" }
    );
    let mut rounds = vec![];
    for round in 1..=args.rounds {
        let o = ours::run(&args)?;
        let secs = o.elapsed.as_secs_f64();
        if o.frames == 0 {
            return Err("no frame arrived during the measurement: is loopback usable?".into());
        }
        let write_bytes = (o.wire_bytes / o.frames).max(1) as usize;
        let r = raw::run(write_bytes, args.warmup, args.duration)?;
        let lat = o.latency.summary();
        let f = Figures {
            messages_per_sec: o.messages as f64 / secs,
            frames_per_sec: o.frames as f64 / secs,
            messages_per_frame: o.messages as f64 / o.frames as f64,
            mb_per_sec: o.wire_bytes as f64 / 1e6 / secs,
            message_mb_per_sec: o.message_bytes as f64 / 1e6 / secs,
            raw_tcp_mb_per_sec: r.mb_per_sec(),
            raw_write_bytes: r.write_bytes as f64,
            ratio_to_raw: o.wire_bytes as f64 / 1e6 / secs / r.mb_per_sec(),
            p50_us: lat.p50_us as f64,
            p99_us: lat.p99_us as f64,
            max_us: lat.max_us as f64,
            frames_per_iteration: o.frames_flushed as f64 / o.iterations.max(1) as f64,
            dropped_frames: o.dropped as f64,
        };
        println!(
            "round {round}: {:.0} msgs/s, {:.0} frames/s, {:.1} msgs/frame, {:.1} MB/s wire ({:.1} MB/s messages), \
             frame latency p50 {} / p99 {} / max {} us | raw TCP pump ({} B writes) {:.1} MB/s -> {:.1}%",
            f.messages_per_sec,
            f.frames_per_sec,
            f.messages_per_frame,
            f.mb_per_sec,
            f.message_mb_per_sec,
            lat.p50_us,
            lat.p99_us,
            lat.max_us,
            write_bytes,
            f.raw_tcp_mb_per_sec,
            f.ratio_to_raw * 100.0
        );
        rounds.push(f);
    }
    let m = |get: fn(&Figures) -> f64| median(rounds.iter().map(get));
    let med = Figures {
        messages_per_sec: m(|f| f.messages_per_sec),
        frames_per_sec: m(|f| f.frames_per_sec),
        messages_per_frame: m(|f| f.messages_per_frame),
        mb_per_sec: m(|f| f.mb_per_sec),
        message_mb_per_sec: m(|f| f.message_mb_per_sec),
        raw_tcp_mb_per_sec: m(|f| f.raw_tcp_mb_per_sec),
        raw_write_bytes: m(|f| f.raw_write_bytes),
        ratio_to_raw: m(|f| f.ratio_to_raw),
        p50_us: m(|f| f.p50_us),
        p99_us: m(|f| f.p99_us),
        max_us: m(|f| f.max_us),
        frames_per_iteration: m(|f| f.frames_per_iteration),
        dropped_frames: rounds.iter().map(|f| f.dropped_frames).sum(),
    };
    println!(
        "median of {}: {:.0} msgs/s, {:.0} frames/s, {:.1} msgs/frame, {:.1} MB/s wire vs raw TCP {:.1} MB/s = {:.1}% \
         (target >= {:.0}%: {}); frame latency p50 {:.0} / p99 {:.0} us; frames per iteration {:.2} ({} destination(s)); \
         dropped frames {}",
        args.rounds,
        med.messages_per_sec,
        med.frames_per_sec,
        med.messages_per_frame,
        med.mb_per_sec,
        med.raw_tcp_mb_per_sec,
        med.ratio_to_raw * 100.0,
        TARGET_RATIO_TO_RAW * 100.0,
        if med.ratio_to_raw >= TARGET_RATIO_TO_RAW { "met" } else { "NOT met" },
        med.p50_us,
        med.p99_us,
        med.frames_per_iteration,
        args.destinations,
        med.dropped_frames
    );
    if let Some(path) = &args.json {
        let report = Report {
            command: args.command(),
            message_bytes: args.message_bytes,
            regions: args.regions,
            destinations: args.destinations,
            duration_s: args.duration.as_secs_f64(),
            rounds: args.rounds,
            target_ratio_to_raw: TARGET_RATIO_TO_RAW,
            median: &med,
            each_round: &rounds,
        };
        let json = serde_json::to_string_pretty(&report).expect("figures serialize");
        std::fs::write(path, json + "\n").map_err(|e| format!("write {}: {e}", path.display()))?;
        println!("JSON written to {}", path.display());
    }
    Ok(())
}
