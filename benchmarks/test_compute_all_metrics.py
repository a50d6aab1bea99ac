"""ndt's four metrics of a ReLU'd float32 activation matrix: ndt_fast against ndtracker.

One group per (shape, threads). ``ndt.core.estimators.compute_all_metrics`` runs a full SVD of the
torch tensor; ``ndt_fast.compute_all_metrics`` eigensolves the smaller Gram (float64
accumulation). The trace-only row asks ``compute_metrics`` for the two metrics that need no
eigensolver (stable rank by Lanczos for λmax, eigenvalue participation ratio from tr(G) and ‖G‖F).
Every implementation receives the same torch tensor, as a training loop would pass it.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
from ndt.core.estimators import compute_all_metrics as ndt_compute_all_metrics

import ndt_fast

SHAPES = ((64, 256), (64, 128), (64, 10), (4096, 768))
TRACE_ONLY = ["stable_rank", "participation_ratio_eig"]

# name → (row label in the report, role). The report divides every median by the "subject" median.
IMPLEMENTATIONS = {
    "ndt_fast": ("ndt_fast.compute_all_metrics(x)", "subject"),
    "ndt_fast-trace_only": (
        'ndt_fast.compute_metrics(x, metrics=["stable_rank", "participation_ratio_eig"])',
        "variant",
    ),
    "ndtracker": ("ndt.core.estimators.compute_all_metrics(x)", "baseline"),
}

CASES = [
    pytest.param(shape, impl, id=f"{shape[0]}x{shape[1]}-{impl}")
    for shape in SHAPES
    for impl in IMPLEMENTATIONS
]


@functools.cache
def _reference(rows: int, cols: int, x_bytes: bytes) -> tuple[float, float, int, float]:
    """ndt's answer in float64 (SVD of the float64 matrix), the target ndt_fast reproduces."""
    x = np.frombuffer(x_bytes, dtype=np.float32).reshape(rows, cols)
    return ndt_compute_all_metrics(torch.from_numpy(x.astype(np.float64)))


@pytest.mark.parametrize(("shape", "impl"), CASES)
def test_compute_all_metrics(benchmark, measure, threads, random_matrix, shape, impl):
    rows, cols = shape
    x_np = random_matrix(rows, cols, relu=True)
    x = torch.from_numpy(x_np)
    label, role = IMPLEMENTATIONS[impl]
    benchmark.group = f"compute_all_metrics {rows}x{cols} threads={threads}"
    benchmark.extra_info.update(label=label, role=role, shape=[rows, cols], threads=threads)

    if impl == "ndtracker":
        measure(ndt_compute_all_metrics, x)
        return
    # Not a test, a guard: a timing of a wrong answer is worthless.
    sr, pr, ce90, nnr = _reference(rows, cols, x_np.tobytes())
    if impl == "ndt_fast":
        got = measure(ndt_fast.compute_all_metrics, x)
        np.testing.assert_allclose([got[0], got[1], got[3]], [sr, pr, nnr], rtol=1e-6)
        assert abs(got[2] - ce90) <= 1
    else:
        got = measure(ndt_fast.compute_metrics, x, metrics=TRACE_ONLY)
        np.testing.assert_allclose(got["stable_rank"], sr, rtol=1e-6)
        assert math.isfinite(got["participation_ratio_eig"])
