#!/usr/bin/env bash
# The project's one run command: builds the release binaries, then serves the demo app
# (fixtures/demo) through wsgid behind fake-mongrel2 on http://127.0.0.1:8080/.
# Ctrl-C stops both. Environment: PORT (8080), WORKERS (2), UPLOADS (upload folder).
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${PORT:-8080}
WORKERS=${WORKERS:-2}
SEND=tcp://127.0.0.1:9997   # Mongrel2's send_spec: requests to the handler
RECV=tcp://127.0.0.1:9996   # Mongrel2's recv_spec: replies from the handler
# Big and chunked bodies are spooled here by fake-mongrel2 (upload.temp_store); wsgid reads
# only files of this store (it refuses uploads without one: docs/security.md).
UPLOADS=${UPLOADS:-${TMPDIR:-/tmp}/wsgid-demo-uploads}
TEMP_STORE="$UPLOADS/upload.XXXXXX"
mkdir -p "$UPLOADS"
chmod 700 "$UPLOADS"

echo "==> cargo build --release (first time: a few minutes)"
cargo build --release -q -p wsgid -p wsgid-python -p fake-mongrel2

pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

target/release/fake-mongrel2 --listen "127.0.0.1:$PORT" --send "$SEND" --recv "$RECV" \
  --upload-temp-store "$TEMP_STORE" &
pids+=($!)
target/release/wsgid --no-daemon --stdout --workers "$WORKERS" \
  --app-path fixtures/demo --recv "$SEND" --send "$RECV" --upload-temp-store "$TEMP_STORE" &
pids+=($!)

echo "==> serving the demo app on http://127.0.0.1:$PORT/  (Ctrl-C to stop)"
wait -n "${pids[@]}"
