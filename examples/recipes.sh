#!/usr/bin/env bash
# jq recipes for scanctl output. Usage: examples/recipes.sh URL   (URL of a running upstream)
# Every recipe here is also in the README and is run by the tests against the simulated upstream.
# No pipefail: `| head -n 3` closes the pipe early on purpose, and scanctl then exits 141
# quietly, as other Unix tools do; the status of each pipeline is that of its last command.
set -eu
URL=${1:?usage: examples/recipes.sh URL}
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "# how many succeeded"
scanctl scan -f examples/coins.txt -t mss --base-url "$URL" -q | jq .successful

echo "# only the successful records, one per line, as they arrive"
scanctl scan -f examples/coins.txt -t mss --base-url "$URL" -q -F jsonl | jq -c 'select(.ok)' | head -n 3

echo "# high scorers, symbol and score"
scanctl scan -f examples/coins.txt -t mss --base-url "$URL" -q | jq -c '.results[] | select(.data.score > 70) | {symbol, score: .data.score}' | head -n 3

echo "# strong signals as plain symbols, for the next command in a pipeline"
scanctl scan -f examples/coins.txt -t signals --base-url "$URL" -q -F jsonl | jq -r 'select(.ok and .data.score > 70) | .symbol' | head -n 3

echo "# prices from stdin as tab-separated values"
printf 'btc\neth\nsol\n' | scanctl scan -f - -t price --base-url "$URL" -q -F jsonl | jq -r '[.symbol, .data.price] | @tsv'

echo "# what failed and why"
scanctl scan BTC ZZNOPE ETH -t signals --base-url "$URL" -q | jq -c '{failed_symbols, errors}' || true

echo "# a table to read (the default on a terminal; -F table asks for it anywhere)"
scanctl scan -f examples/coins.txt -t mss --base-url "$URL" -q -F table | head -n 4

echo "# what changed since the answers before: every answer fetched again and compared"
scanctl scan -f examples/coins.txt -t signals --base-url "$URL" -q -F jsonl --refresh --changes | jq -c '{symbol, changed, changed_fields}' | head -n 3

echo "# the run's figures for a monitor, in Prometheus' text format (node_exporter's textfile collector)"
scanctl scan -f examples/coins.txt -t price --base-url "$URL" -q -F jsonl -o /dev/null --metrics "$work/price.prom"
grep '^scanctl_symbols_total' "$work/price.prom"

echo "# a CSV for spreadsheets, and the run's figures from --metrics"
scanctl scan -f examples/coins.txt -t price --base-url "$URL" -q -F csv -o "$work/prices.csv" --metrics "$work/run.json"
head -n 2 "$work/prices.csv"
jq -c '{successful, failed, seconds: .performance.total_time_seconds, p99_ms: .performance.latency_ms.p99}' "$work/run.json"
