#!/usr/bin/env bash
# Builds the one abi3 wheel of wsgid (CPython 3.9+) into target/wheels/ and prints its path on
# the last line of stdout. `pip wheel .` runs in a build virtualenv (target/wheel-build-venv)
# that holds maturin, the build backend, from the package registry; the build reuses cargo's
# target/ (release profile), so a second run with unchanged sources only repacks the wheel.
# Environment: PYTHON, the interpreter the build venv is made from (default: python3 on PATH;
# any CPython 3.9+ gives the same abi3 wheel).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-python3}
VENV=$ROOT/target/wheel-build-venv
OUT=$ROOT/target/wheels

if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import maturin' 2>/dev/null; then
  echo "==> build venv $VENV ($("$PYTHON" --version 2>&1)) with maturin from the package registry" >&2
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check 'maturin>=1.7,<2' >&2
fi

echo "==> pip wheel . (release build, fat LTO: minutes the first time)" >&2
mkdir -p "$OUT"
# The backend runs the `maturin` command: the build venv's.
PATH="$VENV/bin:$PATH" "$VENV/bin/pip" wheel -q --disable-pip-version-check --no-deps --no-build-isolation \
  -w "$OUT" "$ROOT" >&2
wheel=$(ls -t "$OUT"/wsgid-*-abi3-*.whl | head -n 1)
# The wheel file's time says when it was last built from these sources (pip keeps an older
# file's time when it rewrites it with identical content).
touch "$wheel"
echo "$wheel"
