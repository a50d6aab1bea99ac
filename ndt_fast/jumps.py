"""Jumps in a metric's time series: ndtracker's offline z-score rule, reproduced exactly.

``JumpDetector(window_size=50, z_threshold=3.0, min_samples=20)`` has ndt's signature and
algorithm: for each index i ≥ min_samples, the mean and population standard deviation of the
``window_size`` values before i; points where that std is below 1e-10 are skipped; |z| >
threshold is a jump. One difference, on purpose: ``FastTracker.detect_jumps`` reports
``Jump.step`` as the *training step* of the sample, where ndt reports the sample index.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class Jump:
    """A detected jump: ``step`` (training step, or index + step_offset), z-score, values around it."""

    step: int
    z_score: float
    value_before: float
    value_after: float
    metric_name: str

    def __repr__(self) -> str:
        return (
            f"Jump(step={self.step}, metric={self.metric_name}, z_score={self.z_score:.2f}, "
            f"Δ={self.value_after - self.value_before:.2f})"
        )


class JumpDetector:
    """ndtracker's rolling z-score jump detector (same parameters, same detections)."""

    def __init__(self, window_size: int = 50, z_threshold: float = 3.0, min_samples: int = 20) -> None:
        if window_size < 2:
            raise ValueError(f"window_size must be >= 2, got {window_size}")
        if z_threshold <= 0:
            raise ValueError(f"z_threshold must be > 0, got {z_threshold}")
        if min_samples < 1:
            raise ValueError(f"min_samples must be >= 1, got {min_samples}")
        self.window_size = window_size
        self.z_threshold = z_threshold
        self.min_samples = min_samples

    def _windows(self, v: np.ndarray) -> Iterator[tuple[int, float, float]]:
        """``(i, mean, population std)`` of the ``window_size`` values before each i ≥ min_samples."""
        for i in range(self.min_samples, len(v)):
            window = v[max(0, i - self.window_size) : i]
            yield i, window.mean(), window.std()

    def detect_indices(self, values: Sequence[float] | np.ndarray) -> list[tuple[int, float]]:
        """``[(index, |z|)]`` of every jump in ``values``, with the same arithmetic as ndt (the one
        implementation of ndt's rule; ``ndt_fast.validity.ndt_rule_indices`` states its NaN/Inf
        semantics). No floating-point warning is raised.

        Fewer than ``min_samples`` values (an empty list included) → no jumps."""
        v = np.asarray(values, dtype=np.float64)
        found: list[tuple[int, float]] = []
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            for i, mean, std in self._windows(v):
                if std < 1e-10:
                    continue
                z = abs((v[i] - mean) / std)
                if z > self.z_threshold:
                    found.append((i, float(z)))
        return found

    def compute_rolling_statistics(
        self, values: Sequence[float] | np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """ndt's ``(means, stds, z_scores)``, float64 arrays of len(values), for plotting the rule.

        Entry i ≥ ``min_samples`` holds the mean and population std of the ``window_size`` values
        before i and |z| of value i (0 where that std is ≤ 1e-10); entries before ``min_samples``
        are 0. Empty ``values`` → ValueError (ndt's wording)."""
        v = np.asarray(values, dtype=np.float64)
        if len(v) == 0:
            raise ValueError("values list cannot be empty")
        means, stds, z_scores = np.zeros(len(v)), np.zeros(len(v)), np.zeros(len(v))
        for i, mean, std in self._windows(v):
            means[i], stds[i] = mean, std
            if std > 1e-10:
                z_scores[i] = abs((v[i] - mean) / std)
        return means, stds, z_scores

    def detect_jumps(
        self, values: Sequence[float] | np.ndarray, metric_name: str = "dimensionality", step_offset: int = 0
    ) -> list[Jump]:
        """ndt's ``detect_jumps``: Jump.step = index + step_offset."""
        v = np.asarray(values, dtype=np.float64)
        return [
            Jump(i + step_offset, z, float(v[i - 1]), float(v[i]), metric_name) for i, z in self.detect_indices(v)
        ]

    def detect_at_steps(
        self, values: Sequence[float] | np.ndarray, steps: Sequence[int] | np.ndarray, metric_name: str
    ) -> list[Jump]:
        """ndt's rule on ``values`` (1-D float), each Jump placed at its sample's training step
        ``steps[i]`` (same length as ``values``) — the one place FastTracker and the experiments
        turn detections into Jumps."""
        v = np.asarray(values, dtype=np.float64)
        at = np.asarray(steps, dtype=np.int64)
        if at.shape != v.shape:
            raise ValueError(f"steps has shape {at.shape}, values {v.shape}: one step per value")
        return [Jump(int(at[i]), z, float(v[i - 1]), float(v[i]), metric_name) for i, z in self.detect_indices(v)]

    def detect_jumps_with_direction(
        self,
        values: Sequence[float] | np.ndarray,
        metric_name: str = "dimensionality",
        step_offset: int = 0,
        direction: str | None = None,
    ) -> list[Jump]:
        """``detect_jumps`` keeping only upward (``"up"``) or downward (``"down"``) jumps."""
        if direction not in (None, "up", "down"):
            raise ValueError(f"direction must be None, 'up', or 'down', got {direction}")
        jumps = self.detect_jumps(values, metric_name, step_offset)
        if direction == "up":
            return [j for j in jumps if j.value_after > j.value_before]
        if direction == "down":
            return [j for j in jumps if j.value_after < j.value_before]
        return jumps
