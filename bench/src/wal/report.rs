//! How `ringraft bench wal` reports: one text block for people, one JSON
//! object for scripts and docs/benchmarks.md.
//!
//! Units: MB is 10^6 bytes; latencies are microseconds; "MB/s" is entry
//! data, "disk MB/s" everything the log wrote (headers, HardStates,
//! checkpoints, padding to 4 KiB).

use serde::Serialize;

use super::append::AppendResult;
use super::raw::{ProbeSeries, RawWrite};
use super::recovery::RecoveryResult;

/// Median of a non-empty series (the mean of the middle two when even).
pub fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    assert!(!v.is_empty(), "median of nothing");
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// The figures of one append run, or the per-figure medians of several.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RunFigures {
    pub appends_per_sec: f64,
    pub mb_per_sec: f64,
    pub disk_mb_per_sec: f64,
    pub fsyncs_per_sec: f64,
    pub regions_per_fsync: f64,
    pub appends_per_fsync: f64,
    pub bytes_per_fsync: f64,
    /// Append-to-durable latency.
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    /// The log's own write + fdatasync time per flush, same run: the disk's
    /// share of the latency above (a slow spell shows here first).
    pub fsync_latency_us_p50: f64,
    pub fsync_latency_us_p99: f64,
    pub appends: f64,
    pub elapsed_s: f64,
    pub segment_rolls: f64,
    /// Flushes that waited for a spare segment.
    pub roll_stalls: f64,
}

impl From<&AppendResult> for RunFigures {
    fn from(r: &AppendResult) -> Self {
        RunFigures {
            appends_per_sec: r.appends_per_sec(),
            mb_per_sec: r.mb_per_sec(),
            disk_mb_per_sec: r.disk_mb_per_sec(),
            fsyncs_per_sec: r.fsyncs_per_sec(),
            regions_per_fsync: r.regions_per_fsync(),
            appends_per_fsync: r.appends_per_fsync(),
            bytes_per_fsync: r.bytes_per_fsync(),
            p50_us: r.latency.p50_us as f64,
            p99_us: r.latency.p99_us as f64,
            p999_us: r.latency.p999_us as f64,
            max_us: r.latency.max_us as f64,
            fsync_latency_us_p50: r.flush_latency.p50_us as f64,
            fsync_latency_us_p99: r.flush_latency.p99_us as f64,
            appends: r.appends as f64,
            elapsed_s: r.elapsed.as_secs_f64(),
            segment_rolls: r.wal.segment_rolls as f64,
            roll_stalls: r.wal.roll_stalls as f64,
        }
    }
}

impl RunFigures {
    /// Each figure's median over `runs` (so the result need not be one run).
    pub fn medians(runs: &[RunFigures]) -> RunFigures {
        let m = |f: fn(&RunFigures) -> f64| median(runs.iter().map(f));
        RunFigures {
            appends_per_sec: m(|r| r.appends_per_sec),
            mb_per_sec: m(|r| r.mb_per_sec),
            disk_mb_per_sec: m(|r| r.disk_mb_per_sec),
            fsyncs_per_sec: m(|r| r.fsyncs_per_sec),
            regions_per_fsync: m(|r| r.regions_per_fsync),
            appends_per_fsync: m(|r| r.appends_per_fsync),
            bytes_per_fsync: m(|r| r.bytes_per_fsync),
            p50_us: m(|r| r.p50_us),
            p99_us: m(|r| r.p99_us),
            p999_us: m(|r| r.p999_us),
            max_us: m(|r| r.max_us),
            fsync_latency_us_p50: m(|r| r.fsync_latency_us_p50),
            fsync_latency_us_p99: m(|r| r.fsync_latency_us_p99),
            appends: m(|r| r.appends),
            elapsed_s: m(|r| r.elapsed_s),
            segment_rolls: m(|r| r.segment_rolls),
            roll_stalls: m(|r| r.roll_stalls),
        }
    }

    /// One line: the headline figures.
    pub fn line(&self) -> String {
        format!(
            "{:.0} appends/s, {:.2} MB/s (disk {:.1} MB/s), {:.0} fsyncs/s, {:.1} regions/fsync, {:.0} B/fsync, latency p50 {:.0} / p99 {:.0} / p99.9 {:.0} / max {:.0} us, fsync p99 {:.0} us",
            self.appends_per_sec,
            self.mb_per_sec,
            self.disk_mb_per_sec,
            self.fsyncs_per_sec,
            self.regions_per_fsync,
            self.bytes_per_fsync,
            self.p50_us,
            self.p99_us,
            self.p999_us,
            self.max_us,
            self.fsync_latency_us_p99
        )
    }

    fn block(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(
            out,
            "  appends/s          {:.0}  ({:.0} in {:.2}s)",
            self.appends_per_sec, self.appends, self.elapsed_s
        );
        let _ = writeln!(
            out,
            "  MB/s               {:.2} entry data; disk {:.2} MB/s",
            self.mb_per_sec, self.disk_mb_per_sec
        );
        let _ = writeln!(out, "  fsyncs/s           {:.0}", self.fsyncs_per_sec);
        let _ = writeln!(
            out,
            "  per fsync          {:.1} regions, {:.1} appends, {:.0} bytes",
            self.regions_per_fsync, self.appends_per_fsync, self.bytes_per_fsync
        );
        let _ = writeln!(
            out,
            "  append->durable    p50 {:.0} / p99 {:.0} / p99.9 {:.0} / max {:.0} us",
            self.p50_us, self.p99_us, self.p999_us, self.max_us
        );
        let _ = writeln!(
            out,
            "  write+fdatasync    p50 {:.0} / p99 {:.0} us (the log's own flushes, same run)",
            self.fsync_latency_us_p50, self.fsync_latency_us_p99
        );
        if self.roll_stalls > 0.0 {
            let _ = writeln!(
                out,
                "  segment rolls      {:.0}, {:.0} of them waited for a spare segment",
                self.segment_rolls, self.roll_stalls
            );
        }
    }
}

/// The 4 KiB write+fdatasync probe, before and after the runs.
#[derive(Clone, Debug, Serialize)]
pub struct ProbeReport {
    pub before: ProbeSeries,
    pub after: ProbeSeries,
    pub fsync_latency_us_p50: u64,
    pub fsync_latency_us_p99: u64,
}

impl ProbeReport {
    pub fn new(before: ProbeSeries, after: ProbeSeries, overall: ProbeSeries) -> Self {
        ProbeReport {
            before,
            after,
            fsync_latency_us_p50: overall.fsync_latency_us.p50_us,
            fsync_latency_us_p99: overall.fsync_latency_us.p99_us,
        }
    }

    fn block(&self, out: &mut String) {
        use std::fmt::Write;
        let s = |p: &ProbeSeries| {
            format!(
                "p50 {} / p99 {} / max {} us",
                p.fsync_latency_us.p50_us, p.fsync_latency_us.p99_us, p.fsync_latency_us.max_us
            )
        };
        let _ = writeln!(
            out,
            "  disk probe         4 KiB write+fdatasync: before {} ({} ops); after {} ({} ops)",
            s(&self.before),
            self.before.ops,
            s(&self.after),
            self.after.ops
        );
    }
}

/// `--baseline`: raw sequential writes around the run.
#[derive(Clone, Debug, Serialize)]
pub struct BaselineReport {
    pub raw_mb_per_sec: f64,
    pub raw_before_mb_per_sec: f64,
    pub raw_after_mb_per_sec: f64,
    /// Our entry-data MB/s over raw MB/s.
    pub ratio_to_raw: f64,
    /// Our disk MB/s (everything the log wrote) over raw MB/s.
    pub disk_ratio_to_raw: f64,
}

impl BaselineReport {
    pub fn new(before: RawWrite, after: RawWrite, ours: &RunFigures) -> Self {
        let raw = before.add(after).mb_per_sec();
        BaselineReport {
            raw_mb_per_sec: raw,
            raw_before_mb_per_sec: before.mb_per_sec(),
            raw_after_mb_per_sec: after.mb_per_sec(),
            ratio_to_raw: ours.mb_per_sec / raw,
            disk_ratio_to_raw: ours.disk_mb_per_sec / raw,
        }
    }

    fn block(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(
            out,
            "  raw baseline       {:.1} MB/s sequential O_DIRECT 1 MiB write + fdatasync (before {:.1}, after {:.1})",
            self.raw_mb_per_sec, self.raw_before_mb_per_sec, self.raw_after_mb_per_sec
        );
        let _ = writeln!(
            out,
            "  ours / raw         {:.1}% entry data, {:.1}% disk bytes",
            self.ratio_to_raw * 100.0,
            self.disk_ratio_to_raw * 100.0
        );
    }
}

/// `--compare`: group commit and sync-each, interleaved.
#[derive(Clone, Debug, Serialize)]
pub struct CompareReport {
    pub group_commit: RunFigures,
    pub sync_each: RunFigures,
    /// Median group-commit appends/s over median sync-each appends/s.
    pub ratio_appends_per_sec: f64,
    pub group_commit_runs: Vec<RunFigures>,
    pub sync_each_runs: Vec<RunFigures>,
}

impl CompareReport {
    pub fn new(group_commit_runs: Vec<RunFigures>, sync_each_runs: Vec<RunFigures>) -> Self {
        let group_commit = RunFigures::medians(&group_commit_runs);
        let sync_each = RunFigures::medians(&sync_each_runs);
        CompareReport {
            ratio_appends_per_sec: group_commit.appends_per_sec / sync_each.appends_per_sec,
            group_commit,
            sync_each,
            group_commit_runs,
            sync_each_runs,
        }
    }
}

/// The setup, echoed in both outputs.
#[derive(Clone, Debug, Serialize)]
pub struct Setup {
    pub mode: &'static str,
    pub regions: usize,
    pub inflight: usize,
    /// Open loop: the offered rate (appends per second); absent in a closed loop.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate_per_sec: Option<f64>,
    pub entry_bytes: usize,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub segment_bytes: u64,
    pub rounds: usize,
    /// "direct" (O_DIRECT), "direct (tmpfs)" (memory, not a disk) or
    /// "buffered" (the file system refused O_DIRECT).
    pub io: &'static str,
    pub dir: String,
}

/// What the mode measured.
pub enum Outcome {
    Run { run: RunFigures, baseline: Option<BaselineReport> },
    Compare(CompareReport),
    Recovery(RecoveryResult),
}

/// Everything one invocation reports.
pub struct Report {
    pub setup: Setup,
    pub outcome: Outcome,
    pub probe: Option<ProbeReport>,
}

#[derive(Serialize)]
struct Json<'a> {
    bench: &'static str,
    #[serde(flatten)]
    setup: &'a Setup,
    /// The run's figures; for --compare the group-commit medians.
    #[serde(flatten)]
    figures: Option<&'a RunFigures>,
    #[serde(skip_serializing_if = "Option::is_none")]
    baseline: Option<&'a BaselineReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    compare: Option<&'a CompareReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    recovery: Option<&'a RecoveryResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disk_probe: Option<&'a ProbeReport>,
}

impl Report {
    pub fn json(&self) -> String {
        let (figures, baseline, compare, recovery) = match &self.outcome {
            Outcome::Run { run, baseline } => (Some(run), baseline.as_ref(), None, None),
            Outcome::Compare(c) => (Some(&c.group_commit), None, Some(c), None),
            Outcome::Recovery(r) => (None, None, None, Some(r)),
        };
        let j = Json {
            bench: "wal",
            setup: &self.setup,
            figures,
            baseline,
            compare,
            recovery,
            disk_probe: self.probe.as_ref(),
        };
        serde_json::to_string_pretty(&j).expect("report serializes")
    }

    pub fn text(&self) -> String {
        use std::fmt::Write;
        let s = &self.setup;
        let mut out = String::new();
        let load = match s.rate_per_sec {
            Some(r) => format!("{} regions at {r:.0} appends/s offered", s.regions),
            None => format!("{} regions x {} in flight", s.regions, s.inflight),
        };
        let _ = writeln!(
            out,
            "ringraft bench wal ({}): {load}, {} B entries, segments {}, {} I/O in {}",
            s.mode,
            s.entry_bytes,
            crate::units::format_bytes(s.segment_bytes),
            s.io,
            s.dir
        );
        match &self.outcome {
            Outcome::Run { run, baseline } => {
                run.block(&mut out);
                if s.mode == "sync-each" {
                    let _ = writeln!(
                        out,
                        "                     (sync-each latency includes queueing for the one write in flight)"
                    );
                }
                if let Some(b) = baseline {
                    b.block(&mut out);
                }
            }
            Outcome::Compare(c) => {
                let _ = writeln!(out, "  medians of {} interleaved rounds:", s.rounds);
                let _ = writeln!(out, "  group commit       {}", c.group_commit.line());
                let _ = writeln!(out, "  sync each          {}", c.sync_each.line());
                let _ = writeln!(out, "  group commit / sync each: {:.1}x appends/s", c.ratio_appends_per_sec);
            }
            Outcome::Recovery(r) => {
                let _ = writeln!(
                    out,
                    "  recovered          {} segments ({:.1} MB of files), {} records, {} entries, {} regions",
                    r.segments,
                    r.segment_file_bytes as f64 / 1e6,
                    r.records,
                    r.entries_replayed,
                    r.regions
                );
                let _ = writeln!(
                    out,
                    "  Wal::open          {:.0} MB/s (median of {} rounds)",
                    r.recovery_mb_per_sec,
                    r.rounds.len()
                );
                let _ = writeln!(out, "  raw O_DIRECT read  {:.0} MB/s", r.raw_read_mb_per_sec);
                let _ = writeln!(out, "  ours / raw         {:.1}%", r.ratio_to_raw * 100.0);
            }
        }
        if let Some(p) = &self.probe {
            p.block(&mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_series() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), 2.0);
        assert_eq!(median([4.0, 1.0, 3.0, 2.0].into_iter()), 2.5);
    }

    #[test]
    fn json_holds_the_documented_keys() {
        let setup = Setup {
            mode: "group-commit",
            regions: 1,
            inflight: 1,
            rate_per_sec: None,
            entry_bytes: 1,
            duration_s: 1.0,
            warmup_s: 0.0,
            segment_bytes: 1,
            rounds: 1,
            io: "direct",
            dir: ".".into(),
        };
        let r = Report { setup, outcome: Outcome::Run { run: RunFigures::default(), baseline: None }, probe: None };
        let v: serde_json::Value = serde_json::from_str(&r.json()).unwrap();
        for key in [
            "appends_per_sec",
            "mb_per_sec",
            "fsyncs_per_sec",
            "regions_per_fsync",
            "p50_us",
            "p99_us",
            "p999_us",
            "max_us",
        ] {
            assert!(v.get(key).is_some_and(|x| x.is_number()), "missing {key} in {v}");
        }
    }
}
