#!/usr/bin/env bash
# Fuzzes ringraft's decoders of bytes from sockets and disks with cargo-fuzz
# (libFuzzer, nightly Rust), each target for N minutes, keeping its corpus
# so the next run starts where this one stopped.
#
# Usage: scripts/fuzz.sh TARGET|all [MINUTES]   (default: 5 minutes each)
#   frame_decoder    the transport's frame stream, handshakes, raft batches, snapshot frames (transport/fuzz)
#   client_protocol  a shard's client requests and answers            (fuzz/)
#   pd_protocol      PD's request and answer frames, PD's state file  (fuzz/)
#   wal_recovery     WAL recovery, strict and tolerant, of any segment bytes (fuzz/)
#   snapshot_file    the snapshot file reader                         (fuzz/)
#   write_batch      a committed entry: write batches and admin commands (fuzz/)
#
# The corpus of a target is <dir>/corpus/TARGET, a crash is saved under
# <dir>/artifacts/TARGET (both ignored by git); on a crash the script stops
# with exit 1 and prints how to replay it. Needs a nightly toolchain
# (rustup toolchain install nightly) and cargo-fuzz (installed here if
# missing: cargo install cargo-fuzz).
set -euo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
  ""|-h|--help) sed -n '2,19p' "$0"; exit 0 ;;
esac
which=$1 minutes=${2:-5}
case "$minutes" in
  ''|*[!0-9]*) echo "fuzz: MINUTES must be a whole number, not '$minutes'" >&2; exit 2 ;;
esac

targets_root=(client_protocol pd_protocol wal_recovery snapshot_file write_batch)
dir_of() {
  case "$1" in
    frame_decoder) echo transport/fuzz ;;
    client_protocol|pd_protocol|wal_recovery|snapshot_file|write_batch) echo fuzz ;;
    *) echo "fuzz: no target '$1' (see --help)" >&2; exit 2 ;;
  esac
}

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: needs a nightly toolchain: rustup toolchain install nightly" >&2
  exit 2
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

run() {
  local target=$1 dir
  dir=$(dir_of "$target")
  mkdir -p "$dir/corpus/$target"
  echo "== fuzz $target for $minutes minute(s) (corpus: $dir/corpus/$target)"
  if ! (cd "$dir" && cargo +nightly fuzz build "$target"); then
    echo "fuzz: $target does not build (above)" >&2
    exit 2
  fi
  if ! (cd "$dir" && cargo +nightly fuzz run "$target" "corpus/$target" -- \
        -max_total_time=$((minutes * 60)) -print_final_stats=1 2>&1 | tail -n 25); then
    echo "fuzz: $target CRASHED; the input is in $dir/artifacts/$target/" >&2
    echo "      replay: (cd $dir && cargo +nightly fuzz run $target artifacts/$target/<file>)" >&2
    exit 1
  fi
}

if [ "$which" = all ]; then
  for t in frame_decoder "${targets_root[@]}"; do run "$t"; done
else
  run "$which"
fi
