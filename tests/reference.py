"""Float64 reference for every ndt_fast metric, written straight from the definitions.

Deliberately naive and independent of the library: one full SVD in float64 (numpy/LAPACK), then
each metric as its formula reads. Nothing here is shared with ``ndt_fast``; the tests compare the
native core against these numbers.

Definitions (σ = singular values of X, descending; λ = σ²):

* stable_rank             = ‖X‖F² / (σmax² + eps)
* participation_ratio     = 1 / (Σ (σᵢ / (Σσ + eps))² + eps)          (ndt's singular-value form)
* cumulative_90           = smallest k with Σ_{i≤k} λᵢ / Σλ ≥ threshold, at most len(σ)
* nuclear_norm_ratio      = Σσ / (σmax + eps)
* participation_ratio_eig = (Σλ)² / Σλ²
* effective_rank          = exp(−Σ pᵢ log pᵢ), pᵢ = σᵢ / Σσ           (0 log 0 = 0)

An all-zero matrix makes some of these formulas degenerate (0/0); the library defines every metric
as 0 there and the tests check that separately (``Reference.is_zero``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

METRIC_NAMES = (
    "stable_rank",
    "participation_ratio",
    "cumulative_90",
    "nuclear_norm_ratio",
    "participation_ratio_eig",
    "effective_rank",
)


def to_float64(x: Any) -> np.ndarray:
    """The exact float64 values of ``x`` (numpy array, torch tensor of any float dtype, or list).

    Low-precision torch tensors (float16, bfloat16) are upcast losslessly, so the reference sees
    the same rounded values the library reads.
    """
    if type(x).__module__.startswith("torch"):
        import torch

        return x.detach().to(device="cpu", dtype=torch.float64).numpy().copy()
    return np.array(x, dtype=np.float64, copy=True)


def center_columns(x: np.ndarray) -> np.ndarray:
    """X minus its column means (float64)."""
    return x - x.mean(axis=0, keepdims=True)


def singular_values(x: Any, *, center: bool = False) -> np.ndarray:
    """Singular values of ``x`` in float64, descending (length min(n, d))."""
    a = to_float64(x)
    if center:
        a = center_columns(a)
    return np.linalg.svd(a, compute_uv=False)


@dataclass
class Reference:
    """The reference metrics of one matrix, plus what the tests need to judge a comparison."""

    values: dict[str, float]
    sigma: np.ndarray
    cumulative_ratios: np.ndarray
    threshold: float
    is_zero: bool
    frobenius_sq: float
    extras: dict[str, float] = field(default_factory=dict)

    def __getitem__(self, name: str) -> float:
        return self.values[name]

    def knife_edge(self, width: float = 1e-6) -> bool:
        """True when some cumulative energy ratio lies within ``width`` of the threshold.

        Then the exact crossing index depends on the last bits of the spectrum, and an answer one
        off from the reference's is as correct as the reference's own.
        """
        if self.cumulative_ratios.size == 0:
            return False
        return bool(np.any(np.abs(self.cumulative_ratios - self.threshold) <= width))


def reference_from_sigma(
    sigma: np.ndarray, *, eps: float = 1e-10, threshold: float = 0.9, frobenius_sq: float | None = None
) -> Reference:
    """Reference metrics from singular values (any order; sorted here, descending)."""
    s = np.sort(np.asarray(sigma, dtype=np.float64))[::-1]
    lam = s**2
    fro2 = float(np.sum(lam)) if frobenius_sq is None else float(frobenius_sq)
    is_zero = not np.any(s > 0)
    smax = float(s[0])
    total_s = float(np.sum(s))
    total_l = float(np.sum(lam))

    values: dict[str, float] = {}
    values["stable_rank"] = fro2 / (smax**2 + eps)
    normalized = s / (total_s + eps)
    values["participation_ratio"] = 1.0 / (float(np.sum(normalized**2)) + eps)

    if total_l > 0:
        # Σλ taken as the last partial sum, so the ratios are monotone and end at exactly 1 (a
        # threshold of 1 is then reached at the last nonzero λ, not lost to summation order).
        partial = np.cumsum(lam)
        ratios = partial / partial[-1]
        hits = np.nonzero(ratios >= threshold)[0]
        k = int(hits[0]) + 1 if hits.size else len(s)
        values["cumulative_90"] = float(min(k, len(s)))
    else:
        ratios = np.zeros(0)
        values["cumulative_90"] = float("nan")

    values["nuclear_norm_ratio"] = total_s / (smax + eps)
    if total_l > 0:
        # (Σλ)² / Σλ², evaluated on λ / λmax so that λ² neither overflows nor underflows
        mu = lam / lam[0]
        values["participation_ratio_eig"] = float(np.sum(mu)) ** 2 / float(np.sum(mu**2))
    else:
        values["participation_ratio_eig"] = float("nan")
    if total_s > 0:
        p = s / total_s
        p = p[p > 0]
        values["effective_rank"] = float(np.exp(-np.sum(p * np.log(p))))
    else:
        values["effective_rank"] = float("nan")

    return Reference(
        values=values,
        sigma=s,
        cumulative_ratios=ratios,
        threshold=threshold,
        is_zero=is_zero,
        frobenius_sq=fro2,
        extras={"trace": total_l, "lambda_max": smax**2},
    )


def reference_metrics(
    x: Any, *, eps: float = 1e-10, threshold: float = 0.9, center: bool = False
) -> Reference:
    """Reference metrics of the matrix ``x`` (float64 SVD of its exact values)."""
    a = to_float64(x)
    if center:
        a = center_columns(a)
    sigma = np.linalg.svd(a, compute_uv=False)
    # ‖X‖F² from the entries, not from σ: the two are equal in exact arithmetic, and this is the
    # textbook form of the stable rank's numerator.
    fro2 = float(np.sum(a * a))
    return reference_from_sigma(sigma, eps=eps, threshold=threshold, frobenius_sq=fro2)
