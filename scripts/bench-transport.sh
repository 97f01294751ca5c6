#!/usr/bin/env bash
# Reproduces the transport figures of docs/benchmarks.md on this machine.
# Ours and the raw TCP pump run interleaved in each round (same loopback, same
# CPUs, the pump writing what our frames averaged); medians are reported.
# Usage: scripts/bench-transport.sh [OUT_DIR]   (about 3 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench-results}
mkdir -p "$out"
cargo build --release --quiet
bin=target/release/ringraft

echo "== 1. 128-byte messages, 256 regions, one destination, 3 rounds against the raw TCP pump"
$bin bench transport --message-bytes 128 --duration 10s --rounds 3 --json "$out/transport.json" | tee "$out/transport.txt"

echo "== 2. heartbeat round: 10,000 regions x 32 B to 3 destination shards (frames per iteration = 3)"
$bin bench transport --message-bytes 32 --regions 10000 --destinations 3 --duration 5s --rounds 3 \
  --json "$out/transport-heartbeats.json" | tee "$out/transport-heartbeats.txt"

echo "== 3. codec CPU cost (criterion)"
cargo bench -p transport --bench codec 2>&1 | tee "$out/transport-codec.txt"
