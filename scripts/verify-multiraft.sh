#!/usr/bin/env bash
# The whole multi-raft story on real processes: PD and stores of the
# release binary on loopback, a writer recording every acknowledged write,
# and the phases start → splits (by size, by `ctl split`) → two stores join
# and are balanced → a move by hand → a store down past PD's down time and
# its replicas rebuilt → a store drained and removed → every store
# restarted, every acknowledged write read back after each. Its last line
# is a JSON summary:
#   {"regions": N, "moves": N, "repairs": N, "acknowledged": N, "lost": N,
#    "drained_store_removed": true|false, "phases": [...]}
# Exit status non-zero on any lost write or any phase that does not
# converge in time (the cluster's logs and data are kept and named). Every
# process it starts dies with it, however it ends. A few minutes here.
#
# Usage: scripts/verify-multiraft.sh [--base-port PORT] [--keep]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
exec target/release/ringraft verify "$@"
