#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/, see docs/fuzzing.md) for a bounded time each, from a
# corpus seeded with the captured Mongrel2 cases. Exits 0 with one line saying why when no
# nightly toolchain or cargo-fuzz is available; non-zero when a target crashes or hangs.
#
#   scripts/fuzz.sh                 # every target, 20 s each
#   scripts/fuzz.sh 60 dechunk      # one target, 60 s
#   FUZZ_RUNS=10000000 scripts/fuzz.sh 0 tnetstring   # a fixed number of executions
#
# Environment: FUZZ_SANITIZER (default none: the decoders are safe Rust, and without ASan
# they run several times faster; `address` works too), FUZZ_JOBS (default 1).
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${1:-20}
shift || true
TARGETS=("$@")
if [ ${#TARGETS[@]} -eq 0 ]; then
  TARGETS=(tnetstring json_headers request_frame reply_frame http_head dechunk)
fi
SANITIZER=${FUZZ_SANITIZER:-none}

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: skipped, no nightly toolchain (rustup toolchain install nightly)"
  exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz: skipped, cargo-fuzz is not installed (cargo install cargo-fuzz)"
  exit 0
fi

if command -v python3 >/dev/null; then
  python3 fuzz/seed.py "${TARGETS[@]}" >/dev/null
fi

# Release code (no debug assertions: the same flags for build and run, so nothing rebuilds).
FLAGS=(-O -s "$SANITIZER")
build_log=$(mktemp)
if ! cargo +nightly fuzz build "${FLAGS[@]}" >"$build_log" 2>&1; then
  echo "fuzz: FAILED to build the targets ($build_log):"
  tail -n 30 "$build_log"
  exit 1
fi

status=0
for t in "${TARGETS[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  log=$(mktemp)
  if [ -n "${FUZZ_RUNS:-}" ]; then
    limit=(-runs="$FUZZ_RUNS")
  else
    limit=(-max_total_time="$SECS")
  fi
  if cargo +nightly fuzz run "${FLAGS[@]}" "$t" "fuzz/corpus/$t" -- \
      "${limit[@]}" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
    echo "fuzz: $t ok, $runs executions, no crash"
  else
    echo "fuzz: $t FAILED; last lines of its log ($log):"
    tail -n 30 "$log"
    status=1
  fi
done
exit $status
