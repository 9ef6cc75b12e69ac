#!/usr/bin/env bash
# The project's benchmarks. Builds the release binaries, then measures with loadgen:
#   1. the generator itself: HTTP peak vs wrk against `loadgen echo-server`, --zmq peak
#      against `loadgen echo-handler` (the generator must never be the bottleneck);
#   2. wsgid with the fixture apps (hello, 10 KiB body, 1 MiB upload echo, streamed
#      response): peak throughput (closed loop) and latency at fixed rates, through HTTP via
#      fake-mongrel2, via the real Mongrel2 when installed, and directly over ZeroMQ (--zmq);
#   3. one comparison against oha on the same target (achieved rate and p99 side by side).
# Whatever is missing (a binary that does not build, wrk, oha, mongrel2) is skipped and noted.
# Writes $OUT/report.md and $OUT/report.json (default bench/results/<UTC time>/).
#
# Environment: DUR (10s) length of each run; RATES ("500 2000") fixed rates; UPLOAD_RATES
# ("20 50") fixed rates of the 1 MiB upload; CONC (64) concurrency of the peak runs and
# connections of the fixed-rate runs; WORKERS (1) wsgid workers; SKIP_BUILD=1; OUT;
# CARGO_TARGET_DIR; BIN (folder of the release binaries, default $CARGO_TARGET_DIR/release); OHA (path of oha, default: on PATH or /tmp/oha-root/bin/oha); WRK;
# CASES ("hello body10k upload1m stream"); TRANSPORTS ("fake real zmq").
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=${BIN:-$TARGET/release}
DUR=${DUR:-10s}
RATES=${RATES:-"500 2000"}
UPLOAD_RATES=${UPLOAD_RATES:-"20 50"}
CONC=${CONC:-64}
WORKERS=${WORKERS:-1}
CASES=${CASES:-"hello body10k upload1m stream"}
TRANSPORTS=${TRANSPORTS:-"fake real zmq"}
OUT=${OUT:-$ROOT/bench/results/$(date -u +%Y%m%dT%H%M%SZ)}
OHA=${OHA:-$(command -v oha || echo /tmp/oha-root/bin/oha)}
WRK=${WRK:-$(command -v wrk || true)}
PY=${PY:-python3}   # any Python 3, for the helper scripts (free ports, wrk pinning, the report)
mkdir -p "$OUT/runs" "$OUT/logs" "$OUT/apps"
: > "$OUT/notes.txt"

pids=()
LGPRE=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
}
trap cleanup EXIT INT TERM
log() { printf '==> %s\n' "$*" >&2; }
note() { echo "$*" >> "$OUT/notes.txt"; log "$*"; }
stop_all() { cleanup; pids=(); }

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  for p in loadgen wsgid fake-mongrel2; do
    log "cargo build --release -p $p"
    cargo build --release -q -p "$p" || note "build of $p failed: its benchmarks are skipped"
  done
fi
have() { [ -x "$BIN/$1" ]; }
have loadgen || { echo "no $BIN/loadgen: cannot benchmark" >&2; exit 1; }
LG=$BIN/loadgen

free_port() { "$PY" -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
wait_port() {
  local i
  for i in $(seq 1 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}
# lg NAME ARGS...: one loadgen run, report in runs/NAME.json, text in logs/NAME.txt
lg() {
  local name=$1
  shift
  log "loadgen $name: $*"
  if ! timeout 900 "${LGPRE[@]}" "$LG" --quiet --json "$OUT/runs/$name.json" "$@" > "$OUT/logs/$name.txt" 2>&1; then
    note "run $name failed: $(tail -1 "$OUT/logs/$name.txt")"
    rm -f "$OUT/runs/$name.json"
  fi
}

cp "$ROOT"/fixtures/apps/*.py "$OUT/apps/"
cat > "$OUT/meta.json" <<META
{"date": "$(date -u +%FT%TZ)", "commit": "$(git rev-parse --short HEAD 2>/dev/null)", "nproc": $(nproc),
 "duration": "$DUR", "rates": "$RATES", "upload_rates": "$UPLOAD_RATES", "concurrency": $CONC, "workers": $WORKERS,
 "load_average_at_start": "$(cut -d' ' -f1-3 /proc/loadavg)"}
META

# ---- 1. The generator itself --------------------------------------------------------------
# Server on core 0, generator on core 1 (when there are two cores and taskset), three
# alternating rounds of loadgen and wrk; the CPU time of each generator is measured too.
log "generator self-benchmark"
PIN_S=(); PIN_C=()
if command -v taskset > /dev/null && [ "$(nproc)" -ge 2 ]; then PIN_S=(taskset -c 0); PIN_C=(taskset -c 1); fi
EP=$(free_port)
"${PIN_S[@]}" "$LG" echo-server --listen "127.0.0.1:$EP" > "$OUT/logs/echo-server.txt" 2>&1 &
pids+=($!)
if wait_port "$EP"; then
  for round in 1 2 3; do
    LGPRE=("${PIN_C[@]}")
    lg "self-http-loadgen-$round" --max-rps -c "$CONC" -t 1 -d "$DUR" "http://127.0.0.1:$EP/"
    LGPRE=()
    if [ -n "$WRK" ]; then
      log "wrk -t1 -c$CONC -d$DUR (round $round)"
      "$PY" - "$OUT/runs/self-http-wrk-$round.txt" "${PIN_C[@]}" "$WRK" -t1 -c"$CONC" -d"$DUR" "http://127.0.0.1:$EP/" <<'PYEOF' || note "wrk failed"
import resource, subprocess, sys
p = subprocess.run(sys.argv[2:], capture_output=True, text=True)
r = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "w").write(p.stdout + p.stderr + f"cpu_seconds {r.ru_utime + r.ru_stime}\n")
PYEOF
    fi
  done
  [ -n "$WRK" ] || note "wrk not installed (apt-get install -y wrk): no wrk comparison"
else
  note "echo-server did not start"
fi
stop_all
ZA=$(free_port); ZB=$(free_port)
"$LG" echo-handler --zmq "tcp://127.0.0.1:$ZA,tcp://127.0.0.1:$ZB" > "$OUT/logs/echo-handler.txt" 2>&1 &
pids+=($!)
for round in 1 2 3; do
  lg "self-zmq-loadgen-$round" --zmq "tcp://127.0.0.1:$ZA,tcp://127.0.0.1:$ZB" --max-rps --max-inflight 64 -d "$DUR" http://localhost/
done
stop_all

# ---- 2. wsgid with the fixture apps ---------------------------------------------------------
case_app() { case $1 in hello) echo hello:app ;; body10k | upload1m) echo body_echo:app ;; stream) echo streaming:app ;; esac; }
case_path() { case $1 in hello) echo /hello ;; body10k | upload1m) echo /echo ;; stream) echo "/stream?n=10" ;; esac; }
case_args() { case $1 in body10k) echo "--method POST --body-size 10240" ;; upload1m) echo "--method POST --body-size 1048576" ;; *) echo "" ;; esac; }
case_rates() { case $1 in upload1m) echo "$UPLOAD_RATES" ;; *) echo "$RATES" ;; esac; }

M2_CHROOT_ARGS=()
start_wsgid() { # APP RECV SEND LOGNAME
  "$BIN/wsgid" --no-daemon --workers "$WORKERS" --app-path "$OUT/apps" --wsgi-app "$1" \
    --recv "$2" --send "$3" "${M2_CHROOT_ARGS[@]}" > "$OUT/logs/$4.txt" 2>&1 &
  pids+=($!)
}

real_m2() { # PORT SEND RECV -> starts mongrel2 in a fresh chroot
  local dir
  dir=$(mktemp -d /tmp/bench-m2-XXXXXX)
  mkdir -p "$dir/logs" "$dir/run" "$dir/tmp"
  sed -e "s|@PORT@|$1|; s|@JSON_SEND@|$2|; s|@JSON_RECV@|$3|; s|@TNET_SEND@|$(free_port)|; s|@TNET_RECV@|$(free_port)|; s|@CHROOT@|$dir|" \
    "$ROOT/fixtures/mongrel2/differential.conf.in" > "$dir/mongrel2.conf"
  (cd "$dir" && LOGNAME=${LOGNAME:-root} m2sh load -config "$dir/mongrel2.conf" -db "$dir/config.sqlite") > "$OUT/logs/m2sh.txt" 2>&1 || return 1
  (cd "$dir" && exec mongrel2 "$dir/config.sqlite" 9a8b7c6d-0000-4000-8000-0000000d1ff0) > "$OUT/logs/mongrel2.txt" 2>&1 &
  pids+=($!)
  # Upload paths in frames are relative to Mongrel2's chroot.
  M2_CHROOT_ARGS=(--mongrel2-chroot "$dir")
}

for c in $CASES; do
  app=$(case_app "$c"); path=$(case_path "$c"); args=$(case_args "$c")
  for t in $TRANSPORTS; do
    S=$(free_port); R=$(free_port); HP=$(free_port)
    M2_CHROOT_ARGS=()
    case $t in
      fake)
        if ! have fake-mongrel2 || ! have wsgid; then note "skip $c/$t: fake-mongrel2 or wsgid not built"; continue; fi
        "$BIN/fake-mongrel2" --listen "127.0.0.1:$HP" --send "tcp://127.0.0.1:$S" --recv "tcp://127.0.0.1:$R" > "$OUT/logs/fake-$c.txt" 2>&1 &
        pids+=($!)
        start_wsgid "$app" "tcp://127.0.0.1:$S" "tcp://127.0.0.1:$R" "wsgid-$c-$t"
        ;;
      real)
        if ! command -v mongrel2 > /dev/null || ! command -v m2sh > /dev/null; then note "skip $c/$t: mongrel2 not installed"; continue; fi
        if ! have wsgid; then note "skip $c/$t: wsgid not built"; continue; fi
        real_m2 "$HP" "$S" "$R" || { note "skip $c/$t: m2sh load failed"; continue; }
        start_wsgid "$app" "tcp://127.0.0.1:$S" "tcp://127.0.0.1:$R" "wsgid-$c-$t"
        ;;
      zmq)
        if ! have wsgid; then note "skip $c/$t: wsgid not built"; continue; fi
        start_wsgid "$app" "tcp://127.0.0.1:$S" "tcp://127.0.0.1:$R" "wsgid-$c-$t"
        ;;
    esac
    if [ "$t" = zmq ]; then
      tgt=(--zmq "tcp://127.0.0.1:$S,tcp://127.0.0.1:$R" "http://localhost$path")
      conc=(--max-inflight "$CONC")
    else
      if ! wait_port "$HP"; then note "skip $c/$t: no HTTP listener on $HP"; stop_all; continue; fi
      tgt=("http://127.0.0.1:$HP$path")
      conc=(-c "$CONC")
    fi
    # shellcheck disable=SC2086
    lg "$c-$t-warmup" --rps 50 -d 2s --warmup-timeout 60s $args "${conc[@]}" "${tgt[@]}"
    # shellcheck disable=SC2086
    lg "$c-$t-peak" --max-rps -d "$DUR" $args "${conc[@]}" "${tgt[@]}"
    for r in $(case_rates "$c"); do
      # shellcheck disable=SC2086
      lg "$c-$t-rate$r" --rps "$r" -d "$DUR" $args "${conc[@]}" "${tgt[@]}"
    done
    if [ "$c" = hello ] && [ "$t" = fake ]; then
      # ---- 3. oha on the same target -------------------------------------------------------
      r=$(echo "$RATES" | awk '{print $NF}')
      if [ -x "$OHA" ]; then
        log "oha -z $DUR -q $r -c $CONC (with and without --latency-correction)"
        "$OHA" -z "$DUR" -q "$r" -c "$CONC" --no-tui --latency-correction --output-format json "${tgt[0]}" > "$OUT/runs/oha-corrected.json" 2> "$OUT/logs/oha-corrected.txt" || note "oha failed"
        "$OHA" -z "$DUR" -q "$r" -c "$CONC" --no-tui --output-format json "${tgt[0]}" > "$OUT/runs/oha-default.json" 2> "$OUT/logs/oha-default.txt" || note "oha failed"
        lg "oha-same-target-loadgen" --rps "$r" -d "$DUR" -c "$CONC" "${tgt[@]}"
      else
        note "oha not installed (cargo install oha --locked): no oha comparison"
      fi
    fi
    stop_all
  done
done

# ---- 3b. A 1 s stall (SIGSTOP of the echo server) seen by oha and loadgen ----------------
if [ -x "$OHA" ]; then
  for tool in oha-default oha-corrected loadgen; do
    SP=$(free_port)
    "$LG" echo-server --listen "127.0.0.1:$SP" > /dev/null 2>&1 &
    spid=$!
    pids+=($spid)
    wait_port "$SP" || { note "stall run: echo-server did not start"; continue; }
    (sleep 1.5; kill -STOP "$spid"; sleep 1; kill -CONT "$spid") &
    stall=$!
    log "stall comparison: $tool"
    case $tool in
      oha-default) "$OHA" -z 5s -q 500 -c 8 --no-tui --output-format json "http://127.0.0.1:$SP/" > "$OUT/runs/stall-oha-default.json" 2> /dev/null ;;
      oha-corrected) "$OHA" -z 5s -q 500 -c 8 --no-tui --latency-correction --output-format json "http://127.0.0.1:$SP/" > "$OUT/runs/stall-oha-corrected.json" 2> /dev/null ;;
      loadgen) lg stall-loadgen --rps 500 -d 5s -c 8 "http://127.0.0.1:$SP/" ;;
    esac
    wait "$stall"
    stop_all
  done
fi

log "report"
"$PY" "$ROOT/bench/report.py" "$OUT" || note "report generation failed"
echo "report: $OUT/report.md"
