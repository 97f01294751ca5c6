//! `ringraft chaos`: real processes under a nemesis, every client
//! operation recorded and the history checked (`bench::chaos`).

use std::path::PathBuf;
use std::time::Duration;

use bench::chaos::{self, ChaosOptions, ChaosReport};

/// The longest run (a bound, as on every loop): a soak is many runs.
const CHAOS_DURATION_MAX: Duration = Duration::from_secs(24 * 3600);

#[derive(clap::Args)]
pub struct ChaosArgs {
    /// How long the clients and the nemesis run (then every store restarts,
    /// every key is read and the history checked: ≈30 s more).
    #[arg(long, default_value = "60s", value_parser = super::parse_duration)]
    duration: Duration,
    /// Seeds the nemesis's schedule and the clients' operations (the
    /// processes' own timing still varies from run to run). Default: drawn
    /// from the clock and printed.
    #[arg(long)]
    seed: Option<u64>,
    /// Stores (3 to 5; from 4 on, PD can move replicas between them).
    #[arg(long, default_value_t = 4)]
    stores: u64,
    /// Client threads, each with one operation in flight.
    #[arg(long, default_value_t = 6)]
    clients: u64,
    /// Key slots; each key serves 256 operations, then its slot moves on to a new key.
    #[arg(long, default_value_t = 32)]
    keys: usize,
    /// Regions PD lays out at the start (the run splits them further).
    #[arg(long, default_value_t = 8)]
    initial_regions: u64,
    /// Mean time between crashes (kill -9 of a store, or PD one time in eight).
    #[arg(long, default_value = "5s", value_parser = super::parse_duration)]
    kill_interval: Duration,
    /// Mean time between disruptions (pauses, partitions, slow disks; one at a time).
    #[arg(long, default_value = "3s", value_parser = super::parse_duration)]
    fault_interval: Duration,
    /// Mean time between PD operations (splits, moves, leader transfers).
    #[arg(long, default_value = "2s", value_parser = super::parse_duration)]
    op_interval: Duration,
    /// Keep the cluster's data, logs and history here (a new or empty
    /// directory). Default: a temporary directory, removed after a passing
    /// run (unless --keep) and kept, named in the output, after a failing one.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Keep the run's directory even when it passes.
    #[arg(long)]
    keep: bool,
    /// Write the history (a JSON line per operation, docs/history-format.md)
    /// here instead of `history.jsonl` in the run's directory.
    #[arg(long, value_name = "FILE")]
    history: Option<PathBuf>,
    /// Also write the summary as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// First port of the cluster (see `ringraft local --help`).
    #[arg(long, default_value_t = 24160)]
    base_port: u16,
}

/// Runs it; whether it passed.
pub fn chaos(args: ChaosArgs) -> Result<bool, String> {
    if args.duration > CHAOS_DURATION_MAX {
        return Err(format!("--duration: at most {}h (a soak is many runs)", CHAOS_DURATION_MAX.as_secs() / 3600));
    }
    let seed = args.seed.unwrap_or_else(|| {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        t.as_secs() % 1_000_000
    });
    let opts = ChaosOptions {
        seed,
        duration: args.duration,
        stores: args.stores,
        clients: args.clients,
        key_slots: args.keys,
        initial_regions: args.initial_regions,
        kill_interval: args.kill_interval,
        fault_interval: args.fault_interval,
        op_interval: args.op_interval,
        dir: args.dir,
        keep: args.keep,
        history: args.history,
        base_port: args.base_port,
    };
    println!(
        "chaos: seed {seed}, {} stores, {} clients, {:?}; replay the schedule with --seed {seed}",
        opts.stores, opts.clients, opts.duration
    );
    let report = chaos::run(&opts)?;
    print_summary(&report);
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report.to_json()).expect("a report serializes");
        std::fs::write(path, text + "\n").map_err(|e| format!("write {}: {e}", path.display()))?;
    }
    Ok(report.passed())
}

fn print_summary(r: &ChaosReport) {
    println!("operations: {} ({} ok, {} failed, {} unknown) on {} keys", r.ops, r.ok, r.fail, r.unknown, r.keys);
    let faults: Vec<String> = r.fault_counts().iter().map(|(k, n)| format!("{k} {n}")).collect();
    println!("faults: {} ({} PD operations refused)", faults.join(", "), r.operations_refused);
    match (r.recovery_ms(50.0), r.recovery_ms(99.0)) {
        (Some(p50), Some(p99)) => {
            println!("serving again after a fault: p50 {p50:.0} ms, p99 {p99:.0} ms ({} faults)", r.recovery_us.len())
        }
        _ => println!("serving again after a fault: no fault ended with clients running"),
    }
    if !r.nemesis_errors.is_empty() {
        println!("nemesis calls that failed: {} (first: {})", r.nemesis_errors.len(), r.nemesis_errors[0]);
    }
    for a in &r.judgement.anomalies {
        println!("NOT LINEARIZABLE: key {:?}: {}", String::from_utf8_lossy(&a.key), a.explanation);
    }
    for lost in &r.judgement.acknowledged_lost {
        println!("ACKNOWLEDGED WRITE LOST: {lost}");
    }
    if let Some(c) = &r.crashed {
        println!("A PROCESS FAILED: {c}");
    }
    if r.unread > 0 {
        println!("UNREAD: {} keys could not be read after every store restarted", r.unread);
    }
    if r.ok == 0 {
        println!("NOTHING CHECKED: no operation succeeded");
    }
    println!(
        "anomalies {}, acknowledged writes lost {}, undecided keys {}",
        r.judgement.anomalies.len(),
        r.judgement.acknowledged_lost.len(),
        r.judgement.undecided.len()
    );
    let verdict = if r.passed() { "PASS" } else { "FAIL" };
    match r.kept {
        true => println!("{verdict}: history {}, logs and data in {}", r.history.display(), r.dir.display()),
        false => println!("{verdict} (the run's directory was removed; --keep keeps it)"),
    }
}
