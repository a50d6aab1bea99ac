"""Defined answers for bad input (ndt_fast.metrics module docstring): errors that name the
problem, NaN records for non-finite data, scale invariance at the extremes of float32."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import ndt_fast as nf
from checks import assert_metrics_match
from matrices import make_matrix
from reference import METRIC_NAMES, reference_metrics

# Every public entry point that takes one matrix, called with its defaults.
ENTRY_POINTS = {
    "stable_rank": nf.stable_rank,
    "participation_ratio": nf.participation_ratio,
    "cumulative_energy_90": nf.cumulative_energy_90,
    "nuclear_norm_ratio": nf.nuclear_norm_ratio,
    "participation_ratio_eig": nf.participation_ratio_eig,
    "effective_rank": nf.effective_rank,
    "compute_all_metrics": nf.compute_all_metrics,
    "compute_metrics": nf.compute_metrics,
    "compute_metrics_batch": lambda x: nf.compute_metrics_batch([x]),
    "gram_eigenvalues": nf.gram_eigenvalues,
}
entry_points = pytest.mark.parametrize("fn", list(ENTRY_POINTS.values()), ids=list(ENTRY_POINTS))


# ---------------------------------------------------------------------------------------------
# shapes and dtypes


BAD_SHAPES = [
    ((5,), "2-D"),
    ((), "2-D"),
    ((2, 3, 4), "2-D"),
    ((1, 4, 4), "2-D"),
    ((0, 5), "non-empty"),
    ((5, 0), "non-empty"),
    ((0, 0), "non-empty"),
]


@entry_points
@pytest.mark.parametrize(("shape", "problem"), BAD_SHAPES, ids=[str(s) for s, _ in BAD_SHAPES])
@pytest.mark.parametrize("framework", ["numpy", "torch"])
def test_bad_shape_is_value_error_naming_the_shape(fn, shape, problem, framework):
    x = np.ones(shape, dtype=np.float32)
    if framework == "torch":
        x = torch.from_numpy(x)
    with pytest.raises(ValueError, match=problem) as info:
        fn(x)
    assert str(tuple(shape)) in str(info.value), f"message does not show the shape: {info.value}"


BAD_NUMPY_DTYPES = ["int8", "int32", "int64", "uint8", "bool", "complex64", "complex128", "object", "<U3"]


@entry_points
@pytest.mark.parametrize("dtype", BAD_NUMPY_DTYPES)
def test_bad_numpy_dtype_is_type_error_naming_it(fn, dtype):
    x = np.ones((4, 3)).astype(dtype)
    with pytest.raises(TypeError) as info:
        fn(x)
    assert str(np.dtype(dtype)) in str(info.value), f"dtype not named: {info.value}"


BAD_TORCH_DTYPES = [torch.int8, torch.int32, torch.int64, torch.uint8, torch.bool, torch.complex64, torch.complex128]


@entry_points
@pytest.mark.parametrize("dtype", BAD_TORCH_DTYPES, ids=[str(d) for d in BAD_TORCH_DTYPES])
def test_bad_torch_dtype_is_type_error_naming_it(fn, dtype):
    x = torch.ones(4, 3, dtype=dtype)
    with pytest.raises(TypeError) as info:
        fn(x)
    assert str(dtype).removeprefix("torch.") in str(info.value), f"dtype not named: {info.value}"


def test_list_of_int_lists_is_type_error():
    with pytest.raises(TypeError, match="int64"):
        nf.stable_rank([[1, 2], [3, 4]])


def test_list_of_lists_works(rng, seed):
    x = rng.standard_normal((9, 6))
    got = nf.compute_metrics(x.tolist())
    assert_metrics_match(got, reference_metrics(x), f"list input, seed={seed}")
    assert nf.compute_all_metrics(x.tolist()) == nf.compute_all_metrics(x)


def test_requires_grad_tensor_works_and_is_untouched(rng, seed):
    x = torch.from_numpy(make_matrix("gaussian", rng)).requires_grad_(True)
    before = x.detach().clone()
    got = nf.compute_metrics(x)
    assert_metrics_match(got, reference_metrics(before), f"requires_grad, seed={seed}")
    assert x.requires_grad and x.grad is None
    assert torch.equal(x.detach(), before)
    # a non-leaf tensor in a graph too
    y = x * 2.0
    assert_metrics_match(nf.compute_metrics(y), reference_metrics(y.detach()), f"non-leaf, seed={seed}")
    assert isinstance(nf.stable_rank(y), float)


def test_input_array_is_not_modified(rng):
    x = make_matrix("relu_gaussian", rng)
    before = x.copy()
    nf.compute_metrics(x, center=True)
    nf.gram_eigenvalues(x, center=True)
    np.testing.assert_array_equal(x, before)


# ---------------------------------------------------------------------------------------------
# parameters


@pytest.mark.parametrize("threshold", [0.0, -0.1, 1.0 + 1e-12, 1.5, float("nan"), float("inf"), -float("inf")])
def test_threshold_outside_unit_interval_is_value_error(threshold, rng):
    x = make_matrix("gaussian", rng)
    with pytest.raises(ValueError, match="threshold"):
        nf.cumulative_energy_90(x, threshold=threshold)
    with pytest.raises(ValueError, match="threshold"):
        nf.compute_metrics(x, energy_threshold=threshold)


@pytest.mark.parametrize("eps", [-1e-10, -1.0, float("nan"), float("inf")])
def test_bad_eps_is_value_error(eps, rng):
    x = make_matrix("gaussian", rng)
    with pytest.raises(ValueError, match="eps"):
        nf.stable_rank(x, eps=eps)
    with pytest.raises(ValueError, match="eps"):
        nf.compute_all_metrics(x, eps=eps)


@pytest.mark.parametrize("metrics", [["stable_rank", "rank"], ["Stable_Rank"], "cumulative_energy_90", ["trace"]])
def test_unknown_metric_name_is_value_error_naming_it(metrics, rng):
    x = make_matrix("gaussian", rng)
    bad = [m for m in ([metrics] if isinstance(metrics, str) else metrics) if m not in nf.ALL_METRICS]
    with pytest.raises(ValueError, match="unknown metric") as info:
        nf.compute_metrics(x, metrics=metrics)
    assert repr(bad[0]) in str(info.value)


def test_empty_metric_list_is_value_error(rng):
    with pytest.raises(ValueError, match="at least one"):
        nf.compute_metrics(make_matrix("gaussian", rng), metrics=[])


# ---------------------------------------------------------------------------------------------
# NaN and Inf


def assert_all_nan_record(rec: dict, context: str) -> None:
    assert all(math.isnan(rec[name]) for name in METRIC_NAMES), f"{context}: {rec}"
    assert rec["flags"] & nf.FLAG_NON_FINITE, f"{context}: flags={rec['flags']}"
    assert not rec["flags"] & nf.FLAG_ZERO, f"{context}: flags={rec['flags']}"


POSITIONS = ["first", "last", "middle", "row", "column", "everywhere"]


def poison(x: np.ndarray, value: float, where: str, rng: np.random.Generator) -> np.ndarray:
    x = x.copy()
    n, d = x.shape
    if where == "first":
        x[0, 0] = value
    elif where == "last":
        x[-1, -1] = value
    elif where == "middle":
        x[rng.integers(n), rng.integers(d)] = value
    elif where == "row":
        x[rng.integers(n), :] = value
    elif where == "column":
        x[:, rng.integers(d)] = value
    else:
        x[:] = value
    return x


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("where", POSITIONS)
@pytest.mark.parametrize("kind", ["gaussian", "wide", "tall", "gaussian_large", "zero", "tiny_row", "tiny_col"])
def test_non_finite_input_gives_nan_metrics_and_flag(kind, where, value, rng, seed):
    x = poison(make_matrix(kind, rng), value, where, rng)
    context = f"kind={kind}, {value} at {where}, seed={seed}"
    for center in (False, True):
        assert_all_nan_record(nf.compute_metrics(x, center=center), f"{context}, center={center}")
        trace_only = nf.compute_metrics(x, metrics=["stable_rank", "participation_ratio_eig"], center=center)
        assert math.isnan(trace_only["stable_rank"]) and math.isnan(trace_only["participation_ratio_eig"]), context
        assert trace_only["flags"] & nf.FLAG_NON_FINITE, context
    # ndt's names raise as ndt's stable_rank does; ndt_fast's own return NaN (test_ndt_names.py)
    for fn in (nf.compute_all_metrics, nf.cumulative_energy_90, nf.stable_rank):
        with pytest.raises(ValueError, match="NaN or Inf"):
            fn(x)
    assert math.isnan(nf.effective_rank(x))
    assert np.all(np.isnan(nf.gram_eigenvalues(x))), context


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_low_precision_torch(dtype, value, rng, seed):
    x = torch.from_numpy(make_matrix("gaussian", rng)).to(dtype)
    x[rng.integers(x.shape[0]), rng.integers(x.shape[1])] = value
    assert_all_nan_record(nf.compute_metrics(x), f"{dtype}, {value}, seed={seed}")
    assert_all_nan_record(nf.compute_metrics(x.t()), f"{dtype} transposed, {value}, seed={seed}")


def test_float16_overflow_to_inf_is_non_finite():
    x = np.ones((4, 4), dtype=np.float16)
    with np.errstate(over="ignore"):
        x[1, 2] = np.float64(70000.0)  # beyond float16's max (65504): stored as inf
    assert np.isinf(x[1, 2])
    assert_all_nan_record(nf.compute_metrics(x), "float16 inf")


def test_nan_in_one_matrix_does_not_spoil_the_batch(rng, seed):
    good = make_matrix("gaussian", rng)
    bad = poison(good, float("nan"), "middle", rng)
    records = nf.compute_metrics_batch([good, bad, good])
    assert_all_nan_record(records[1], f"seed={seed}")
    assert records[0] == records[2]
    assert_metrics_match(records[0], reference_metrics(good), f"seed={seed}")


def test_float64_whose_squares_overflow_is_non_finite():
    # ‖X‖F² = 4·(1e200)² overflows float64: documented to be reported as non-finite, not as a number
    x = np.full((2, 2), 1e200)
    x[0, 1] = -1e200
    assert_all_nan_record(nf.compute_metrics(x), "1e200 float64")


def test_non_finite_input_returns_promptly_in_a_fresh_process():
    """Hang guard: NaN/Inf must not send the eigensolver or the Lanczos iteration into an endless
    loop. Run in a child with a generous timeout, so a hang fails this test instead of the suite
    (a liveness check, not a performance assertion)."""
    script = textwrap.dedent(
        """
        import math, numpy as np, ndt_fast as nf
        from ndt_fast._native import core
        for n, d in [(50, 30), (30, 50), (300, 200), (1, 1)]:
            for v in (np.nan, np.inf, -np.inf):
                x = np.ones((n, d), np.float32); x[n // 2, d // 2] = v
                for metrics in (None, ["stable_rank", "participation_ratio_eig"]):
                    r = nf.compute_metrics(x, metrics=metrics)
                    assert r["flags"] & nf.FLAG_NON_FINITE, r
                a = np.eye(max(n, d)); a[0, -1] = a[-1, 0] = v
                for solver in ("own", "lapack", "auto"):
                    assert np.isnan(core.symmetric_eigenvalues(a, solver)).all()
        print("ok")
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


# ---------------------------------------------------------------------------------------------
# extreme scales


@pytest.mark.parametrize("scale", [1e30, 1e-30, 3e38 / 8, 1e-36], ids=["1e30", "1e-30", "near-max", "1e-36"])
@pytest.mark.parametrize("kind", ["gaussian", "wide", "low_rank", "ill_conditioned", "tiny_col", "gaussian_large"])
def test_extreme_float32_scale_is_finite_and_scale_invariant(kind, scale, rng, seed):
    base = make_matrix(kind, rng, np.float64)
    base /= np.max(np.abs(base))  # entries in [-1, 1], so scale·entry stays in float32 range
    x = (base * scale).astype(np.float32)
    assert np.all(np.isfinite(x))
    context = f"kind={kind}, scale={scale:g}, seed={seed}"
    got = nf.compute_metrics(x, eps=0.0)
    assert all(math.isfinite(got[name]) for name in METRIC_NAMES), f"{context}: {got}"
    assert got["flags"] == 0, f"{context}: flags={got['flags']}"
    # against the float64 reference of the very same float32 values ...
    assert_metrics_match(got, reference_metrics(x, eps=0.0), context)
    # ... and against the unit-scale matrix (rounding the scaled values moves them ~1e-7 relative)
    unit = nf.compute_metrics(base.astype(np.float32), eps=0.0)
    assert_metrics_match(got, reference_metrics(base.astype(np.float32), eps=0.0), f"{context} vs unit scale")
    assert got["cumulative_90"] == unit["cumulative_90"] or reference_metrics(x, eps=0.0).knife_edge()
    trace_only = nf.compute_metrics(x, eps=0.0, metrics=["stable_rank", "participation_ratio_eig"])
    assert_metrics_match(trace_only, reference_metrics(x, eps=0.0), f"{context} trace-only",
                         names=["stable_rank", "participation_ratio_eig"])


@pytest.mark.parametrize("scale", [1e100, 1e-100])
@pytest.mark.parametrize("metrics", [None, ["participation_ratio_eig"]], ids=["all", "pr_eig"])
def test_extreme_float64_scale_is_scale_invariant(scale, metrics, rng, seed):
    # The module docstring promises NaN only for non-finite values or "float64 values whose squares
    # overflow". At 1e±100 every square (1e±200) is a normal float64, and every metric is
    # scale-invariant, so the answer must be the unit-scale one, finite and unflagged.
    base = make_matrix("gaussian", rng, np.float64)
    got = nf.compute_metrics(base * scale, eps=0.0, metrics=metrics)
    names = METRIC_NAMES if metrics is None else metrics
    context = f"float64 scale {scale:g}, seed={seed}"
    assert got["flags"] == 0, f"{context}: flags={got['flags']}"
    assert_metrics_match(got, reference_metrics(base, eps=0.0), context, names=names)


def test_float16_near_its_max_and_subnormals(rng, seed):
    base = rng.standard_normal((40, 24))
    big = (base / np.abs(base).max() * 60000).astype(np.float16)
    assert_metrics_match(nf.compute_metrics(big, eps=0.0), reference_metrics(big, eps=0.0), f"fp16 max, seed={seed}")
    sub = (base / np.abs(base).max() * 5e-5).astype(np.float16)  # mostly subnormal float16
    assert np.count_nonzero(np.abs(sub) < np.finfo(np.float16).tiny) > sub.size // 2
    assert_metrics_match(nf.compute_metrics(sub, eps=0.0), reference_metrics(sub, eps=0.0), f"fp16 subnormal, seed={seed}")


@pytest.mark.parametrize("seconds", [0, -1.0, float("nan"), float("inf"), "1", True, None])
def test_flush_interval_not_a_positive_number_of_seconds_is_value_error(seconds):
    with pytest.raises(ValueError, match="flush_interval must be a positive number of seconds"):
        nf.FastTracker(torch.nn.Linear(3, 3), flush_interval=seconds)
