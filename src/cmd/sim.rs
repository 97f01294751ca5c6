//! `ringraft sim`: a campaign of the deterministic simulator over many seeds.
//! Each seed draws its own faults (`engine::sim::campaign::Profile::draw`),
//! runs the chaos workload and checks the run; a seed that fails — a check,
//! or a panic inside the engine — is printed with the command that replays
//! it exactly. Seeds run on `--jobs` threads, each simulation on one.

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use engine::sim::campaign::{self, SeedReport};

/// Most seeds one campaign runs (a bound, as on every loop; at ≈10 seeds a
/// second per core, a day's worth).
pub const CAMPAIGN_SEEDS_MAX: u64 = 100_000_000;
/// How often a long campaign prints its progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(30);

#[derive(clap::Args)]
pub struct SimArgs {
    /// Seeds to run (each one simulated cluster, ≈6 s of simulated chaos).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=CAMPAIGN_SEEDS_MAX))]
    pub seeds: u64,
    /// The first seed (the campaign runs `from`, `from + 1`, …). Default:
    /// drawn from the clock and printed, so each campaign explores new seeds.
    #[arg(long)]
    pub from: Option<u64>,
    /// Seeds simulated at once (default: the machine's cores).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: Option<u16>,
    /// Also write the summary as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// A line for every seed, not only for the failing ones, and a failing
    /// seed's whole state (every replica of every region).
    #[arg(long)]
    pub verbose: bool,
}

thread_local! {
    /// The last panic on this thread: where and what (the hook keeps it; the
    /// campaign reports it with its seed instead of a backtrace).
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// One seed, its panic caught.
fn run_one(seed: u64) -> SeedReport {
    match std::panic::catch_unwind(|| campaign::run_seed(seed)) {
        Ok(report) => report,
        Err(_) => {
            let why = LAST_PANIC.with(|p| p.borrow_mut().take()).unwrap_or_else(|| "a panic".into());
            SeedReport::panicked(seed, why)
        }
    }
}

pub fn sim(args: SimArgs) -> Result<bool, String> {
    let from = args.from.unwrap_or_else(|| {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        // (a round number of millions: easy to read back and to replay)
        (t.as_secs() % 1_000_000) * 1_000_000
    });
    let last = from.checked_add(args.seeds - 1).ok_or("--from + --seeds overflows a u64")?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let jobs = args.jobs.map_or(cores, usize::from).min(args.seeds as usize);
    println!("simulator campaign: seeds {from}..={last} on {jobs} thread(s); each draws its own faults");
    std::panic::set_hook(Box::new(|info| {
        let at = info.location().map(|l| format!("{}:{}: ", l.file(), l.line())).unwrap_or_default();
        let what = info
            .payload()
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        LAST_PANIC.with(|p| *p.borrow_mut() = Some(format!("{at}{what}")));
    }));

    let started = Instant::now();
    let next = AtomicU64::new(0);
    let (tx, rx) = mpsc::channel::<SeedReport>();
    let mut failures: Vec<SeedReport> = vec![];
    let mut undecided = 0u64;
    let mut done = 0u64;
    let (mut ops, mut crashes, mut partitions, mut splits, mut moves) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let (mut sync_failures, mut bit_rots) = (0u64, 0u64);
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            let tx = tx.clone();
            let next = &next;
            scope.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= args.seeds || tx.send(run_one(from + i)).is_err() {
                    return;
                }
            });
        }
        drop(tx);
        let mut progress_at = Instant::now() + PROGRESS_EVERY;
        for r in rx {
            done += 1;
            ops += r.ops as u64;
            crashes += u64::from(r.crashes);
            partitions += u64::from(r.partitions);
            splits += u64::from(r.splits);
            moves += r.moves;
            sync_failures += u64::from(r.sync_failures);
            bit_rots += u64::from(r.bit_rots);
            if let Some(key) = &r.undecided {
                undecided += 1;
                if args.verbose {
                    println!("seed {}: the history of key {:?} is undecided (too many unknown outcomes on it for the checker's budget)", r.seed, String::from_utf8_lossy(key));
                }
            }
            if let Some(why) = &r.failure {
                // (the first line: the replay shows the whole state, and the logs)
                let shown = if args.verbose { why.as_str() } else { why.lines().next().unwrap_or_default() };
                println!("seed {} FAILED: {shown}", r.seed);
                println!("  faults: {}", r.profile.describe());
                println!(
                    "  replay: ringraft sim --from {} --seeds 1 --verbose (RINGRAFT_LOG=info: the stores' logs)",
                    r.seed
                );
            } else if args.verbose {
                println!(
                    "seed {}: ok, {} ops ({} answered), {} crashes ({} failed fdatasyncs), {} bit rots, {} partitions, {} splits, {} moves — {}",
                    r.seed,
                    r.ops,
                    r.answered,
                    r.crashes,
                    r.sync_failures,
                    r.bit_rots,
                    r.partitions,
                    r.splits,
                    r.moves,
                    r.profile.describe()
                );
            }
            if r.failure.is_some() {
                failures.push(r);
            }
            if Instant::now() >= progress_at {
                progress_at += PROGRESS_EVERY;
                println!(
                    "{done}/{} seeds, {} failed, {:.0} seeds/hour",
                    args.seeds,
                    failures.len(),
                    per_hour(done, started)
                );
            }
        }
    });
    let _ = std::panic::take_hook();
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{done} seeds in {seconds:.1} s ({:.0} seeds/hour): {} failed, {undecided} with a history too ambiguous to decide; {ops} operations checked, {crashes} crashes ({sync_failures} of them a failed fdatasync), {bit_rots} restarts on bit rot, {partitions} partitions, {splits} splits, {moves} moves",
        per_hour(done, started),
        failures.len()
    );
    if let Some(path) = &args.json {
        let failed: Vec<serde_json::Value> = failures
            .iter()
            .map(|r| {
                serde_json::json!({
                    "seed": r.seed,
                    "failure": r.failure,
                    "faults": r.profile.describe(),
                    "replay": format!("ringraft sim --from {} --seeds 1", r.seed),
                })
            })
            .collect();
        let summary = serde_json::json!({
            "from": from,
            "seeds": done,
            "seconds": seconds,
            "seeds_per_hour": per_hour(done, started),
            "operations": ops,
            "crashes": crashes,
            "sync_failures": sync_failures,
            "bit_rots": bit_rots,
            "partitions": partitions,
            "splits": splits,
            "moves": moves,
            "undecided": undecided,
            "failed": failed,
        });
        let text = serde_json::to_string_pretty(&summary).expect("a summary serializes");
        std::fs::write(path, text + "\n").map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(failures.is_empty())
}

fn per_hour(seeds: u64, since: Instant) -> f64 {
    seeds as f64 * 3600.0 / since.elapsed().as_secs_f64().max(1e-3)
}
