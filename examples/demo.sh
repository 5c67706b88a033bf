#!/usr/bin/env bash
# `make demo`: start the simulated upstream on a free loopback port, scan examples/coins.txt with
# a live progress bar, print the JSON summary, and stop the upstream.
# The upstream answers with ~150 ms median latency and allows 40 requests/s (burst 10), sending
# Retry-After with its 429s, like a small real API would. Then the same scan again: every answer
# is still fresh in the cache (kept in .demo/, not in your own cache dir), so nothing is sent.
set -euo pipefail
cd "$(dirname "$0")/.."
SCANCTL=${SCANCTL:-scanctl}
out=.demo
mkdir -p "$out"
export SCANCTL_CACHE="$out/cache.sqlite3"

url_file=$(mktemp)
"$SCANCTL" demo-api --port 0 --latency-median 0.15 --rate-limit 40 --burst 10 \
    --hints retry-after >"$url_file" 2>"$out/demo-api.log" &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -f "$url_file"' EXIT

for _ in $(seq 150); do
    [ -s "$url_file" ] && break
    kill -0 "$server" 2>/dev/null || { cat "$out/demo-api.log" >&2; exit 1; }
    sleep 0.1
done
url=$(head -n 1 "$url_file")
echo "demo: simulated upstream at $url" >&2

status=0
"$SCANCTL" scan -f examples/coins.txt -t mss --base-url "$url" --concurrency 20 \
    -o "$out/mss.json" --metrics "$out/summary.json" || status=$?

cat "$out/summary.json"

again=0
"$SCANCTL" scan -f examples/coins.txt -t mss --base-url "$url" -q -o "$out/mss-again.json" \
    --metrics "$out/summary-again.json" || again=$?
jq -r '"demo: again, from the cache: \(.cached) of \(.total_scanned) cached, \(.requests_sent) requests, \(.performance.total_time_seconds) s (exit '"$again"')"' \
    "$out/summary-again.json" >&2 2>/dev/null \
    || echo "demo: again, from the cache: exit $again; see $out/summary-again.json" >&2
echo "demo: exit code $status; all $(grep -cv '^#' examples/coins.txt) records in $out/mss.json, e.g.:" >&2
echo "demo:   jq '.results[] | select(.data.score > 70) | .symbol' $out/mss.json" >&2
[ "$status" -ne 0 ] || status=$again
exit "$status"
