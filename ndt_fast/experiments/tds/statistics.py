"""The statistics the claims are measured with: series of a run's samples, window means, rolling
medians, Pearson/Spearman correlations, a three-segment fit, jump counts, and values over seeds
(:class:`Stat`: mean ± sample sd)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ndt_fast.jumps import Jump


def _series(df: pd.DataFrame, column: str, horizon: int, every: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, values)`` float64 of rows with ``step < horizon`` and ``step % every == 0``."""
    steps = df["step"].to_numpy(dtype=np.float64)
    keep = (steps < horizon) & (steps % every == 0)
    return steps[keep], df[column].to_numpy(dtype=np.float64, na_value=np.nan)[keep]


def level(steps: np.ndarray, values: np.ndarray, lo: float, hi: float) -> float:
    """Mean of the finite ``values`` whose step is in ``[lo, hi)``; NaN when there are none."""
    keep = (steps >= lo) & (steps < hi) & np.isfinite(values)
    return float(values[keep].mean()) if keep.any() else math.nan


def rolling_median(values: np.ndarray, width: int = 5) -> np.ndarray:
    """Centred rolling median over ``width`` samples (fewer at the ends)."""
    return pd.Series(values).rolling(width, center=True, min_periods=1).median().to_numpy()


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of the pairs where both are finite; NaN with < 3 pairs or a constant side."""
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 3:
        return math.nan
    a, b = a[keep] - a[keep].mean(), b[keep] - b[keep].mean()
    denominator = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b) / denominator if denominator > 0 else math.nan


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties) of the finite pairs; NaN as pearson."""
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 3:
        return math.nan
    # pandas' ranking (scipy.stats would do the same, but costs ~1 s to import).
    rank = lambda x: pd.Series(x).rank(method="average").to_numpy()  # noqa: E731
    return pearson(rank(a[keep]), rank(b[keep]))


def three_segment_fit(steps: np.ndarray, values: np.ndarray, min_len: int = 3) -> dict[str, float]:
    """Least-squares fit of three independent straight lines to ``values`` over ``steps``.

    The two breakpoints range over every split leaving ≥ ``min_len`` samples per segment (exact
    search, O(n²) with prefix sums). Returns ``b1``, ``b2`` (the steps where segments 2 and 3
    start) and ``s1``, ``s2``, ``s3`` (each segment's slope, per 1000 steps); NaN for all when
    there are fewer than ``3 * min_len`` finite samples.
    """
    keep = np.isfinite(values)
    t, v = steps[keep], values[keep]
    n = len(t)
    nan = {k: math.nan for k in ("b1", "b2", "s1", "s2", "s3")}
    if n < 3 * min_len:
        return nan
    x = (t - t.mean()) / (t.std() or 1.0)  # conditioning for the prefix sums

    def prefix(a: np.ndarray) -> np.ndarray:
        return np.concatenate(([0.0], np.cumsum(a)))

    c1, cx, cy, cxx, cxy, cyy = (prefix(a) for a in (np.ones(n), x, v, x * x, x * v, v * v))

    def sse(a: Any, b: Any) -> np.ndarray:  # residual sum of squares of the line fitted to [a, b)
        m = c1[b] - c1[a]
        sx, sy = cx[b] - cx[a], cy[b] - cy[a]
        vxx = cxx[b] - cxx[a] - sx * sx / m
        vxy = cxy[b] - cxy[a] - sx * sy / m
        vyy = cyy[b] - cyy[a] - sy * sy / m
        safe = np.where(vxx > 1e-12, vxx, 1.0)
        return vyy - np.where(vxx > 1e-12, vxy * vxy / safe, 0.0)

    best, best_ij = math.inf, (0, 0)
    for i in range(min_len, n - 2 * min_len + 1):
        j = np.arange(i + min_len, n - min_len + 1)
        total = sse(0, i) + sse(i, j) + sse(j, n)
        k = int(np.argmin(total))
        if total[k] < best:
            best, best_ij = float(total[k]), (i, int(j[k]))
    i, j = best_ij

    def slope(a: int, b: int) -> float:
        tt, vv = t[a:b] / 1000.0, v[a:b]
        tt = tt - tt.mean()
        return float((tt @ (vv - vv.mean())) / (tt @ tt))

    return {"b1": float(t[i]), "b2": float(t[j]), "s1": slope(0, i), "s2": slope(i, j), "s3": slope(j, n)}


def _count(jumps: Mapping[str, list[Jump]] | None, horizon: int, before: float = math.inf) -> float:
    """Jumps over all layers with step < min(horizon, before); NaN when the set was not computed."""
    if jumps is None:
        return math.nan
    limit = min(horizon, before)
    return float(sum(1 for found in jumps.values() for j in found if j.step < limit))



@dataclass
class Measurement:
    """What one seed measured for one claim: named values (NaN = undefined), or why it could not."""

    values: dict[str, float]
    reason: str | None = None  # set → "not measurable as stated", because of this


@dataclass(frozen=True)
class Stat:
    """A value over seeds: mean, sample standard deviation (NaN for one seed), the seeds it is
    taken over (those where the value is defined) and the seeds run."""

    mean: float
    sd: float
    n: int
    of: int = 1

    def fmt(self, spec: str = ".3g") -> str:
        if math.isnan(self.mean):
            return "undefined"
        text = format(self.mean, spec)
        if not (self.n <= 1 or math.isnan(self.sd) or self.sd == 0):
            text = f"{text} ± {format(self.sd, spec.lstrip('+'))}"
        if 0 < self.n < self.of:  # some seeds had no defined value: say over how many
            text += f" (over {self.n} of {self.of} seeds)"
        return text



def _stats(measurements: Sequence[Measurement], seeds: int | None = None) -> dict[str, Stat]:
    """Each value over seeds as a Stat of its finite values (all ±inf → inf, none finite → NaN);
    ``seeds``: how many seeds were run (default: one per measurement)."""
    seeds = len(measurements) if seeds is None else seeds
    keys = measurements[0].values.keys()
    out = {}
    for key in keys:
        values = np.array([m.values.get(key, math.nan) for m in measurements], dtype=np.float64)
        finite = values[np.isfinite(values)]
        if len(finite) == 0:
            mean = math.inf if np.isinf(values).all() and len(values) else math.nan
            out[key] = Stat(mean, math.nan, 0, seeds)
        else:
            out[key] = Stat(float(finite.mean()), float(finite.std(ddof=1)) if len(finite) > 1 else math.nan,
                            len(finite), seeds)
    return out

