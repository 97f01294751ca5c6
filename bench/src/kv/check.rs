//! `ringraft bench check`, in the spirit of `etcdctl check perf`: fixed open
//! loops against one cluster, each passing only when the cluster sustains at
//! least 90% of it with a p99 under its bound; a PASS/FAIL table, and a
//! failing exit status when any load fails.
//!
//! The bounds are the engine's goal, not what this machine does: p99 ≤ 5 ms
//! at 100,000 puts/s (half of the 200,000 it is built for), asked at 5%, 25%
//! and 50% of that peak.

use std::sync::atomic::Ordering;

use crate::kv::{measure, KvBenchArgs, KvReport, Target, INTERRUPTED};

/// Share of a load's rate the cluster must sustain to pass.
pub const SUSTAIN_FRACTION: f64 = 0.9;

/// One fixed load.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Load {
    pub name: &'static str,
    pub rate: u64,
    pub p99_us_max: u64,
}

pub const LOADS: [Load; 3] = [
    Load { name: "small", rate: 10_000, p99_us_max: 5_000 },
    Load { name: "medium", rate: 50_000, p99_us_max: 5_000 },
    Load { name: "large", rate: 100_000, p99_us_max: 5_000 },
];

#[derive(clap::Args, Clone, Debug)]
pub struct CheckArgs {
    /// Which loads to run (repeat the flag; default: all): small, medium, large.
    #[arg(long = "load", value_name = "NAME", value_parser = parse_load)]
    pub loads: Vec<Load>,
    /// The cluster and the workload (`--rate` is each load's).
    #[command(flatten)]
    pub kv: KvBenchArgs,
}

fn parse_load(s: &str) -> Result<Load, String> {
    LOADS.iter().find(|l| l.name == s).copied().ok_or_else(|| {
        let names: Vec<&str> = LOADS.iter().map(|l| l.name).collect();
        format!("{s:?} is not a load: one of {}", names.join(", "))
    })
}

/// Whether `r` passes `load`.
pub fn passes(load: &Load, r: &KvReport) -> bool {
    r.errors == 0 && r.ops_per_sec >= SUSTAIN_FRACTION * load.rate as f64 && r.p99_us <= load.p99_us_max
}

pub fn run(args: CheckArgs) -> Result<(), String> {
    let loads = if args.loads.is_empty() { LOADS.to_vec() } else { args.loads.clone() };
    crate::signals::flag_on_signal(&INTERRUPTED);
    let target = Target::open(&args.kv)?;
    let mut rows = vec![];
    for load in &loads {
        if INTERRUPTED.load(Ordering::Relaxed) {
            break;
        }
        println!("\n== {} load: {} puts/s, p99 ≤ {} ms", load.name, load.rate, load.p99_us_max as f64 / 1000.0);
        let kv = KvBenchArgs { rate: Some(load.rate), ..args.kv.clone() };
        match measure(&kv, &target) {
            Ok(r) => rows.push((*load, r)),
            Err(e) => {
                target.close();
                return Err(e);
            }
        }
    }
    target.close();
    println!(
        "\n{:<8} {:>12} {:>14} {:>9} {:>11} {:>13} {:>7}  verdict",
        "load", "target/s", "sustained/s", "p99 ms", "p99 max ms", "fsync p99 ms", "errors"
    );
    let mut failed = 0;
    for (load, r) in &rows {
        let ok = passes(load, r);
        failed += usize::from(!ok);
        println!(
            "{:<8} {:>12} {:>14.0} {:>9.2} {:>11.2} {:>13} {:>7}  {}",
            load.name,
            load.rate,
            r.ops_per_sec,
            r.p99_us as f64 / 1000.0,
            load.p99_us_max as f64 / 1000.0,
            r.fsync_p99_us.map_or("-".to_string(), |f| format!("{:.2}", f / 1000.0)),
            r.errors,
            if ok { "PASS" } else { "FAIL" }
        );
    }
    if INTERRUPTED.load(Ordering::Relaxed) {
        return Err("interrupted".into());
    }
    match failed {
        0 => Ok(()),
        n => Err(format!(
            "{n} of {} loads failed (needed: ≥{:.0}% of the rate sustained, p99 under the bound, no errors)",
            rows.len(),
            SUSTAIN_FRACTION * 100.0
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_load_passes_only_when_sustained_fast_and_clean() {
        let args = KvBenchArgs::default_run();
        let mut r = KvReport::new(&args, std::time::Duration::from_secs(1), &Default::default(), &None, &None);
        let small = LOADS[0];
        (r.ops_per_sec, r.p99_us, r.errors) = (9_500.0, 4_000, 0);
        assert!(passes(&small, &r));
        r.ops_per_sec = 8_000.0;
        assert!(!passes(&small, &r), "not sustained");
        (r.ops_per_sec, r.p99_us) = (10_000.0, 6_000);
        assert!(!passes(&small, &r), "p99 over the bound");
        (r.p99_us, r.errors) = (1_000, 1);
        assert!(!passes(&small, &r), "an error");
        assert!(parse_load("large").is_ok() && parse_load("huge").unwrap_err().contains("small, medium, large"));
    }
}
