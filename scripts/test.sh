#!/usr/bin/env bash
# The project's one test command. On a fresh Debian 12/13 machine with Rust (as root), it
# installs what the tests need and says what it installs, builds the binaries and the one abi3
# wheel once, then runs formatting, lints, fuzz targets and every test suite; then the version
# matrix: the environ, response and filters suites again on every other CPython 3.9-3.13 found
# on the machine (pyenv's versions when pyenv is there: optional, never assumed).
#
# Environment: FUZZ_SECONDS (15 s per fuzz target), MATRIX=0 (skip the version matrix).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

log() { printf '\n==> %s\n' "$*"; }
have() { command -v "$1" >/dev/null 2>&1; }
have_deb() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'; }
started=$SECONDS

# --- System packages --------------------------------------------------------------------
# Real Mongrel2 for the differential suites, Python's headers and venv module (the worker
# extension is built against them, the test venvs are made with them), a C/C++ compiler
# (ZeroMQ is built from source), iproute2 for the multi-host test bed, Chromium for the
# demo's browser test.
need_apt=()
{ have mongrel2 && have m2sh; } || need_apt+=(mongrel2-core)
have sqlite3 || need_apt+=(sqlite3)
have python3 || need_apt+=(python3)
if have dpkg-query; then
  have_deb python3-dev || need_apt+=(python3-dev)
  have_deb python3-venv || need_apt+=(python3-venv)
fi
have cc || need_apt+=(gcc)
have c++ || need_apt+=(g++)
have ip || need_apt+=(iproute2)
have chromium || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  if have apt-get; then
    log "apt-get install ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    log "missing and no apt-get to install them: ${need_apt[*]}"
  fi
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  log "cargo install cargo-nextest (from crates.io, a few minutes)"
  cargo install -q --locked cargo-nextest
fi

# --- The test interpreter -----------------------------------------------------------------
# The main run uses Debian's python3 (/usr/bin/python3, what a fresh machine has, so the run
# is the same on any Debian machine); python3 on PATH where there is no /usr/bin/python3.
if [ -x /usr/bin/python3 ]; then PY=/usr/bin/python3; else PY=$(command -v python3); fi
PY_VERSION=$("$PY" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')
log "test interpreter: $PY (CPython $PY_VERSION)"

# --- Build once ----------------------------------------------------------------------------
log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

log "build binaries and the worker extension"
cargo build --workspace --bins
cargo build -p wsgid-python
export WSGID_TEST_PREBUILT=1   # the suites' harness need not build them again

log "the wheel (scripts/wheel.sh)"
WHEEL=$(PYTHON=$PY bash scripts/wheel.sh | tail -n 1)
export WSGID_TEST_WHEEL=$WHEEL
echo "$WHEEL"

# A virtualenv of $PY with the wheel and the frameworks the fixture apps use.
version_of() { "$1" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])'; }
venv_ok() { # venv interpreter: made from that interpreter's version, frameworks there
  [ -x "$1/bin/python" ] && [ "$(version_of "$1/bin/python" 2>/dev/null)" = "$(version_of "$2")" ] \
    && "$1/bin/python" -c 'import flask, django' 2>/dev/null
}
make_venv() { # dir interpreter requirements...
  local dir=$1 py=$2
  shift 2
  if ! venv_ok "$dir" "$py"; then
    rm -rf "$dir"
    "$py" -m venv "$dir"
    "$dir/bin/pip" install -q --disable-pip-version-check "$@"
  fi
  "$dir/bin/pip" install -q --disable-pip-version-check --force-reinstall --no-deps "$WHEEL"
}
log "virtualenv .venv ($PY: the wheel, Flask, Django)"
make_venv "$ROOT/.venv" "$PY" -r fixtures/requirements.txt
# Every suite runs on it: WSGID_TEST_VENV for the tests that name it, VIRTUAL_ENV for the
# workers started with no --python (wsgid picks $VIRTUAL_ENV's interpreter), PATH for python3.
export WSGID_TEST_VENV=$ROOT/.venv VIRTUAL_ENV=$ROOT/.venv PATH=$ROOT/.venv/bin:$PATH

# Fuzz targets (fuzz/, docs/fuzzing.md): a short bounded run of each. Needs a nightly toolchain;
# cargo-fuzz is installed from the registry when missing. Without nightly it says so and skips.
if cargo +nightly --version >/dev/null 2>&1 && ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  log "cargo install cargo-fuzz"
  cargo install -q --locked cargo-fuzz
fi
log "fuzz targets, ${FUZZ_SECONDS:-15} s each"
bash scripts/fuzz.sh "${FUZZ_SECONDS:-15}"

log "tests (CPython $PY_VERSION)"
cargo nextest run --workspace --no-fail-fast --failure-output final
cargo test --workspace --doc

# --- The version matrix ----------------------------------------------------------------------
# Every CPython 3.9-3.13 found: pyenv's versions (when pyenv is there: $PYENV_ROOT, else
# `pyenv root`, else ~/.pyenv) and python3 on PATH; one interpreter per minor version, the
# main run's minor left out (done above). Each gets a venv with the wheel and Flask and Django
# pinned for it (Django 5.2 needs 3.10+: 3.9 gets 4.2 LTS), and the environ, response and
# filters suites run on it, plus the check that workers do run on it.
if [ "${MATRIX:-1}" = 0 ]; then
  log "version matrix skipped (MATRIX=0)"
  log "done in $(( (SECONDS - started) / 60 )) min"
  exit 0
fi
pins_for() { # minor
  case $1 in
    9) echo "flask==3.1.* django==4.2.*" ;;
    *) echo "flask==3.1.* django==5.2.*" ;;
  esac
}
pyenv_root=${PYENV_ROOT:-}
if [ -z "$pyenv_root" ] && have pyenv; then pyenv_root=$(pyenv root 2>/dev/null || true); fi
if [ -z "$pyenv_root" ] && [ -d "$HOME/.pyenv" ]; then pyenv_root=$HOME/.pyenv; fi
candidates=()
if [ -n "$pyenv_root" ] && [ -d "$pyenv_root/versions" ]; then
  for p in "$pyenv_root"/versions/*/bin/python3; do [ -x "$p" ] && candidates+=("$p"); done
fi
have python3 && candidates+=("$(command -v python3)")
main_minor=$("$PY" -c 'import sys; print(sys.version_info[1])')
declare -A chosen=()
for p in "${candidates[@]}"; do
  info=$("$p" -c 'import sys; print(sys.implementation.name, sys.version_info[0], sys.version_info[1])' 2>/dev/null) || continue
  read -r imp major minor <<<"$info"
  [ "$imp" = cpython ] && [ "$major" = 3 ] && [ "$minor" -ge 9 ] && [ "$minor" -le 13 ] || continue
  [ "$minor" = "$main_minor" ] && continue
  [ -n "${chosen[$minor]:-}" ] || chosen[$minor]=$p
done
if [ ${#chosen[@]} -eq 0 ]; then
  log "version matrix: no other CPython 3.9-3.13 on this machine (the main run covered 3.$main_minor)"
fi
matrix_failed=()
for minor in $(printf '%s\n' "${!chosen[@]}" | sort -n); do
  py=${chosen[$minor]}
  venv=$ROOT/target/matrix/venv-3.$minor
  log "version matrix: CPython $(version_of "$py") ($py): $(pins_for "$minor")"
  # shellcheck disable=SC2046 # the pins are words
  make_venv "$venv" "$py" $(pins_for "$minor")
  if ! WSGID_TEST_VENV=$venv VIRTUAL_ENV=$venv PATH=$venv/bin:$PATH \
    cargo nextest run -p conformance --no-fail-fast --failure-output final \
    -E 'binary(environ) | binary(response) | binary(filters) | test(=workers_run_on_the_test_virtualenv_when_one_is_active)'; then
    matrix_failed+=("3.$minor")
  fi
done
log "done in $(( (SECONDS - started) / 60 )) min"
if [ ${#matrix_failed[@]} -gt 0 ]; then
  echo "version matrix failed on CPython ${matrix_failed[*]}" >&2
  exit 1
fi
