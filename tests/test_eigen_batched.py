"""The batched symmetric eigensolver (csrc/cpu/eigen_batched_cpu.cpp, eigen_lanes_*.cpp) and
``ndt_fast.symmetric_eigenvalues``.

Every result is compared with the single-matrix solver (``core.symmetric_eigenvalues(a, "own")``)
to |Δλ| ≤ 1e-12·max|λ| for every eigenvalue, under both kernels (AVX2+FMA where the CPU has it,
and the portable C++ one). Why relative to max|λ| and not to each λ: both solvers are backward
stable, so each computes every eigenvalue to ~n·eps·max|λ| *absolute*; two different rounding
orders (FMA or not, lanes or not) then disagree by that much on the small eigenvalues of a graded
matrix — measured ~1e-15·max|λ| (up to 1.3e-15 on a random 100 × 100, seed 3630704544), i.e. up
to 1e-4 relative to a λ of 1e-12·max|λ|. A per-λ relative bound of 1e-12 is therefore met only
for λ ≳ 1e-3·max|λ|; it is checked below for λ ≥ 1e-2·max|λ|, a 10× margin (at 1e-3 that seed's
λ = 1.2e-3·max|λ| came out 1.09e-12 relative).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ndt_fast
from checks import assert_metrics_match
from matrices import MATRIX_KINDS, make_matrix
from ndt_fast._native import core
from reference import reference_metrics

KERNELS = ["portable", "avx2"]
RTOL = 1e-12  # of max|λ|, see the module docstring


@pytest.fixture(params=KERNELS)
def kernel(request: pytest.FixtureRequest):
    """Runs the test under each lane kernel the CPU can run (the process-wide switch), then
    restores the automatic choice."""
    if not core.lane_kernel_available(request.param):
        pytest.skip(f"the {request.param} kernel cannot run on this CPU/build")
    core.set_lane_kernel(request.param)
    assert core.lane_kernel() == request.param
    yield request.param
    core.set_lane_kernel("auto")


def with_spectrum(rng: np.random.Generator, lam: np.ndarray) -> np.ndarray:
    n = len(lam)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    a = (q * lam) @ q.T
    return (a + a.T) / 2


def random_symmetric(rng, n):
    b = rng.standard_normal((n, n))
    return (b + b.T) / 2


def rank_deficient(rng, n):
    x = rng.standard_normal((max(1, n // 3), n))
    return x.T @ x


def clustered(rng, n):  # three clusters of (nearly) equal eigenvalues
    base = np.repeat([2.0, 1.0, 1e-3], (n + 2) // 3)[:n]
    return with_spectrum(rng, base * (1 + 1e-13 * rng.standard_normal(n)))


def graded(rng, n):
    return with_spectrum(rng, np.logspace(0, -12, n))


CASES = {
    "random": random_symmetric,
    "rank_deficient": rank_deficient,
    "clustered": clustered,
    "zero": lambda rng, n: np.zeros((n, n)),
    "graded": graded,
    "diagonal": lambda rng, n: np.diag(rng.standard_normal(n)),
}
SIZES = [1, 2, 3, 4, 5, 7, 10, 16, 31, 32, 33, 64, 65, 100, 128]


def single_solver(a: np.ndarray) -> np.ndarray:
    return core.symmetric_eigenvalues(a, "own")


def assert_matches_single(got: np.ndarray, a: np.ndarray, context: str) -> None:
    want = single_solver(a)
    assert got.shape == want.shape and got.dtype == np.float64, context
    if np.isnan(want).all():
        assert np.isnan(got).all(), f"{context}: expected all NaN, got {got[:5]}"
        return
    scale = np.max(np.abs(want))
    err = float(np.max(np.abs(got - want)))
    assert err <= RTOL * scale, f"{context}: max |Δλ| = {err:.3g} > {RTOL:g}·{scale:.3g}"
    assert np.all(np.diff(got) <= 0), f"{context}: not descending"
    big = np.abs(want) >= 1e-2 * scale  # the per-λ relative bound where it is attainable (module docstring)
    assert np.all(np.abs(got - want)[big] <= RTOL * np.abs(want)[big]), context


@pytest.mark.parametrize("case", list(CASES))
def test_stack_matches_single_solver(case, kernel, rng, seed):
    for n in SIZES:
        a = np.stack([CASES[case](rng, n) for _ in range(6)])  # one full group of 4 and a partial one
        got = ndt_fast.symmetric_eigenvalues(a)
        assert got.shape == (6, n)
        for k in range(6):
            assert_matches_single(got[k], a[k], f"{case} n={n} k={k} {kernel} seed={seed}")
        if case == "zero":
            np.testing.assert_array_equal(got, 0.0)


def test_mixed_sizes_in_one_call(kernel, rng, seed):
    sizes = [64, 10, 64, 3, 1, 128, 33, 2, 64, 17, 5]
    cases = list(CASES)
    mats = [CASES[cases[i % len(cases)]](rng, n) for i, n in enumerate(sizes)]
    got = ndt_fast.symmetric_eigenvalues(mats)
    assert isinstance(got, list) and [g.shape for g in got] == [(n,) for n in sizes]
    for i, (g, a) in enumerate(zip(got, mats)):
        assert_matches_single(g, a, f"matrix {i} (n={a.shape[0]}) {kernel} seed={seed}")
        want = np.sort(np.linalg.eigvalsh(a))[::-1]  # and LAPACK, as the other solver tests do
        assert np.max(np.abs(g - want)) <= 1e-10 * max(np.max(np.abs(want)), 1e-300)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_matrix_is_flagged_alone(value, kernel, rng, seed):
    mats = [rank_deficient(rng, n) for n in (64, 64, 10, 64, 5)]
    bad = mats[1].copy()
    bad[3, 7] = value  # upper triangle: still the whole matrix is refused
    with_bad = mats[:1] + [bad] + mats[2:]
    values, ok = core.symmetric_eigenvalues_batched(with_bad)
    np.testing.assert_array_equal(ok, [True, False, True, True, True])
    got = ndt_fast.symmetric_eigenvalues(with_bad)
    assert np.isnan(got[1]).all()
    clean = ndt_fast.symmetric_eigenvalues(mats)
    for k in (0, 2, 3, 4):  # lanes are independent: the other matrices' results do not move
        np.testing.assert_array_equal(got[k], clean[k], err_msg=f"matrix {k} {kernel} seed={seed}")
        assert_matches_single(got[k], mats[k], f"matrix {k} {kernel} seed={seed}")


@pytest.mark.parametrize("scale", [1e150, 1e-150, 1e300, 1e-300])
def test_extreme_scales(scale, kernel, rng, seed):
    mats = []
    for n in (2, 7, 40, 64):
        c = random_symmetric(rng, n)
        mats.append(c / np.max(np.abs(c)) * scale)
    for g, a in zip(ndt_fast.symmetric_eigenvalues(mats), mats):
        assert np.isfinite(g).all(), f"n={a.shape[0]} scale={scale:g} {kernel}"
        assert_matches_single(g, a, f"n={a.shape[0]} scale={scale:g} {kernel} seed={seed}")


def test_results_do_not_depend_on_the_batch(kernel, rng, seed):
    # Lanes are independent and zero padding adds exact zeros: a matrix gets the same bits alone,
    # padded into a group of larger ones, or in another lane.
    mats = [graded(rng, n) for n in (37, 64, 10, 63, 64, 2, 50)]
    together = ndt_fast.symmetric_eigenvalues(mats)
    reversed_ = ndt_fast.symmetric_eigenvalues(mats[::-1])[::-1]
    for k, a in enumerate(mats):
        alone = ndt_fast.symmetric_eigenvalues(a)
        np.testing.assert_array_equal(together[k], alone, err_msg=f"n={a.shape[0]} {kernel} seed={seed}")
        np.testing.assert_array_equal(reversed_[k], alone, err_msg=f"n={a.shape[0]} {kernel} seed={seed}")


def test_kernels_agree(rng, seed):
    if not core.lane_kernel_available("avx2"):
        pytest.skip("no AVX2 + FMA here")
    mats = [graded(rng, n) for n in (10, 64, 64, 100)]
    try:
        core.set_lane_kernel("portable")
        portable = ndt_fast.symmetric_eigenvalues(mats)
        core.set_lane_kernel("avx2")
        avx2 = ndt_fast.symmetric_eigenvalues(mats)
    finally:
        core.set_lane_kernel("auto")
    for p, v in zip(portable, avx2):
        assert np.max(np.abs(p - v)) <= RTOL * np.max(np.abs(p)), f"seed={seed}"


_sizes = st.integers(min_value=1, max_value=40)
_kinds = st.sampled_from(["random", "rank_deficient", "clustered", "zero", "graded", "diagonal", "nan"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=st.lists(st.tuples(_sizes, _kinds, st.integers(-120, 120)), min_size=1, max_size=11),
       seed=st.integers(0, 2**32 - 1), kernel_name=st.sampled_from(KERNELS))
def test_hypothesis_mixed_sizes_and_values(spec, seed, kernel_name):
    if not core.lane_kernel_available(kernel_name):
        kernel_name = "portable"
    rng = np.random.default_rng(seed)
    mats = []
    for n, kind, exponent in spec:
        if kind == "nan":
            a = random_symmetric(rng, n)
            a[rng.integers(n), rng.integers(n)] = np.nan
        else:
            a = CASES[kind](rng, n) * 10.0**exponent
        mats.append(a)
    try:
        core.set_lane_kernel(kernel_name)
        got = ndt_fast.symmetric_eigenvalues(mats)
    finally:
        core.set_lane_kernel("auto")
    for i, (g, a) in enumerate(zip(got, mats)):
        if not np.isfinite(a).all():
            assert np.isnan(g).all()
        else:
            assert_matches_single(g, a, f"matrix {i} of {spec} {kernel_name}")


@pytest.mark.parametrize("kind", MATRIX_KINDS)
def test_metrics_through_the_batched_path(kind, kernel, rng, seed):
    # compute_metrics_batch's Grams go through the batched solver (metrics_of_matrices); the
    # adversarial matrices of tests/matrices.py against the float64 SVD reference.
    xs = [make_matrix(kind, rng), make_matrix(kind, rng)[:, : max(1, make_matrix(kind, rng).shape[1] // 2)]]
    for x, got in zip(xs, ndt_fast.compute_metrics_batch(xs)):
        assert_metrics_match(got, reference_metrics(x), f"{kind} {x.shape} {kernel} seed={seed}")


def test_input_forms_and_conversions(rng):
    a = np.stack([random_symmetric(rng, 6) for _ in range(3)])
    stacked = ndt_fast.symmetric_eigenvalues(a)
    np.testing.assert_array_equal(ndt_fast.symmetric_eigenvalues(a[1]), stacked[1])
    np.testing.assert_array_equal(ndt_fast.symmetric_eigenvalues(list(a))[2], stacked[2])
    np.testing.assert_array_equal(ndt_fast.symmetric_eigenvalues(np.asfortranarray(a[0])), stacked[0])
    # float32 is converted exactly, integers too; the lower triangle is what counts
    a32 = a[0].astype(np.float32)
    np.testing.assert_array_equal(ndt_fast.symmetric_eigenvalues(a32),
                                  ndt_fast.symmetric_eigenvalues(a32.astype(np.float64)))
    np.testing.assert_allclose(ndt_fast.symmetric_eigenvalues(np.array([[2, 1], [1, 2]])), [3.0, 1.0], atol=1e-15)
    lower = np.tril(a[0]) + np.triu(rng.standard_normal((6, 6)), 1)
    np.testing.assert_array_equal(ndt_fast.symmetric_eigenvalues(lower), stacked[0])
    assert ndt_fast.symmetric_eigenvalues(np.empty((0, 4, 4))).shape == (0, 4)
    assert ndt_fast.symmetric_eigenvalues([]) == []
    before = a.copy()
    ndt_fast.symmetric_eigenvalues(a)
    np.testing.assert_array_equal(a, before)


@pytest.mark.parametrize(
    ("bad", "error", "match"),
    [
        (np.ones((3, 4)), ValueError, "square"),
        (np.ones((2, 3, 4)), ValueError, "square"),
        (np.ones((0, 0)), ValueError, "non-empty"),
        (np.ones(3), ValueError, "2-D|shape"),
        (np.ones((2, 2, 2, 2)), ValueError, "shape"),
        (np.eye(3, dtype=np.complex128), TypeError, "real numeric"),
        (np.array([["a", "b"], ["c", "d"]]), TypeError, "real numeric"),
        ([np.eye(2), np.ones((2, 3))], ValueError, "matrix 1"),
        ([np.eye(2), np.ones((2, 2, 2))], ValueError, "matrix 1"),
    ],
)
def test_bad_input_errors(bad, error, match):
    with pytest.raises(error, match=match):
        ndt_fast.symmetric_eigenvalues(bad)


def test_bad_solver_and_kernel_names():
    with pytest.raises(ValueError, match="solver"):
        ndt_fast.symmetric_eigenvalues(np.eye(3), solver="jacobi")
    with pytest.raises(ValueError, match="lane kernel"):
        core.set_lane_kernel("sse9")


def test_solver_choice_and_lapack_above_the_limit(rng):
    # "auto": lanes up to BATCHED_SOLVER_MAX_DIM when two or more such matrices share the call,
    # LAPACK above (a lone matrix above OWN_SOLVER_MAX_DIM also goes to LAPACK).
    limit = core.BATCHED_SOLVER_MAX_DIM
    mats = [random_symmetric(rng, n) for n in (limit, limit, limit + 1)]
    auto = ndt_fast.symmetric_eigenvalues(mats)
    own = ndt_fast.symmetric_eigenvalues(mats, solver="own")
    lapack = ndt_fast.symmetric_eigenvalues(mats, solver="lapack")
    np.testing.assert_array_equal(auto[0], own[0])  # the lanes' bits do not depend on the batch
    np.testing.assert_array_equal(auto[1], own[1])
    for o, la in zip(own, lapack):
        assert np.max(np.abs(o - la)) <= 1e-10 * np.max(np.abs(la))
    # (auto[2] is LAPACK's when SciPy registered it; dsyevd's last bits depend on the alignment of
    # its copy, so that is not checked bit for bit.)
    assert np.max(np.abs(auto[2] - lapack[2])) <= 1e-10 * np.max(np.abs(lapack[2]))
    lone = random_symmetric(rng, core.OWN_SOLVER_MAX_DIM + 1)
    got = ndt_fast.symmetric_eigenvalues(lone)
    assert np.max(np.abs(got - lapack_like(lone))) <= 1e-10 * np.max(np.abs(got))


def lapack_like(a: np.ndarray) -> np.ndarray:
    return np.sort(np.linalg.eigvalsh(a))[::-1]


def test_environment_selects_the_portable_kernel():
    code = "from ndt_fast._native import core; print(core.lane_kernel())"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "NDT_LANE_KERNEL": "portable"},
                         capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "portable"
