#!/usr/bin/env bash
# Replicated writes/s of three `ringraft server` processes (64 regions, one
# shard each, fsync on) under `ringraft ctl load`, for one or more builds of
# the binary, interleaved round by round so that the disk's slow spells fall
# on every build alike (compare within a round, and the medians).
#
#   scripts/bench-engine.sh [--rounds N] [--duration 8s] [--rate R] BIN [BIN...]
#   scripts/bench-engine.sh target/release/ringraft /tmp/base-target/release/ringraft
#
# Each run starts from empty data directories on ports 32000+ and prints the
# load driver's line (with --rate: open loop, per-put latency percentiles)
# and the stores' fsync p99 of that run.
set -euo pipefail

rounds=3
duration=8s
bins=()
load_args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --duration) duration="$2"; shift 2 ;;
    --rate) load_args+=(--rate "$2"); shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) bins+=("$1"); shift ;;
  esac
done
[[ ${#bins[@]} -gt 0 ]] || { echo "usage: $0 [--rounds N] [--duration D] BIN [BIN...]" >&2; exit 2; }

work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

run_one() {
  local bin="$1" dir="$2"
  mkdir -p "$dir"
  # a store left over from another run would answer in place of this build's
  if (exec 3<>/dev/tcp/127.0.0.1/32064) 2>/dev/null; then
    echo "something already listens on 127.0.0.1:32064; stop it first" >&2
    exit 1
  fi
  "$bin" spec --stores 3 --regions 64 --base-port 32000 > "$dir/spec.json"
  pids=()
  for i in 1 2 3; do
    "$bin" server --spec "$dir/spec.json" --store-id "$i" --data-dir "$dir/d$i" \
      --status-addr "127.0.0.1:1910$i" 2> "$dir/store-$i.log" &
    pids+=($!)
  done
  # every store answers on its client port before the load starts
  for i in 1 2 3; do
    for _ in $(seq 1 100); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$((32000 + (i - 1) * 128 + 64))") 2>/dev/null; then break; fi
      sleep 0.1
    done
  done
  for p in "${pids[@]}"; do
    kill -0 "$p" 2>/dev/null || { echo "a store of $bin exited at start: see $dir/store-*.log" >&2; exit 1; }
  done
  # measure the cluster, not its elections: wait until all 64 regions have a leader
  for _ in $(seq 1 300); do
    leaders=$(for i in 1 2 3; do curl -s "http://127.0.0.1:1910$i/metrics"; done | awk '/^ringraft_leaders/ {n += $2} END {print n + 0}')
    [[ "$leaders" -ge 64 ]] && break
    sleep 0.1
  done
  "$bin" ctl --spec "$dir/spec.json" load --threads 8 --batch 256 --duration "$duration" "${load_args[@]}" 2>&1 | tail -1
  for i in 1 2 3; do
    curl -s "http://127.0.0.1:1910$i/metrics" > "$dir/metrics-$i.txt" || true
  done
  echo "    fsync p99 (us) per store: $(grep -h '^ringraft_fsync_latency_us_p99' "$dir"/metrics-?.txt | awk '{printf "%s ", $2}')"
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  pids=()
}

for r in $(seq 1 "$rounds"); do
  for b in "${!bins[@]}"; do
    line=$(run_one "${bins[$b]}" "$work/r$r-b$b")
    echo "round $r  ${bins[$b]}: $line"
    grep -h '^ringraft_snapshots_taken_total\|^ringraft_wal_segments_purged_total' "$work/r$r-b$b"/metrics-?.txt |
      awk '{split($1, n, "{"); s[n[1]] += $2} END {for (k in s) printf "    %s %d (all stores)\n", k, s[k]}' || true
    rm -rf "$work/r$r-b$b"/d?
  done
done
