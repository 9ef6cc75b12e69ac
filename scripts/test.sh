#!/usr/bin/env bash
# The project's one test command: installs what the tests need on a fresh Debian machine
# (root, Rust, pyenv CPython 3.11), then runs formatting, lints and every test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=/root/.pyenv/versions/3.11.7/bin/python3

log() { printf '\n==> %s\n' "$*"; }

# System packages: real Mongrel2 for the differential suites, iproute2 for the multi-host
# test bed, Chromium for the demo's browser test.
need_apt=()
command -v mongrel2 >/dev/null || need_apt+=(mongrel2-core)
command -v m2sh >/dev/null || need_apt+=(mongrel2-core)
command -v sqlite3 >/dev/null || need_apt+=(sqlite3)
command -v ip >/dev/null || need_apt+=(iproute2)          # network namespaces (hosts suite)
command -v chromium >/dev/null || need_apt+=(chromium)    # the demo's form in a real browser
if [ ${#need_apt[@]} -gt 0 ]; then
  log "apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

# A virtualenv with the frameworks the fixture apps use, built from the interpreter PyO3 links.
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import flask, django' 2>/dev/null; then
  log "virtualenv .venv (flask, django)"
  "$PY" -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check -r fixtures/requirements.txt
fi
export WSGID_TEST_VENV="$ROOT/.venv"

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

log "build binaries"
cargo build --workspace --bins

# Fuzz targets (fuzz/, docs/fuzzing.md): a short bounded run of each. Needs a nightly toolchain;
# cargo-fuzz is installed from the registry when missing. Without nightly it says so and skips.
if cargo +nightly --version >/dev/null 2>&1 && ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  log "cargo install cargo-fuzz"
  cargo install -q --locked cargo-fuzz
fi
log "fuzz targets, ${FUZZ_SECONDS:-15} s each"
bash scripts/fuzz.sh "${FUZZ_SECONDS:-15}"

log "tests"
cargo nextest run --workspace --no-fail-fast --failure-output final
cargo test --workspace --doc

