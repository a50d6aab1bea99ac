"""Shared fixtures: a fresh random seed per test (reported on failure) and the test matrices.

Every test that draws random data takes ``seed`` (or ``rng``, built from it). The seed is new on
every run; set ``NDT_TEST_SEED=<int>`` to replay one. When a test fails, its seed is attached to
the failure report as a "random seed" section, so the failing input can always be rebuilt.
"""

from __future__ import annotations

import os
import secrets
import sys

# The float64 reference runs many small LAPACK calls; on the 2-core CI machines a multithreaded
# OpenBLAS spends most of each call spinning against the other processes (10-100× slower than one
# thread). One BLAS thread keeps the suite fast; it changes no result the tests check. Only takes
# effect if numpy was not imported before this conftest (an explicit setting always wins).
if "numpy" not in sys.modules:
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import numpy as np
import pytest

from matrices import MATRIX_KINDS, NONZERO_MATRIX_KINDS, make_matrix

_SEED_KEY = pytest.StashKey[int]()


@pytest.fixture
def seed(request: pytest.FixtureRequest) -> int:
    """A fresh 32-bit seed (or NDT_TEST_SEED), remembered for the failure report."""
    env = os.environ.get("NDT_TEST_SEED")
    value = int(env) if env else secrets.randbits(32)
    request.node.stash[_SEED_KEY] = value
    return value


@pytest.fixture
def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    value = item.stash.get(_SEED_KEY, None)
    if value is not None and report.failed:
        report.sections.append(
            ("random seed", f"seed = {value}; replay with NDT_TEST_SEED={value} pytest {item.nodeid}")
        )
    return report


@pytest.fixture(params=MATRIX_KINDS)
def matrix_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(params=NONZERO_MATRIX_KINDS)
def nonzero_matrix_kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def make(rng: np.random.Generator):
    """``make(kind, dtype=np.float32)`` → a fresh matrix of that kind from this test's seed."""

    def _make(kind: str, dtype=np.float32) -> np.ndarray:
        return make_matrix(kind, rng, dtype)

    return _make


@pytest.fixture
def matrix(matrix_kind: str, make) -> np.ndarray:
    """One float32 matrix of every kind (the test is parametrized over MATRIX_KINDS)."""
    return make(matrix_kind)


@pytest.fixture
def torch_env(seed: int):
    """One torch thread (the 2-core CI machine is 10x slower with two contending threads; no
    result depends on it) and torch's global RNG seeded from the test's reported seed.
    Test modules that use torch apply it with ``pytestmark = pytest.mark.usefixtures("torch_env")``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    yield
    torch.set_num_threads(threads)
