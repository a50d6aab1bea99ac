#!/usr/bin/env bash
# Sets up everything on a fresh machine (idempotent): .venv with the dev requirements, and ndt_fast
# built from source in editable mode (fixed build dir build/, so rebuilds are incremental).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
# Debian's chromium, for the dashboard's browser test (tests/test_dashboard_browser.py drives it with
# Playwright; Playwright's own browser downloads are never used).
if ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "setup: chromium is missing and apt-get (as root) is not available: the browser test will be skipped" >&2
  fi
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -r requirements-dev.txt
.venv/bin/python -m pip install -q --no-build-isolation --no-deps -e .
.venv/bin/python -c "import ndt_fast, sys; print('ndt_fast', ndt_fast.__version__, 'ready in', sys.prefix)"
