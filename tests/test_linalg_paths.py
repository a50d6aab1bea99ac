"""Both linear-algebra configurations: SciPy's BLAS/LAPACK registered (the default in this
process) and the core's own kernels only (``NDT_DISABLE_SCIPY_LINALG=1``, in a child process,
because registration happens once at import)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import ndt_fast as nf
from checks import assert_metrics_match
from matrices import make_matrix
from ndt_fast._buffer import describe
from ndt_fast._native import core
from reference import reference_metrics

TESTS_DIR = Path(__file__).resolve().parent

CHILD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import ndt_fast as nf
    from ndt_fast._buffer import describe
    from ndt_fast._native import core
    from checks import metric_mismatches
    from matrices import MATRIX_KINDS, make_matrix
    from reference import reference_metrics

    seed = int(sys.argv[1])
    rng = np.random.default_rng(seed)
    problems = []
    for kind in MATRIX_KINDS:
        for x in (make_matrix(kind, rng), make_matrix(kind, rng, np.float16).T[::-1]):
            for center in (False, True):
                ref = reference_metrics(x, center=center)
                rec = nf.compute_metrics(x, center=center)
                for bad in metric_mismatches(rec, ref):
                    problems.append(f"{kind} center={center}: {bad}")
                for solver in ("own", "auto"):
                    lam = nf.gram_eigenvalues(x, center=center, solver=solver)
                    want = ref.sigma ** 2
                    if not np.allclose(lam, want, rtol=1e-5, atol=1e-12 * max(want[0], 1e-300)):
                        problems.append(f"{kind} center={center} solver={solver}: eigenvalues differ")
    # Without BLAS the Gram's production path is the own kernel: bit-identical to the reference
    # kernel. With BLAS both agree to round-off.
    own_only = not any(core.linalg_status().values())
    x = make_matrix("tall", rng)
    x64 = x.astype(np.float64)
    _, view = describe(x)
    for side in ("feature", "sample"):
        exact = x64.T @ x64 if side == "feature" else x64 @ x64.T
        for acc in ("float64", "float32"):
            a = core.gram(view, side=side, accumulate=acc, reference=False)
            b = core.gram(view, side=side, accumulate=acc, reference=True)
            if own_only and not np.array_equal(a, b):
                problems.append(f"gram {side} {acc}: production path differs from the own kernel")
            tol = (1e-4 if acc == "float32" else 1e-12) * np.abs(exact).max()
            if not (np.abs(a - exact).max() <= tol and np.abs(b - exact).max() <= tol):
                problems.append(f"gram {side} {acc}: differs from numpy beyond {tol:.3g}")
    try:
        nf.gram_eigenvalues(make_matrix("gaussian", rng), solver="lapack")
        lapack_error = None
    except ValueError as e:
        lapack_error = str(e)
    print(json.dumps({"status": core.linalg_status(), "problems": problems, "lapack_error": lapack_error}))
    """
)


def run_child(seed: int, disable: str) -> dict:
    env = dict(os.environ)
    env["NDT_DISABLE_SCIPY_LINALG"] = disable
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(seed)], env=env, capture_output=True, text=True, timeout=300,
        cwd=TESTS_DIR,
    )
    assert proc.returncode == 0, f"child failed (seed={seed}):\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_own_kernels_only_when_scipy_linalg_disabled(seed):
    result = run_child(seed, "1")
    status = result["status"]
    assert {"dsyrk", "ssyrk", "dsyevd"} <= set(status) and not any(status.values()), status
    assert not result["problems"], f"seed={seed}: " + "; ".join(result["problems"])
    # asking for LAPACK explicitly without it registered is a clear error, not a silent fallback
    assert result["lapack_error"] is not None and "LAPACK" in result["lapack_error"].upper(), result


def test_disable_variable_zero_keeps_scipy_linalg(seed):
    result = run_child(seed, "0")
    assert all(result["status"][name] for name in ("dsyrk", "ssyrk", "dsyevd")), result["status"]
    assert not result["problems"], f"seed={seed}: " + "; ".join(result["problems"])
    assert result["lapack_error"] is None


def test_this_process_uses_scipy_linalg():
    if os.environ.get("NDT_DISABLE_SCIPY_LINALG", "") not in ("", "0"):
        pytest.skip("the suite itself was started with NDT_DISABLE_SCIPY_LINALG set")
    status = core.linalg_status()
    assert all(status[name] for name in ("dsyrk", "ssyrk", "dsyevd")), status


@pytest.mark.parametrize("solver", ["own", "lapack", "auto"])
def test_solvers_agree_in_this_process(solver, rng, seed):
    for kind in ("gaussian", "gaussian_large", "ill_conditioned", "wide"):
        x = make_matrix(kind, rng)
        owner, view = describe(x)
        rec = core.metrics([view], eps=1e-10, energy_threshold=0.9, center=False,
                           metrics=sum(core.METRIC_BITS.values()), solver=solver)
        ref = reference_metrics(x)
        assert_metrics_match(dict(zip(core.RECORD_COLUMNS, rec[0])), ref, f"{kind} solver={solver} seed={seed}")
        np.testing.assert_allclose(nf.gram_eigenvalues(x, solver=solver), ref.sigma**2,
                                   rtol=1e-5, atol=1e-12 * ref.sigma[0] ** 2, err_msg=f"{kind} seed={seed}")


def _scipy_blas_threads() -> int:
    from threadpoolctl import threadpool_info

    counts = [i["num_threads"] for i in threadpool_info() if "scipy.libs" in i["filepath"]]
    if not counts or not core.linalg_status()["set_threads_local"]:
        pytest.skip("SciPy's OpenBLAS (with openblas_set_num_threads_local) is not the registered BLAS here")
    return counts[0]


def test_thread_budget_restores_the_blas_thread_count_even_when_calls_overlap(rng):
    """The OpenBLAS count is process-wide: a budget of 1 lowers it during the call and every
    overlapping call from other threads leaves the user's setting as it found it."""
    import threading

    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=2, user_api="blas"):
        before = _scipy_blas_threads()
        assert before == 2
        x = rng.standard_normal((300, 400))  # a 300 × 300 Gram and eigensolve: above the 2e7-flop threshold
        owner, view = describe(x, "x")
        mask = sum(core.METRIC_BITS.values())

        def call(threads: int) -> None:
            for _ in range(5):
                core.metrics([view], eps=1e-10, energy_threshold=0.9, center=False, metrics=mask, solver="auto",
                             threads=threads)

        workers = [threading.Thread(target=call, args=(t,)) for t in (1, 1, 0, 1)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert _scipy_blas_threads() == before
        one = core.metrics([view], eps=1e-10, energy_threshold=0.9, center=False, metrics=mask, solver="auto",
                           threads=1)
        auto = core.metrics([view], eps=1e-10, energy_threshold=0.9, center=False, metrics=mask, solver="auto")
        assert np.allclose(one, auto, rtol=1e-10, atol=0, equal_nan=True)
        assert _scipy_blas_threads() == before
