//! The kv bench's figures, as text and as JSON (`--json`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::kv::worker::Totals;
use crate::kv::KvBenchArgs;

#[derive(Clone, Debug, Serialize)]
pub struct KvReport {
    pub ops_per_sec: f64,
    pub mb_per_sec: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    /// Operations that failed, in all (by kind in `errors_by_kind`).
    pub errors: u64,
    pub errors_by_kind: BTreeMap<&'static str, u64>,
    pub puts: u64,
    pub gets: u64,
    pub window_secs: f64,
    /// From the stores' metrics over the window (absent without them).
    pub regions_per_fsync: Option<f64>,
    /// WAL seals (flushes that only acknowledge the record before) per persist batch.
    pub seals_per_fsync: Option<f64>,
    pub messages_per_frame: Option<f64>,
    pub writes_per_entry: Option<f64>,
    pub cpu_us_per_write: Option<f64>,
    /// The store processes' CPU time (every thread, user and system) over
    /// the window, per write: the figure no work moved off the shard
    /// threads can hide.
    pub process_cpu_us_per_write: Option<f64>,
    /// Writes proposed per shard loop iteration (all stores).
    pub writes_per_iteration: Option<f64>,
    pub fsync_p99_us: Option<f64>,
    pub snapshots_taken: Option<f64>,
    pub mode: String,
    pub clients: usize,
    pub depth: usize,
    pub rate: Option<u64>,
    pub keys: u64,
    pub value_bytes: usize,
    pub write_ratio: f64,
    /// Processes of the local cluster that did not stop on SIGTERM within
    /// the wait and were killed (the figures stand; the stop is a finding).
    pub killed_at_stop: Vec<String>,
}

impl KvReport {
    pub fn new(
        args: &KvBenchArgs,
        window: Duration,
        t: &Totals,
        before: &Option<BTreeMap<String, f64>>,
        after: &Option<BTreeMap<String, f64>>,
    ) -> KvReport {
        let secs = window.as_secs_f64();
        let l = t.latency.summary();
        let (b, a) = (before.clone().unwrap_or_default(), after.clone().unwrap_or_default());
        let have = before.is_some() && after.is_some();
        let delta = |name: &str| a.get(name).copied().unwrap_or(0.0) - b.get(name).copied().unwrap_or(0.0);
        let ratio = |num: &str, den: &str| (have && delta(den) > 0.0).then(|| delta(num) / delta(den));
        KvReport {
            ops_per_sec: t.ok as f64 / secs,
            mb_per_sec: t.bytes as f64 / secs / 1e6,
            p50_us: l.p50_us,
            p90_us: l.p90_us,
            p99_us: l.p99_us,
            p999_us: l.p999_us,
            max_us: l.max_us,
            errors: t.errors.values().sum(),
            errors_by_kind: t.errors.clone(),
            puts: t.puts,
            gets: t.gets,
            window_secs: secs,
            regions_per_fsync: ratio("ringraft_region_writes_persisted_total", "ringraft_fsyncs_total"),
            seals_per_fsync: ratio("ringraft_wal_seals_total", "ringraft_fsyncs_total"),
            messages_per_frame: ratio("ringraft_raft_messages_sent_total", "ringraft_raft_frames_sent_total"),
            writes_per_entry: ratio("ringraft_writes_proposed_total", "ringraft_proposals_total"),
            cpu_us_per_write: ratio("ringraft_shard_cpu_us_total", "ringraft_writes_proposed_total"),
            process_cpu_us_per_write: ratio("ringraft_process_cpu_us_total", "ringraft_writes_proposed_total"),
            writes_per_iteration: ratio("ringraft_writes_proposed_total", "ringraft_loop_iterations_total"),
            fsync_p99_us: have.then(|| a.get("ringraft_fsync_latency_us_p99").copied().unwrap_or(0.0)),
            snapshots_taken: have.then(|| delta("ringraft_snapshots_taken_total")),
            mode: if args.rate.is_some() { "open".into() } else { "closed".into() },
            clients: args.clients,
            depth: args.depth,
            rate: args.rate,
            keys: args.keys,
            value_bytes: args.value_bytes,
            write_ratio: args.write_ratio,
            killed_at_stop: vec![],
        }
    }
}

impl std::fmt::Display for KvReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |us: u64| us as f64 / 1000.0;
        writeln!(
            f,
            "{:.0} ops/s, {:.1} MB/s over {:.1} s ({} puts, {} gets); latency p50 {:.2} ms, p90 {:.2}, p99 {:.2}, p99.9 {:.2}, max {:.2} ({})",
            self.ops_per_sec,
            self.mb_per_sec,
            self.window_secs,
            self.puts,
            self.gets,
            ms(self.p50_us),
            ms(self.p90_us),
            ms(self.p99_us),
            ms(self.p999_us),
            ms(self.max_us),
            if self.mode == "open" { "each op from its due time" } else { "each op from its send" }
        )?;
        if self.errors == 0 {
            writeln!(f, "errors: none")?;
        } else {
            let kinds: Vec<String> = self.errors_by_kind.iter().map(|(k, v)| format!("{k} {v}")).collect();
            writeln!(f, "errors: {} ({})", self.errors, kinds.join(", "))?;
        }
        match (self.regions_per_fsync, self.messages_per_frame, self.fsync_p99_us) {
            (Some(r), Some(m), Some(p)) => write!(
                f,
                "stores: {r:.1} region writes per fsync, {:.2} seals per persist batch, {m:.1} messages per frame, {:.1} writes per entry, {:.2} writes per loop iteration, {:.1} µs of shard CPU per write ({:.1} µs of store process CPU), fsync p99 {:.2} ms (worst store; beside the latency above), {:.0} snapshots taken",
                self.seals_per_fsync.unwrap_or(0.0),
                self.writes_per_entry.unwrap_or(0.0),
                self.writes_per_iteration.unwrap_or(0.0),
                self.cpu_us_per_write.unwrap_or(0.0),
                self.process_cpu_us_per_write.unwrap_or(0.0),
                p / 1000.0,
                self.snapshots_taken.unwrap_or(0.0)
            ),
            _ => write!(f, "stores: no figures (give --status HOST:PORT of each store's metrics)"),
        }
    }
}
