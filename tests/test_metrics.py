"""ndt_fast.metrics (the public functional API) against the float64 SVD reference.

Every matrix kind of ``matrices.py`` (random, ReLU, low-rank, rank-1, zero, ill-conditioned, wide,
tall, large, 1×7, 7×1), numpy and torch, all four float dtypes, strided and reversed layouts,
centering, the trace-only path and the eps / threshold parameters.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import ndt_fast as nf
from checks import RTOL, assert_metrics_match
from matrices import MATRIX_SHAPES, make_matrix
from reference import METRIC_NAMES, reference_metrics, singular_values, to_float64

FUNCTIONAL = {
    "stable_rank": nf.stable_rank,
    "participation_ratio": nf.participation_ratio,
    "cumulative_90": nf.cumulative_energy_90,
    "nuclear_norm_ratio": nf.nuclear_norm_ratio,
    "participation_ratio_eig": nf.participation_ratio_eig,
    "effective_rank": nf.effective_rank,
}
ALL_FOUR = ("stable_rank", "participation_ratio", "cumulative_90", "nuclear_norm_ratio")


def ctx(kind: str, seed: int, **extra) -> str:
    more = "".join(f", {k}={v}" for k, v in extra.items())
    return f"kind={kind}, seed={seed}{more}"


def expected_flags(ref) -> int:
    return nf.FLAG_ZERO if ref.is_zero else 0


# ---------------------------------------------------------------------------------------------
# float32 numpy, every kind, every entry point


def test_public_constants():
    assert nf.ALL_METRICS == METRIC_NAMES
    assert nf.RECORD_COLUMNS == METRIC_NAMES + ("trace", "lambda_max", "flags")
    flags = [nf.FLAG_NON_FINITE, nf.FLAG_ZERO, nf.FLAG_NOT_CONVERGED]
    assert all(f > 0 and f & (f - 1) == 0 for f in flags), "flags must be distinct bits"
    assert len(set(flags)) == 3


def test_compute_metrics_matches_reference(matrix, matrix_kind, seed):
    ref = reference_metrics(matrix)
    got = nf.compute_metrics(matrix)
    assert set(got) == set(nf.RECORD_COLUMNS)
    assert_metrics_match(got, ref, ctx(matrix_kind, seed))
    assert got["flags"] == expected_flags(ref), ctx(matrix_kind, seed, flags=got["flags"])
    assert isinstance(got["flags"], int)
    # trace = Σλ = ‖X‖F², lambda_max = σmax²
    assert got["trace"] == pytest.approx(ref.extras["trace"], rel=1e-10, abs=0), ctx(matrix_kind, seed)
    assert got["lambda_max"] == pytest.approx(ref.extras["lambda_max"], rel=RTOL, abs=0), ctx(matrix_kind, seed)


def test_functional_api_matches_reference(matrix, matrix_kind, seed):
    ref = reference_metrics(matrix)
    got = {name: fn(matrix) for name, fn in FUNCTIONAL.items()}
    assert_metrics_match(got, ref, ctx(matrix_kind, seed))
    assert all(isinstance(v, float) for k, v in got.items() if k != "cumulative_90")
    assert isinstance(got["cumulative_90"], int), f"cumulative_energy_90 returned {type(got['cumulative_90'])}"


def test_compute_all_metrics_matches_reference(matrix, matrix_kind, seed):
    ref = reference_metrics(matrix)
    result = nf.compute_all_metrics(matrix)
    assert isinstance(result, tuple) and len(result) == 4
    assert isinstance(result[2], int)
    assert_metrics_match(dict(zip(ALL_FOUR, result)), ref, ctx(matrix_kind, seed), names=ALL_FOUR)


def test_gram_eigenvalues_are_squared_singular_values(matrix, matrix_kind, seed):
    want = singular_values(matrix) ** 2
    got = nf.gram_eigenvalues(matrix)
    assert got.dtype == np.float64
    assert got.shape == (min(matrix.shape),)
    assert np.all(np.diff(got) <= 0), f"not descending: {got[:10]} ({ctx(matrix_kind, seed)})"
    # Eigenvalues of a float64 Gram are exact only to ~ε·λmax in absolute terms: a spectrum that is
    # zero in exact arithmetic (rank-deficient kinds) comes back as round-off of that size.
    scale = max(want[0], np.finfo(np.float64).tiny)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=1e-12 * scale, err_msg=ctx(matrix_kind, seed))


@pytest.mark.parametrize("solver", ["own", "lapack", "auto"])
@pytest.mark.parametrize("kind", ["gaussian", "ill_conditioned", "wide", "gaussian_large"])
def test_gram_eigenvalues_solvers_agree(kind, solver, rng, seed):
    x = make_matrix(kind, rng)
    want = singular_values(x) ** 2
    got = nf.gram_eigenvalues(x, solver=solver)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=1e-12 * want[0], err_msg=ctx(kind, seed, solver=solver))


def test_gram_eigenvalues_centered(matrix, matrix_kind, seed):
    want = singular_values(matrix, center=True) ** 2
    got = nf.gram_eigenvalues(matrix, center=True)
    scale = max(want[0], np.finfo(np.float64).tiny)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=1e-12 * scale, err_msg=ctx(matrix_kind, seed))


def test_gram_eigenvalues_unknown_solver_is_value_error(rng):
    with pytest.raises(ValueError, match="solver"):
        nf.gram_eigenvalues(make_matrix("gaussian", rng), solver="qr")


# ---------------------------------------------------------------------------------------------
# the zero matrix: every metric exactly 0, FLAG_ZERO


@pytest.mark.parametrize("shape", [(1, 1), (20, 30), (30, 20), (1, 300), (300, 1), (150, 120)])
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
def test_zero_matrix_is_all_zero_with_flag(shape, dtype):
    x = torch.zeros(shape, dtype=getattr(torch, dtype))
    got = nf.compute_metrics(x)
    assert all(got[name] == 0.0 for name in METRIC_NAMES), got
    assert got["trace"] == 0.0 and got["lambda_max"] == 0.0, got
    assert got["flags"] & nf.FLAG_ZERO, got
    assert not got["flags"] & nf.FLAG_NON_FINITE, got
    assert nf.compute_all_metrics(x) == (0.0, 0.0, 0, 0.0)
    assert all(fn(x) == 0 for fn in FUNCTIONAL.values())
    np.testing.assert_array_equal(nf.gram_eigenvalues(x), np.zeros(min(shape)))


def test_negative_zero_counts_as_zero():
    x = np.full((6, 4), -0.0, dtype=np.float32)
    got = nf.compute_metrics(x)
    assert got["flags"] & nf.FLAG_ZERO
    assert all(got[name] == 0.0 for name in METRIC_NAMES), got


# ---------------------------------------------------------------------------------------------
# torch inputs and the other dtypes


def test_torch_input_matches_reference(matrix, matrix_kind, seed):
    ref = reference_metrics(matrix)
    shared = torch.from_numpy(matrix)  # shares memory with the numpy array
    owned = torch.tensor(matrix.tolist(), dtype=torch.float32)  # torch's own allocation
    for name, t in [("from_numpy", shared), ("torch.tensor", owned)]:
        got = nf.compute_metrics(t)
        assert_metrics_match(got, ref, ctx(matrix_kind, seed, input=name))
        assert got["flags"] == expected_flags(ref)
        assert_metrics_match(dict(zip(ALL_FOUR, nf.compute_all_metrics(t))), ref, ctx(matrix_kind, seed), names=ALL_FOUR)


DTYPE_CASES = [
    ("numpy", "float64"),
    ("numpy", "float16"),
    ("numpy", "float32"),
    ("torch", "float64"),
    ("torch", "float16"),
    ("torch", "bfloat16"),
]


def cast(x64: np.ndarray, framework: str, dtype: str):
    if framework == "numpy":
        return x64.astype(dtype)
    return torch.from_numpy(x64).to(getattr(torch, dtype))


@pytest.mark.parametrize(("framework", "dtype"), DTYPE_CASES, ids=[f"{f}-{d}" for f, d in DTYPE_CASES])
def test_dtypes_match_reference_on_rounded_values(matrix_kind, framework, dtype, rng, seed):
    x = cast(make_matrix(matrix_kind, rng, np.float64), framework, dtype)
    # The reference sees exactly the values the library reads: the low-precision ones, upcast.
    rounded = to_float64(x)
    ref = reference_metrics(rounded)
    got = nf.compute_metrics(x)
    assert_metrics_match(got, ref, ctx(matrix_kind, seed, dtype=f"{framework}.{dtype}"))
    assert got["flags"] == expected_flags(ref)
    want_eigs = ref.sigma**2
    np.testing.assert_allclose(
        nf.gram_eigenvalues(x), want_eigs, rtol=RTOL, atol=1e-12 * max(want_eigs[0], 1e-300),
        err_msg=ctx(matrix_kind, seed, dtype=dtype),
    )


def test_float64_is_not_rounded_to_float32():
    # 1 + 2⁻⁴⁰ is 1.0 in float32: reading (or accumulating) float64 input in float32 would lose it.
    v = 1.0 + 2.0**-40
    x = np.array([[v, 0.0], [0.0, 1.0], [0.0, 0.0]])
    got = nf.gram_eigenvalues(x)
    assert got[0] == pytest.approx(v * v, rel=1e-15, abs=0) and got[0] > 1.0, got
    assert got[1] == 1.0, got
    # and the metrics see it: stable rank (v² + 1) / v² = 2 − 2⁻³⁹ + … < 2
    assert nf.compute_metrics(x, eps=0.0)["stable_rank"] == pytest.approx(1 + 1 / (v * v), rel=1e-15, abs=0)
    # (the stable-rank-only path takes λmax from Lanczos: a 2×2 Krylov space is the whole space)
    assert nf.stable_rank(x, eps=0.0) == pytest.approx(1 + 1 / (v * v), rel=1e-11, abs=0)
    assert nf.stable_rank(x, eps=0.0) < 2.0


# ---------------------------------------------------------------------------------------------
# strides and layouts


def layout(name: str, kind: str, rng: np.random.Generator):
    """A fresh matrix of ``kind`` in the named layout (its shape may differ: transposes, slices)."""
    n, d = MATRIX_SHAPES[kind]
    if name == "numpy_transposed_view":
        base = make_matrix(kind, rng)
        x = base.T  # shape (d, n), column-major strides
    elif name == "numpy_column_slice":
        base = make_matrix(kind, rng)
        x = base[:, ::2]
    elif name == "numpy_row_slice":
        x = make_matrix(kind, rng)[::3]
    elif name == "numpy_negative_rows":
        x = make_matrix(kind, rng)[::-1]
    elif name == "numpy_negative_both":
        x = make_matrix(kind, rng)[::-1, ::-1]
    elif name == "numpy_negative_cols_sliced":
        x = make_matrix(kind, rng)[::-2, ::-3]
    elif name == "numpy_fortran":
        x = np.asfortranarray(make_matrix(kind, rng))
    elif name == "numpy_fortran_float64_sliced":
        x = np.asfortranarray(make_matrix(kind, rng, np.float64))[::2, :]
    elif name == "numpy_byteswapped":
        x = make_matrix(kind, rng).astype(">f4")
    elif name == "numpy_submatrix_of_padded":
        padded = np.zeros((n + 3, d + 5), dtype=np.float32)
        padded[2 : 2 + n, 1 : 1 + d] = make_matrix(kind, rng)
        x = padded[2 : 2 + n, 1 : 1 + d]
    elif name == "torch_t":
        x = torch.from_numpy(make_matrix(kind, rng)).t()
    elif name == "torch_column_slice":
        start = 1 if d > 1 else 0  # keep the 7 × 1 kind non-empty
        x = torch.from_numpy(make_matrix(kind, rng))[:, start::2]
    elif name == "torch_bfloat16_transposed":
        x = torch.from_numpy(make_matrix(kind, rng)).to(torch.bfloat16).t()
    elif name == "torch_float16_sliced":
        x = torch.from_numpy(make_matrix(kind, rng)).to(torch.float16)[::2, ::3]
    elif name == "torch_channels_last_2d":
        # a channels_last (1, C=n, H=d, W=2) activation's [0, :, :, 1] slice: channels are the
        # unit-stride axis, so rows have stride 1, columns stride 2n, and the data starts at an offset
        plane = torch.from_numpy(make_matrix(kind, rng))
        base = torch.stack([torch.zeros_like(plane), plane], dim=-1).unsqueeze(0)
        x = base.contiguous(memory_format=torch.channels_last)[0, :, :, 1]
    else:  # pragma: no cover
        raise KeyError(name)
    return x


LAYOUTS = [
    "numpy_transposed_view",
    "numpy_column_slice",
    "numpy_row_slice",
    "numpy_negative_rows",
    "numpy_negative_both",
    "numpy_negative_cols_sliced",
    "numpy_fortran",
    "numpy_fortran_float64_sliced",
    "numpy_byteswapped",
    "numpy_submatrix_of_padded",
    "torch_t",
    "torch_column_slice",
    "torch_bfloat16_transposed",
    "torch_float16_sliced",
    "torch_channels_last_2d",
]


@pytest.mark.parametrize("layout_name", LAYOUTS)
def test_strided_inputs_match_reference(layout_name, matrix_kind, rng, seed):
    x = layout(layout_name, matrix_kind, rng)
    if 0 in tuple(x.shape):
        pytest.fail(f"layout {layout_name} of {matrix_kind} is empty; fix the test")
    values = to_float64(x)
    ref = reference_metrics(values)
    got = nf.compute_metrics(x)
    assert_metrics_match(got, ref, ctx(matrix_kind, seed, layout=layout_name, shape=tuple(x.shape)))
    assert got["flags"] == expected_flags(ref)
    # The same numbers as for a contiguous float64 copy of the same values (numerically, not bitwise).
    contiguous = nf.compute_metrics(np.ascontiguousarray(values))
    assert_metrics_match(contiguous, ref, ctx(matrix_kind, seed, layout="contiguous copy"))


def test_non_contiguous_layouts_are_actually_strided(rng):
    # Guards the layout table above: these must not silently be contiguous copies.
    assert not layout("numpy_transposed_view", "gaussian", rng).flags.c_contiguous
    assert layout("numpy_negative_rows", "gaussian", rng).strides[0] < 0
    assert not layout("torch_t", "gaussian", rng).is_contiguous()
    assert layout("torch_channels_last_2d", "gaussian", rng).stride() == (1, 2 * 120)


def test_zero_stride_broadcast_input(rng, seed):
    row = rng.standard_normal(40).astype(np.float32)
    x = np.broadcast_to(row, (25, 40))  # row stride 0
    assert x.strides[0] == 0
    ref = reference_metrics(x)
    got = nf.compute_metrics(x)
    assert_metrics_match(got, ref, f"seed={seed}")
    assert got["cumulative_90"] == 1.0
    t = torch.from_numpy(rng.standard_normal((1, 30)).astype(np.float32)).expand(50, 30)
    assert t.stride()[0] == 0
    assert_metrics_match(nf.compute_metrics(t), reference_metrics(t), f"torch expand, seed={seed}")


# ---------------------------------------------------------------------------------------------
# centering, metric subsets, eps and threshold


def test_center_matches_centered_reference(matrix, matrix_kind, seed):
    ref = reference_metrics(matrix, center=True)
    got = nf.compute_metrics(matrix, center=True)
    assert_metrics_match(got, ref, ctx(matrix_kind, seed, center=True))
    assert got["flags"] == expected_flags(ref)
    functional = {name: fn(matrix, center=True) for name, fn in FUNCTIONAL.items()}
    assert_metrics_match(functional, ref, ctx(matrix_kind, seed, center=True, api="functional"))
    assert_metrics_match(
        dict(zip(ALL_FOUR, nf.compute_all_metrics(matrix, center=True))), ref,
        ctx(matrix_kind, seed, center=True), names=ALL_FOUR,
    )


@pytest.mark.parametrize("kind", ["gaussian", "wide", "tall", "gaussian_large"])
def test_center_removes_a_large_offset(kind, rng, seed):
    # A common offset 50× the spread: the uncentred spectrum is dominated by the mean direction,
    # the centred one must be the spread's own (cancellation in G − s sᵀ/N stays within tolerance).
    base = make_matrix(kind, rng, np.float64)
    x = (base + 50.0 + rng.standard_normal(base.shape[1])).astype(np.float32)
    ref = reference_metrics(x, center=True)
    got = nf.compute_metrics(x, center=True)
    assert_metrics_match(got, ref, ctx(kind, seed, center=True))
    uncentred = nf.compute_metrics(x)
    assert uncentred["cumulative_90"] == 1.0  # the mean direction holds > 90 % of the energy


def test_center_false_is_the_default(rng):
    x = make_matrix("relu_gaussian", rng)
    assert nf.compute_metrics(x) == nf.compute_metrics(x, center=False)
    assert nf.compute_metrics(x)["stable_rank"] != nf.compute_metrics(x, center=True)["stable_rank"]


TRACE_ONLY = ["stable_rank", "participation_ratio_eig"]


@pytest.mark.parametrize("center", [False, True])
def test_trace_only_metrics_match_reference(matrix, matrix_kind, center, seed):
    ref = reference_metrics(matrix, center=center)
    got = nf.compute_metrics(matrix, metrics=TRACE_ONLY, center=center)
    assert_metrics_match(got, ref, ctx(matrix_kind, seed, metrics="trace-only", center=center), names=TRACE_ONLY)
    for name in METRIC_NAMES:
        if name not in TRACE_ONLY:
            assert np.isnan(got[name]), f"{name} was not requested but is {got[name]}"
    assert got["flags"] == expected_flags(ref)


@pytest.mark.parametrize("name", METRIC_NAMES)
def test_single_metric_requests(name, rng, seed):
    x = make_matrix("relu_gaussian", rng)
    ref = reference_metrics(x)
    got = nf.compute_metrics(x, metrics=[name])
    assert_metrics_match(got, ref, f"seed={seed}, metrics=[{name}]", names=[name])
    assert all(np.isnan(got[other]) for other in METRIC_NAMES if other != name)
    assert nf.compute_metrics(x, metrics=name)[name] == got[name]  # a bare string is one name


@pytest.mark.parametrize("eps", [0.0, 1e-12, 1e-3, 1.0, 25.0])
@pytest.mark.parametrize("kind", ["gaussian", "low_rank", "wide", "tiny_col", "ill_conditioned"])
def test_eps_is_honored(kind, eps, rng, seed):
    x = make_matrix(kind, rng)
    ref = reference_metrics(x, eps=eps)
    got = nf.compute_metrics(x, eps=eps)
    assert_metrics_match(got, ref, ctx(kind, seed, eps=eps))
    eps_metrics = ["stable_rank", "participation_ratio", "nuclear_norm_ratio"]
    assert_metrics_match({n: FUNCTIONAL[n](x, eps=eps) for n in eps_metrics}, ref, ctx(kind, seed, eps=eps), names=eps_metrics)
    assert_metrics_match(dict(zip(ALL_FOUR, nf.compute_all_metrics(x, eps=eps))), ref, ctx(kind, seed, eps=eps), names=ALL_FOUR)


def test_large_eps_changes_the_result(rng):
    # guards test_eps_is_honored against an eps that is silently ignored
    x = make_matrix("gaussian", rng)
    assert nf.stable_rank(x, eps=25.0) < nf.stable_rank(x, eps=0.0) * (1 - 1e-3)


@pytest.mark.parametrize("threshold", [1e-9, 0.05, 0.5, 0.75, 0.9, 0.99, 0.999])
@pytest.mark.parametrize("kind", ["gaussian", "relu_gaussian", "ill_conditioned", "wide", "low_rank", "gaussian_large"])
def test_threshold_is_honored(kind, threshold, rng, seed):
    x = make_matrix(kind, rng)
    ref = reference_metrics(x, threshold=threshold)
    got = nf.compute_metrics(x, energy_threshold=threshold)
    assert_metrics_match(got, ref, ctx(kind, seed, threshold=threshold))
    functional = nf.cumulative_energy_90(x, threshold=threshold)
    assert isinstance(functional, int)
    assert_metrics_match({"cumulative_90": functional}, ref, ctx(kind, seed, threshold=threshold), names=["cumulative_90"])


def test_threshold_one_counts_every_direction_of_a_full_rank_matrix(rng, seed):
    x = make_matrix("gaussian", rng)
    # 120 × 80 gaussian: the smallest λ carries ~5e-4 of the energy, far from any knife edge, so
    # reaching 100 % needs all 80 directions.
    assert nf.cumulative_energy_90(x, threshold=1.0) == 80, f"seed={seed}"
    assert nf.compute_metrics(x, energy_threshold=1.0)["cumulative_90"] == 80.0


def test_compute_metrics_batch_matches_per_matrix_reference(rng, seed):
    xs = [
        make_matrix("gaussian", rng),
        torch.from_numpy(make_matrix("wide", rng, np.float64)).to(torch.bfloat16),
        make_matrix("zero", rng),
        make_matrix("tall", rng, np.float64)[::-1],
        torch.from_numpy(make_matrix("low_rank", rng)).t(),
        make_matrix("tiny_row", rng, np.float16),
    ]
    got = nf.compute_metrics_batch(xs)
    assert len(got) == len(xs)
    for i, (x, g) in enumerate(zip(xs, got)):
        ref = reference_metrics(x)
        assert_metrics_match(g, ref, f"batch item {i}, seed={seed}")
        assert g["flags"] == expected_flags(ref)
    centred = nf.compute_metrics_batch(xs, center=True, metrics=TRACE_ONLY)
    for i, (x, g) in enumerate(zip(xs, centred)):
        assert_metrics_match(g, reference_metrics(x, center=True), f"centred batch item {i}, seed={seed}", names=TRACE_ONLY)


@pytest.mark.parametrize("shape", [(64, 256), (256, 64), (7, 5), (5, 7), (33, 33), (1, 7), (7, 1), (200, 120)])
@pytest.mark.parametrize("row_kind", ["one_value", "random_row"])
def test_center_of_constant_columns_is_the_zero_matrix(shape, row_kind, rng, seed):
    # Every row equal: the centred matrix is exactly zero (float32 values, float64 means are
    # exact here; asserted below), i.e. a fully collapsed layer. It spans no direction, so the
    # record must be the zero record, not metrics of the Gram's cancellation round-off.
    n, d = shape
    row = np.full(d, 0.1, dtype=np.float32) if row_kind == "one_value" else rng.standard_normal(d).astype(np.float32)
    x = np.tile(row, (n, 1))
    centred = x.astype(np.float64) - x.astype(np.float64).mean(axis=0)
    assert not np.any(centred)
    got = nf.compute_metrics(x, center=True)
    context = ctx(row_kind, seed, shape=shape)
    assert got["flags"] & nf.FLAG_ZERO, f"{context}: {got}"
    assert all(got[name] == 0.0 for name in METRIC_NAMES), f"{context}: {got}"
    assert nf.compute_all_metrics(x, center=True) == (0.0, 0.0, 0, 0.0), context
