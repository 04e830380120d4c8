#!/usr/bin/env bash
# Publish-to-delivery latency of followers: the reference server (SQLite,
# default settings) under a steady load, with 1 and then 100 consumers
# following the load's events (GET /events?follow=true, through the Go
# client). Each delivery's latency runs from just before the publish
# request was sent (the event's timestamp) to its arrival at a follower.
# Prints, per run, the load tool's summary: publish latency and
# throughput, delivery latency (p50, p90, p99, max) over every delivery,
# and the server's RSS (now and peak).
#
#   scripts/follow-latency.sh [DURATION]     # default 20s per run
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-20s}
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT
go build -o "$dir/eventagg" ./cmd/eventagg
go build -o "$dir/eventagg-load" ./cmd/eventagg-load
for load in "-clients 4 -batch 100" "-clients 1 -batch 1"; do
  for followers in 1 100; do
    db="$dir/events-$followers-${load// /}.db"
    "$dir/eventagg" -addr 127.0.0.1:18091 -db "$db" 2>/dev/null &
    pid=$!
    until curl -sf -o /dev/null http://127.0.0.1:18091/health; do sleep 0.1; done
    echo "== $load, $followers followers"
    # shellcheck disable=SC2086
    "$dir/eventagg-load" -url http://127.0.0.1:18091 -pid "$pid" $load -followers "$followers" -duration "$duration" -progress 0
    kill "$pid"; wait "$pid" || true
  done
done
