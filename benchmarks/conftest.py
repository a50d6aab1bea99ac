"""Shared set-up of the benchmarks: thread settings, reproducible inputs, run metadata.

``pytest benchmarks`` runs them (plain ``pytest`` only collects ``tests/``). The project's pytest
config applies here too: warnings are errors and markers are strict, so this file registers
nothing it does not use and the benchmarks must run without a single warning.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch
from pytest_benchmark.logger import PytestBenchmarkWarning
from threadpoolctl import threadpool_info, threadpool_limits

# The thread count every library uses when left alone (torch's intra-op pool, OpenBLAS of numpy
# and of SciPy, the latter being the BLAS/LAPACK that ndt_fast borrows). Benchmarks run once with
# one thread everywhere and once with this default; on a one-core machine that is a single run.
DEFAULT_THREADS: int = torch.get_num_threads()
THREAD_COUNTS: tuple[int, ...] = (1,) if DEFAULT_THREADS == 1 else (1, DEFAULT_THREADS)

# Seconds each benchmark runs its function before measurement starts. On small (virtual) machines
# the first ~second of two-thread work after a single-threaded stretch can run at half speed, and
# a pool that last ran other code (torch's OpenMP after OpenBLAS, or the reverse) needs a few calls
# to settle; pytest-benchmark's own calibration calls are too few to cover that.
WARMUP_SECONDS = 0.3

_NOTHING_SAVED = "Not saving anything, no benchmarks have been run"


@pytest.fixture(params=THREAD_COUNTS, ids=lambda t: "1thread" if t == 1 else f"{t}threads")
def threads(request: pytest.FixtureRequest) -> Iterator[int]:
    """Runs the test under ``request.param`` threads in torch and every BLAS/OpenMP pool; restores them after."""
    count = request.param
    if count == DEFAULT_THREADS:
        yield count
        return
    torch_before = torch.get_num_threads()
    with threadpool_limits(limits=count):
        torch.set_num_threads(count)
        try:
            yield count
        finally:
            torch.set_num_threads(torch_before)


def pytest_configure(config: pytest.Config) -> None:
    # pytest-benchmark warns at session end when --benchmark-json/--benchmark-save find nothing to
    # save (every benchmark deselected, skipped or disabled). Under the project's
    # filterwarnings=error that warning becomes an INTERNALERROR hiding the real outcome, so it is
    # only shown. It is raised outside pytest's per-phase warning contexts, hence the filter is
    # also added to the session-wide one that is active now (pytest restores it at exit). Every
    # other benchmark warning (e.g. an unused fixture) stays an error.
    config.addinivalue_line(
        "filterwarnings", f"default:{_NOTHING_SAVED}:pytest_benchmark.logger.PytestBenchmarkWarning"
    )
    warnings.filterwarnings("default", message=_NOTHING_SAVED, category=PytestBenchmarkWarning)


def _machine_busy_seconds() -> float | None:
    """CPU seconds all processes have used since boot (Linux /proc/stat), None elsewhere."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = stat.readline().split()
    except OSError:
        return None
    # user nice system idle iowait irq softirq steal …: everything but idle and iowait is busy.
    ticks = [int(v) for v in fields[1:9]]
    busy = sum(ticks) - ticks[3] - ticks[4]
    return busy / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


@pytest.fixture
def measure(benchmark: Any) -> Callable[..., Any]:
    """``measure(fn, *args, **kwargs)``: warm ``fn`` up for WARMUP_SECONDS (at least two calls),
    then time it with ``benchmark``; returns fn's result. No warm-up under --benchmark-disable.

    Also records ``extra_info["other_cores"]``: how many cores other processes kept busy, on
    average, while the benchmark ran (0 = it had the machine to itself). When that leaves fewer
    free cores than the benchmark has threads, its threads wait for one another and the timing
    is worthless; report.py marks such rows.
    """

    def run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if getattr(benchmark, "disabled", False):
            return benchmark(fn, *args, **kwargs)
        deadline = time.perf_counter() + WARMUP_SECONDS
        calls = 0
        while calls < 2 or time.perf_counter() < deadline:
            fn(*args, **kwargs)
            calls += 1
        busy0, own0, wall0 = _machine_busy_seconds(), _own_cpu_seconds(), time.perf_counter()
        result = benchmark(fn, *args, **kwargs)
        busy1, own1, wall1 = _machine_busy_seconds(), _own_cpu_seconds(), time.perf_counter()
        if busy0 is not None and busy1 is not None:
            other = (busy1 - busy0) - (own1 - own0)
            benchmark.extra_info["other_cores"] = round(max(other / (wall1 - wall0), 0.0), 2)
        return result

    return run


def _random_matrix(rows: int, cols: int, *, relu: bool = False) -> np.ndarray:
    x = np.random.default_rng([rows, cols]).standard_normal((rows, cols), dtype=np.float32)
    if relu:
        np.maximum(x, 0.0, out=x)
    return x


@pytest.fixture
def random_matrix() -> Callable[..., np.ndarray]:
    """``random_matrix(rows, cols, relu=False)``: a C-contiguous float32 standard-normal matrix
    (ReLU'd if asked), identical on every run: the seed is the shape."""
    return _random_matrix


def pytest_benchmark_update_json(config: pytest.Config, benchmarks: list, output_json: dict) -> None:
    """Keeps ``--benchmark-json`` files small: pytest-benchmark always writes every round's time
    there (megabytes for microsecond functions); they stay only with ``--benchmark-save-data``."""
    if config.getoption("benchmark_save_data", False):
        return
    for bench in output_json.get("benchmarks", []):
        bench.get("stats", {}).pop("data", None)


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    """Records what the numbers depend on beyond the CPU: library versions, threads, solver crossover."""
    import ndt_fast
    from ndt_fast._native import core

    try:
        import ndt

        ndt_version = getattr(ndt, "__version__", "unknown")
    except ImportError:
        ndt_version = "not installed"
    machine_info["ndt_fast"] = {
        "version": ndt_fast.__version__,
        "own_solver_max_dim": int(core.OWN_SOLVER_MAX_DIM),
        "scipy_linalg_disabled": os.environ.get("NDT_DISABLE_SCIPY_LINALG", "") not in ("", "0"),
    }
    machine_info["libraries"] = {
        "numpy": np.__version__,
        "torch": torch.__version__,
        "ndtracker": ndt_version,
    }
    machine_info["threads"] = {
        "default": DEFAULT_THREADS,
        "measured": list(THREAD_COUNTS),
        "os_cpu_count": os.cpu_count(),
        "pools": [
            {key: pool.get(key) for key in ("prefix", "internal_api", "num_threads", "version", "filepath")}
            for pool in threadpool_info()
        ],
    }
