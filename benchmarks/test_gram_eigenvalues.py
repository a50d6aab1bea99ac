"""Eigenvalues of the Gram XᵀX of a float32 (2n, n) matrix: ndt_fast against torch and numpy.

One group per (n, threads). Baselines form the float32 Gram and call LAPACK ssyevd
(``eigvalsh(x.T @ x)``); ndt_fast accumulates the Gram in float64 and returns float64 eigenvalues,
so it does more precise work than the baselines, not less. For n ≤ 256 the two solvers behind
``solver="auto"`` are also measured on their own, so the own-solver/LAPACK crossover
(``ndt_fast._native.core.OWN_SOLVER_MAX_DIM``) can be checked against the machine.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

import ndt_fast

SIZES = (10, 64, 128, 256, 512, 1024)
SOLVER_SWEEP_MAX_N = 256

# name → (row label in the report, role). The report divides every median by the "subject" median.
IMPLEMENTATIONS = {
    "ndt_fast": ("ndt_fast.gram_eigenvalues(x)", "subject"),
    "ndt_fast-own": ('ndt_fast.gram_eigenvalues(x, solver="own")', "variant"),
    "ndt_fast-lapack": ('ndt_fast.gram_eigenvalues(x, solver="lapack")', "variant"),
    "torch": ("torch.linalg.eigvalsh(x.T @ x)", "baseline"),
    "numpy": ("np.linalg.eigvalsh(x.T @ x)", "baseline"),
}

CASES = [
    pytest.param(n, impl, id=f"n{n}-{impl}")
    for n in SIZES
    for impl in IMPLEMENTATIONS
    if not (impl in ("ndt_fast-own", "ndt_fast-lapack") and n > SOLVER_SWEEP_MAX_N)
]


@functools.cache
def _float64_eigenvalues(n: int, x_bytes: bytes) -> np.ndarray:
    x = np.frombuffer(x_bytes, dtype=np.float32).reshape(2 * n, n).astype(np.float64)
    return np.linalg.eigvalsh(x.T @ x)[::-1]


@pytest.mark.parametrize(("n", "impl"), CASES)
def test_gram_eigenvalues(benchmark, measure, threads, random_matrix, n, impl):
    x = random_matrix(2 * n, n)
    label, role = IMPLEMENTATIONS[impl]
    benchmark.group = f"gram_eigenvalues n={n} threads={threads}"
    benchmark.extra_info.update(label=label, role=role, n=n, shape=list(x.shape), threads=threads)

    if impl == "torch":
        xt = torch.from_numpy(x)
        result = measure(lambda: torch.linalg.eigvalsh(xt.T @ xt))
    elif impl == "numpy":
        result = measure(lambda: np.linalg.eigvalsh(x.T @ x))
    else:
        solver = {"ndt_fast": "auto", "ndt_fast-own": "own", "ndt_fast-lapack": "lapack"}[impl]
        result = measure(ndt_fast.gram_eigenvalues, x, solver=solver)
        # Not a test, a guard: a timing of a wrong answer is worthless.
        expected = _float64_eigenvalues(n, x.tobytes())
        np.testing.assert_allclose(result, expected, rtol=0, atol=1e-7 * expected[0])
    assert result.shape == (n,)
