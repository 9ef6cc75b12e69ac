#!/usr/bin/env bash
# fake-mongrel2 vs the real Mongrel2 1.12 with the same minimal Rust handler and 50 keep-alive
# connections (fake-mongrel2/examples/throughput.rs): rounds alternate the two servers, medians
# and their ratio are printed, with the client threads' own CPU per request beside each run.
# Needs mongrel2-core (mongrel2, m2sh) and root. Environment: SECONDS_PER_RUN (3), ROUNDS (5),
# CONNS (50), OUT (bench/results/fake-throughput-<UTC time>.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/fake-throughput-$(date -u +%Y%m%dT%H%M%SZ).txt}
mkdir -p "$(dirname "$OUT")"
cargo build --release -q -p fake-mongrel2 --example throughput
{
  echo "# $(date -u) $(nproc) cores; load before: $(cut -d' ' -f1-3 /proc/loadavg)"
  nice -n 10 "${CARGO_TARGET_DIR:-target}/release/examples/throughput" \
    --seconds "${SECONDS_PER_RUN:-3}" --rounds "${ROUNDS:-5}" --conns "${CONNS:-50}"
  echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$OUT"
