#!/usr/bin/env bash
# The GPU session's checklist (docs/CUDA.md, "What a GPU session must check first") as stages of
# one script, so a lent machine's scarce time goes to running, not typing.
#
#   here, once (needs pip's index or cache):   bash scripts/gpu-check.sh prepare
#       fetches the wheels the device lacks (ndtracker 2.0.0 for the benchmarks' baseline, and
#       plotly, which `import ndt` needs) into .whl/ (git-ignored)
#   on the device (the `run` tool, carry [".whl"]):   bash scripts/gpu-check.sh build kernels tracker
#       and in a second call if needed:               bash scripts/gpu-check.sh build bench
#
# Device stages append their raw output to $OUT/gpu-check-<device>.txt (OUT defaults to
# benchmarks/results) and write the benchmarks' JSON beside it: commit what comes back, device
# named. Every device stage runs even if an earlier one failed; the exit status is the first
# failure's. Stages:
#   build    pip install -e . with CUDA forced on (NDT_ENABLE_CUDA=ON) with the device's python3
#   kernels  availability, then tests/test_cuda.py in docs/CUDA.md's order: gram paths, spectra,
#            metrics, the zero-sync checks (own kernels, one syevd, the mix), ring
#   tracker  FastTracker on the device path: the GPU tests of tests/test_cuda.py (-k fast_tracker)
#            and the CPU-emulated device-path tests, then the whole CPU suite's tracker tests
#   bench    benchmarks/test_cuda_kernels.py and benchmarks/test_gpt2_overhead.py (JSON each)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-benchmarks/results}
status=0

note() { printf '\n===== %s (%s)\n' "$1" "$(date -u +%H:%M:%SZ)" | tee -a "$LOG"; }
run_step() {  # run_step NAME COMMAND...: output to the log, remember the first failure
  note "$1"
  shift
  "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  echo "[exit $rc]" | tee -a "$LOG"
  if [ "$rc" -ne 0 ] && [ "$status" -eq 0 ]; then status=$rc; fi
}

prepare() {
  mkdir -p .whl
  local plotly
  plotly=$(.venv/bin/python -m pip show plotly 2>/dev/null | awk '/^Version:/ {print $2}')
  .venv/bin/python -m pip download -q --no-deps --only-binary=:all: -d .whl "ndtracker==2.0.0" "plotly==${plotly:-6.0.0}"
  ls -l .whl
}

if [ "${1:-}" = "prepare" ]; then
  prepare
  exit $?
fi

device=$($PY -c "import torch; print(torch.cuda.get_device_name(0).replace(' ', '-') if torch.cuda.is_available() else 'no-gpu')" 2>/dev/null || echo unknown)
mkdir -p "$OUT"
LOG="$OUT/gpu-check-$device.txt"
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then  # the device has no package index
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
PYTEST=($PY -m pytest -p no:cacheprovider -q -rs)

for stage in "$@"; do
  case "$stage" in
    build)
      note "machine"
      { nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; nvcc --version | tail -2
        $PY -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__)"
        git rev-parse --short HEAD 2>/dev/null; } 2>&1 | tee -a "$LOG"
      run_step "build" env NDT_ENABLE_CUDA=ON $PY -m pip install -q --no-build-isolation --no-deps -e .
      ;;
    kernels)
      run_step "availability" $PY -c "import ndt_fast.cuda as c; print(c.availability())"
      run_step "gram paths" "${PYTEST[@]}" tests/test_cuda.py -k "gram_paths"
      run_step "spectra" "${PYTEST[@]}" tests/test_cuda.py -k "small_spectra or large_spectra or cusolver_batches"
      run_step "metrics" "${PYTEST[@]}" tests/test_cuda.py \
        -k "(float32 or bf16 or bad_inputs or metric_mask or many_layers or token or backend_accumulates) and not fast_tracker"
      run_step "zero syncs" "${PYTEST[@]}" tests/test_cuda.py -k "never_sync and not fast_tracker"
      run_step "ring" "${PYTEST[@]}" tests/test_cuda.py -k "ring"
      run_step "availability and the torch reference" "${PYTEST[@]}" tests/test_cuda.py \
        -k "availability or api_boundary or extension_flag or torch_reference"
      ;;
    tracker)
      run_step "FastTracker on the device" "${PYTEST[@]}" tests/test_cuda.py -k "fast_tracker"
      run_step "device path (emulated)" "${PYTEST[@]}" tests/test_device_path.py
      run_step "tracker suite" "${PYTEST[@]}" tests/test_tracker.py tests/test_tracker_jumps.py
      ;;
    bench)
      run_step "kernel benchmarks" "${PYTEST[@]}" benchmarks/test_cuda_kernels.py \
        --benchmark-json="$OUT/cuda-kernels-$device.json"
      run_step "GPT-2-small overhead" "${PYTEST[@]}" benchmarks/test_gpt2_overhead.py \
        --benchmark-json="$OUT/gpt2-$device.json"
      ;;
    *)
      echo "unknown stage $stage (prepare | build | kernels | tracker | bench)" >&2
      exit 2
      ;;
  esac
done
note "done: exit $status"
exit "$status"
