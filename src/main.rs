//! `ringraft`: one multi-call binary for the engine, its benchmarks and its tools.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Every process of the binary (stores, PD, the bench) allocates through
/// jemalloc: a shard allocates and frees many small, short-lived buffers
/// (client requests, entries, frames), which glibc's malloc served at a
/// CPU cost that showed in every profile.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod cmd;
use cmd::chaos::{chaos, ChaosArgs};
use cmd::ctl::{ctl, CtlArgs};
use cmd::local::{local, LocalArgs};
use cmd::pd::{pd, PdArgs};
use cmd::server::{server, ServerArgs};
use cmd::sim::{sim, SimArgs};

/// ringraft — a multi-raft replicated key-value engine.
///
/// Thousands of raft groups ("regions") per store; one thread, one
/// write-ahead log and one fdatasync per core for all of them.
#[derive(Parser)]
#[command(name = "ringraft", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run benchmarks: `kv`, `wal`, `transport`, `split` (`ringraft bench` alone runs
    /// `kv` with its defaults against a local cluster it starts: under a minute).
    Bench {
        #[command(subcommand)]
        which: Option<BenchCommand>,
    },
    /// Start a local cluster: PD and stores of this binary on loopback, in a
    /// temporary directory unless --data-dir is given; prints the addresses
    /// and waits; Ctrl-C stops everything (and removes the temporary directory).
    Local(LocalArgs),
    /// Inspect a WAL offline and read-only: stat, dump, verify.
    Wal {
        #[command(subcommand)]
        command: tools::wal::WalCommand,
    },
    /// Run a store: one shard per core, each with its WAL, peer port and
    /// client port (base ports + shard index); it joins the cluster through
    /// PD (--pd) or a fixed spec (--spec).
    Server(ServerArgs),
    /// Run the placement driver: stores register with it, it lays out the
    /// initial regions, takes heartbeats and answers routing questions.
    Pd(PdArgs),
    /// Write a cluster spec for stores on loopback (JSON, to stdout).
    Spec(SpecArgs),
    /// Talk to a running cluster: get, put, delete, cas, scan, admin, and
    /// the cluster as PD sees it (stores, regions).
    Ctl(CtlArgs),
    /// Run the whole multi-raft story on a local cluster, checking every
    /// acknowledged write after each phase: splits (by size and by hand),
    /// two stores joining and balanced, a move by hand, a store down past
    /// PD's down time and rebuilt, a store drained and removed, every store
    /// restarted. Prints each phase, then one JSON line; fails on a lost
    /// write or a phase that does not converge (exit 2, keeping the logs). A few
    /// minutes (scripts/verify-multiraft.sh runs it).
    Verify(bench::verify::VerifyArgs),
    /// Run the deterministic simulator over many seeds (real shards, WAL,
    /// frames and PD; simulated disk, network and clock), each drawing its
    /// own faults: loss, duplication, reordering, delays, partitions one way
    /// or both, one or two stores crashed (tearing the write in flight, or
    /// stopped by an fdatasync that failed), bit rot in a WAL record found at
    /// a restart, PD crashed, splits and moves. Every history is checked for
    /// linearizability and every region for convergence; a failing seed is
    /// printed with the command that replays it. Exit 1 on any failure.
    Sim(SimArgs),
    /// Run a cluster of real processes (PD and 3–5 stores on loopback)
    /// under concurrent clients while a nemesis kills stores and PD with
    /// SIGKILL, pauses stores (SIGSTOP), partitions them (both ways or one),
    /// slows their disks, and splits, moves and transfers regions through
    /// PD. Every operation is recorded (JSON lines); at the end every store
    /// restarts, every key is read, and the history is checked for
    /// linearizability and lost acknowledged writes. Exit 1 on any anomaly,
    /// keeping the history, logs and data. scripts/chaos-soak.sh runs it in a loop.
    Chaos(ChaosArgs),
}

#[derive(clap::Args)]
struct SpecArgs {
    #[arg(long, default_value_t = 3)]
    stores: u64,
    /// Shards per store (one per core).
    #[arg(long, default_value_t = 1)]
    shards: u16,
    #[arg(long, default_value_t = 64)]
    regions: u64,
    /// Store i's peer ports start at base + (i-1)·128, its client ports 64 above.
    #[arg(long, default_value_t = 20160)]
    base_port: u16,
    #[arg(long, default_value_t = 1)]
    cluster_id: u64,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Puts and gets against a cluster (a local one it starts, by default):
    /// ops/s, latency percentiles, errors by kind, and the stores' batching
    /// figures and fsync p99 over the same window.
    Kv(bench::kv::KvBenchArgs),
    /// Fixed loads (small, medium, large), each PASS only when at least 90%
    /// of it is sustained with p99 under the engine's goal (5 ms); exits
    /// non-zero when any fails (like `etcdctl check perf`).
    Check(bench::kv::CheckArgs),
    /// One shard's WAL with many regions appending concurrently: appends/s,
    /// MB/s, fsyncs/s, regions per fsync, append-to-durable latency.
    Wal(bench::wal::WalBenchArgs),
    /// One shard's batched raft traffic to another store over loopback,
    /// against a plain TCP pump in the same run: messages/s, frames/s,
    /// messages per frame, MB/s, frame latency.
    Transport(bench::transport::TransportBenchArgs),
    /// What splitting a region costs the shard loop: the cut, the trims of
    /// both halves (the longest against its 10 ms bound), and the middle
    /// key's search (off the loop), on a state machine of the region's size.
    Split(bench::split::SplitBenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // (a campaign's thousands of simulated faults would fill the terminal
    // with the stores' warnings: it reports its own findings)
    let quiet = if matches!(cli.command, Command::Sim(_)) { "off" } else { "warn" };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("RINGRAFT_LOG").unwrap_or_else(|_| quiet.into()))
        .with_writer(std::io::stderr)
        // a store's log is usually its stderr redirected to a file: colour only on a terminal
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let result = match cli.command {
        Command::Bench { which } => {
            let ran = match which {
                Some(BenchCommand::Wal(args)) => bench::wal::run(args),
                Some(BenchCommand::Transport(args)) => bench::transport::run(args),
                Some(BenchCommand::Split(args)) => bench::split::run(args),
                Some(BenchCommand::Kv(args)) => bench::kv::run(args),
                Some(BenchCommand::Check(args)) => bench::kv::check::run(args),
                None => bench::kv::run(bench::kv::KvBenchArgs::default_run()),
            };
            ran.map(|()| ExitCode::SUCCESS)
        }
        Command::Wal { command } => tools::wal::run(command, &mut std::io::stdout().lock())
            .map(|code| ExitCode::from(code as u8))
            .map_err(|e| e.to_string()),
        Command::Server(args) => server(args).map(|()| ExitCode::SUCCESS),
        Command::Pd(args) => pd(args).map(|()| ExitCode::SUCCESS),
        Command::Local(args) => local(args).map(|()| ExitCode::SUCCESS),
        Command::Spec(a) => {
            let spec = engine::spec::ClusterSpec::local(a.cluster_id, a.stores, a.shards, a.regions, a.base_port);
            spec.validate().map_err(|e| e.to_string()).map(|()| {
                println!("{}", serde_json::to_string_pretty(&spec).expect("a spec serializes"));
                ExitCode::SUCCESS
            })
        }
        Command::Ctl(args) => ctl(args),
        Command::Verify(args) => bench::verify::run(&args).map(|()| ExitCode::SUCCESS),
        Command::Sim(args) => sim(args).map(|passed| if passed { ExitCode::SUCCESS } else { ExitCode::from(1) }),
        Command::Chaos(args) => chaos(args).map(|passed| if passed { ExitCode::SUCCESS } else { ExitCode::from(1) }),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ringraft: {e}");
            ExitCode::from(2)
        }
    }
}
