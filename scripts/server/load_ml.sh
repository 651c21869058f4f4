#!/usr/bin/env bash
# Load test of `featherguard serve --guards pattern,similarity` on loopback, bounded in time (about
# 1.5 minutes with the defaults), then the idle-unload check:
#   1. closed loop at concurrency 1, 8 and 64 with the ONNX similarity guard on every request
#      (cascade = always): throughput, p50/p99 latency, server RSS after each;
#   2. idle unload: RSS before the model was ever loaded, with the model loaded, and after
#      `idle_unload_secs` of quiet, read from /proc/PID/status by this script; then one request
#      must reload the guard (loads = 2 in /v1/guards). The pre-load figure is taken after a
#      pattern-only warm-up with the same prompts at the same concurrencies (`--guards patterns`,
#      WARM seconds each), so the pattern engine's lazily built automata and the worker threads the
#      load phases use are in it, as they are after the unload: the difference is the model's.
#      The figure of the idle server before any traffic is reported too (`rss_cold`).
# Needs the ONNX runtime and model (`cargo xtask setup --only onnx,models`).
# Results: one JSON line per phase in $OUT/results.jsonl and a table on stdout; /proc/PID/smaps at
# the pre-load and idle points in $OUT/{pre-load,after-unload}.smaps.
# Usage: scripts/server/load_ml.sh [extra `featherguard serve` arguments]
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/server/lib.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
PORT="${PORT:-18182}"
DUR="${DUR:-8}"
IDLE="${IDLE:-3}"
WARM="${WARM:-3}"
OUT="${OUT:-$CARGO_TARGET_DIR/serve-load-ml}"
mkdir -p "$OUT"
: > "$OUT/results.jsonl"

# BIN / LG: measure prebuilt binaries (e.g. an older build for a before/after) instead of building.
binaries server,onnx

CONFIG="$OUT/config.toml"
cat > "$CONFIG" <<EOF
[heavy]
cascade = "always"
idle_unload_secs = $IDLE
EOF

start_server --config "$CONFIG" serve --listen "127.0.0.1:$PORT" --guards pattern,similarity "$@"

slot() { curl -s "http://127.0.0.1:$PORT/v1/guards" | jq -c '.slots[0] | {state, loads, unloads, load_ms, rss_delta_bytes, rss_freed_bytes}'; }

# Cold figure: a serving process that has scanned one short text (pattern guard only).
for _ in $(seq 1 200); do
  curl -s "http://127.0.0.1:$PORT/v1/scan" -d '{"text": "hello there", "guards": ["patterns"]}' > /dev/null
done
COLD_RSS=$(field VmRSS); COLD_ANON=$(field RssAnon)
# Pre-load figure: the same prompts and concurrencies as the load, pattern guard only; the model
# is never loaded (checked below).
for c in 1 8 64; do
  timeout 60 "$LG" --addr "127.0.0.1:$PORT" --guards patterns -c "$c" -d "$WARM" > /dev/null
done
PRE_RSS=$(field VmRSS); PRE_ANON=$(field RssAnon); PRE_FILE=$(field RssFile)
# Per-mapping figures at both points, to tell what a residue is (heap arenas, stacks, libraries).
cp "/proc/$PID/smaps" "$OUT/pre-load.smaps"
echo "before load: $(slot)" >&2
[ "$(curl -s "http://127.0.0.1:$PORT/v1/guards" | jq -r '.slots[0].loads')" = 0 ] || { echo "model loaded by the warm-up" >&2; exit 1; }

phase warmup -c 8 -d 2 > /dev/null
for c in 1 8 64; do
  phase "pattern+similarity c=$c" -c "$c" -d "$DUR" > /dev/null
done
LOADED_RSS=$(field VmRSS); LOADED_ANON=$(field RssAnon)
echo "loaded: $(slot)" >&2

# Idle: wait for the slot to unload (the server's maintenance runs every second).
WAITED=0
until [ "$(curl -s "http://127.0.0.1:$PORT/v1/guards" | jq -r '.slots[0].state')" = unloaded ]; do
  sleep 0.5; WAITED=$((WAITED + 1))
  [ "$WAITED" -lt $((IDLE * 2 + 40)) ] || { echo "not unloaded after idle" >&2; exit 1; }
done
sleep 0.5
IDLE_RSS=$(field VmRSS); IDLE_ANON=$(field RssAnon); IDLE_FILE=$(field RssFile)
cp "/proc/$PID/smaps" "$OUT/after-unload.smaps"
AFTER_UNLOAD=$(slot)
curl -s "http://127.0.0.1:$PORT/v1/scan" -d '{"text": "Recommend a good novel."}' > /dev/null
RELOADED=$(slot)
RELOAD_RSS=$(field VmRSS)

stop_server

jq -n --argjson cold "$COLD_RSS" --argjson cold_anon "$COLD_ANON" --argjson pre "$PRE_RSS" --argjson pre_anon "$PRE_ANON" --argjson pre_file "$PRE_FILE" --argjson loaded "$LOADED_RSS" \
  --argjson loaded_anon "$LOADED_ANON" --argjson idle "$IDLE_RSS" --argjson idle_anon "$IDLE_ANON" \
  --argjson idle_file "$IDLE_FILE" --argjson reload "$RELOAD_RSS" --argjson exit "$EXIT" \
  --argjson after_unload "$AFTER_UNLOAD" --argjson reloaded "$RELOADED" \
  '{phase: "idle unload", rss_cold: $cold, anon_cold: $cold_anon, rss_pre_load: $pre, anon_pre_load: $pre_anon, file_pre_load: $pre_file, rss_loaded: $loaded,
    anon_loaded: $loaded_anon, rss_after_idle_unload: $idle, anon_after_idle_unload: $idle_anon,
    file_after_idle_unload: $idle_file, rss_after_reload: $reload,
    slot_after_unload: $after_unload, slot_after_reload: $reloaded, sigterm_exit: $exit}' \
  | tee -a "$OUT/results.jsonl" > /dev/null

echo "| phase | requests | req/s (2xx) | p50 µs | p99 µs | statuses | server RSS MB |"
echo "|---|---|---|---|---|---|---|"
jq -r 'select(.phase != "idle unload" and .phase != "warmup") |
  "| \(.phase) | \(.requests) | \(.ok_rps) | \(.p50_us) | \(.p99_us) | \(.status | to_entries | map("\(.key): \(.value)") | join(", ")) | \(.server_rss_bytes / 1048576 * 10 | round / 10) |"' \
  "$OUT/results.jsonl"
jq -r 'select(.phase == "idle unload") | def m: . / 1048576 * 10 | round / 10;
  "RSS (MiB) idle before any traffic \(.rss_cold | m) (anon \(.anon_cold | m)); after the pattern-only warm-up, before any model load \(.rss_pre_load | m) (anon \(.anon_pre_load | m), file \(.file_pre_load | m)), loaded \(.rss_loaded | m) (anon \(.anon_loaded | m)), after idle unload \(.rss_after_idle_unload | m) (anon \(.anon_after_idle_unload | m), file \(.file_after_idle_unload | m)), after reload \(.rss_after_reload | m)\nslot after unload \(.slot_after_unload)\nslot after reload \(.slot_after_reload)\nSIGTERM exit \(.sigterm_exit)"' \
  "$OUT/results.jsonl"
