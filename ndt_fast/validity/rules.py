"""The two jump rules as plain loops over a series — the specification the native online
banks follow (``ndt_fast.validity`` explains the default rule element by element).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ndt_fast.jumps import JumpDetector

#: A detector: a 1-D float64 series of shape (n,) → indices in [0, n) where it sees a jump.
Detector = Callable[[np.ndarray], Sequence[int]]


# ----------------------------------------------------------------------------------------------
# The two rules, as plain loops (the specification an online port follows)
# ----------------------------------------------------------------------------------------------


def default_rule_indices(
    values: Sequence[float] | np.ndarray,
    *,
    window: int = 200,
    block: int = 7,
    threshold: float = 5.0,
    min_reference: int = 100,
    min_scale: float = 1e-10,
) -> list[int]:
    """Indices of the jumps in ``values`` under the default rule: the indices of
    :func:`default_rule_detections` (which documents the rule)."""
    return [i for i, _ in default_rule_detections(values, window=window, block=block, threshold=threshold,
                                                  min_reference=min_reference, min_scale=min_scale)]


# Huge finite values (~1e307) may overflow to inf in the level sums: a defined result (no jump
# there), not a floating-point warning.
@np.errstate(over="ignore", invalid="ignore")
def default_rule_detections(
    values: Sequence[float] | np.ndarray,
    *,
    window: int = 200,
    block: int = 7,
    threshold: float = 5.0,
    min_reference: int = 100,
    min_scale: float = 1e-10,
) -> list[tuple[int, float]]:
    """The jumps in ``values`` under the default rule (see the module docstring for why), as
    ``[(index, z)]`` with z signed (its direction).

    ``values``: 1-D, shape (n,), anything numpy converts to float64. Indices are increasing
    Python ints in [0, n). Non-finite samples (NaN, ±inf) are *skipped*: the rule runs on the finite
    samples in order, as if the others were absent (they update nothing and are never
    reported), and indices are mapped back to positions in ``values``.

    The rule, on x = the finite samples (m of them; indices below are into x), k = ``block``,
    r = k − 1 (peak radius), g = 2k (reference gap), W = ``window``:

    1. Block level: L_j = trimmed mean of x[j : j+k] — sort the k samples, drop the smallest
       and the largest, sum the other k − 2 and divide by k − 2 — for j = 0 … m−k.
    2. Level change: D_t = L_t − L_{t−k} for t = k … m−k (the k samples from t against the k
       samples before t; D_t is known once sample t+k−1 has arrived).
    3. Score: the reference of t is R_t = {D_j : max(k, t−g−W+1) ≤ j ≤ t−g, D_j not excluded
       (step 5)} — at most W values, all built from samples before those of D_t. If
       |R_t| < ``min_reference``, z_t = 0. Otherwise, with μ_t = mean(R_t) and σ_t = population
       standard deviation of R_t (divide by |R_t|), z_t = (D_t − μ_t) / max(σ_t, ``min_scale``).
       (Online: D_t waits in a FIFO of g entries, then enters a ring of the last W; keep the
       count, sum and sum of squared deviations of the included entries by Welford add/remove,
       or plain sums recomputed from the ring every few thousand samples.)
    4. Peak: for t = k … m−k in increasing order, compute z_t, then decide candidate
       c = t − r (when c ≥ k): c is a jump iff |z_c| > ``threshold``, |z_c| > |z_j| for
       c−r ≤ j < c, and |z_c| ≥ |z_j| for c < j ≤ t (z_j = 0 for j < k; ties go to the
       earliest). Candidates c > m−k−r are never decided: their data has not arrived, so a
       jump at c is final once sample c + 2k − 2 has (12 samples later for k = 7).
    5. Exclusion: when c is a jump, D_j for c−r ≤ j ≤ c+r (the step's own response) is
       excluded from every later reference. None of these has entered a reference yet
       (R_t for t ≤ c + r ends at c + r − g < c − r), so the exclusion is exact online.
    6. Location: the reported index is the j among c, c−1, c+1 (in that order, first wins ties)
       with the largest s·(x_j − x_{j−1}), s = sign(z_c) — the block levels' response to a clean
       step has a 3-sample top, the single difference picks the step's own sample.

    Parameters: ``window`` W (reference length, in D values), ``block`` k, ``threshold`` on |z|,
    ``min_reference`` (fewest reference values to score), ``min_scale`` (absolute floor of σ:
    on a constant stretch σ = 0 and any step is a jump; noise below ~min_scale counts as none).
    Bad input: ValueError for a non-1-D ``values`` or out-of-range parameters (block ≥ 3,
    window ≥ min_reference ≥ 1, threshold > 0, min_scale > 0).
    """
    if block < 3:
        raise ValueError(f"block must be >= 3 (the trimmed mean drops 2 of its samples), got {block}")
    if not 1 <= min_reference <= window:
        raise ValueError(f"need 1 <= min_reference <= window, got min_reference={min_reference}, window={window}")
    if not threshold > 0:
        raise ValueError(f"threshold must be > 0, got {threshold}")
    if not min_scale > 0:
        raise ValueError(f"min_scale must be > 0, got {min_scale}")
    v = _as_series(values)
    finite = np.flatnonzero(np.isfinite(v))
    x = v[finite]
    m, k = len(x), block
    r, g = k - 1, 2 * k
    if m < 2 * k:
        return []

    # Steps 1-2 (vectorised: each row of the view is one block x[j : j+k]).
    level = np.sort(sliding_window_view(x, k), axis=1)[:, 1:-1].mean(axis=1)  # (m-k+1,)
    d = np.zeros(m)
    d[k : m - k + 1] = level[k:] - level[:-k]
    usable = np.ones(m, dtype=bool)  # step 5 clears entries
    z = np.zeros(m)

    found: list[tuple[int, float]] = []
    for t in range(k, m - k + 1):
        lo, hi = max(k, t - g - window + 1), t - g + 1
        if hi - lo >= min_reference:
            reference = d[lo:hi][usable[lo:hi]]
            n = len(reference)
            if n >= min_reference:
                mu = float(reference.sum()) / n
                dev = reference - mu
                # np.sum, not a BLAS dot: its (pairwise) order is the same on every machine, so
                # z — and the peak rule's ties on integer-valued series — are reproducible.
                sigma = math.sqrt(float(np.sum(dev * dev)) / n)
                z[t] = (d[t] - mu) / max(sigma, min_scale)
        c = t - r
        if c < k:
            continue
        peak = abs(z[c])
        if peak > threshold and np.all(peak > np.abs(z[c - r : c])) and np.all(peak >= np.abs(z[c + 1 : t + 1])):
            usable[c - r : c + r + 1] = False
            sign = math.copysign(1.0, z[c])
            best = c
            for j in (c - 1, c + 1):
                if sign * (x[j] - x[j - 1]) > sign * (x[best] - x[best - 1]):
                    best = j
            found.append((int(finite[best]), float(z[c])))
    return found


def ndt_rule_indices(
    values: Sequence[float] | np.ndarray, window: int = 50, z_threshold: float = 3.0, min_samples: int = 20
) -> list[int]:
    """Indices where ndtracker's ``JumpDetector(window, z_threshold, min_samples)`` reports a jump.

    ``values``: 1-D, shape (n,), converted to float64. Returns increasing Python ints. The rule,
    for each i = min_samples … n−1: w = values[max(0, i−window) : i]; μ = mean(w),
    σ = population standard deviation of w; skip i if σ < 1e-10; i is a jump iff
    |values[i] − μ| / σ > z_threshold. Same arithmetic as numpy's mean/std, hence the same
    indices as ``ndt_fast.jumps.JumpDetector.detect_indices`` and ndt itself. NaN is *not*
    skipped, as in ndt: a NaN sample is never a jump, and no sample with a NaN in its window is
    either (for ``window`` samples after a NaN nothing is detected). An infinite sample is a
    jump when its window is finite with std ≥ 1e-10, and then poisons the windows that hold it like a NaN. No
    floating-point warning is raised.
    Bad input: ValueError for a non-1-D ``values`` or parameters ndt rejects.
    """
    # One implementation of the rule: ndt_fast.jumps.JumpDetector (its parameter checks too).
    detector = JumpDetector(window_size=window, z_threshold=z_threshold, min_samples=min_samples)
    return [i for i, _ in detector.detect_indices(_as_series(values))]


def _as_series(values: Sequence[float] | np.ndarray) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {v.shape}")
    return v


@dataclass(frozen=True)
class _NamedDetector:
    """A detector callable that carries the name the reports print."""

    name: str
    rule: Callable[[np.ndarray], list[int]]

    def __call__(self, values: Sequence[float] | np.ndarray) -> list[int]:
        return self.rule(values)


def default_detector(
    *, window: int = 200, block: int = 7, threshold: float = 5.0, min_reference: int = 100
) -> Detector:
    """The default rule as a detector: ``values`` (1-D) → list of jump indices.

    The callable also fits ndt's harness (``ndt.validity.validate_detector``) as it is.
    """
    rule = functools.partial(
        default_rule_indices, window=window, block=block, threshold=threshold, min_reference=min_reference
    )
    rule(np.zeros(0))  # rejects bad parameters now, not at the first call
    return _NamedDetector(f"default(block={block}, window={window}, z>{threshold:g})", rule)


def ndt_detector(window: int = 50, z_threshold: float = 3.0, min_samples: int = 20) -> Detector:
    """ndt's ``JumpDetector(window, z_threshold, min_samples)`` as a detector: values → indices."""
    rule = functools.partial(ndt_rule_indices, window=window, z_threshold=z_threshold, min_samples=min_samples)
    rule(np.zeros(0))  # rejects bad parameters now, not at the first call
    return _NamedDetector(f"ndt JumpDetector(window={window}, z>{z_threshold:g})", rule)
