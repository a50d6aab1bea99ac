"""The recent past the alert rules look at: bounded per-layer series, robust statistics, episodes.

The monitor keeps, per tracked layer, the last few hundred finite values of the watched metric
(as logs: every rule compares *relative* changes, so a layer of width 10 and one of width 4096
are judged alike) and of its utilisation (metric / capacity), and the last values of log(loss).
Non-finite values (a flagged sample, a NaN loss) are not stored: a rule's window is "the last W
finite samples" of its series. Memory is O(layers × lookback), time per sample O(lookback).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: 1.4826 × MAD estimates a Gaussian's standard deviation (the MAD of N(0, σ²) is 0.6745 σ).
MAD_TO_SD = 1.4826


class Ring:
    """The last ``capacity`` floats appended; :meth:`tail` is a contiguous view (no copy).

    Every value is written twice, at i and i + capacity of a 2·capacity buffer, so the last n
    values are always one slice.
    """

    __slots__ = ("_buffer", "_capacity", "_next", "count")

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._buffer = np.zeros(2 * capacity)
        self._next = 0
        self.count = 0  # values appended so far (not capped)

    def append(self, value: float) -> None:
        i = self._next
        self._buffer[i] = self._buffer[i + self._capacity] = value
        self._next = (i + 1) % self._capacity
        self.count += 1

    def __len__(self) -> int:
        return min(self.count, self._capacity)

    def tail(self, n: int) -> np.ndarray:
        """The last min(n, len(self)) values, oldest first (read-only view)."""
        n = min(n, len(self))
        end = self._next + self._capacity
        view = self._buffer[end - n:end]
        view.flags.writeable = False
        return view

    @property
    def last(self) -> float:
        return float(self._buffer[self._next + self._capacity - 1]) if self.count else math.nan


def median(values: np.ndarray) -> float:
    """The median of a short 1-D float64 array (NaN if empty): a sort, without ``np.median``'s
    per-call overhead (which dominated the rules' time at a few hundred values)."""
    s = np.sort(values)
    n = len(s)
    if n == 0:
        return math.nan
    m = n // 2
    return float(s[m]) if n % 2 else 0.5 * float(s[m - 1] + s[m])


def robust_scale(values: np.ndarray) -> float:
    """1.4826 × median absolute deviation from the median: σ for Gaussian values, insensitive
    to a minority of outliers (heavy tails). ``values``: 1-D float64; empty → NaN."""
    if len(values) == 0:
        return math.nan
    return MAD_TO_SD * median(np.abs(values - median(values)))


def half_change(values: np.ndarray) -> float:
    """median(second half) − median(first half) of ``values`` (1-D, even length ≥ 2): a level
    change that one outlier per half cannot move and a smooth trend moves by ~slope·len/2."""
    h = len(values) // 2
    return median(values[-h:]) - median(values[:h])


def trend_drop(values: np.ndarray) -> tuple[float, float]:
    """(drop, its standard error) of ``values`` (1-D, length ≥ 6): drop = median(first third) −
    median(last third); the error from the noise σ̂ = robust scale of the sample-to-sample
    changes / √2 (a trend shifts the changes, not their spread), × 1.2533 (a median's standard
    error is 1.2533 σ/√n for Gaussian noise) × √(2 / third)."""
    k = len(values) // 3
    drop = median(values[:k]) - median(values[-k:])
    sigma = robust_scale(np.diff(values)) / math.sqrt(2.0)
    return drop, 1.2533 * sigma * math.sqrt(2.0 / k)


class Episode:
    """Persistence and once-per-episode firing of a condition checked at every sample.

    :meth:`check` returns True exactly once per episode: at the ``persistence``-th consecutive
    sample the condition holds. The episode ends — and the rule can fire again — after the
    condition has been false for ``rearm`` consecutive samples, so a condition that flickers
    around its threshold gives one alert, not one per crossing.
    """

    __slots__ = ("persistence", "rearm", "_run", "_quiet", "_armed")

    def __init__(self, persistence: int, rearm: int) -> None:
        self.persistence, self.rearm = persistence, rearm
        self._run = self._quiet = 0
        self._armed = True

    def check(self, condition: bool) -> bool:
        if condition:
            self._run += 1
            self._quiet = 0
            if self._armed and self._run >= self.persistence:
                self._armed = False
                return True
            return False
        self._run = 0
        self._quiet += 1
        if not self._armed and self._quiet >= self.rearm:
            self._armed = True
        return False


class Growth:
    """Per layer, how far its level is above the lowest it has been: G = (median of its last
    ``span`` log(metric) values) − (the lowest such rolling median so far). A layer that has
    expanded since its lowest point (after the initial collapse) has G > 0; one that never
    expanded, or fell back to a new low, has G ≈ 0. Call :meth:`update` once per sample."""

    def __init__(self, layers: int, span: int) -> None:
        self.span = span
        self.lowest = [math.inf] * layers
        self.value = [math.nan] * layers

    def update(self, state: MonitorState) -> None:
        for i in state.updated:
            recent = state.log_metric[i].tail(self.span)
            if len(recent) < self.span:
                continue
            level = median(recent)
            self.lowest[i] = min(self.lowest[i], level)
            self.value[i] = level - self.lowest[i]


@dataclass(frozen=True)
class LayerInfo:
    """A tracked layer as the rules see it: its ``name``, its position ``index`` (0 = the
    earliest tracked layer; rules read "early" and "late" from this order) and ``width`` (its
    number of features, or None when unknown)."""

    name: str
    index: int
    width: int | None = None


class MonitorState:
    """The recent past of one run, updated once per finished sample (:meth:`add`).

    ``log_metric[i]`` / ``utilization[i]``: layer i's last ``lookback`` finite values of
    log(metric) and metric / capacity, capacity = min(rows, width) (rows alone when the width
    is unknown: a layer measured on its sample side has more features than rows);
    ``log_loss``: the last finite log(loss) values; ``first_log_loss``: the first
    ``loss_reference`` of them (the level training started from); ``updated``: the layers that got
    a value at the latest sample; ``step``: its training step.
    """

    def __init__(self, layers: Sequence[LayerInfo], lookback: int, loss_reference: int) -> None:
        self.layers = tuple(layers)
        self.widths: list[int | None] = [layer.width for layer in self.layers]  # may be learnt later
        self.lookback = lookback
        self.log_metric = [Ring(lookback) for _ in self.layers]
        self.utilization = [Ring(lookback) for _ in self.layers]
        self.log_loss = Ring(lookback)
        self.first_log_loss: list[float] = []
        self._loss_reference = loss_reference
        self.updated: tuple[int, ...] = ()
        self.step = -1
        self.samples = 0

    def add(self, step: int, loss: float, metric: np.ndarray, rows: np.ndarray) -> None:
        """One finished sample: ``metric`` and ``rows`` of shape (layers,) (NaN: no value)."""
        self.step = int(step)
        self.samples += 1
        if loss > 0 and math.isfinite(loss):
            value = math.log(loss)
            self.log_loss.append(value)
            if len(self.first_log_loss) < self._loss_reference:
                self.first_log_loss.append(value)
        updated = []
        for i, width in enumerate(self.widths):
            m = float(metric[i])
            if not (m > 0 and math.isfinite(m)):
                continue
            self.log_metric[i].append(math.log(m))
            r = float(rows[i]) if rows[i] > 0 else math.inf
            capacity = min(r, width) if width else r
            self.utilization[i].append(m / capacity if math.isfinite(capacity) else math.nan)
            updated.append(i)
        self.updated = tuple(updated)

    @property
    def loss_reference(self) -> float:
        """median log(loss) of the run's first ``loss_reference`` finite losses (NaN until full)."""
        if len(self.first_log_loss) < self._loss_reference:
            return math.nan
        return median(np.asarray(self.first_log_loss))
