#!/usr/bin/env bash
# Reproduces the WAL figures of docs/benchmarks.md on this machine.
# Every comparison runs both sides in the same invocation (interleaved where
# it matters) and reports medians; the disk has slow spells, so compare the
# ratios, and look at the fsync figures printed beside every latency.
# Usage: scripts/bench-wal.sh [OUT_DIR]   (about 6 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-bench-results}
mkdir -p "$out"
cargo build --release --quiet
bin=target/release/ringraft

echo "== 1. group commit vs one fsync per append (64 regions, 128 B), interleaved, 5 rounds"
$bin bench wal --regions 64 --entry-bytes 128 --duration 5s --compare --rounds 5 --json "$out/compare.json" | tee "$out/compare.txt"

echo "== 2. throughput vs raw sequential O_DIRECT (1 KiB entries, 16 in flight per region), 3 runs"
for i in 1 2 3; do
  $bin bench wal --regions 64 --entry-bytes 1024 --inflight 16 --duration 5s --baseline --json "$out/baseline-$i.json" | tee "$out/baseline-$i.txt"
done

echo "== 3. latency at half of the peak rate, open loop, 3 runs"
peak=$(python3 -c "import json; print(int(json.load(open('$out/compare.json'))['compare']['group_commit']['appends_per_sec']))")
half=$((peak / 2))
for i in 1 2 3; do
  $bin bench wal --regions 64 --entry-bytes 128 --rate "$half" --duration 15s --warmup 2s --json "$out/half-rate-$i.json" | tee "$out/half-rate-$i.txt"
done

echo "== 4. recovery of 1 GiB of 1 KiB entries vs a raw O_DIRECT read, 3 rounds (directory kept for step 5)"
$bin bench wal --recovery --entry-bytes 1024 --inflight 16 --recovery-bytes 1GiB --rounds 3 --keep --dir "$out" \
  --json "$out/recovery.json" 2>&1 | tee "$out/recovery.txt"

echo "== 5. ringraft wal verify on the same files vs dd with O_DIRECT"
wal_dir=$(ls -d "$out"/ringraft-bench-*/recovery-wal | tail -1)
for i in 1 2 3; do
  for f in "$wal_dir"/*.wal; do dd if="$f" iflag=nocache count=0 status=none; done
  s=$(date +%s.%N); $bin wal verify "$wal_dir" > "$out/verify-$i.txt"; e=$(date +%s.%N)
  s2=$(date +%s.%N); for f in "$wal_dir"/*.wal; do dd if="$f" of=/dev/null bs=1M iflag=direct status=none; done; e2=$(date +%s.%N)
  bytes=$(du -cb "$wal_dir"/*.wal | tail -1 | cut -f1)
  python3 -c "b=$bytes; v=$e-$s; r=$e2-$s2; print(f'round $i: verify {b/v/1e6:.0f} MB/s, dd O_DIRECT {b/r/1e6:.0f} MB/s, ratio {r/v*100:.1f}%')" | tee -a "$out/verify.txt"
done
rm -rf "$(dirname "$wal_dir")"
