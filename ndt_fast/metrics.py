"""Dimensionality metrics of activation matrices: ndt's functional API, computed natively.

Every function takes one 2-D matrix ``x`` of shape ``(n, d)`` (rows = samples or tokens, columns =
features) as a torch tensor (any device; non-CPU tensors are copied to the host) or a numpy
array / array-like, in float32, float64, float16 or bfloat16, with any strides. The metrics are
computed from the eigenvalues λ of the smaller of the two Grams XᵀX (d × d) and XXᵀ (n × n),
accumulated in float64 — no SVD. λᵢ = σᵢ², σ the singular values of X.

ndt-compatible definitions (same numbers as ``ndt.compute_all_metrics``, ``eps`` included):

==========================  ====================================================
stable_rank                 ‖X‖F² / (σmax² + eps)
participation_ratio         1 / (Σ (σᵢ / (Σσ + eps))² + eps)   (ndt's singular-value form)
cumulative_energy_90        smallest k with Σ_{i≤k} λᵢ ≥ threshold · Σλ (λ descending)
nuclear_norm_ratio          Σσ / (σmax + eps)
==========================  ====================================================

Standard extras: ``participation_ratio_eig`` = (Σλ)² / Σλ² = tr(G)² / ‖G‖F² (computed without an
eigensolver) and ``effective_rank`` = exp(−Σ pᵢ log pᵢ) with pᵢ = σᵢ / Σσ (Roy & Vetterli 2007;
the singular-value form, as in RankMe).

Defined answers for bad input:

* not 2-D, or empty → ValueError; dtype other than the four floats → TypeError. The five ndt
  names word it as ndt does ("Expected 2D matrix, got 3D", "Expected a non-empty matrix, …").
* NaN or Inf anywhere (or float64 values whose squares overflow): the five ndt names
  (``stable_rank``, ``participation_ratio``, ``cumulative_energy_90``, ``nuclear_norm_ratio``,
  ``compute_all_metrics``) raise ValueError("Matrix contains NaN or Inf values …"), as ndt's
  ``stable_rank`` does (ndt's others raise "SVD computation failed" for NaN and return NaN for
  Inf). ``compute_metrics``/``compute_metrics_batch``, ``participation_ratio_eig``,
  ``effective_rank`` and the tracker never raise for it: every metric is NaN and ``flags &
  FLAG_NON_FINITE`` is set — inside a training run a bad batch is a flagged row, not a crash.
* an all-zero matrix → every metric is 0 (it spans no direction). ndt returns a participation
  ratio of 1e10 there. ``compute_metrics`` sets ``flags & FLAG_ZERO``.
* ``center=True`` subtracts the column means first (ndt never centres; the default is False).
  The rows are shifted by their means *before* the Gram is formed, so a collapsed layer (all rows
  equal) gives exactly the zero result, not round-off; a centred matrix whose Frobenius norm is
  below 1e-12 of the uncentred one is treated as zero (``FLAG_ZERO``).
* float64 values beyond ~1e154 (their squares overflow) count as non-finite; below ~1e-154 their
  squares underflow to zero. Within that range the metrics are scale-invariant (with ``eps=0``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ndt_fast._buffer import describe
from ndt_fast._native import core

ALL_METRICS: tuple[str, ...] = tuple(core.METRIC_BITS)
RECORD_COLUMNS: tuple[str, ...] = tuple(core.RECORD_COLUMNS)
FLAG_NON_FINITE: int = core.FLAG_NON_FINITE
FLAG_ZERO: int = core.FLAG_ZERO
FLAG_NOT_CONVERGED: int = core.FLAG_NOT_CONVERGED

_COLUMN = {name: i for i, name in enumerate(RECORD_COLUMNS)}


def metric_mask(metrics: Iterable[str] | None) -> int:
    """Bit mask of the named metrics (all six when None). Unknown names → ValueError."""
    if metrics is None:
        return sum(core.METRIC_BITS.values())
    if isinstance(metrics, str):
        metrics = (metrics,)
    mask = 0
    for name in metrics:
        if name not in core.METRIC_BITS:
            raise ValueError(f"unknown metric {name!r}; choose from {', '.join(ALL_METRICS)}")
        mask |= core.METRIC_BITS[name]
    if mask == 0:
        raise ValueError("at least one metric must be requested")
    return mask


def _records(
    xs: Sequence[Any],
    *,
    eps: float,
    energy_threshold: float,
    center: bool,
    metrics: Iterable[str] | None,
    what: str,
) -> np.ndarray:
    owners_and_views = [describe(x, what) for x in xs]
    views = [view for _, view in owners_and_views]
    return core.metrics(
        views,
        eps=float(eps),
        energy_threshold=float(energy_threshold),
        center=bool(center),
        metrics=metric_mask(metrics),
        solver="auto",
    )


def _check_ndt_matrix(x: Any, what: str) -> None:
    """ndt's boundary for its five names: not 2-D or empty → ValueError in ndt's words (the
    dtype and everything else is checked by ``describe``)."""
    ndim, shape = np.ndim(x), np.shape(x)
    if ndim != 2:
        raise ValueError(f"Expected 2D matrix, got {ndim}D: {what} takes one 2-D (rows, features) matrix, "
                         f"got shape {tuple(shape)}")
    if 0 in shape:
        raise ValueError(f"Expected a non-empty matrix, got shape {tuple(shape)}")


def _ndt_record(x: Any, columns: tuple[str, ...], what: str, *, eps: float = 1e-10,
                energy_threshold: float = 0.9, center: bool = False) -> np.ndarray:
    """The record of ``x`` for one of ndt's names: NaN/Inf input → ValueError, as ndt's."""
    _check_ndt_matrix(x, what)
    record = _records([x], eps=eps, energy_threshold=energy_threshold, center=center, metrics=columns, what=what)[0]
    if int(record[_COLUMN["flags"]]) & FLAG_NON_FINITE:
        raise ValueError(f"Matrix contains NaN or Inf values ({what}; or float64 values whose squares "
                         "overflow). compute_metrics returns NaN with FLAG_NON_FINITE instead of raising.")
    return record


def _one(x: Any, column: str, what: str, *, center: bool = False) -> float:
    """One metric of ndt_fast's own (NaN for non-finite input, like ``compute_metrics``)."""
    record = _records([x], eps=1e-10, energy_threshold=0.9, center=center, metrics=(column,), what=what)[0]
    return float(record[_COLUMN[column]])


def _ndt_one(x: Any, column: str, what: str, *, eps: float = 1e-10, energy_threshold: float = 0.9,
             center: bool = False) -> float:
    """One metric of ndt's names, with ndt's boundary (``_ndt_record``)."""
    record = _ndt_record(x, (column,), what, eps=eps, energy_threshold=energy_threshold, center=center)
    return float(record[_COLUMN[column]])


def _as_count(value: float) -> int | float:
    return value if math.isnan(value) else int(value)


def stable_rank(x: Any, eps: float = 1e-10, *, center: bool = False) -> float:
    """‖X‖F² / (σmax² + eps) of the 2-D matrix ``x`` (n, d); 0 for a zero matrix."""
    return _ndt_one(x, "stable_rank", "stable_rank", eps=eps, center=center)


def participation_ratio(x: Any, eps: float = 1e-10, *, center: bool = False) -> float:
    """ndt's participation ratio 1 / (Σ (σᵢ / (Σσ + eps))² + eps) ≈ (Σσ)² / Σσ² of ``x`` (n, d)."""
    return _ndt_one(x, "participation_ratio", "participation_ratio", eps=eps, center=center)


def cumulative_energy_90(x: Any, threshold: float = 0.90, *, center: bool = False) -> int | float:
    """Smallest k whose top-k squared singular values hold ``threshold`` of Σσ² (int).

    ``threshold`` outside (0, 1] → ValueError with ndt's wording.
    """
    try:
        in_range = bool(0 < threshold <= 1)
    except TypeError:
        in_range = False
    if not in_range:
        raise ValueError(f"Threshold must be in (0, 1], got {threshold} (cumulative_energy_90's threshold)")
    return _as_count(_ndt_one(x, "cumulative_90", "cumulative_energy_90", energy_threshold=threshold, center=center))


def nuclear_norm_ratio(x: Any, eps: float = 1e-10, *, center: bool = False) -> float:
    """Σσ / (σmax + eps) of ``x`` (n, d)."""
    return _ndt_one(x, "nuclear_norm_ratio", "nuclear_norm_ratio", eps=eps, center=center)


def participation_ratio_eig(x: Any, *, center: bool = False) -> float:
    """Standard eigenvalue participation ratio (Σλ)² / Σλ² = tr(G)² / ‖G‖F²; no eigensolver is run."""
    return _one(x, "participation_ratio_eig", "participation_ratio_eig", center=center)


def effective_rank(x: Any, *, center: bool = False) -> float:
    """exp(entropy of σᵢ / Σσ) (Roy & Vetterli 2007, singular-value form) of ``x`` (n, d)."""
    return _one(x, "effective_rank", "effective_rank", center=center)


def compute_all_metrics(x: Any, eps: float = 1e-10, *, center: bool = False) -> tuple[float, float, int | float, float]:
    """``(stable_rank, participation_ratio, cumulative_90, nuclear_norm_ratio)`` of ``x`` (n, d).

    Same tuple and meaning as ``ndt.compute_all_metrics``; one Gram, one eigensolve.
    """
    record = _ndt_record(x, ("stable_rank", "participation_ratio", "cumulative_90", "nuclear_norm_ratio"),
                         "compute_all_metrics", eps=eps, center=center)
    return (float(record[0]), float(record[1]), _as_count(float(record[2])), float(record[3]))


def compute_metrics_batch(
    xs: Sequence[Any],
    *,
    metrics: Iterable[str] | None = None,
    eps: float = 1e-10,
    energy_threshold: float = 0.9,
    center: bool = False,
) -> list[dict[str, float]]:
    """Metrics of many matrices in one native call (GIL released), e.g. all layers of a model.

    Returns one dict per matrix with the keys of ``RECORD_COLUMNS``: the six metrics (NaN where
    not requested), ``trace`` (Σλ), ``lambda_max`` and ``flags`` (FLAG_* bits). Asking only for
    ``stable_rank`` and/or ``participation_ratio_eig`` skips the eigensolver (trace, Frobenius
    norm and Lanczos).
    """
    records = _records(list(xs), eps=eps, energy_threshold=energy_threshold, center=center,
                       metrics=metrics, what="compute_metrics")
    out = []
    for row in records:
        d = dict(zip(RECORD_COLUMNS, (float(v) for v in row)))
        d["flags"] = int(d["flags"])
        out.append(d)
    return out


def compute_metrics(
    x: Any,
    *,
    metrics: Iterable[str] | None = None,
    eps: float = 1e-10,
    energy_threshold: float = 0.9,
    center: bool = False,
) -> dict[str, float]:
    """All (or the named) metrics of one matrix as a dict; see ``compute_metrics_batch``."""
    return compute_metrics_batch([x], metrics=metrics, eps=eps, energy_threshold=energy_threshold, center=center)[0]


def gram_eigenvalues(x: Any, *, center: bool = False, solver: str = "auto") -> np.ndarray:
    """Eigenvalues of the smaller Gram of ``x`` (n, d), descending: float64 array of min(n, d).

    They are the squared singular values of ``x``. ``solver``: "auto" (own solver for small
    Grams, LAPACK dsyevd for large), "own" or "lapack". NaN-filled for non-finite input.
    """
    owner, view = describe(x, "gram_eigenvalues")
    result = core.gram_eigenvalues(view, center=bool(center), solver=solver)
    del owner
    return result


def symmetric_eigenvalues(a: Any, *, solver: str = "auto") -> np.ndarray | list[np.ndarray]:
    """Eigenvalues, descending, of many small real symmetric matrices in one native call.

    ``a`` is a ``(k, n, n)`` array (→ a ``(k, n)`` float64 array), one ``(n, n)`` array (→ ``(n,)``),
    or a list of square arrays of possibly different sizes (→ a list of 1-D float64 arrays, in
    order). Only the lower triangle of each matrix is read, as in ``numpy.linalg.eigvalsh``.
    Computed in float64 throughout: real integer and floating inputs (float32 included) are
    converted to float64 exactly (float32 → float64 loses nothing); complex, object or string
    dtypes → TypeError; a matrix that is not square, empty, or an array that is not 2-/3-D →
    ValueError. A matrix with NaN or Inf anywhere gets all-NaN eigenvalues; the others are
    unaffected. Matrices of similar size are solved side by side in SIMD lanes, which is several
    times faster than one by one (README, "Batched eigenvalues"); ``solver``: "auto" (own solver up
    to ``BATCHED_SOLVER_MAX_DIM``, LAPACK above), "own" or "lapack".
    """
    if isinstance(a, (list, tuple)):
        matrices = [_square_float64(m, f"symmetric_eigenvalues: matrix {i}") for i, m in enumerate(a)]
        for i, m in enumerate(matrices):
            if m.ndim != 2:
                raise ValueError(f"symmetric_eigenvalues: matrix {i} must be 2-D, got shape {m.shape}")
        values, _ = core.symmetric_eigenvalues_batched(matrices, solver)
        return np.split(values, np.cumsum([m.shape[0] for m in matrices])[:-1]) if matrices else []
    array = _square_float64(a, "symmetric_eigenvalues")
    n = array.shape[-1]
    if array.ndim == 3 and array.shape[0] == 0:
        return np.empty((0, n))
    values, _ = core.symmetric_eigenvalues_batched([array], solver)
    return values.reshape(array.shape[:-1])


def _square_float64(a: Any, what: str) -> np.ndarray:
    """``a`` as a C-contiguous float64 array of shape (n, n) or (k, n, n), n ≥ 1 (see above)."""
    array = np.asarray(a)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{what}: expected a real numeric array, got dtype {array.dtype}")
    if array.ndim not in (2, 3):
        raise ValueError(f"{what}: expected a square matrix (n, n) or a stack (k, n, n), got shape {array.shape}")
    if array.shape[-1] != array.shape[-2] or array.shape[-1] == 0:
        raise ValueError(f"{what}: matrices must be square and non-empty, got shape {array.shape}")
    return np.ascontiguousarray(array, dtype=np.float64)
