"""ndt's validity harness, in ndt's shapes: ``validate_detector(detector, fixtures=None, *, name,
min_recall=0.75, max_false_positives_per_1000=2.0)`` → ``ValidityReport`` with ``mean_recall``,
``false_positives_on_null``, ``valid``, ``message`` and ``render()``; ndt's four fixtures
(``standard_battery``: the same series as ndt for the same seeds).

ndt_fast's own harness (``ndt_fast.validity``) is stricter — six fixture kinds, heavy tails and
correlated noise among the nulls, ≤ 1 false positive per 1000 samples on *every* kind, planted
fixtures included — and is what the README's validity table uses. This module is for code
written against ndt; a detector passing here says less than one passing there.

Matching (shared with ``ndt_fast.validity``): each detection, in order, takes the nearest
unmatched ground-truth step within the fixture's tolerance. ndt takes the first one in the order
of ``ground_truth``; the two agree unless two ground-truth steps lie within one tolerance of
the same detection. ``message`` says the same things as ndt's in other words.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ndt_fast.validity import match_detections

__all__ = [
    "Detector",
    "Fixture",
    "FixtureResult",
    "ValidityReport",
    "drift_no_jump",
    "jump_detector_as_callable",
    "planted_multi",
    "planted_transition",
    "pure_noise",
    "standard_battery",
    "validate_detector",
]

#: Any callable: a value sequence → the indices where it sees a transition.
Detector = Callable[[Sequence[float]], Sequence[int]]


@dataclass(frozen=True)
class Fixture:
    """A series (``values``, one per step) with its known transition steps (``ground_truth``;
    empty for a null control); a detection within ``tolerance`` steps of one recovers it."""

    values: np.ndarray
    ground_truth: tuple[int, ...]
    name: str
    tolerance: int = 5
    meta: dict[str, Any] = field(default_factory=dict)


def _levels(n_steps: int, changes: Sequence[int], levels: Sequence[float]) -> np.ndarray:
    values = np.empty(n_steps, dtype=float)
    for level, lo, hi in zip(levels, (0, *changes), (*changes, n_steps)):
        values[lo:hi] = level
    return values


def planted_transition(n_steps: int = 400, change_at: int = 200, before: float = 10.0, after: float = 20.0,
                       noise: float = 0.3, seed: int = 0) -> Fixture:
    """Positive control: ``before`` until ``change_at``, then ``after``, plus N(0, noise²) noise."""
    values = _levels(n_steps, (change_at,), (before, after))
    values += np.random.default_rng(seed).normal(0.0, noise, size=n_steps)
    return Fixture(values, (change_at,), "planted_transition")


def planted_multi(n_steps: int = 600, changes: tuple[int, ...] = (150, 350, 450),
                  levels: tuple[float, ...] = (10.0, 16.0, 13.0, 22.0), noise: float = 0.3,
                  seed: int = 0) -> Fixture:
    """Positive control: ``levels[k]`` between consecutive ``changes``, plus noise.
    ValueError unless ``len(levels) == len(changes) + 1``."""
    if len(levels) != len(changes) + 1:
        raise ValueError("levels must have exactly one more entry than changes")
    values = _levels(n_steps, changes, levels)
    values += np.random.default_rng(seed).normal(0.0, noise, size=n_steps)
    return Fixture(values, tuple(changes), "planted_multi")


def pure_noise(n_steps: int = 400, noise: float = 1.0, seed: int = 0) -> Fixture:
    """Null control: N(0, noise²) noise and nothing else."""
    return Fixture(np.random.default_rng(seed).normal(0.0, noise, size=n_steps), (), "pure_noise")


def drift_no_jump(n_steps: int = 400, start: float = 10.0, end: float = 20.0, noise: float = 0.3,
                  seed: int = 0) -> Fixture:
    """Null control: a linear ramp from ``start`` to ``end`` plus noise — change without a jump."""
    values = np.linspace(start, end, n_steps) + np.random.default_rng(seed).normal(0.0, noise, size=n_steps)
    return Fixture(values, (), "drift_no_jump")


def standard_battery() -> list[Fixture]:
    """ndt's default battery: planted_transition, planted_multi, pure_noise, drift_no_jump (seed 0)."""
    return [planted_transition(), planted_multi(), pure_noise(), drift_no_jump()]


def jump_detector_as_callable(detector: Any, metric_name: str = "metric") -> Detector:
    """A ``JumpDetector`` (ndt_fast's or ndt's) as a detector callable: values → jump indices."""

    def detect(values: Sequence[float]) -> list[int]:
        return [jump.step for jump in detector.detect_jumps(list(values), metric_name=metric_name)]

    return detect


@dataclass(frozen=True)
class FixtureResult:
    """A detector's outcome on one fixture."""

    fixture: str
    n_steps: int
    n_ground_truth: int
    detected: tuple[int, ...]
    true_positives: int
    false_positives: int
    false_negatives: int

    @property
    def is_null(self) -> bool:
        """True for a null control (no ground-truth transition)."""
        return self.n_ground_truth == 0

    @property
    def recall(self) -> float | None:
        """Recovered / ground-truth transitions; None for a null control."""
        return None if self.is_null else self.true_positives / self.n_ground_truth

    @property
    def false_positive_rate_per_1000(self) -> float:
        """False detections per 1000 steps."""
        return 1000.0 * self.false_positives / max(self.n_steps, 1)


_MESSAGES = {
    (True, True): "Finds the planted transitions and is quiet on noise and drift: on series like these "
                  "fixtures, its detections can be trusted.",
    (False, False): "Misses planted transitions and fires on the null controls: its detections describe "
                    "the method, not the data.",
    (True, False): "Fires on pure noise or on a smooth drift: it reports transitions that are not there, so "
                   "a detection on real data means little without this check.",
    (False, True): "Quiet on the null controls but misses planted transitions: real transitions can go "
                   "unreported.",
}


@dataclass(frozen=True)
class ValidityReport:
    """The verdict: ``valid`` iff mean recall on planted fixtures ≥ ``min_recall`` and every null
    control's false-positive rate ≤ ``max_false_positives_per_1000``."""

    detector_name: str
    results: tuple[FixtureResult, ...]
    mean_recall: float
    false_positives_on_null: int
    valid: bool
    message: str

    def render(self) -> str:
        """The report as text, one line per fixture, then the totals and the verdict."""
        lines = [f"Validity report for: {self.detector_name}", ""]
        for r in self.results:
            if r.is_null:
                lines.append(f"  {r.fixture:<20} null control   false positives: {r.false_positives:>3} "
                             f"({r.false_positive_rate_per_1000:.1f}/1000 steps)")
            else:
                lines.append(f"  {r.fixture:<20} recall: {r.recall:.2f}   false positives: {r.false_positives:>3}")
        lines += ["", f"  mean recall on planted transitions : {self.mean_recall:.2f}",
                  f"  false positives on null controls   : {self.false_positives_on_null}", "",
                  f"  VERDICT: {'VALID' if self.valid else 'NOT VALID'} on these fixtures", f"  {self.message}"]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.render()


def validate_detector(
    detector: Detector,
    fixtures: Sequence[Fixture] | None = None,
    *,
    name: str = "detector",
    min_recall: float = 0.75,
    max_false_positives_per_1000: float = 2.0,
) -> ValidityReport:
    """Run ``detector`` (values → indices) on ``fixtures`` (default ``standard_battery()``).

    TypeError if ``detector`` is not callable or returns something that is not integers.
    """
    if not callable(detector):
        raise TypeError(f"detector must be callable (values -> indices), got {type(detector).__name__}")
    fixtures = standard_battery() if fixtures is None else list(fixtures)
    results = []
    for fx in fixtures:
        detected = sorted(int(i) for i in detector(np.asarray(fx.values)))
        found = match_detections(detected, fx.ground_truth, fx.tolerance)
        results.append(FixtureResult(fx.name, len(fx.values), len(fx.ground_truth), tuple(detected), found,
                                     len(detected) - found, len(fx.ground_truth) - found))
    recalls = [r.recall for r in results if not r.is_null]
    mean_recall = float(np.mean(recalls)) if recalls else 0.0
    worst_null_rate = max((r.false_positive_rate_per_1000 for r in results if r.is_null), default=0.0)
    recall_ok, quiet = mean_recall >= min_recall, worst_null_rate <= max_false_positives_per_1000
    return ValidityReport(name, tuple(results), mean_recall,
                          sum(r.false_positives for r in results if r.is_null), recall_ok and quiet,
                          _MESSAGES[(recall_ok, quiet)])
