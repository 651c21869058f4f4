#!/usr/bin/env bash
# Load test of `featherguard serve` on loopback, bounded in time (about 2 minutes with the defaults):
#   1. closed loop at concurrency 1, 8 and 64: throughput, p50/p99 latency, server RSS after each;
#   2. soak: SOAK_REQUESTS requests (200,000) at concurrency 8; RSS growth over it, after the phases
#      above warmed the server up (connections, buffers, compiled rules);
#   3. overload: open loop at 4x the measured capacity over 1024 connections (the server keeps at
#      most --max-connections; clients wait Retry-After after a 503), then recovery at concurrency 8:
#      every request must succeed again;
#   4. SIGTERM: the server drains and exits 0.
# Results: one JSON line per phase in $OUT/results.jsonl and a table on stdout.
# Usage: scripts/server/load.sh [extra `featherguard serve` arguments]
# BIN / LG: measure prebuilt binaries instead of building.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/server/lib.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
PORT="${PORT:-18181}"
DUR="${DUR:-8}"
SOAK_REQUESTS="${SOAK_REQUESTS:-200000}"
OUT="${OUT:-$CARGO_TARGET_DIR/serve-load}"
mkdir -p "$OUT"
: > "$OUT/results.jsonl"

binaries server
start_server serve --listen "127.0.0.1:$PORT" "$@"

phase warmup -c 64 -d 2 > /dev/null
for c in 1 8 64; do
  phase "closed c=$c" -c "$c" -d "$DUR" > /dev/null
done
CAPACITY=$(jq -s 'map(select(.phase == "closed c=64")) | .[0].ok_rps' "$OUT/results.jsonl")
RSS_WARM=$(field VmRSS)

phase soak -c 8 -n "$SOAK_REQUESTS" -d 600 > /dev/null
RSS_SOAK=$(field VmRSS)

RATE=$(jq -n --argjson c "$CAPACITY" '$c * 4')
phase "overload 4x" --rate "$RATE" --connections 1024 -d "$DUR" > /dev/null
phase "recovery c=8" -c 8 -d 3 > /dev/null
curl -s "http://127.0.0.1:$PORT/metrics" > "$OUT/metrics.txt"

stop_server

jq -n --argjson warm "$RSS_WARM" --argjson soak "$RSS_SOAK" --argjson exit "$EXIT" \
  '{phase: "summary", rss_before_soak_bytes: $warm, rss_after_soak_bytes: $soak,
    rss_growth_pct: ((($soak - $warm) / $warm * 1000 | round) / 10), sigterm_exit: $exit}' \
  | tee -a "$OUT/results.jsonl" > /dev/null

echo "| phase | requests | req/s (2xx) | p50 µs | p99 µs | server time p50/p99 µs by status | statuses | server RSS MB |"
echo "|---|---|---|---|---|---|---|---|"
jq -r 'select(.phase != "summary") |
  "| \(.phase) | \(.requests) | \(.ok_rps) | \(.p50_us) | \(.p99_us) | \(.service_by_status | to_entries | map("\(.key): \(.value.p50_us)/\(.value.p99_us)") | join(", ")) | \(.status | to_entries | map("\(.key): \(.value)") | join(", ")) | \(.server_rss_bytes / 1048576 * 10 | round / 10) |"' \
  "$OUT/results.jsonl"
jq -r 'select(.phase == "summary") | "RSS before soak \(.rss_before_soak_bytes / 1048576 * 10 | round / 10) MB, after \(.rss_after_soak_bytes / 1048576 * 10 | round / 10) MB (\(.rss_growth_pct)%); SIGTERM exit \(.sigterm_exit)"' \
  "$OUT/results.jsonl"
