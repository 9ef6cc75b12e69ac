#!/usr/bin/env bash
# 10,000 idle keep-alive connections held by the fake-mongrel2 binary while new clients are
# timed (fake-mongrel2/examples/scale.rs): the server's RSS, peak RSS, threads and descriptors
# from /proc, and the latency of a new client (connect + GET + response) with all of them held.
# Environment: CONNS (10000), PROBES (50), OUT (bench/results/fake-scale-<UTC time>.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS=${CONNS:-10000}
OUT=${OUT:-bench/results/fake-scale-$(date -u +%Y%m%dT%H%M%SZ).txt}
mkdir -p "$(dirname "$OUT")"
# both processes hold CONNS descriptors
ulimit -n "$(( CONNS + 2048 ))" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cargo build --release -q -p fake-mongrel2 --bin fake-mongrel2 --example scale
BIN=${CARGO_TARGET_DIR:-target}/release
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
HP=$(port); S=$(port); R=$(port)
"$BIN/fake-mongrel2" --listen "127.0.0.1:$HP" --send "tcp://127.0.0.1:$S" --recv "tcp://127.0.0.1:$R" \
  2> "$OUT.server-log" &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null' EXIT
for _ in $(seq 1 200); do grep -q listening "$OUT.server-log" 2>/dev/null && break; sleep 0.05; done
{
  echo "# $(date -u) $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg); ulimit -n $(ulimit -n)"
  "$BIN/examples/scale" --addr "127.0.0.1:$HP" --send "tcp://127.0.0.1:$S" --recv "tcp://127.0.0.1:$R" \
    --pid "$PID" --conns "$CONNS" --probes "${PROBES:-50}"
  echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$OUT"
