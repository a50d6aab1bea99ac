"""The harness's fixtures: series with known planted steps (none for the null kinds), seeded
per kind so that seed s of one kind is independent of seed s of another.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

#: Size of every planted step, in units of the noise standard deviation.
DEFAULT_STEP_SIZE = 5.0

PLANTED_KINDS = ("single_step", "multi_step")
NULL_KINDS = ("gaussian_noise", "slow_drift", "ar1_noise", "student_t_noise")
# Each kind draws from its own stream, so seed s of one kind is independent of seed s of another.
_KIND_STREAM = {kind: code for code, kind in enumerate(PLANTED_KINDS + NULL_KINDS)}


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
