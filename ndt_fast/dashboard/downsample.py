"""Min/max downsampling: what a plot of n ≫ pixels points looks like, in ≤ 3 points per bucket.

A line plot of a million samples on a 1000-pixel-wide axis draws, in each pixel column, a
vertical stroke from the smallest to the largest value that falls in it. Keeping, per bucket of
consecutive samples, the sample with the smallest and the one with the largest value (in their
original order) therefore draws the same picture — every spike and dip survives, which
averaging or striding would lose. A bucket that holds a missing value (NaN, or ±inf, which the
plots treat as missing) also keeps one NaN, so gaps in the data stay gaps on the screen.

Buckets are equal runs of samples, not equal step ranges: a tracker samples at a fixed
frequency, so the two agree, and runs of samples need no search.
"""

from __future__ import annotations

import numpy as np


def minmax_indices(values: np.ndarray, buckets: int) -> np.ndarray:
    """Indices into ``values`` (1-D, any float dtype, length n) that draw like all of it.

    Returns sorted int64 indices: all of ``range(n)`` when n ≤ 2 · buckets, otherwise 0 and n − 1
    (so the line spans the whole run) and per bucket the first index of its minimum, of its
    maximum and (if it has one) of its first non-finite value — at most 3 · buckets + 2 indices.
    A bucket with no finite value contributes only that NaN.
    ``ValueError`` if ``values`` is not 1-D or ``buckets`` < 1.
    """
    values = np.asarray(values)
    if values.ndim != 1:
        raise ValueError(f"minmax_indices: values must be 1-D, got shape {values.shape}")
    if buckets < 1:
        raise ValueError(f"minmax_indices: buckets must be ≥ 1, got {buckets}")
    n = len(values)
    if n <= 2 * buckets:
        return np.arange(n, dtype=np.int64)
    size = -(-n // buckets)  # ceil: every bucket but the last is full
    rows = -(-n // size)
    padded = np.full(rows * size, np.nan)
    padded[:n] = values
    finite = np.isfinite(padded).reshape(rows, size)
    grid = padded.reshape(rows, size)
    starts = np.arange(rows, dtype=np.int64) * size
    lowest = np.argmin(np.where(finite, grid, np.inf), axis=1)
    highest = np.argmax(np.where(finite, grid, -np.inf), axis=1)
    has_finite = finite.any(axis=1)
    # Padding of the last bucket is not a gap in the data: count only real positions.
    real = (starts[:, None] + np.arange(size)[None, :]) < n
    missing = ~finite & real
    has_missing = missing.any(axis=1)
    first_missing = np.argmax(missing, axis=1)
    picks = [np.array([0, n - 1]), (starts + lowest)[has_finite], (starts + highest)[has_finite], (starts + first_missing)[has_missing]]
    return np.unique(np.concatenate(picks))


def downsample(steps: np.ndarray, values: np.ndarray, buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, values)`` of the points :func:`minmax_indices` keeps; non-finite values become NaN.

    ``steps`` and ``values``: 1-D, the same length n (ValueError otherwise). Returns float64
    arrays of length ≤ 3 · buckets + 2 (n when n ≤ 2 · buckets).
    """
    steps = np.asarray(steps, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    if steps.shape != values.shape:
        raise ValueError(f"downsample: steps {steps.shape} and values {values.shape} differ in shape")
    keep = minmax_indices(values, buckets)
    kept = values[keep]
    kept[~np.isfinite(kept)] = np.nan
    return steps[keep], kept
