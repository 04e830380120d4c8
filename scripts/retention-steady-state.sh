#!/usr/bin/env bash
# Steady state under retention: the reference server with -retention WINDOW
# against the same load without retention, one after the other on this
# machine, each for RUN (at least five windows). Prints the load tool's
# progress lines (events/s and the database's size, file and log, each
# second) and its summary, for both runs.
#
#   scripts/retention-steady-state.sh [WINDOW [RUN [RATE]]]     # default 30s 160s, as fast as answers come
#
# With RATE (events/s), the load is offered at that constant rate instead of
# as fast as the server answers: the summary then says how much of it each
# server took (all of it, if expiry keeps up without stalling ingest).
# Compare, in one output: the size after the second window (it should stay
# within +-20% from then on with retention, and grow without), and the
# throughput of the two runs (the one with retention at least 90% of the
# other).
set -euo pipefail
cd "$(dirname "$0")/.."
window=${1:-30s}
run=${2:-160s}
rate=${3:-0}
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT
go build -o "$dir/eventagg" ./cmd/eventagg
go build -o "$dir/eventagg-load" ./cmd/eventagg-load
for mode in retention none; do
  args=()
  [ "$mode" = retention ] && args=(-retention "$window")
  db="$dir/$mode.db"
  "$dir/eventagg" -addr 127.0.0.1:18090 -db "$db" "${args[@]}" 2>"$dir/$mode.log" &
  pid=$!
  until curl -sf -o /dev/null http://127.0.0.1:18090/health; do sleep 0.1; done
  echo "== $mode ${args[*]}"
  "$dir/eventagg-load" -url http://127.0.0.1:18090 -pid "$pid" -db "$db" -clients 8 -batch 1000 -ids uuid -duration "$run" -rate "$rate"
  kill "$pid"; wait "$pid" || true
done
