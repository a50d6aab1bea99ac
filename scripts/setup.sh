#!/usr/bin/env bash
# Sets up everything on a fresh machine (idempotent): .venv with the dev requirements, and ndt_fast
# built from source in editable mode (fixed build dir build/, so rebuilds are incremental).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements-dev.txt
.venv/bin/python -m pip install -q --no-build-isolation --no-deps -e .
.venv/bin/python -c "import ndt_fast, sys; print('ndt_fast', ndt_fast.__version__, 'ready in', sys.prefix)"
