"""Test matrices: random and adversarial activation matrices, by kind.

Every generator takes a numpy ``Generator`` so a failing case is reproduced from its seed alone.
Matrices come back as C-contiguous numpy arrays of the requested dtype (float32 by default); the
tests derive torch tensors, other dtypes and strided views from them.
"""

from __future__ import annotations

import numpy as np

#: name → (rows, cols)
MATRIX_SHAPES: dict[str, tuple[int, int]] = {
    "gaussian": (120, 80),
    "relu_gaussian": (128, 64),
    "low_rank": (100, 60),
    "rank_one": (50, 70),
    "zero": (20, 30),
    "ill_conditioned": (80, 50),
    "wide": (64, 256),
    "tall": (300, 50),
    # min(n, d) above the own solver's size limit, so "auto" takes the LAPACK path.
    "gaussian_large": (400, 200),
    "tiny_row": (1, 7),
    "tiny_col": (7, 1),
}

MATRIX_KINDS: tuple[str, ...] = tuple(MATRIX_SHAPES)
NONZERO_MATRIX_KINDS: tuple[str, ...] = tuple(k for k in MATRIX_KINDS if k != "zero")

LOW_RANK = 5
CONDITION_NUMBER = 1e6


def _orthonormal(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((n, k)))
    return q * np.sign(np.diag(r))


def make_matrix(kind: str, rng: np.random.Generator, dtype=np.float32) -> np.ndarray:
    """A matrix of the named kind (see MATRIX_SHAPES), values built in float64, then cast."""
    n, d = MATRIX_SHAPES[kind]
    if kind in ("gaussian", "wide", "tall", "gaussian_large", "tiny_row", "tiny_col"):
        x = rng.standard_normal((n, d))
    elif kind == "relu_gaussian":
        x = np.maximum(rng.standard_normal((n, d)), 0.0)
    elif kind == "low_rank":
        x = rng.standard_normal((n, LOW_RANK)) @ rng.standard_normal((LOW_RANK, d))
    elif kind == "rank_one":
        x = np.outer(rng.standard_normal(n), rng.standard_normal(d))
    elif kind == "zero":
        x = np.zeros((n, d))
    elif kind == "ill_conditioned":
        k = min(n, d)
        u = _orthonormal(rng, n, k)
        v = _orthonormal(rng, d, k)
        s = np.logspace(0.0, -np.log10(CONDITION_NUMBER), k)
        x = (u * s) @ v.T
    else:  # pragma: no cover - a typo in a test
        raise KeyError(kind)
    return np.ascontiguousarray(x, dtype=dtype)
