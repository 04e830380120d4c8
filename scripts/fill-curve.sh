#!/usr/bin/env bash
# Fill curve: the ingest rate of the reference server on SQLite (-sync full)
# as its store fills with random (UUID-like) ids, from empty to EVENTS
# events stored, under CLIENTS clients sending BATCH-event batches. The
# load tool sends no resends (-dups 0), so events sent are events stored;
# its progress lines (one a second) go to OUT.txt. The rate over each span
# of 250,000 events stored (the events of the span over its seconds; the
# per-second rates jump with 1000-event batches) goes to OUT.csv, and
# scripts/plot draws it into OUT.svg.
#
#   scripts/fill-curve.sh [EVENTS [CLIENTS [BATCH [OUT]]]]
#       # default 10000000 8 1000 docs/bench/fill-curve
set -euo pipefail
cd "$(dirname "$0")/.."
events=${1:-10000000}
clients=${2:-8}
batch=${3:-1000}
out=${4:-docs/bench/fill-curve}
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT
go build -o "$dir/eventagg" ./cmd/eventagg
go build -o "$dir/eventagg-load" ./cmd/eventagg-load
port=$((18400 + RANDOM % 100))
"$dir/eventagg" -addr "127.0.0.1:$port" -db "$dir/events.db" -sync full -log-level warn 2>>"$dir/server.log" &
until curl -sf -o /dev/null "http://127.0.0.1:$port/health"; do sleep 0.1; done
"$dir/eventagg-load" -url "http://127.0.0.1:$port" -db "$dir/events.db" -dups 0 -clients "$clients" -batch "$batch" \
  -events "$events" 2>"$out.txt"
{
  echo "# scripts/fill-curve.sh $events $clients $batch $out ($(date -u +%F)): the reference server"
  echo "# on SQLite, -sync full; $clients clients x $batch-event batches of random ids, no resends."
  echo "# Each row: the rate over the span of 250,000 events stored that ends at x."
  echo "# title: Ingest rate as the SQLite store fills (random ids)"
  echo "# x: events stored"
  echo "# y: events/s"
  echo "stored_events,events/s"
  awk -v span=250000 'BEGIN { have = 1 } $3 == "events" {
      t = $1 + 0; n = $2 + 0
      if (n >= next_n + span) {
        if (have) printf "%d,%.0f\n", n, (n - last_n) / (t - last_t)
        last_n = n; last_t = t; have = 1; next_n = n - n % span
      }
    }' "$out.txt"
} >"$out.csv"
go run ./scripts/plot -o "$out.svg" "$out.csv"
echo "wrote $out.txt, $out.csv and $out.svg"
