"""The harness: a detector run over fixtures, detections matched to planted steps, recall and
false positives per 1000 samples per kind, and the verdict rule (``ndt_fast.validity``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ndt_fast.validity.fixtures import Fixture, standard_fixtures
from ndt_fast.validity.rules import Detector

#: How far (in samples) a detection may lie from a planted step and still count as finding it.
DEFAULT_TOLERANCE = 5
MIN_RECALL = 0.9
MAX_FP_PER_1000 = 1.0


# ----------------------------------------------------------------------------------------------
# Harness
# ----------------------------------------------------------------------------------------------


def match_detections(detected: Sequence[int], steps: Sequence[int], tolerance: int) -> int:
    """Number of planted steps found: each detection, in order, takes the nearest step within
    ``tolerance`` that no earlier detection took (ties to the earlier step)."""
    free = list(steps)
    found = 0
    for d in detected:
        near = [s for s in free if abs(s - d) <= tolerance]
        if near:
            free.remove(min(near, key=lambda s: (abs(s - d), s)))
            found += 1
    return found


@dataclass(frozen=True)
class FixtureResult:
    """A detector's outcome on one fixture: ``found`` planted steps, the rest of ``detected``
    are false positives."""

    fixture: str
    kind: str
    length: int
    steps: tuple[int, ...]
    detected: tuple[int, ...]
    found: int

    @property
    def false_positives(self) -> int:
        return len(self.detected) - self.found

    @property
    def recall(self) -> float | None:
        """Fraction of planted steps found; None for a null fixture."""
        return self.found / len(self.steps) if self.steps else None

    @property
    def fp_per_1000(self) -> float:
        return 1000.0 * self.false_positives / self.length


@dataclass(frozen=True)
class _KindSummary:
    kind: str
    fixtures: int
    samples: int
    planted: int
    found: int
    false_positives: int

    @property
    def recall(self) -> float | None:
        return self.found / self.planted if self.planted else None

    @property
    def fp_per_1000(self) -> float:
        return 1000.0 * self.false_positives / self.samples


@dataclass(frozen=True)
class ValidityReport:
    """Per-fixture results of one detector on a battery, with aggregates and the verdict.

    VALID iff ``recall`` (found / planted over all planted steps) ≥ ``min_recall`` and, for every
    fixture kind, false positives per 1000 samples (pooled over that kind's fixtures) ≤
    ``max_fp_per_1000``.
    """

    detector_name: str
    results: tuple[FixtureResult, ...]
    tolerance: int
    min_recall: float
    max_fp_per_1000: float

    def by_kind(self) -> list[_KindSummary]:
        """One summary per fixture kind, in order of first appearance."""
        kinds = list(dict.fromkeys(r.kind for r in self.results))
        out = []
        for kind in kinds:
            rs = [r for r in self.results if r.kind == kind]
            out.append(
                _KindSummary(
                    kind,
                    len(rs),
                    sum(r.length for r in rs),
                    sum(len(r.steps) for r in rs),
                    sum(r.found for r in rs),
                    sum(r.false_positives for r in rs),
                )
            )
        return out

    @property
    def planted(self) -> int:
        return sum(len(r.steps) for r in self.results)

    @property
    def recall(self) -> float:
        return sum(r.found for r in self.results) / self.planted

    @property
    def fp_per_1000(self) -> dict[str, float]:
        """Pooled false positives per 1000 samples, per fixture kind."""
        return {s.kind: s.fp_per_1000 for s in self.by_kind()}

    @property
    def reasons(self) -> list[str]:
        """Why the verdict is INVALID (empty when VALID)."""
        out = []
        if self.recall < self.min_recall:
            out.append(f"recall {self.recall:.2f} < {self.min_recall:g}")
        for kind, rate in self.fp_per_1000.items():
            if rate > self.max_fp_per_1000:
                out.append(f"{rate:.2f} FP / 1000 samples on {kind} > {self.max_fp_per_1000:g}")
        return out

    @property
    def valid(self) -> bool:
        return not self.reasons

    @property
    def verdict(self) -> str:
        return "VALID" if self.valid else "INVALID"

    def table(self) -> str:
        """Markdown: one row per fixture kind, then the verdict and its reasons."""
        lines = [
            f"**{self.detector_name}** (a detection within {self.tolerance} samples of a planted step finds it)",
            "",
            "| fixture kind | fixtures | samples | planted steps | found | recall | false positives | FP / 1000 |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for s in self.by_kind():
            recall = "—" if s.recall is None else f"{s.recall:.2f}"
            lines.append(
                f"| {s.kind} | {s.fixtures} | {s.samples} | {s.planted} | {s.found} | {recall} "
                f"| {s.false_positives} | {s.fp_per_1000:.2f} |"
            )
        rule = f"recall ≥ {self.min_recall:g} and ≤ {self.max_fp_per_1000:g} FP / 1000 on every kind"
        because = "; ".join(self.reasons) if self.reasons else "meets " + rule
        lines += ["", f"**Verdict: {self.verdict}** (recall {self.recall:.2f}; {because})"]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def validate_detector(
    detector: Detector,
    fixtures: Sequence[Fixture] | None = None,
    *,
    name: str | None = None,
    tolerance: int = DEFAULT_TOLERANCE,
    min_recall: float = MIN_RECALL,
    max_fp_per_1000: float = MAX_FP_PER_1000,
) -> ValidityReport:
    """Run ``detector`` on every fixture (default: :func:`standard_fixtures`) and judge it.

    ``detector(values)`` gets a fresh float64 copy of shape (n,) and must return a 1-D sequence
    of integer indices in [0, n) (any order; a repeated index is a false positive). ``name``
    defaults to the detector's ``name`` attribute, else its repr.

    Bad input: TypeError if ``detector`` is not callable or returns something that is not a
    1-D sequence of integers; ValueError if it returns an index outside [0, n), if the battery
    lacks a planted or a null fixture (a verdict needs both), or for a negative tolerance.
    """
    if not callable(detector):
        raise TypeError(f"detector must be callable (values -> indices), got {type(detector).__name__}")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    fixtures = standard_fixtures() if fixtures is None else list(fixtures)
    if not any(f.steps for f in fixtures) or all(f.steps for f in fixtures):
        raise ValueError("fixtures must include at least one planted and one null fixture")
    name = name if name is not None else getattr(detector, "name", None) or repr(detector)

    results = []
    for fx in fixtures:
        n = len(fx.values)
        detected = _as_indices(detector(np.array(fx.values, dtype=np.float64)), n, fx.name, name)
        found = match_detections(detected, fx.steps, tolerance)
        results.append(FixtureResult(fx.name, fx.kind, n, fx.steps, detected, found))
    return ValidityReport(name, tuple(results), tolerance, min_recall, max_fp_per_1000)


def _as_indices(out: Iterable[object], n: int, fixture: str, detector: str) -> tuple[int, ...]:
    """The detector's output as sorted ints in [0, n), or a TypeError/ValueError that says why not."""
    try:
        arr = np.asarray(out if isinstance(out, np.ndarray) else list(out))
    except (TypeError, ValueError) as e:
        raise TypeError(f"{detector} on {fixture}: must return a sequence of integer indices ({e})") from e
    if arr.size == 0:
        return ()
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise TypeError(
            f"{detector} on {fixture}: must return a 1-D sequence of integer indices, "
            f"got dtype {arr.dtype} and shape {arr.shape}"
        )
    bad = arr[(arr < 0) | (arr >= n)]
    if bad.size:
        raise ValueError(f"{detector} on {fixture}: index {int(bad[0])} outside [0, {n})")
    return tuple(sorted(int(i) for i in arr))


def comparison_table(*reports: ValidityReport) -> str:
    """Markdown: one column per report — recall, FP / 1000 per fixture kind, verdict.

    Rows are the kinds of the first report; the reports should share a battery.
    """
    if not reports:
        raise ValueError("comparison_table needs at least one report")
    lines = [
        "| | " + " | ".join(r.detector_name for r in reports) + " |",
        "|---|" + "---:|" * len(reports),
        f"| recall ({reports[0].planted} planted steps) | "
        + " | ".join(f"{r.recall:.2f}" for r in reports)
        + " |",
    ]
    for s in reports[0].by_kind():
        label = "null" if s.planted == 0 else "planted"
        lines.append(
            f"| FP / 1000: {s.kind} ({label}) | "
            + " | ".join(f"{r.fp_per_1000.get(s.kind, math.nan):.2f}" for r in reports)
            + " |"
        )
    lines.append("| **verdict** | " + " | ".join(f"**{r.verdict}**" for r in reports) + " |")
    return "\n".join(lines)
