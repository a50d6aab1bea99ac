#!/usr/bin/env bash
# Developer loop: rebuild the extension into the editable install (fixed build dir, incremental).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/pip install --no-build-isolation --no-deps -q -e . 2>&1 | grep -vE "^\s*$" || true
