#!/usr/bin/env bash
# The project's one run command: builds the release binaries, then serves the demo app
# (fixtures/demo) through wsgid behind fake-mongrel2 on http://127.0.0.1:8080/.
# Ctrl-C stops both. Environment: PORT (8080), WORKERS (2).
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${PORT:-8080}
WORKERS=${WORKERS:-2}
SEND=tcp://127.0.0.1:9997   # Mongrel2's send_spec: requests to the handler
RECV=tcp://127.0.0.1:9996   # Mongrel2's recv_spec: replies from the handler

echo "==> cargo build --release (first time: a few minutes)"
cargo build --release -q -p gateway -p fake-mongrel2

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

target/release/fake-mongrel2 --listen "127.0.0.1:$PORT" --send "$SEND" --recv "$RECV" &
pids+=($!)
target/release/wsgid --no-daemon --stdout --workers "$WORKERS" \
  --app-path fixtures/demo --recv "$SEND" --send "$RECV" &
pids+=($!)

echo "==> serving the demo app on http://127.0.0.1:$PORT/  (Ctrl-C to stop)"
wait -n "${pids[@]}"
