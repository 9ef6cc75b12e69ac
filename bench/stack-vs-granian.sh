#!/usr/bin/env bash
# The whole stack (fake-mongrel2 + wsgid, 2 workers, fixtures/apps/hello.py) against granian
# (2 workers, WSGI interface, the same app) on the same machine, with wrk at 10 and 50
# connections, alternating the two for ROUNDS rounds; prints every run, the medians and the
# ratio stack/granian. Environment: DUR (5s), ROUNDS (3), GRANIAN (granian binary; default
# /tmp/granian-venv/bin/granian: python3 -m venv /tmp/granian-venv &&
# /tmp/granian-venv/bin/pip install granian), OUT (bench/results/stack-vs-granian-<UTC>.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DUR=${DUR:-5s}
ROUNDS=${ROUNDS:-3}
GRANIAN=${GRANIAN:-/tmp/granian-venv/bin/granian}
OUT=${OUT:-bench/results/stack-vs-granian-$(date -u +%Y%m%dT%H%M%SZ).txt}
mkdir -p "$(dirname "$OUT")"
cargo build --release -q -p fake-mongrel2 -p wsgid --bins
BIN=${CARGO_TARGET_DIR:-target}/release
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 1 400); do curl -sf "http://127.0.0.1:$1/hello" > /dev/null && return 0; sleep 0.05; done; return 1; }
pids=()
stop() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=(); }
trap stop EXIT
rps() { awk '/Requests\/sec/ {print $2}'; }
declare -A runs
{
echo "# $(date -u) $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq 1 "$ROUNDS"); do
  for c in 10 50; do
    HP=$(port); S=$(port); R=$(port)
    "$BIN/fake-mongrel2" --listen "127.0.0.1:$HP" --send "tcp://127.0.0.1:$S" --recv "tcp://127.0.0.1:$R" 2> /dev/null &
    pids+=($!)
    "$BIN/wsgid" --no-daemon --workers 2 --app-path "$ROOT/fixtures/apps" --wsgi-app hello:app \
      --recv "tcp://127.0.0.1:$S" --send "tcp://127.0.0.1:$R" > /dev/null 2>&1 &
    pids+=($!)
    wait_http "$HP" || { echo "stack did not answer"; exit 1; }
    v=$(wrk -t 2 -c "$c" -d "$DUR" "http://127.0.0.1:$HP/hello" | rps)
    echo "round $r c=$c stack   (fake-mongrel2 + wsgid x2): $v req/s"
    runs[stack-$c]+="$v "
    stop
    GP=$(port)
    (cd "$ROOT/fixtures/apps" && "$GRANIAN" --interface wsgi --workers 2 --host 127.0.0.1 --port "$GP" hello:app > /dev/null 2>&1) &
    pids+=($!)
    wait_http "$GP" || { echo "granian did not answer"; exit 1; }
    v=$(wrk -t 2 -c "$c" -d "$DUR" "http://127.0.0.1:$GP/hello" | rps)
    echo "round $r c=$c granian (2 workers, wsgi):      $v req/s"
    runs[granian-$c]+="$v "
    stop
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for c in 10 50; do
  s=$(echo "${runs[stack-$c]}" | median); g=$(echo "${runs[granian-$c]}" | median)
  echo "c=$c median stack $s req/s, granian $g req/s, ratio stack/granian $(awk -v s="$s" -v g="$g" 'BEGIN {printf "%.2f", s/g}')"
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$OUT"
