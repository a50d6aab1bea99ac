"""Eigenvalues of a batch of 8 symmetric n × n matrices, one thread: ndt_fast against torch.

One group per n ∈ {10, 32, 64, 128}. The matrices are float64 Grams XXᵀ of standard-normal
(n, 2n) matrices (positive definite, like the tracker's), seeded by n. Rows:

* ``ndt_fast.symmetric_eigenvalues(a)`` — the batched solver (SIMD lanes across matrices), with the
  kernel the CPU picks (AVX2 + FMA here), and the same under the portable C++ kernel;
* the single-matrix solver looped (``core.symmetric_eigenvalues(m, "own")``, the path before the
  batched one), a variant;
* ``torch.linalg.eigvalsh`` on the same float64 batch, and on the batch cast to float32 (LAPACK
  ssyevd: half the precision, not a like-for-like answer, but the fast path a user would reach for).

Everything runs with one thread (torch, every BLAS/OpenMP pool, ndt_fast's own).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

import ndt_fast
from ndt_fast._native import core

SIZES = (10, 32, 64, 128)
BATCH = 8

# name → (row label in the report, role)
IMPLEMENTATIONS = {
    "ndt_fast": ("ndt_fast.symmetric_eigenvalues(a)", "subject"),
    "ndt_fast-portable": ("same, portable C++ kernel", "variant"),
    "single-loop": ('[core.symmetric_eigenvalues(m, "own") for m in a]', "variant"),
    "torch-float64": ("torch.linalg.eigvalsh(a)", "baseline"),
    "torch-float32": ("torch.linalg.eigvalsh(a.float())", "baseline"),
}


@pytest.fixture
def one_thread() -> Iterator[None]:
    torch_before, core_before = torch.get_num_threads(), core.get_num_threads()
    with threadpool_limits(limits=1):
        torch.set_num_threads(1)
        core.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(torch_before)
            core.set_num_threads(core_before)


@pytest.fixture
def lane_kernel() -> Iterator[None]:
    """Restores the automatic kernel choice after a test that changed it."""
    yield
    core.set_lane_kernel("auto")


def _batch(n: int) -> np.ndarray:
    x = np.random.default_rng([BATCH, n]).standard_normal((BATCH, n, 2 * n))
    return np.ascontiguousarray(x @ x.transpose(0, 2, 1))


@pytest.mark.parametrize("impl", list(IMPLEMENTATIONS))
@pytest.mark.parametrize("n", SIZES)
def test_symmetric_eigenvalues(benchmark, measure, one_thread, lane_kernel, n, impl):
    a = _batch(n)
    label, role = IMPLEMENTATIONS[impl]
    benchmark.group = f"symmetric_eigenvalues n={n} batch={BATCH} threads=1"
    benchmark.extra_info.update(label=label, role=role, n=n, batch=BATCH, threads=1)
    if impl == "torch-float64":
        t = torch.from_numpy(a)
        result = measure(torch.linalg.eigvalsh, t).numpy()[:, ::-1]
    elif impl == "torch-float32":
        t = torch.from_numpy(a).float()
        result = measure(torch.linalg.eigvalsh, t).double().numpy()[:, ::-1]
    elif impl == "single-loop":
        result = np.stack(measure(lambda: [core.symmetric_eigenvalues(m, "own") for m in a]))
    else:
        if impl == "ndt_fast-portable":
            core.set_lane_kernel("portable")
        benchmark.extra_info["kernel"] = core.lane_kernel()
        result = measure(ndt_fast.symmetric_eigenvalues, a)
    # Not a test, a guard: a timing of a wrong answer is worthless (float32: its own accuracy).
    expected = np.linalg.eigvalsh(a)[:, ::-1]
    tolerance = 1e-4 if impl == "torch-float32" else 1e-12
    np.testing.assert_allclose(result, expected, rtol=0, atol=tolerance * np.max(expected))
