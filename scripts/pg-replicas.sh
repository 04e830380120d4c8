#!/usr/bin/env bash
# Scale-out on PostgreSQL: N reference servers (replicas) on one schema of
# the local PostgreSQL, CLIENTS clients spread evenly over them (one load
# tool per replica, each with CLIENTS/N clients), for each N in REPLICAS and
# each batch size in BATCHES. Prints, per run, the events/s summed over the
# replicas, and the highest numbers seen at once in pg_stat_activity
# (sampled every 20 ms) of Appends running their insert statement, of those
# waiting on a lock, and of numbering transactions waiting for the append
# lock (schema version 5 only: see postgres/doc.go, Append). Run from a
# checkout of an older version, it measures that version the same way.
#
#   scripts/pg-replicas.sh [DURATION [CLIENTS [REPLICAS [BATCHES]]]]
#       # default 15s 32 "1 2 4" "1 100"
#
# DSN: $EVENTAGG_TEST_POSTGRES, default the local test database.
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-15s}
clients=${2:-32}
replicas=${3:-1 2 4}
batches=${4:-1 100}
dsn=${EVENTAGG_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432/test?sslmode=disable}
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT
go build -o "$dir/eventagg" ./cmd/eventagg
go build -o "$dir/eventagg-load" ./cmd/eventagg-load
printf '%-9s %-6s %12s %12s %12s %12s\n' replicas batch events/s max_appends max_waiting max_numbering
for n in $replicas; do
  for batch in $batches; do
    schema="eventagg_bench_$RANDOM$RANDOM"
    pids=()
    urls=()
    for i in $(seq 1 "$n"); do
      port=$((18200 + i))
      "$dir/eventagg" -addr "127.0.0.1:$port" -db "$dsn" -db-schema "$schema" -log-level warn 2>>"$dir/server.log" &
      pids+=($!)
      urls+=("http://127.0.0.1:$port")
    done
    for u in "${urls[@]}"; do
      until curl -sf -o /dev/null "$u/health"; do sleep 0.1; done
    done
    # Sample the activity of the schema's writes while the load runs: the
    # Appends' insert statements (their text is cut at
    # track_activity_query_size, so they are told apart by how the others
    # start: version 5's numbering, the statement that begins a
    # transaction, the notification after a commit), those of them waiting
    # on a lock, and version 5's numberings waiting for the append lock.
    (
      while :; do
        psql "$dsn" -Atc "SELECT count(*) FILTER (WHERE query NOT LIKE 'WITH hi AS%' AND query NOT LIKE 'SELECT set_config%' AND query NOT LIKE 'SELECT pg_notify%'),
            count(*) FILTER (WHERE query NOT LIKE 'WITH hi AS%' AND query NOT LIKE 'SELECT set_config%' AND query NOT LIKE 'SELECT pg_notify%' AND wait_event_type = 'Lock'),
            count(*) FILTER (WHERE wait_event = 'advisory')
          FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%$schema%' AND pid <> pg_backend_pid()" 2>/dev/null || true
        sleep 0.02
      done
    ) >"$dir/activity" &
    sampler=$!
    per=$(( (clients + n - 1) / n ))
    loads=()
    for i in "${!urls[@]}"; do
      "$dir/eventagg-load" -url "${urls[$i]}" -clients "$per" -batch "$batch" -duration "$duration" -progress 0 >"$dir/load-$i" 2>&1 &
      loads+=($!)
    done
    # Each load tool checks /stats, which shows the other replicas' traffic
    # too: its check fails with several replicas, its throughput stands.
    for p in "${loads[@]}"; do wait "$p" || true; done
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
    total=$(awk '/^throughput/ {s += $2} END {print s}' "$dir"/load-*)
    maxes=$(awk -F'|' 'BEGIN {a = 0; w = 0; n = 0} {if ($1 > a) a = $1; if ($2 > w) w = $2; if ($3 > n) n = $3} END {print a, w, n}' "$dir/activity")
    printf '%-9s %-6s %12s %12s %12s %12s\n' "$n" "$batch" "$total" ${maxes}
    for p in "${pids[@]}"; do kill "$p"; wait "$p" 2>/dev/null || true; done
    rm -f "$dir"/load-* "$dir/activity"
    psql "$dsn" -qc "DROP SCHEMA $schema CASCADE" >/dev/null 2>&1 || true
  done
done
