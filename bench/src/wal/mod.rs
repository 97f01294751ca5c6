//! `ringraft bench wal`: one shard's WAL driven by many regions at once, the
//! figure the whole design rests on (one fdatasync per core for thousands of
//! regions, docs/design.md, "The write-ahead log").
//!
//! [`run`] makes a scratch directory on the disk under test, starts one
//! glommio executor (one shard), runs the chosen mode there, prints a text
//! report and optionally writes JSON, and removes the directory.
//!
//! - [`args`]: the flags, their defaults and limits.
//! - [`append`]: one timed run of appenders against a real `wal::GroupCommit`.
//! - [`raw`]: the disk without the WAL (baseline writes, 4 KiB probe, raw reads).
//! - [`recovery`]: `--recovery`, reopening speed against a raw read.
//! - [`report`]: text and JSON.

mod append;
mod args;
mod raw;
mod recovery;
pub(crate) mod report;

use std::path::{Path, PathBuf};
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};
use wal::disk::{GlommioDisk, WriteMode};

pub use args::WalBenchArgs;

use append::{run_appends, AppendConfig, Until};
use raw::{ProbeFile, RawWriteFile};
use report::{BaselineReport, CompareReport, Outcome, ProbeReport, Report, RunFigures, Setup};

/// io_memory of the benchmark's executor: holds the largest group-commit
/// batch of the default options. glommio registers it in three rings; root
/// is exempt from the memlock limit, other users get a warning and unregistered
/// buffers (docs/wal.md, "glommio notes").
const IO_MEMORY_BYTES: usize = 8 << 20;

/// Runs the benchmark the flags describe and prints its report.
pub fn run(args: WalBenchArgs) -> Result<(), String> {
    args.validate()?;
    let parent = args.dir.clone().unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&parent).map_err(|e| format!("create {}: {e}", parent.display()))?;
    let parent = std::fs::canonicalize(&parent).map_err(|e| format!("resolve {}: {e}", parent.display()))?;
    let scratch = tempfile::Builder::new()
        .prefix("ringraft-bench-")
        .tempdir_in(&parent)
        .map_err(|e| format!("make a scratch directory in {}: {e}", parent.display()))?;
    let root = scratch.path().to_path_buf();

    let exec_args = args.clone();
    let outcome = LocalExecutorBuilder::new(Placement::Unbound)
        .name("bench-wal")
        .io_memory(IO_MEMORY_BYTES)
        .spawn(move || async move { drive(exec_args, root).await })
        .map_err(|e| format!("start the glommio executor: {e}"))?
        .join()
        .map_err(|e| format!("glommio executor: {e}"));
    // Remove the scratch directory whatever happened (unless asked to keep it).
    let removed = if args.keep {
        let kept = scratch.keep();
        eprintln!("kept the scratch directory {}", kept.display());
        Ok(())
    } else {
        scratch.close().map_err(|e| format!("remove the scratch directory: {e}"))
    };
    let report = outcome??;
    removed?;

    print!("{}", report.text());
    if let Some(path) = &args.json {
        std::fs::write(path, report.json() + "\n").map_err(|e| format!("write {}: {e}", path.display()))?;
        println!("JSON written to {}", path.display());
    }
    Ok(())
}

/// Everything that runs on the shard thread.
async fn drive(args: WalBenchArgs, root: PathBuf) -> Result<Report, String> {
    // The first timer of a new executor takes ~16 ms (membarrier
    // registration); take it here rather than inside a measurement.
    glommio::timer::sleep(Duration::from_millis(1)).await;
    // The first DMA file this thread opens must be a non-empty one (glommio's
    // iopoll probe bug): `GlommioDisk::open` takes care of it, so open one
    // before the probe and baseline files.
    let guard =
        GlommioDisk::open(&root.join("first-open")).await.map_err(|e| format!("open scratch directory: {e}"))?;
    let direct = guard.mode() == WriteMode::Direct;
    let tmpfs = is_tmpfs(&root);
    if tmpfs {
        eprintln!(
            "warning: {} is on tmpfs: fdatasync does not reach a disk, so these figures are memory and \
             io_uring, not storage; use --dir on the disk you mean to measure",
            root.display()
        );
    }
    if !direct {
        eprintln!(
            "warning: {} does not support O_DIRECT (tmpfs?): the WAL falls back to buffered writes, \
             the disk probe and baseline are skipped, and the figures say little about a disk; use --dir",
            root.display()
        );
    }

    let mut probe = match (direct, args.probe_ops) {
        (true, ops) if ops > 0 => Some(ProbeFile::create(&root).await?),
        _ => None,
    };
    let before = match &mut probe {
        Some(p) => Some(p.probe(args.probe_ops).await?),
        None => None,
    };

    let (mode, outcome) = if args.recovery {
        ("recovery", Outcome::Recovery(recovery::run_recovery(&args, &root).await?))
    } else if args.compare {
        ("compare", compare(&args, &root).await?)
    } else {
        let mode = match (args.sync_each, args.rate) {
            (true, _) => "sync-each",
            (false, Some(_)) => "group-commit, open loop",
            (false, None) => "group-commit",
        };
        (mode, single(&args, &root, direct).await?)
    };

    let probe_report = match probe {
        Some(mut p) => {
            let after = p.probe(args.probe_ops).await?;
            let overall = p.overall();
            p.remove().await?;
            Some(ProbeReport::new(before.expect("probed before"), after, overall))
        }
        None => None,
    };
    drop(guard);
    Ok(Report {
        setup: Setup {
            mode,
            regions: args.regions,
            inflight: args.inflight,
            rate_per_sec: args.rate,
            entry_bytes: args.entry_bytes,
            duration_s: args.duration.as_secs_f64(),
            warmup_s: args.warmup.as_secs_f64(),
            segment_bytes: args.segment_bytes,
            rounds: if args.compare || args.recovery { args.rounds } else { 1 },
            io: match (direct, tmpfs) {
                (true, false) => "direct",
                (true, true) => "direct (tmpfs)",
                (false, _) => "buffered",
            },
            dir: root.display().to_string(),
        },
        outcome,
        probe: probe_report,
    })
}

fn append_config(args: &WalBenchArgs, sync_each: bool) -> AppendConfig {
    AppendConfig {
        regions: args.regions,
        inflight: args.inflight,
        entry_bytes: args.entry_bytes,
        sync_each,
        warmup: args.warmup,
        until: Until::Elapsed(args.duration),
        options: args.wal_options(),
        compact: true,
        rate_per_sec: args.rate,
    }
}

/// One append run in a fresh WAL directory under `root`, removed afterwards.
async fn one_run(args: &WalBenchArgs, root: &Path, name: &str, sync_each: bool) -> Result<RunFigures, String> {
    let dir = root.join(name);
    let result = run_appends(&dir, append_config(args, sync_each)).await;
    std::fs::remove_dir_all(&dir).map_err(|e| format!("remove {}: {e}", dir.display()))?;
    Ok(RunFigures::from(&result?))
}

/// A plain run, with `--baseline` half before and half after it.
async fn single(args: &WalBenchArgs, root: &Path, direct: bool) -> Result<Outcome, String> {
    let mut raw = match (args.baseline, direct) {
        (true, true) => Some(RawWriteFile::create(root).await?),
        (true, false) => {
            eprintln!("warning: --baseline needs O_DIRECT; skipped");
            None
        }
        _ => None,
    };
    let raw_before = match &mut raw {
        Some(f) => Some(f.sequential_write(args.duration / 2).await?),
        None => None,
    };
    let run = one_run(args, root, "wal", args.sync_each).await?;
    let baseline = match raw {
        Some(mut f) => {
            let after = f.sequential_write(args.duration / 2).await?;
            f.remove().await?;
            Some(BaselineReport::new(raw_before.expect("measured before"), after, &run))
        }
        None => None,
    };
    Ok(Outcome::Run { run, baseline })
}

/// `--compare`: rounds of one group-commit and one sync-each run, the order
/// alternating so neither always runs first after a disk slow spell.
async fn compare(args: &WalBenchArgs, root: &Path) -> Result<Outcome, String> {
    let mut gc_runs = vec![];
    let mut se_runs = vec![];
    for round in 0..args.rounds {
        let order = if round % 2 == 0 { [false, true] } else { [true, false] };
        for sync_each in order {
            let name = if sync_each { "sync-each" } else { "group-commit" };
            let r = one_run(args, root, &format!("{name}-{round}"), sync_each).await?;
            println!("round {} {name:<12} {}", round + 1, r.line());
            if sync_each {
                se_runs.push(r);
            } else {
                gc_runs.push(r);
            }
        }
    }
    Ok(Outcome::Compare(CompareReport::new(gc_runs, se_runs)))
}

/// Whether `path` lives on tmpfs (memory: an fdatasync there measures nothing).
// `f_type` is i64 on x86_64 but narrower on some targets, hence the cast.
#[allow(clippy::unnecessary_cast)]
fn is_tmpfs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    /// `TMPFS_MAGIC` from linux/magic.h.
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else { return false };
    let mut st = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: `c_path` is a valid C string and `st` is large enough for statfs to fill.
    let rc = unsafe { libc::statfs(c_path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return false;
    }
    // SAFETY: statfs returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    st.f_type as i64 == TMPFS_MAGIC
}
