//! `ringraft`: one multi-call binary for the engine, its benchmarks and its tools.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// Run benchmarks: `wal`, `transport` (`ringraft bench` alone runs the WAL benchmark with defaults).
    Bench {
        #[command(subcommand)]
        which: Option<BenchCommand>,
    },
    /// Inspect a WAL offline and read-only: stat, dump, verify.
    Wal {
        #[command(subcommand)]
        command: tools::wal::WalCommand,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
    /// One shard's WAL with many regions appending concurrently: appends/s,
    /// MB/s, fsyncs/s, regions per fsync, append-to-durable latency.
    Wal(bench::wal::WalBenchArgs),
    /// One shard's batched raft traffic to another store over loopback,
    /// against a plain TCP pump in the same run: messages/s, frames/s,
    /// messages per frame, MB/s, frame latency.
    Transport(bench::transport::TransportBenchArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("RINGRAFT_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench { which } => {
            let ran = match which {
                Some(BenchCommand::Wal(args)) => bench::wal::run(args),
                Some(BenchCommand::Transport(args)) => bench::transport::run(args),
                None => bench::wal::run(bench::wal::WalBenchArgs::default_run()),
            };
            ran.map(|()| ExitCode::SUCCESS)
        }
        Command::Wal { command } => tools::wal::run(command, &mut std::io::stdout().lock())
            .map(|code| ExitCode::from(code as u8))
            .map_err(|e| e.to_string()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ringraft: {e}");
            ExitCode::from(2)
        }
    }
}
