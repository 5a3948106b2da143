#!/usr/bin/env bash
# Install everything the tests need into .venv, then lint, type-check and run the test suite.
# Extra arguments go to pytest, e.g. `./scripts/test.sh -k api -x`.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# torch first: a plain dependency resolve would pull a multi-GB CUDA build where a CPU one is wanted.
.venv/bin/pip install --quiet --disable-pip-version-check "torch==2.13.0"
.venv/bin/pip install --quiet --disable-pip-version-check -e ".[dev]"

echo "== ruff"; .venv/bin/ruff check . && .venv/bin/ruff format --check .
echo "== mypy"; .venv/bin/mypy
echo "== pytest"; .venv/bin/python -m pytest "$@"
