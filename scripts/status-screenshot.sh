#!/usr/bin/env bash
# Screenshot of the status page (GET / in a browser) for the README: the
# reference server on a fresh SQLite database, fed a few topics at a rate
# that rises and falls for DURATION seconds (the ingest chart gets a bar per
# 10 s sample), with duplicates, a conflict and a topic that is markup;
# then headless Chromium (Debian's chromium package) takes the picture.
#
#   scripts/status-screenshot.sh [OUT.png] [DURATION]   # docs/status.png, 120 s
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-docs/status.png}
duration=${2:-120}
port=18093
url=http://127.0.0.1:$port
dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT
go build -o "$dir/eventagg" ./cmd/eventagg
"$dir/eventagg" -addr 127.0.0.1:$port -db "$dir/events.db" 2>/dev/null &
until curl -sf -o /dev/null $url/health; do sleep 0.1; done
# The page's first view starts the samples of its ingest chart.
curl -sf -o /dev/null -H 'Accept: text/html' $url/

publish() { curl -sf -o /dev/null -H 'Content-Type: application/json' --data-binary @- $url/publish; }

topics=(orders orders orders clicks clicks payments signups '<b>markup</b> & "quotes"')
rates=(4 8 15 30 45 60 50 35 20 12 25 40) # events per second, a step per 10 s
n=0
for ((s = 0; s < duration; s++)); do
  rate=${rates[$(((s / 10) % ${#rates[@]}))]}
  batch=""
  for ((i = 0; i < rate; i++)); do
    n=$((n + 1))
    topic=${topics[$((n % ${#topics[@]}))]}
    id=$n
    if ((n % 17 == 0)); then id=$((n - 8)); fi # a duplicate of an event sent before
    batch+="${batch:+,}{\"topic\":\"${topic//\"/\\\"}\",\"event_id\":\"$id\",\"source\":\"demo\",\"payload\":{\"n\":$id,\"amount\":$((id % 97)).$((id % 10))0}}"
  done
  echo "[$batch]" | publish
  sleep 1
done
# One conflict: an event sent again with another payload.
echo '{"topic":"orders","event_id":"1","payload":{"n":"changed"}}' | publish # orders/1 was event 1

sandbox=()
[ "$(id -u)" -ne 0 ] || sandbox=(--no-sandbox)
mkdir -p "$(dirname "$out")"
chromium --headless "${sandbox[@]}" --disable-gpu --hide-scrollbars --force-device-scale-factor=1 \
  --window-size=1200,1280 --timeout=3000 --screenshot="$out" $url/ 2>/dev/null
echo "wrote $out"
