#!/usr/bin/env bash
# Runs `ringraft chaos` again and again, seeds counting up, until a run
# fails (exit 1, its history, logs and data kept and named) or the soak's
# time is up; then sums the runs' JSON reports: runs, operations checked,
# faults by kind, anomalies and acknowledged writes lost.
#
# Usage: scripts/chaos-soak.sh [--total 30m] [--from SEED] [--out DIR] [-- CHAOS FLAGS...]
#   --total    how long to keep starting runs (default 30m; a run started
#              before the end finishes)
#   --from     the first seed (default: drawn from the clock)
#   --out      where each run's JSON report goes (default chaos-soak/)
#   after --, flags for every run (default: --duration 60s), e.g.
#   scripts/chaos-soak.sh --total 2h -- --duration 120s --kill-interval 2s
set -euo pipefail
cd "$(dirname "$0")/.."

total=30m from=$(( $(date +%s) % 1000000 )) out=chaos-soak
while [ $# -gt 0 ]; do
  case "$1" in
    --total) total=$2; shift 2 ;;
    --from) from=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "chaos-soak: unknown flag $1 (see --help)" >&2; exit 2 ;;
  esac
done
flags=("$@")
[ ${#flags[@]} -eq 0 ] && flags=(--duration 60s)

to_seconds() {
  case "$1" in
    *h) echo $(( ${1%h} * 3600 )) ;;
    *m) echo $(( ${1%m} * 60 )) ;;
    *s) echo "${1%s}" ;;
    *) echo "chaos-soak: --total $1: give a unit (30m, 2h, 90s)" >&2; exit 2 ;;
  esac
}
end=$(( $(date +%s) + $(to_seconds "$total") ))

cargo build --release --quiet
bin=target/release/ringraft
mkdir -p "$out"
seed=$from
status=0
while [ "$(date +%s)" -lt "$end" ]; do
  echo "== chaos seed $seed"
  if ! $bin chaos --seed "$seed" --json "$out/seed-$seed.json" "${flags[@]}"; then
    status=1
    echo "chaos-soak: seed $seed FAILED (its report: $out/seed-$seed.json); stopping" >&2
    break
  fi
  seed=$(( seed + 1 ))
done

# the sum of every report of this soak (seeds from..seed)
python3 - "$out" "$from" "$seed" <<'PY'
import json, os, sys
out, first, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
runs, total = 0, {"ops": 0, "ok": 0, "unknown": 0, "anomalies": 0, "acknowledged_lost": 0, "duration_s": 0.0}
faults = {}
for seed in range(first, last + 1):
    path = os.path.join(out, f"seed-{seed}.json")
    if not os.path.exists(path):
        continue
    r = json.load(open(path))
    runs += 1
    for k in total:
        total[k] += r[k]
    for k, n in r["faults"].items():
        faults[k] = faults.get(k, 0) + n
print(f"chaos soak: {runs} runs, {total['duration_s'] / 60:.1f} minutes of chaos, {total['ops']} operations "
      f"({total['ok']} ok, {total['unknown']} unknown), anomalies {total['anomalies']}, "
      f"acknowledged writes lost {total['acknowledged_lost']}")
print("faults: " + ", ".join(f"{k} {n}" for k, n in sorted(faults.items())))
PY
exit $status
