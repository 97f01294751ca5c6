//! `ringraft wal stat|dump|verify`: inspect a WAL offline and read-only.
//!
//! - [`open`]: finds the WAL(s) under DIR and maps their segments read-only.
//! - [`stat`]: segments, regions, purge and recovery, summarized.
//! - [`dump`]: every record and entry, one line each.
//! - [`verify`]: strict recovery over everything; the first problem, exactly.
//!
//! Each command prints text, or with `--json` JSON for scripts (field names
//! are snake_case and stable). Exit codes: 0 clean, 1 a problem was found
//! (`verify`) or recovery could not finish (`stat`), 2 the tool could not run
//! ([`ToolError`]).

mod dump;
mod error;
mod json;
mod open;
mod stat;
#[cfg(test)]
mod testkit;
mod verify;

use std::io::{BufWriter, Write};
use std::path::PathBuf;

pub use error::ToolError;

/// Inspect a write-ahead log offline and read-only.
///
/// DIR is a WAL directory (it holds `<16 hex digits>.wal` segment files) or a
/// store data directory (it holds `shard-<i>/wal/`; each shard's WAL is then
/// reported in turn). Segments are mapped read-only; nothing is ever written.
/// The server must be stopped: a WAL it holds locked is refused.
#[derive(Debug, clap::Subcommand)]
pub enum WalCommand {
    /// Summarize a WAL: segments, regions, what holds back purge, what recovery finds.
    ///
    /// Per segment: sequence number, file size, records, bytes used, and its
    /// entry bytes split into live (a region still needs them) and garbage.
    /// Per region: entry count, first and last index, live bytes, whether it
    /// blocks purge (its oldest live entry is in a segment older than the
    /// active one), tombstone and HardState. Then the recovery report: torn
    /// tail, and anything a tolerant recovery had to drop.
    ///
    /// Exit code 0; 1 if recovery could not get through the WAL (the output is
    /// then partial; `verify` names the problem); 2 if the tool could not run.
    Stat {
        /// WAL directory, or store data directory holding shard-<i>/wal/.
        dir: PathBuf,
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List every record and every entry as written, one line each.
    ///
    /// Records: segment, offset, kind (batch or checkpoint), lsn, payload
    /// bytes, sections (a record with none is a seal: it only acknowledges
    /// the record before it, docs/wal.md); then each region's section (or checkpoint state) and
    /// its entries: region, index, term, type, data length. This is the raw
    /// view below recovery: entries later overwritten or compacted are shown
    /// too, and a bad record is reported and skipped to the next valid one.
    Dump {
        /// WAL directory, or store data directory holding shard-<i>/wal/.
        dir: PathBuf,
        /// Show only this region's sections, checkpoint state and entries.
        #[arg(long)]
        region: Option<u64>,
        /// Show only entries with index >= FROM (sections without such entries, and checkpoints, are hidden).
        #[arg(long)]
        from: Option<u64>,
        /// Show only entries with index <= TO (sections without such entries, and checkpoints, are hidden).
        #[arg(long)]
        to: Option<u64>,
        /// Print JSON Lines: one object per line, each with a "type" field.
        #[arg(long)]
        json: bool,
    },
    /// Check every checksum and every region's index continuity, as the server would on open.
    ///
    /// Runs the WAL's own recovery in strict mode over all segments in
    /// sequence order, and checks that no segment is shorter than its header
    /// says. A torn tail (a bad record with nothing valid after it: a write
    /// that never completed) is reported as a warning and is clean.
    ///
    /// Exit code 0 when clean; 1 on the first problem, naming its segment and
    /// offset; 2 if the tool could not run.
    Verify {
        /// WAL directory, or store data directory holding shard-<i>/wal/.
        dir: PathBuf,
        /// Print one JSON document instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a command, writing its report to `out`; returns the process exit code.
pub fn run(cmd: WalCommand, out: &mut dyn Write) -> Result<i32, ToolError> {
    let mut out = BufWriter::new(out);
    let code = match cmd {
        WalCommand::Stat { dir, json } => {
            let wals = open::open(&dir)?;
            let report = stat::stat(dir, &wals);
            print(json, &report, &mut out, stat::write_text)?;
            stat::exit_code(&report)
        }
        WalCommand::Dump { dir, region, from, to, json } => {
            let filter = dump::Filter::new(region, from, to)?;
            let wals = open::open(&dir)?;
            match dump::dump(&wals, filter, json, &mut out).and_then(|code| out.flush().map(|()| code)) {
                Ok(code) => code,
                // `ringraft wal dump DIR | head`: the reader has all it wanted
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(0),
                Err(e) => return Err(ToolError::Output(e)),
            }
        }
        WalCommand::Verify { dir, json } => {
            let wals = open::open(&dir)?;
            let report = verify::verify(dir, &wals);
            print(json, &report, &mut out, verify::write_text)?;
            verify::exit_code(&report)
        }
    };
    out.flush().map_err(ToolError::Output)?;
    Ok(code)
}

/// Writes a report as pretty JSON or as text.
fn print<R: serde::Serialize>(
    json: bool,
    report: &R,
    out: &mut dyn Write,
    text: fn(&R, &mut dyn Write) -> std::io::Result<()>,
) -> Result<(), ToolError> {
    let written = if json {
        serde_json::to_writer_pretty(&mut *out, report).map_err(std::io::Error::from).and_then(|()| writeln!(out))
    } else {
        text(report, out)
    };
    written.map_err(ToolError::Output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        wal: WalCommand,
    }

    #[test]
    fn the_command_line_parses_and_every_argument_has_help() {
        Cli::command().debug_assert();
        let cli =
            Cli::try_parse_from(["x", "dump", "/d", "--region", "5", "--from", "10", "--to", "20", "--json"]).unwrap();
        assert!(matches!(cli.wal, WalCommand::Dump { region: Some(5), from: Some(10), to: Some(20), json: true, .. }));
        let mut cmd = Cli::command();
        for sub in cmd.get_subcommands_mut() {
            assert!(sub.get_about().is_some(), "{} has no help", sub.get_name());
            for arg in sub.get_arguments() {
                assert!(arg.get_help().is_some(), "{} {} has no help", sub.get_name(), arg.get_id());
            }
        }
    }

    #[test]
    fn run_returns_exit_codes_and_tool_errors() {
        let (dir, _) = testkit::build(&testkit::Plan::default());
        let mut out = vec![];
        let code = run(WalCommand::Verify { dir: dir.path().to_path_buf(), json: true }, &mut out).unwrap();
        assert_eq!(code, 0);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["ok"], true);
        let missing = dir.path().join("missing");
        let err = run(WalCommand::Stat { dir: missing, json: false }, &mut vec![]).unwrap_err();
        assert!(matches!(err, ToolError::DirNotFound { .. }));
        let usage =
            WalCommand::Dump { dir: dir.path().to_path_buf(), region: None, from: Some(5), to: Some(1), json: false };
        assert!(matches!(run(usage, &mut vec![]).unwrap_err(), ToolError::Usage(_)));
    }

    /// A reader that goes away mid-dump is not an error.
    #[test]
    fn a_closed_pipe_ends_dump_quietly() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let (dir, _) = testkit::build(&testkit::Plan::default());
        let cmd = WalCommand::Dump { dir: dir.path().to_path_buf(), region: None, from: None, to: None, json: false };
        assert_eq!(run(cmd, &mut Closed).unwrap(), 0);
    }
}
