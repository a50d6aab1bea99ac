#!/usr/bin/env bash
# Sets everything up, then runs every check: the native core under ASan+UBSan (warnings are
# errors), `pip install .` into a fresh virtual environment, and the Python test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"  # cmake and ninja from the venv

echo "== native core: ASan + UBSan build, -Werror, ctest"
cmake -S . -B build-asan -G Ninja -DNDT_BUILD_PYTHON=OFF -DNDT_BUILD_TESTS=ON -DNDT_SANITIZE=ON \
  -DNDT_WERROR=ON -DNDT_ENABLE_CUDA=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo > build-asan.log
cmake --build build-asan
ctest --test-dir build-asan --output-on-failure

echo "== packaging: pip install . into a fresh virtual environment"
rm -rf build/fresh-venv build/wheel
python -m pip wheel -q --no-deps . -w build/wheel
python -m venv build/fresh-venv
build/fresh-venv/bin/python -m pip install -q build/wheel/*.whl
(cd build && fresh-venv/bin/python -c "
import numpy as np, ndt_fast
x = np.maximum(np.random.default_rng(0).standard_normal((64, 256)), 0).astype(np.float32)
from importlib import resources
page = resources.files('ndt_fast.dashboard').joinpath('assets')
assert page.joinpath('page.html').is_file() and page.joinpath('page.js').is_file(), 'dashboard assets missing from the wheel'
print('fresh install ok:', ndt_fast.compute_all_metrics(x))")

echo "== Python tests"
python -m pytest
