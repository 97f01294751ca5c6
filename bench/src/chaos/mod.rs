//! `ringraft chaos`: a cluster of real processes (PD and 3–5 stores of this
//! binary on loopback, as `ringraft local` starts them) under concurrent
//! clients while a nemesis kills, pauses, partitions and slows them and
//! shuffles their regions through PD; every client operation recorded;
//! at the end every store restarted, every key read, and the history
//! checked. etcd's robustness suite and Jepsen do the same with their own
//! nemeses; this is ours.
//!
//! - [`clients`]: the operations and their history;
//! - [`nemesis`]: kill -9 of stores and PD, SIGSTOP pauses, partitions and
//!   slow disks (through the stores' fault endpoints, `--fault-injection`);
//! - [`operations`]: splits, moves and leader transfers through PD;
//! - [`verdict`]: linearizability, acknowledged writes lost, recovery times.
//!
//! A run passes when no key's history is broken, no acknowledged write is
//! missing and every key could be read at the end. A failing run keeps its
//! directory (history, logs, data directories) and names it.

pub mod clients;
pub mod nemesis;
pub mod operations;
pub mod verdict;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use history::{Event, Op, Outcome};

use crate::local::{LocalCluster, LocalOptions, START_WAIT};
use clients::{ClientConfig, Keys, CLIENTS_MAX, KEY_SLOTS_MAX};
use nemesis::{FaultKind, FaultRecord, Nemesis, NemesisConfig};

/// The history's client id of the final reads (the run's clients count from 1).
pub const FINAL_READER: u64 = 0;
/// How long the final reads may take, all keys together.
pub const FINAL_READS_WAIT: Duration = Duration::from_secs(120);
/// Stores a chaos cluster may have.
pub const CHAOS_STORES_MIN: u64 = 3;
pub const CHAOS_STORES_MAX: u64 = 5;
/// The shortest mean time between two faults of one nemesis timeline.
pub const NEMESIS_INTERVAL_MIN: Duration = Duration::from_millis(100);

#[derive(Clone, Debug)]
pub struct ChaosOptions {
    pub seed: u64,
    pub duration: Duration,
    pub stores: u64,
    pub clients: u64,
    pub key_slots: usize,
    pub initial_regions: u64,
    pub kill_interval: Duration,
    pub fault_interval: Duration,
    pub op_interval: Duration,
    /// Where the run keeps its cluster and history; None: a temporary
    /// directory, removed after a passing run unless `keep`.
    pub dir: Option<PathBuf>,
    pub keep: bool,
    /// The history's file; None: `history.jsonl` in the run's directory.
    pub history: Option<PathBuf>,
    pub base_port: u16,
}

/// What a run found.
#[derive(Clone, Debug)]
pub struct ChaosReport {
    pub seed: u64,
    pub duration: Duration,
    pub stores: u64,
    pub ops: u64,
    pub ok: u64,
    pub fail: u64,
    pub unknown: u64,
    pub keys: u64,
    pub judgement: verdict::Judgement,
    /// Keys the final reads could not read in `FINAL_READS_WAIT`.
    pub unread: u64,
    pub faults: Vec<FaultRecord>,
    /// PD operations the cluster refused (PD down, a region in flux).
    pub operations_refused: u64,
    pub recovery_us: Vec<u64>,
    pub history: PathBuf,
    pub dir: PathBuf,
    /// Whether the run's directory is still there (a failing run's always is).
    pub kept: bool,
    /// The nemesis's calls that failed, for the log.
    pub nemesis_errors: Vec<String>,
    /// A store or PD that exited on its own, with its log.
    pub crashed: Option<String>,
}

impl ChaosReport {
    pub fn passed(&self) -> bool {
        self.judgement.anomalies.is_empty()
            && self.judgement.acknowledged_lost.is_empty()
            && self.unread == 0
            && self.crashed.is_none()
            && self.ok > 0
    }

    /// Each fault kind's count, every kind named.
    pub fn fault_counts(&self) -> BTreeMap<&'static str, u64> {
        let mut out: BTreeMap<&'static str, u64> = FaultKind::ALL.iter().map(|k| (k.name(), 0)).collect();
        for f in &self.faults {
            *out.entry(f.kind.name()).or_default() += 1;
        }
        out
    }

    /// Recovery after faults at a percentile, in ms (None without any).
    pub fn recovery_ms(&self, percentile: f64) -> Option<f64> {
        let mut v = self.recovery_us.clone();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let i = ((percentile / 100.0) * (v.len() - 1) as f64).round() as usize;
        Some(v[i.min(v.len() - 1)] as f64 / 1000.0)
    }

    pub fn to_json(&self) -> serde_json::Value {
        let text = |k: &[u8]| String::from_utf8_lossy(k).into_owned();
        serde_json::json!({
            "seed": self.seed,
            "passed": self.passed(),
            "duration_s": self.duration.as_secs_f64(),
            "stores": self.stores,
            "ops": self.ops,
            "ok": self.ok,
            "fail": self.fail,
            "unknown": self.unknown,
            "keys": self.keys,
            "anomalies": self.judgement.anomalies.len(),
            "anomalous_keys": self.judgement.anomalies.iter().map(|a| serde_json::json!({
                "key": text(&a.key), "explanation": a.explanation })).collect::<Vec<_>>(),
            "undecided": self.judgement.undecided.len(),
            "acknowledged_lost": self.judgement.acknowledged_lost.len(),
            "acknowledged_lost_detail": self.judgement.acknowledged_lost,
            "unread": self.unread,
            "crashed": self.crashed,
            "faults": self.fault_counts(),
            "operations_refused": self.operations_refused,
            "nemesis_errors": self.nemesis_errors.len(),
            "recovery_ms": {
                "faults": self.recovery_us.len(),
                "p50": self.recovery_ms(50.0),
                "p99": self.recovery_ms(99.0),
                "max": self.recovery_ms(100.0),
            },
            "history": self.history,
            "dir": self.dir,
            "kept": self.kept,
        })
    }
}

fn check(opts: &ChaosOptions) -> Result<(), String> {
    if !(CHAOS_STORES_MIN..=CHAOS_STORES_MAX).contains(&opts.stores) {
        return Err(format!("--stores {}: a chaos cluster has {CHAOS_STORES_MIN} to {CHAOS_STORES_MAX}", opts.stores));
    }
    if opts.clients == 0 || opts.clients > CLIENTS_MAX {
        return Err(format!("--clients {}: 1 to {CLIENTS_MAX}", opts.clients));
    }
    if opts.key_slots == 0 || opts.key_slots > KEY_SLOTS_MAX {
        return Err(format!("--keys {}: 1 to {KEY_SLOTS_MAX}", opts.key_slots));
    }
    if opts.initial_regions == 0 || opts.initial_regions > 1024 {
        return Err(format!("--initial-regions {}: 1 to 1024", opts.initial_regions));
    }
    for (flag, d) in [
        ("--kill-interval", opts.kill_interval),
        ("--fault-interval", opts.fault_interval),
        ("--op-interval", opts.op_interval),
    ] {
        if d < NEMESIS_INTERVAL_MIN {
            return Err(format!("{flag} {d:?}: at least {NEMESIS_INTERVAL_MIN:?}"));
        }
    }
    if let Some(dir) = &opts.dir {
        if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
            // (its stores would start on an earlier run's data, and the checker
            // takes every key as absent at the start)
            return Err(format!("--dir {}: not empty; a chaos run starts from nothing", dir.display()));
        }
    }
    Ok(())
}

/// Runs the whole thing: cluster, clients, nemeses, final reads, checks.
pub fn run(opts: &ChaosOptions) -> Result<ChaosReport, String> {
    check(opts)?;
    let (temp, dir) = match &opts.dir {
        Some(d) => (None, d.clone()),
        None => {
            let t = tempfile::Builder::new()
                .prefix(&format!("ringraft-chaos-{}-", opts.seed))
                .tempdir()
                .map_err(|e| format!("create a temporary directory: {e}"))?;
            let d = t.path().to_path_buf();
            (Some(t), d)
        }
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let history_path = opts.history.clone().unwrap_or_else(|| dir.join("history.jsonl"));
    let local = LocalOptions {
        stores: opts.stores,
        cores: 1,
        regions: opts.initial_regions,
        data_dir: Some(dir.join("cluster")),
        base_port: opts.base_port,
        store_args: vec!["--fault-injection".into()],
        ..LocalOptions::default()
    };
    let mut cluster = match LocalCluster::start(&local) {
        Ok(c) => c,
        Err(e) => {
            let _ = temp.map(|t| t.keep());
            return Err(format!("start the cluster: {e} (kept in {})", dir.display()));
        }
    };
    let mut report = match drive(opts, &mut cluster, &history_path) {
        Ok(r) => r,
        Err(e) => {
            cluster.keep_dir();
            let _ = temp.map(|t| t.keep());
            return Err(format!("{e} (kept in {})", dir.display()));
        }
    };
    let killed = cluster.stop();
    if !killed.is_empty() {
        tracing::warn!("chaos: {} did not stop in time and were killed", killed.join(", "));
    }
    drop(cluster);
    report.history = history_path;
    report.dir = dir;
    report.kept = true;
    if let Some(t) = temp {
        if report.passed() && !opts.keep {
            report.kept = false;
            drop(t);
        } else {
            let _ = t.keep();
        }
    }
    Ok(report)
}

/// The run on a started cluster, up to the verdict.
fn drive(opts: &ChaosOptions, cluster: &mut LocalCluster, history_path: &PathBuf) -> Result<ChaosReport, String> {
    let origin = Instant::now();
    let keys = Arc::new(Keys::new(opts.key_slots));
    let stop = Arc::new(AtomicBool::new(false));
    let file = std::fs::File::create(history_path).map_err(|e| format!("create {}: {e}", history_path.display()))?;
    let (events_tx, events_rx) = std::sync::mpsc::channel::<Event>();
    let recorder = std::thread::Builder::new()
        .name("chaos-history".into())
        .spawn(move || record(file, events_rx))
        .map_err(|e| format!("start the history thread: {e}"))?;
    let mut threads = vec![];
    for id in 1..=opts.clients {
        let cfg = ClientConfig {
            id,
            seed: opts.seed.wrapping_mul(1_000_003).wrapping_add(id),
            pd_addr: cluster.pd_addr,
            keys: keys.clone(),
            origin,
            stop: stop.clone(),
            events: events_tx.clone(),
        };
        let t = std::thread::Builder::new().name(format!("chaos-client-{id}")).spawn(move || clients::run_client(cfg));
        threads.push(t.map_err(|e| format!("start a client thread: {e}"))?);
    }
    let ops_cfg = operations::OperationsConfig {
        seed: opts.seed,
        pd_addr: cluster.pd_addr,
        interval: opts.op_interval,
        keys: keys.clone(),
        origin,
        stop: stop.clone(),
    };
    let operations = std::thread::Builder::new()
        .name("chaos-operations".into())
        .spawn(move || operations::run_operations(ops_cfg))
        .map_err(|e| format!("start the PD nemesis: {e}"))?;
    let nemesis_cfg =
        NemesisConfig { seed: opts.seed, kill_interval: opts.kill_interval, fault_interval: opts.fault_interval };
    let mut nemesis = Nemesis::new(nemesis_cfg, origin);
    let end = origin + opts.duration;
    let mut crashed = None;
    while Instant::now() < end {
        nemesis.step(cluster);
        if let Err(e) = cluster.check_children() {
            crashed = Some(e.to_string());
            break;
        }
        let next = nemesis.next_due().unwrap_or(end).min(end);
        std::thread::sleep(next.saturating_duration_since(Instant::now()).min(Duration::from_millis(50)));
    }
    tracing::info!("chaos: the nemesis stops; healing");
    stop.store(true, Relaxed);
    let restored = nemesis.restore(cluster);
    for t in threads {
        let _ = t.join();
    }
    let done = operations.join().unwrap_or_default();
    let mut faults = std::mem::take(&mut nemesis.records);
    faults.extend(done.records);
    faults.sort_by_key(|f| f.start_us);
    if crashed.is_none() {
        if let Err(e) = restored.and_then(|()| restart_all(cluster)) {
            crashed = Some(e);
        }
    }
    let final_reads = if crashed.is_none() { final_reads(cluster, &keys, origin, &events_tx) } else { BTreeMap::new() };
    drop(events_tx);
    let events = recorder.join().map_err(|_| "the history thread panicked".to_string())??;
    let used = keys.used();
    let unread =
        if crashed.is_none() { used.iter().filter(|k| !final_reads.contains_key(*k)).count() as u64 } else { 0 };
    tracing::info!("chaos: checking {} operations on {} keys", events.len(), used.len());
    let judgement = verdict::judge(&events, &final_reads);
    // (the final reads come after every fault: they would measure the run's end)
    let clients_events: Vec<Event> = events.iter().filter(|e| e.client != FINAL_READER).cloned().collect();
    let count =
        |f: fn(&Outcome) -> bool| events.iter().filter(|e| e.client != FINAL_READER && f(&e.outcome)).count() as u64;
    Ok(ChaosReport {
        seed: opts.seed,
        duration: opts.duration,
        stores: opts.stores,
        ops: count(|_| true),
        ok: count(|o| !matches!(o, Outcome::Failed | Outcome::Ambiguous)),
        fail: count(|o| matches!(o, Outcome::Failed)),
        unknown: count(|o| matches!(o, Outcome::Ambiguous)),
        keys: used.len() as u64,
        recovery_us: verdict::recovery_us(&clients_events, &faults),
        judgement,
        unread,
        faults,
        operations_refused: done.refused,
        history: PathBuf::new(),
        dir: PathBuf::new(),
        kept: true,
        nemesis_errors: nemesis.errors,
        crashed,
    })
}

/// Writes every event as a JSON line as it comes; all of them once the
/// senders are gone.
fn record(file: std::fs::File, events: std::sync::mpsc::Receiver<Event>) -> Result<Vec<Event>, String> {
    let mut out = std::io::BufWriter::new(file);
    let mut all = vec![];
    for e in events {
        history::write_event(&mut out, &e).map_err(|e| format!("write the history: {e}"))?;
        all.push(e);
    }
    out.flush().map_err(|e| format!("write the history: {e}"))?;
    Ok(all)
}

/// Every store killed at once and started again on its data; waits until
/// every region has a leader.
fn restart_all(cluster: &mut LocalCluster) -> Result<(), String> {
    let slots = cluster.running();
    for &n in &slots {
        cluster.kill_store(n);
    }
    for &n in &slots {
        cluster.start_store(n).map_err(|e| format!("restart store {n} for the final reads: {e}"))?;
    }
    // (regions split during the run: PD's count now)
    let mut pd = pd::PdClient::new(cluster.pd_addr, 0);
    let deadline = Instant::now() + START_WAIT;
    let view = pd.call_until(pd::protocol::PdRequest::GetCluster, deadline);
    if let Ok(pd::protocol::PdResponse::Cluster(v)) = view {
        cluster.regions = u64::from(v.regions);
    }
    cluster.wait_led(START_WAIT).map_err(|e| format!("after restarting every store: {e}"))
}

/// Reads every key used, retrying each until it is answered (recorded in
/// the history as the reads of `FINAL_READER`); the values read, by key.
fn final_reads(
    cluster: &LocalCluster,
    keys: &Keys,
    origin: Instant,
    events: &std::sync::mpsc::Sender<Event>,
) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
    let deadline = Instant::now() + FINAL_READS_WAIT;
    let mut out = BTreeMap::new();
    let mut client = None;
    for key in keys.used() {
        while Instant::now() < deadline {
            if client.is_none() {
                client = engine::client::kv_client::KvClient::with_pd(cluster.pd_addr).ok();
            }
            let Some(c) = client.as_mut() else {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            };
            let call = clients::micros_since(origin);
            let outcome = clients::perform(c, &key, &Op::Get);
            let ret = clients::micros_since(origin);
            let read = match &outcome {
                Outcome::Get(v) => Some(v.clone()),
                _ => None,
            };
            let _ = events.send(Event { client: FINAL_READER, key: key.clone(), op: Op::Get, call, ret, outcome });
            if let Some(v) = read {
                out.insert(key.clone(), v);
                break;
            }
        }
    }
    out
}
