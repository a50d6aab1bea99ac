"""Does a jump detector find jumps, or noise? A validity harness and a default rule that passes it.

ndtracker's jump rule (``JumpDetector``: |z| > 3 of each sample against the mean and standard
deviation of the 50 samples before it) fires 3-5 times per 1000 samples of pure Gaussian noise
(P(|Z| > 3) = 0.0027, more with σ estimated from 50 samples), and on a slow drift every sample
sits ~window/2 slopes above the window mean. Its detections on real curves therefore say little.
This module measures that, and supplies a default rule that does not have the problem.

**The harness.** A *fixture* is a series with known planted steps (none for a null fixture).
The standard battery (:func:`standard_fixtures`), with every noise of unit standard deviation σ:

==================  =====================================================================
kind                series
==================  =====================================================================
single_step         Gaussian noise + one step of ±5σ at a random index in the middle half
multi_step          Gaussian noise + five steps of ±5σ (random signs), at least 50 apart
gaussian_noise      null: white Gaussian noise
slow_drift          null: linear ramp rising 0.05σ per sample (100σ over 2000) + noise
ar1_noise           null: AR(1) noise, φ = 0.9 (correlated over ~10 samples)
student_t_noise     null: Student-t noise, 3 degrees of freedom (heavy tails, outliers)
==================  =====================================================================

5σ is a step anyone sees in a plot, yet small enough to test the rule: at 3σ no rule built from
a few samples either side can separate steps from noise. :func:`validate_detector` matches each
detection to at most one planted step within ``tolerance`` (5) samples, nearest first; every
other detection — on a null fixture or a planted one — is a false positive (FP). **Verdict
rule**: VALID iff the recall over all planted steps of the battery is ≥ 0.9 *and*, for every
fixture kind (null and planted alike), FPs per 1000 samples over that kind's fixtures are ≤ 1.

**The default rule** (:func:`default_rule_indices`, documented step by step there) tests, at
every index t, the *level change* D_t = (trimmed mean of the 7 samples from t) − (trimmed mean
of the 7 samples before t) against the mean and spread of the earlier D values of the last
200 indices, and reports a local maximum of that z-score above 5. Why each element is there:

- *Differencing adjacent blocks*, instead of comparing a sample with a long window mean: the
  long mean lags by window/2 samples, so any drift looks like a jump (ndt's failure on drift).
  D_t subtracts two neighbouring levels: a linear drift only adds the constant k·slope, which
  the reference mean removes, and the level of the series cancels, so the running sums an
  online port keeps stay small and stable over millions of samples.
- *Blocks of 7* (persistence): a change must hold for most of a block to move its level, so a
  single spike is not a step; averaging 5 samples divides the noise of each level by √5.
- *Trimmed means* (drop the smallest and largest of the 7): one outlier per block is ignored,
  which is what heavy-tailed noise needs; compared with a median the trimmed mean keeps ~92% of
  the mean's Gaussian efficiency and its response to a step has a 3-sample, not 7-sample, top.
- *Self-normalised scale*: z_t divides by the standard deviation of D itself over the recent
  past, not of the raw samples. Correlated noise (AR(1)) wanders, so its D values are wider
  than white noise of the same σ suggests; measuring D's own spread adapts to any noise
  correlation without a noise model. Its mean subtracts the drift term.
- *Reference of 200 D values*: neighbouring D values share samples, so 200 of them carry only
  ~30 independent ones; with 50 (≈ 7 independent) the scale estimate was noisy enough to give
  false positives on AR(1) and t(3) noise during tuning. Testing starts once 100 are there:
  with 50, the first 50 testable samples of 400-sample Gaussian and t(3) series held a third
  of all their false positives.
- *Reference excludes the last 2·7 indices*: D_t and its reference share no sample, so the
  step being tested never inflates its own yardstick.
- *Excluding a detected step's own D values* from later references: left in, a 5σ step
  inflates the scale for the next 200 samples and hides a second step (in tuning, recall of
  5σ steps 100 samples apart fell from 1.0 to 0.16 without the exclusion).
- *Local maximum over ±6 samples*: D rises for 6 samples before a step and falls for 6 after;
  one detection per step, at the peak. Two candidates are ≥ 7 samples apart.
- *Threshold 5*: on the battery with 100 seeds (200 000 samples per kind) it leaves ≤ 0.08 FP /
  1000 on every kind (t(3) the worst) and finds all 600 planted 5σ steps; ~98% of 4σ steps.
- *Location*: the top of D at a clean step is 3 samples wide; of t−1, t, t+1 the rule reports
  the sample with the largest jump from its predecessor (in the step's direction).

Known limits: no detection in the first 120 samples (the reference fills), a detection is final
12 samples after its index, steps < 7 samples apart are one detection, and a sudden rise in the
noise level gives a burst of detections until the reference (200 samples) has adapted.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ndt_fast.jumps import JumpDetector

__all__ = [
    "DEFAULT_STEP_SIZE",
    "DEFAULT_TOLERANCE",
    "Detector",
    "Fixture",
    "FixtureResult",
    "MAX_FP_PER_1000",
    "MIN_RECALL",
    "NULL_KINDS",
    "PLANTED_KINDS",
    "ValidityReport",
    "ar1_noise",
    "comparison_table",
    "default_detector",
    "default_rule_indices",
    "gaussian_noise",
    "multi_step",
    "ndt_detector",
    "ndt_rule_indices",
    "single_step",
    "slow_drift",
    "standard_fixtures",
    "student_t_noise",
    "validate_detector",
]

#: A detector: a 1-D float64 series of shape (n,) → indices in [0, n) where it sees a jump.
Detector = Callable[[np.ndarray], Sequence[int]]

#: How far (in samples) a detection may lie from a planted step and still count as finding it.
DEFAULT_TOLERANCE = 5
#: Size of every planted step, in units of the noise standard deviation.
DEFAULT_STEP_SIZE = 5.0
MIN_RECALL = 0.9
MAX_FP_PER_1000 = 1.0

PLANTED_KINDS = ("single_step", "multi_step")
NULL_KINDS = ("gaussian_noise", "slow_drift", "ar1_noise", "student_t_noise")
# Each kind draws from its own stream, so seed s of one kind is independent of seed s of another.
_KIND_STREAM = {kind: code for code, kind in enumerate(PLANTED_KINDS + NULL_KINDS)}


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


# ----------------------------------------------------------------------------------------------
# Fixtures
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Fixture:
    """A series with known planted steps.

    ``values``: read-only float64, shape (n,). ``steps``: increasing indices where a step was
    planted (the first sample at the new level); empty for a null fixture. ``kind``: one of
    PLANTED_KINDS + NULL_KINDS (or your own); ``name``: kind and seed, for reports.
    """

    values: np.ndarray
    steps: tuple[int, ...]
    name: str
    kind: str

    @property
    def is_null(self) -> bool:
        return not self.steps


def _fixture(values: np.ndarray, steps: Iterable[int], kind: str, seed: int) -> Fixture:
    values = np.ascontiguousarray(values, dtype=np.float64)
    values.setflags(write=False)
    return Fixture(values, tuple(int(s) for s in steps), f"{kind}(seed={seed})", kind)


def _rng(kind: str, seed: int) -> np.random.Generator:
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return np.random.default_rng([seed, _KIND_STREAM[kind]])


def _check_length(length: int, minimum: int) -> None:
    if length < minimum:
        raise ValueError(f"length must be >= {minimum}, got {length}")


def _planted(length: int, steps: Sequence[int], step_size: float, rng: np.random.Generator) -> np.ndarray:
    """Unit Gaussian noise plus a ±step_size step (random sign) at each index of ``steps``."""
    values = rng.standard_normal(length)
    for s in steps:
        values[s:] += step_size * rng.choice((-1.0, 1.0))
    return values


def single_step(length: int = 2000, *, step_size: float = DEFAULT_STEP_SIZE, seed: int = 0) -> Fixture:
    """Unit Gaussian noise plus one step of ±``step_size`` at a random index in
    [a, length − a), a = max(150, length/4) (the middle half of a long series)."""
    _check_length(length, 400)
    rng = _rng("single_step", seed)
    margin = max(150, length // 4)
    step = int(rng.integers(margin, length - margin))
    return _fixture(_planted(length, [step], step_size, rng), [step], "single_step", seed)


def multi_step(
    length: int = 2000, *, n_steps: int = 5, step_size: float = DEFAULT_STEP_SIZE, min_gap: int = 50, seed: int = 0
) -> Fixture:
    """Unit Gaussian noise plus ``n_steps`` steps of ±``step_size`` (independent random signs).

    The steps lie in [a, length − a), a = max(150, length/10), one in each of ``n_steps`` equal
    slots, at least ``min_gap`` samples apart. ValueError if they do not fit.
    """
    lo = max(150, length // 10)
    hi = length - lo
    slot = (hi - lo) / max(n_steps, 1)
    if n_steps < 1 or slot < min_gap:
        raise ValueError(f"{n_steps} steps {min_gap} apart do not fit in length {length}")
    rng = _rng("multi_step", seed)
    jitter = rng.uniform(-(slot - min_gap) / 2, (slot - min_gap) / 2, n_steps)
    steps = [int(lo + slot * (i + 0.5) + jitter[i]) for i in range(n_steps)]
    return _fixture(_planted(length, steps, step_size, rng), steps, "multi_step", seed)


def gaussian_noise(length: int = 2000, *, seed: int = 0) -> Fixture:
    """Null: white Gaussian noise, σ = 1."""
    _check_length(length, 1)
    return _fixture(_rng("gaussian_noise", seed).standard_normal(length), (), "gaussian_noise", seed)


def slow_drift(length: int = 2000, *, slope: float = 0.05, seed: int = 0) -> Fixture:
    """Null: a linear ramp rising ``slope`` noise σ per sample, plus unit Gaussian noise."""
    _check_length(length, 1)
    values = slope * np.arange(length) + _rng("slow_drift", seed).standard_normal(length)
    return _fixture(values, (), "slow_drift", seed)


def ar1_noise(length: int = 2000, *, phi: float = 0.9, seed: int = 0) -> Fixture:
    """Null: stationary AR(1) noise x_t = φ·x_{t−1} + e_t, scaled to σ = 1 (started stationary)."""
    _check_length(length, 1)
    if not -1 < phi < 1:
        raise ValueError(f"phi must be in (-1, 1), got {phi}")
    rng = _rng("ar1_noise", seed)
    e = rng.standard_normal(length) * math.sqrt(1 - phi * phi)
    values = np.empty(length)
    values[0] = rng.standard_normal()
    for t in range(1, length):
        values[t] = phi * values[t - 1] + e[t]
    return _fixture(values, (), "ar1_noise", seed)


def student_t_noise(length: int = 2000, *, dof: float = 3.0, seed: int = 0) -> Fixture:
    """Null: Student-t noise with ``dof`` > 2 degrees of freedom, scaled to σ = 1."""
    _check_length(length, 1)
    if not dof > 2:
        raise ValueError(f"dof must be > 2 (finite variance), got {dof}")
    values = _rng("student_t_noise", seed).standard_t(dof, length) / math.sqrt(dof / (dof - 2))
    return _fixture(values, (), "student_t_noise", seed)


def standard_fixtures(seeds: Iterable[int] = range(5), length: int = 2000) -> list[Fixture]:
    """The battery: every kind of PLANTED_KINDS + NULL_KINDS (defaults as above) for each seed."""
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds must not be empty")
    makers = (single_step, multi_step, gaussian_noise, slow_drift, ar1_noise, student_t_noise)
    return [make(length, seed=seed) for make in makers for seed in seeds]


# ----------------------------------------------------------------------------------------------
# Harness
# ----------------------------------------------------------------------------------------------


def _match(detected: Sequence[int], steps: Sequence[int], tolerance: int) -> int:
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
        found = _match(detected, fx.steps, tolerance)
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
