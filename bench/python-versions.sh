#!/usr/bin/env bash
# The worker bench (hello app, ZeroMQ, 1 and 64 requests in flight) of this build on several
# CPython versions, side by side in one run with a baseline build and the Rust echo handler:
# every handler stays up for the whole run and the rounds go round them in turn (see
# wsgid/benches/worker.rs). Method and figures: docs/performance.md.
#
# The baseline is the last build with an embedded interpreter (commit d251ed8, before the
# worker became an extension module loaded into the user's CPython). It is checked out with
# `git worktree add --detach` into a temporary folder and built there against OLD_PYTHON
# (it links that interpreter's libpython).
#
# Environment:
#   PYTHONS     interpreters to run this build on, space-separated (default: python3.9
#               python3.11 python3.13, those found on PATH)
#   OLD_PYTHON  the CPython 3.11 the baseline links (default: the first 3.11 of PYTHONS);
#               it needs a shared libpython (a distribution's python3 or a pyenv
#               `--enable-shared` build)
#   OLD_REV     the baseline commit (default d251ed8); NO_BASELINE=1 skips it
#   OLD_DIR     where it is checked out (default: $TMPDIR/wsgid-bench-old-<rev>); kept for the
#               next run, remove it with `git worktree remove`
#   RUNS        how many bench runs, one after the other (default 3)
#   BENCH_ROUNDS, BENCH_SECONDS, BENCH_INFLIGHT   passed to the bench (defaults 7, 1, 1,64)
#   OUT         the report file (default bench/results/python-versions-<time>.txt)
#
# Builds go one at a time under `nice` (fat LTO: minutes each); the runs too.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

find_pythons() {
    local found=() p
    for p in python3.9 python3.11 python3.13; do
        if command -v "$p" > /dev/null; then
            found+=("$(command -v "$p")")
        fi
    done
    echo "${found[@]}"
}

PYTHONS="${PYTHONS:-$(find_pythons)}"
if [ -z "$PYTHONS" ]; then
    echo "python-versions.sh: no interpreter: set PYTHONS=\"/path/to/python3.X ...\"" >&2
    exit 2
fi
version_of() { "$1" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])'; }
if [ -z "${OLD_PYTHON:-}" ]; then
    for p in $PYTHONS; do
        case "$(version_of "$p")" in 3.11.*) OLD_PYTHON="$p"; break ;; esac
    done
fi
OLD_REV="${OLD_REV:-d251ed8}"
RUNS="${RUNS:-3}"
export BENCH_ROUNDS="${BENCH_ROUNDS:-7}" BENCH_SECONDS="${BENCH_SECONDS:-1}" BENCH_INFLIGHT="${BENCH_INFLIGHT:-1,64}"
OUT="${OUT:-$ROOT/bench/results/python-versions-$(date -u +%Y%m%dT%H%M%SZ).txt}"
mkdir -p "$(dirname "$OUT")"

# The executable `cargo bench --no-run` built, from its "Executable ... (path)" line.
bench_exe() {
    sed -n 's/.*Executable benches\/worker.rs (\(.*\))$/\1/p' "$1" | tail -n 1
}

log="$(mktemp)"
trap 'rm -f "$log"' EXIT

BASELINE=""
if [ -z "${NO_BASELINE:-}" ]; then
    if [ -z "${OLD_PYTHON:-}" ]; then
        echo "python-versions.sh: the baseline needs a CPython 3.11: set OLD_PYTHON (or NO_BASELINE=1)" >&2
        exit 2
    fi
    OLD_DIR="${OLD_DIR:-${TMPDIR:-/tmp}/wsgid-bench-old-$OLD_REV}"
    if [ ! -e "$OLD_DIR/Cargo.toml" ]; then
        echo "== checking out $OLD_REV into $OLD_DIR"
        git worktree add --detach "$OLD_DIR" "$OLD_REV"
    fi
    echo "== building the baseline ($OLD_REV, embedded $("$OLD_PYTHON" -V 2>&1) from $OLD_PYTHON)"
    (cd "$OLD_DIR" && PYO3_PYTHON="$OLD_PYTHON" nice -n 10 cargo bench -p gateway --bench worker --no-run) 2>&1 | tee "$log" | tail -n 2
    BASELINE="$OLD_DIR/$(bench_exe "$log")"
fi

echo "== building this tree (the extension, then the bench)"
nice -n 10 cargo build --release -p wsgid-python 2>&1 | tail -n 1
nice -n 10 cargo bench -p wsgid --bench worker --no-run 2>&1 | tee "$log" | tail -n 2
NEW="$ROOT/$(bench_exe "$log")"

{
    echo "# bench/python-versions.sh, $(date -u +%FT%TZ), $(git rev-parse --short HEAD)$(git diff --quiet || echo ' (modified)')"
    echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs"
    echo "# baseline: ${BASELINE:-none} (${OLD_REV}, embedded ${OLD_PYTHON:+$(version_of "$OLD_PYTHON")})"
    for p in $PYTHONS; do echo "# $p: CPython $(version_of "$p")"; done
} | tee "$OUT"

csv="$(echo $PYTHONS | tr ' ' ',')"
for run in $(seq 1 "$RUNS"); do
    echo "== run $run of $RUNS" | tee -a "$OUT"
    BENCH_BASELINE="$BASELINE" BENCH_PYTHON="$csv" WSGID_BENCH_ROLE= nice -n 10 "$NEW" --bench 2>&1 | tee -a "$OUT"
done
echo "== report: $OUT"
