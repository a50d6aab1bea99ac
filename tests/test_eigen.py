"""Symmetric eigenvalues (csrc/cpu/eigen_cpu.cpp) and metrics_from_spectrum, via the native core.

Every solver ("own" = Householder tridiagonalisation + implicit QL, "lapack" = dsyevd, "auto")
is checked against ``np.linalg.eigvalsh`` to 1e-10·max|λ| absolute — a backward-stable solver's
accuracy on any symmetric matrix, whatever its conditioning.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from checks import assert_metrics_match
from ndt_fast._native import core
from reference import METRIC_NAMES, reference_from_sigma

SOLVERS = ["own", "lapack", "auto"]
ALL_METRICS_MASK = sum(core.METRIC_BITS.values())
SIZES = [1, 2, 3, 4, 5, 7, 8, 16, 31, 32, 33, 64, 95, 96, 97, 128, 200, 300]


def assert_eigenvalues_close(got: np.ndarray, a: np.ndarray, context: str, rtol: float = 1e-10) -> None:
    want = np.sort(np.linalg.eigvalsh(a))[::-1]
    assert got.shape == want.shape, context
    assert got.dtype == np.float64
    assert np.all(np.diff(got) <= 0), f"{context}: not descending: {got[:8]}"
    scale = np.max(np.abs(want))
    err = np.max(np.abs(got - want)) if got.size else 0.0
    assert err <= rtol * scale, f"{context}: max |Δλ| = {err:.3g} > {rtol:g}·{scale:.3g}"


def random_symmetric(rng, n):
    b = rng.standard_normal((n, n))
    return (b + b.T) / 2


def psd_gram(rng, n):
    x = rng.standard_normal((max(1, n // 2), n)).astype(np.float32).astype(np.float64)  # rank n/2
    return x.T @ x


def with_spectrum(rng, lam):
    n = len(lam)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    a = (q * lam) @ q.T
    return (a + a.T) / 2


def tridiagonal(rng, n):
    off = rng.standard_normal(n - 1)
    return np.diag(rng.standard_normal(n)) + np.diag(off, 1) + np.diag(off, -1)


CASES = {
    "random_symmetric": random_symmetric,
    "psd_gram": psd_gram,
    "zero": lambda rng, n: np.zeros((n, n)),
    "identity": lambda rng, n: np.eye(n),
    "repeated": lambda rng, n: with_spectrum(rng, np.repeat([3.0, -1.0, 0.5], (n + 2) // 3)[:n]),
    "diagonal": lambda rng, n: np.diag(rng.standard_normal(n) * 10),
    "tridiagonal": tridiagonal,
    "graded": lambda rng, n: with_spectrum(rng, np.logspace(0, -14, n)),
    "rank_one": lambda rng, n: np.outer(v := rng.standard_normal(n), v),
    "negative_definite": lambda rng, n: -psd_gram(rng, n) - np.eye(n),
}


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("case", list(CASES))
def test_symmetric_eigenvalues_match_eigvalsh(case, solver, rng, seed):
    for n in SIZES:
        a = CASES[case](rng, n)
        got = core.symmetric_eigenvalues(a.copy(), solver)
        assert_eigenvalues_close(got, a, f"{case} n={n} solver={solver} seed={seed}")
        if case == "zero":
            np.testing.assert_array_equal(got, np.zeros(n))


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("scale", [1e150, 1e-150, 1e300, 1e-300])
@pytest.mark.parametrize("case", ["random_symmetric", "psd_gram", "graded", "diagonal"])
def test_extreme_scales(case, scale, solver, rng, seed):
    for n in [1, 2, 7, 40, 130]:
        c = CASES[case](rng, n)
        a = c / np.max(np.abs(c)) * scale  # largest entry exactly ±scale, so 1e300 stays finite
        got = core.symmetric_eigenvalues(a, solver)
        assert np.all(np.isfinite(got)), f"{case} n={n} scale={scale:g} {solver} seed={seed}: {got[:5]}"
        assert_eigenvalues_close(got, a, f"{case} n={n} scale={scale:g} solver={solver} seed={seed}")


@pytest.mark.parametrize("solver", SOLVERS)
def test_small_closed_forms(solver):
    np.testing.assert_array_equal(core.symmetric_eigenvalues(np.array([[-2.5]]), solver), [-2.5])
    got = core.symmetric_eigenvalues(np.array([[2.0, 1.0], [1.0, 2.0]]), solver)
    np.testing.assert_allclose(got, [3.0, 1.0], rtol=0, atol=1e-15)
    got = core.symmetric_eigenvalues(np.array([[0.0, 1e-200], [1e-200, 0.0]]), solver)
    np.testing.assert_allclose(got, [1e-200, -1e-200], rtol=1e-12, atol=0)


@pytest.mark.parametrize("solver", SOLVERS)
def test_input_is_not_modified_and_forcecast_works(solver, rng):
    a = random_symmetric(rng, 20)
    before = a.copy()
    core.symmetric_eigenvalues(a, solver)
    np.testing.assert_array_equal(a, before)
    # float32 and Fortran-order inputs are converted by the binding
    got32 = core.symmetric_eigenvalues(a.astype(np.float32), solver)
    assert_eigenvalues_close(got32, a.astype(np.float32).astype(np.float64), f"float32 input {solver}")
    gotf = core.symmetric_eigenvalues(np.asfortranarray(a), solver)
    assert_eigenvalues_close(gotf, a, f"fortran input {solver}")


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("n", [1, 2, 5, 96, 97, 250])
def test_non_finite_input_gives_all_nan(n, value, solver, rng):
    # returns at all (no endless QL sweep) and marks every eigenvalue NaN
    for where in ["diagonal", "off_diagonal", "everywhere"]:
        a = random_symmetric(rng, n)
        if where == "diagonal":
            a[n // 2, n // 2] = value
        elif where == "off_diagonal" and n > 1:
            a[0, n - 1] = a[n - 1, 0] = value
        else:
            a[:] = value
        got = core.symmetric_eigenvalues(a, solver)
        assert got.shape == (n,) and np.all(np.isnan(got)), f"n={n} {value} at {where} {solver}: {got[:5]}"


def test_bad_arguments_are_value_errors(rng):
    with pytest.raises(ValueError, match="square"):
        core.symmetric_eigenvalues(np.ones((3, 4)), "own")
    with pytest.raises(ValueError, match="square"):
        core.symmetric_eigenvalues(np.ones(3), "own")
    with pytest.raises(ValueError, match="square"):
        core.symmetric_eigenvalues(np.ones((0, 0)), "own")
    with pytest.raises(ValueError, match="solver"):
        core.symmetric_eigenvalues(np.eye(3), "jacobi")


def test_auto_picks_own_solver_up_to_its_limit_and_lapack_above(rng):
    limit = core.OWN_SOLVER_MAX_DIM
    assert isinstance(limit, int) and limit >= 1
    for n, expected in [(limit, "own"), (limit + 1, "lapack")]:
        a = random_symmetric(rng, n)
        np.testing.assert_array_equal(core.symmetric_eigenvalues(a, "auto"), core.symmetric_eigenvalues(a, expected),
                                      err_msg=f"n={n}: auto should run {expected}")


# ---------------------------------------------------------------------------------------------
# metrics_from_spectrum


def spectrum_metrics(lam, *, eps=1e-10, threshold=0.9, metrics=ALL_METRICS_MASK):
    row = core.metrics_from_spectrum(np.asarray(lam, dtype=np.float64), eps=eps, energy_threshold=threshold,
                                     metrics=metrics)
    assert row.shape == (1, len(core.RECORD_COLUMNS))
    return dict(zip(core.RECORD_COLUMNS, row[0]))


SPECTRA = {
    "flat": lambda rng: np.ones(40),
    "random": lambda rng: np.sort(rng.exponential(size=64))[::-1],
    "power_law": lambda rng: np.arange(1, 201, dtype=float) ** -1.5,
    "one_spike": lambda rng: np.r_[100.0, np.full(30, 1e-3)],
    "rank_deficient": lambda rng: np.r_[np.sort(rng.uniform(1, 5, 6))[::-1], np.zeros(20)],
    "single": lambda rng: np.array([7.5]),
    "tiny_scale": lambda rng: np.sort(rng.exponential(size=30))[::-1] * 1e-150,
    "huge_scale": lambda rng: np.sort(rng.exponential(size=30))[::-1] * 1e150,
    # λ² under/overflows here, but every metric is scale-invariant and the spectrum is finite
    "tiny_scale_1e-200": lambda rng: np.sort(rng.exponential(size=30))[::-1] * 1e-200,
    "huge_scale_1e200": lambda rng: np.sort(rng.exponential(size=30))[::-1] * 1e200,
}


# eps is not scale-free: at 1e±150 only eps = 0 leaves the metrics meaningful
SPECTRUM_CASES = [(s, eps) for s in SPECTRA for eps in ([0.0] if "scale" in s else [0.0, 1e-10, 0.5])]


@pytest.mark.parametrize(("spectrum", "eps"), SPECTRUM_CASES, ids=[f"{s}-eps{e:g}" for s, e in SPECTRUM_CASES])
def test_metrics_from_spectrum_match_reference(spectrum, eps, rng, seed):
    lam = SPECTRA[spectrum](rng)
    for threshold in (0.5, 0.9, 0.99, 1.0):
        got = spectrum_metrics(lam, eps=eps, threshold=threshold)
        ref = reference_from_sigma(np.sqrt(lam), eps=eps, threshold=threshold)
        assert_metrics_match(got, ref, f"{spectrum} eps={eps} threshold={threshold} seed={seed}")
        assert got["trace"] == pytest.approx(np.sum(lam), rel=1e-12)
        assert got["lambda_max"] == np.max(lam)
        assert int(got["flags"]) == 0


def test_metrics_from_spectrum_clamps_negative_round_off():
    lam = np.array([4.0, 1.0, -1e-17, -3e-16])
    got = spectrum_metrics(lam)
    ref = reference_from_sigma(np.sqrt(np.maximum(lam, 0)))
    assert_metrics_match(got, ref, "negative round-off")
    assert all(math.isfinite(got[name]) for name in METRIC_NAMES)


def test_metrics_from_spectrum_special_cases():
    zero = spectrum_metrics([0.0, 0.0, 0.0])
    assert all(zero[name] == 0.0 for name in METRIC_NAMES) and int(zero["flags"]) & core.FLAG_ZERO
    for bad in ([np.nan, 1.0], [np.inf, 1.0], [1.0, -np.inf]):
        rec = spectrum_metrics(bad)
        assert all(math.isnan(rec[name]) for name in METRIC_NAMES), (bad, rec)
        assert int(rec["flags"]) & core.FLAG_NON_FINITE
    only = spectrum_metrics([3.0, 1.0], metrics=core.METRIC_BITS["effective_rank"])
    assert not math.isnan(only["effective_rank"])
    assert all(math.isnan(only[name]) for name in METRIC_NAMES if name != "effective_rank")
    with pytest.raises(ValueError):
        spectrum_metrics(np.zeros(0))
    with pytest.raises(ValueError):
        core.metrics_from_spectrum(np.ones((2, 2)), eps=1e-10, energy_threshold=0.9, metrics=ALL_METRICS_MASK)
    with pytest.raises(ValueError, match="threshold"):
        spectrum_metrics([1.0], threshold=0.0)
