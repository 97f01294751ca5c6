//! `ringraft bench kv`: puts (and linearizable gets) against a cluster —
//! a local one it starts itself unless `--pd` (or `--spec`) names one — closed loop
//! (each client pipelines `--depth` operations per round) or open loop
//! (`--rate`: every operation is due at its own time and its latency counts
//! from then, so a stall is never hidden). Prints a progress line each
//! second, then throughput, latency percentiles, errors by kind, and the
//! stores' own batching figures and fsync p99 over the measured window.
//! [`load`] is the simpler write load behind `ringraft ctl load`.

pub mod check;
pub mod load;
mod pipeline;
mod plot;
mod report;
mod worker;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::latency::Latency;
use crate::local::{LocalCluster, LocalOptions};
use crate::units::parse_duration;
pub use check::CheckArgs;
pub use report::KvReport;

/// Most client threads.
pub const CLIENTS_MAX: usize = 256;
/// Most operations one client has in flight.
pub const DEPTH_MAX: usize = 10_000;

#[derive(clap::Args, Clone, Debug)]
pub struct KvBenchArgs {
    /// A running cluster's PD (HOST:PORT); with neither this nor --spec: start
    /// a local cluster (PD and `--stores` stores) for the run, and stop it after.
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "spec")]
    pub pd: Option<SocketAddr>,
    /// A running cluster's spec (JSON), for a cluster started from one.
    #[arg(long, value_name = "FILE")]
    pub spec: Option<PathBuf>,
    /// Metrics addresses of the cluster's stores (with `--pd` or `--spec`;
    /// repeat the flag), for the server-side figures.
    #[arg(long = "status", value_name = "HOST:PORT")]
    pub status: Vec<SocketAddr>,
    #[arg(long, default_value_t = 3)]
    pub stores: u64,
    #[arg(long, default_value_t = 64)]
    pub regions: u64,
    /// Distinct keys.
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// How keys are chosen: uniform, or zipfian (θ = 0.99: a few hot keys,
    /// a long tail, as in YCSB).
    #[arg(long, value_enum, default_value_t = Distribution::Uniform)]
    pub distribution: Distribution,
    /// Only the first K regions (by key) get load; none: all of them. The
    /// axis on which multi-raft engines lose their batching.
    #[arg(long, value_name = "K")]
    pub active_regions: Option<u64>,
    #[arg(long, default_value_t = 128)]
    pub value_bytes: usize,
    /// Share of operations that are puts (the rest are linearizable gets).
    #[arg(long, default_value_t = 1.0)]
    pub write_ratio: f64,
    /// Time measured, after the warmup.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Time the load runs before measuring starts.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// An operation unanswered this long counts as failed ("timeout").
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,
    /// Client threads, each with its own connections.
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Operations a client keeps in flight (closed loop: always this many;
    /// open loop: at most this many, the rest wait, counted from when due).
    #[arg(long, default_value_t = 256)]
    pub depth: usize,
    /// Open loop: operations per second in all; none: closed loop.
    #[arg(long)]
    pub rate: Option<u64>,
    /// Write every figure as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write the latency percentile distribution (HdrHistogram's text layout) to FILE.
    #[arg(long, value_name = "FILE")]
    pub hist: Option<PathBuf>,
    /// Draw the latency percentile plot as SVG to FILE.
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// The local cluster's first port (see `ringraft local --help`).
    #[arg(long, default_value_t = 20160)]
    pub base_port: u16,
    /// The local cluster's stores split regions past this size (see
    /// `ringraft server --help`): with `--regions 1` and a small size, the
    /// run measures the engine while its regions split under the load.
    #[arg(long, value_name = "BYTES", value_parser = crate::units::parse_bytes)]
    pub region_split_size: Option<u64>,
    /// Start the local cluster without batching (one fdatasync per region
    /// ready, one frame per message): what the engine would be without it.
    #[arg(long)]
    pub no_batching: bool,
    /// Run twice on fresh local clusters, with and without batching, and
    /// print what batching buys (the ratio).
    #[arg(long, conflicts_with_all = ["pd", "spec", "no_batching"])]
    pub compare_batching: bool,
}

impl KvBenchArgs {
    /// What `ringraft bench` runs with no subcommand: a local cluster,
    /// 64 regions, 128-byte puts, 10 s after 2 s of warmup.
    pub fn default_run() -> KvBenchArgs {
        KvBenchArgs {
            pd: None,
            spec: None,
            status: vec![],
            stores: 3,
            regions: 64,
            keys: 100_000,
            distribution: Distribution::Uniform,
            active_regions: None,
            value_bytes: 128,
            write_ratio: 1.0,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            request_timeout: pipeline::REQUEST_TIMEOUT,
            clients: 8,
            depth: 256,
            rate: None,
            json: None,
            hist: None,
            svg: None,
            base_port: 20160,
            region_split_size: None,
            no_batching: false,
            compare_batching: false,
        }
    }

    fn check(&self) -> Result<(), String> {
        crate::units::check_range("clients", self.clients, 1, CLIENTS_MAX)?;
        crate::units::check_range("depth", self.depth, 1, DEPTH_MAX)?;
        crate::units::check_range("value-bytes", self.value_bytes, 0, 1 << 20)?;
        if self.keys == 0 {
            return Err("--keys must be at least 1".into());
        }
        if self.active_regions == Some(0) {
            return Err("--active-regions must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.write_ratio) {
            return Err(format!("--write-ratio {} is not between 0 and 1", self.write_ratio));
        }
        if self.rate == Some(0) {
            return Err("--rate must be at least 1 operation per second".into());
        }
        if self.duration.is_zero() {
            return Err("--duration must be more than 0".into());
        }
        Ok(())
    }
}

/// How the bench picks keys.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Distribution {
    Uniform,
    Zipfian,
}

/// What the clients share: counters for the progress line, whether the
/// measured window has begun, and the latencies of the current second.
pub(crate) struct Shared {
    pub ok: AtomicU64,
    pub errors: AtomicU64,
    pub measuring: AtomicBool,
    pub stop: AtomicBool,
    pub second: Mutex<Latency>,
}

/// Set by Ctrl-C or SIGTERM: the run ends early, and its cluster is stopped
/// and removed as at a normal end.
pub(crate) static INTERRUPTED: AtomicBool = AtomicBool::new(false);

pub fn run(args: KvBenchArgs) -> Result<(), String> {
    args.check()?;
    crate::signals::flag_on_signal(&INTERRUPTED);
    if !args.compare_batching {
        let report = run_once(&args)?;
        return write_json(&args, &report);
    }
    let on = run_once(&KvBenchArgs { no_batching: false, ..args.clone() })?;
    println!();
    let off = run_once(&KvBenchArgs { no_batching: true, ..args.clone() })?;
    let ratio = on.ops_per_sec / off.ops_per_sec.max(1e-9);
    println!(
        "\nbatching buys {ratio:.1}× the throughput: {:.0} ops/s with it, {:.0} without (p99 {:.2} ms against {:.2} ms)",
        on.ops_per_sec,
        off.ops_per_sec,
        on.p99_us as f64 / 1000.0,
        off.p99_us as f64 / 1000.0
    );
    write_json(&args, &serde_json::json!({ "batching": on, "no_batching": off, "throughput_ratio": ratio }))
}

/// Writes `report` to `--json`, if given.
fn write_json(args: &KvBenchArgs, report: &impl serde::Serialize) -> Result<(), String> {
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(report).expect("a report encodes");
        std::fs::write(path, text + "\n").map_err(|e| format!("write {}: {e}", path.display()))?;
    }
    Ok(())
}

/// One run: against the given cluster, or a local one started (and stopped) for it.
/// The cluster a run measures: the one `--spec` names, or a local one.
pub(crate) struct Target {
    spec: Arc<engine::spec::ClusterSpec>,
    status: Vec<SocketAddr>,
    what: String,
    local: Option<std::cell::RefCell<LocalCluster>>,
}

impl Target {
    pub(crate) fn open(args: &KvBenchArgs) -> Result<Target, String> {
        if let Some(addr) = args.pd {
            // the bench starts from the layout PD has now, and follows splits
            // as the stores' answers (and PD, for what they do not name) tell it
            let spec = engine::spec::ClusterSpec::from_pd(addr)?;
            let what = format!("the cluster of PD {addr}");
            return Ok(Target { spec: Arc::new(spec), status: args.status.clone(), what, local: None });
        }
        match &args.spec {
            Some(path) => {
                let spec = engine::spec::ClusterSpec::load(path).map_err(|e| e.to_string())?;
                let what = format!("the cluster of {}", path.display());
                Ok(Target { spec: Arc::new(spec), status: args.status.clone(), what, local: None })
            }
            None => {
                let opts = LocalOptions {
                    stores: args.stores,
                    regions: args.regions,
                    base_port: args.base_port,
                    no_batching: args.no_batching,
                    region_split_size: args.region_split_size,
                    ..LocalOptions::default()
                };
                let batching = if args.no_batching { ", without batching" } else { "" };
                eprintln!("starting a local cluster: {} stores, {} regions{batching} ...", args.stores, args.regions);
                let c = LocalCluster::start(&opts).map_err(|e| e.to_string())?;
                let (spec, status) = (c.spec.clone(), c.status.values().copied().collect());
                let what = format!("a local cluster in {}", c.dir.display());
                Ok(Target { spec, status, what, local: Some(std::cell::RefCell::new(c)) })
            }
        }
    }

    /// Stops a local cluster (and removes its temporary directory); returns
    /// the processes that had to be killed, after saying so.
    pub(crate) fn close(&self) -> Vec<String> {
        let Some(c) = &self.local else { return vec![] };
        let killed = c.borrow_mut().stop();
        if !killed.is_empty() {
            let verb = if killed.len() == 1 { "was" } else { "were" };
            eprintln!(
                "ringraft bench: warning: {} did not stop within {:?} of SIGTERM and {verb} killed",
                killed.join(", "),
                crate::local::STOP_WAIT
            );
        }
        killed
    }
}

fn run_once(args: &KvBenchArgs) -> Result<KvReport, String> {
    let target = Target::open(args)?;
    let mut report = measure(args, &target);
    let killed = target.close();
    if let Ok(r) = &mut report {
        r.killed_at_stop = killed;
    }
    if INTERRUPTED.load(Ordering::Relaxed) {
        return Err("interrupted: the figures above cover only part of the window".into());
    }
    report
}

/// One load against `target`: warmup, the measured window, the report.
pub(crate) fn measure(args: &KvBenchArgs, target: &Target) -> Result<KvReport, String> {
    let (spec, status, where_) = (target.spec.clone(), target.status.clone(), &target.what);
    let mode = match args.rate {
        Some(r) => format!("open loop at {r} ops/s over {} clients", args.clients),
        None => format!("closed loop, {} clients × {} in flight", args.clients, args.depth),
    };
    println!(
        "kv bench: {where_}; {} keys, {}-byte values, {:.0}% puts, {mode}; {:?} measured after {:?} of warmup",
        args.keys,
        args.value_bytes,
        args.write_ratio * 100.0,
        args.duration,
        args.warmup
    );
    let shared = Arc::new(Shared {
        ok: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        measuring: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        second: Mutex::new(Latency::default()),
    });
    let keys = Arc::new(worker::Keys::new(&spec, args.keys, args.active_regions, args.distribution));
    if let Some(k) = args.active_regions {
        println!("  load on {} of {} regions", k.min(spec.regions.len() as u64), spec.regions.len());
    }
    let start = Instant::now();
    let workers: Vec<_> = (0..args.clients)
        .map(|c| {
            let (spec, shared, args, keys) = (spec.clone(), shared.clone(), args.clone(), keys.clone());
            std::thread::spawn(move || worker::run(c, spec, &args, &keys, &shared, start))
        })
        .collect();

    // warmup, then the measured window with a line each second
    let warm_until = Instant::now() + args.warmup;
    while Instant::now() < warm_until && !INTERRUPTED.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(50).min(warm_until.saturating_duration_since(Instant::now())));
    }
    let before = scrape_all(&status);
    shared.measuring.store(true, Ordering::Relaxed);
    let window_start = Instant::now();
    let mut last_ok = shared.ok.load(Ordering::Relaxed);
    let mut second = 0;
    while window_start.elapsed() < args.duration && !INTERRUPTED.load(Ordering::Relaxed) {
        let next = window_start + Duration::from_secs(second + 1);
        while Instant::now() < next && !INTERRUPTED.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50).min(next.saturating_duration_since(Instant::now())));
        }
        second += 1;
        let ok = shared.ok.load(Ordering::Relaxed);
        let lat = std::mem::take(&mut *shared.second.lock().expect("a client panicked"));
        println!(
            "  {second:>3}s  {:>9} ops/s  p99 {:>8.1} ms  errors {}",
            ok - last_ok,
            lat.summary().p99_us as f64 / 1000.0,
            shared.errors.load(Ordering::Relaxed)
        );
        last_ok = ok;
    }
    let window = window_start.elapsed();
    shared.measuring.store(false, Ordering::Relaxed);
    shared.stop.store(true, Ordering::Relaxed);
    let after = scrape_all(&status);
    let mut totals = worker::Totals::default();
    for w in workers {
        totals.add(w.join().map_err(|_| "a client thread panicked".to_string())?);
    }
    let report = KvReport::new(args, window, &totals, &before, &after);
    println!("{report}");
    let write =
        |path: &PathBuf, text: String| std::fs::write(path, text).map_err(|e| format!("write {}: {e}", path.display()));
    if let Some(path) = &args.hist {
        write(path, totals.latency.distribution())?;
    }
    if let Some(path) = &args.svg {
        let title = format!(
            "ringraft bench kv: {:.0} ops/s, {}; p99 {:.2} ms",
            report.ops_per_sec,
            if args.rate.is_some() { "open loop" } else { "closed loop" },
            report.p99_us as f64 / 1000.0
        );
        write(path, plot::svg(&title, &totals.latency.percentile_points()))?;
    }
    Ok(report)
}

/// Every store's metrics now, summed over the stores (percentiles: the worst).
fn scrape_all(status: &[SocketAddr]) -> Option<std::collections::BTreeMap<String, f64>> {
    if status.is_empty() {
        return None;
    }
    let mut out = std::collections::BTreeMap::new();
    for a in status {
        for (k, v) in crate::local::scrape(*a).ok()? {
            crate::local::add_metric(&mut out, &k, v);
        }
    }
    Some(out)
}
