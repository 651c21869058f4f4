# Sourced by load.sh and load_ml.sh: the binaries, the server under test and its measurements.
# The caller sets CARGO_TARGET_DIR, PORT and OUT (with $OUT/results.jsonl).

# binaries FEATURES: sets BIN (the CLI with FEATURES) and LG (loadgen), building them in release
# unless BIN / LG are given (e.g. an older build for a before/after).
binaries() {
  if [ -z "${BIN:-}" ]; then
    cargo build --release -q -p featherguard-cli --features "$1"
    BIN="$CARGO_TARGET_DIR/release/featherguard"
  fi
  if [ -z "${LG:-}" ]; then
    cargo build --release -q -p featherguard-server --example loadgen
    LG="$CARGO_TARGET_DIR/release/examples/loadgen"
  fi
}

# start_server ARGS...: runs "$BIN" ARGS... (stderr in $OUT/server.log) as PID, stopped when the
# script exits, and waits up to 10 s for /healthz.
start_server() {
  "$BIN" "$@" 2> "$OUT/server.log" &
  PID=$!
  trap 'kill -TERM $PID 2>/dev/null || true' EXIT
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$PORT/healthz" > /dev/null && break
    sleep 0.1
  done
}

# field NAME: a /proc/PID/status size of the server (VmRSS, RssAnon, RssFile) in bytes.
field() { awk -v f="$1:" '$1 == f {print $2 * 1024}' "/proc/$PID/status"; }

# phase NAME LOADGEN-ARGS...: one loadgen run, its JSON line with the server's RSS after it
# appended to $OUT/results.jsonl and printed.
phase() {
  local name="$1"; shift
  local line
  line=$(timeout 300 "$LG" --addr "127.0.0.1:$PORT" "$@")
  echo "$line" | jq -c --arg phase "$name" --argjson rss "$(field VmRSS)" '{phase: $phase} + . + {server_rss_bytes: $rss}' \
    | tee -a "$OUT/results.jsonl"
}

# stop_server: SIGTERM, then waits for the drain; EXIT is the server's exit status.
stop_server() {
  kill -TERM "$PID"
  set +e
  wait "$PID"
  EXIT=$?
  set -e
  trap - EXIT
}
