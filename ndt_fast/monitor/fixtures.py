"""Deterministic multi-layer training trajectories for validating the alert rules.

A :class:`MonitorFixture` is what a tracker would have recorded for a 3-layer network: per
sample, the loss and each layer's participation ratio, the rows it was measured on and the
layers' widths — with the alerts that should be raised planted at known samples (none for a
null fixture). Every generator is a pure function of its seed.

**The healthy shape** is fitted by eye to a real run of the TDS article's MLP
(784-256-128-10 on MNIST, Adam 1e-3, batches of 64, every 5 steps, 1600 samples; the run's
participation ratio, medians of 80-sample bins): the first hidden layer expands 13.5 → 18.5
within ~80 samples and stays; the second expands 8.3 → 17.5, fast for ~100 samples, then
slowly to the end; the output layer (width 10) sits at 7-7.5 throughout. A short dip in the
first ~20 samples plays the initial collapse. The loss is 2.3 at step 0, ~0.35 over the first
40 samples, 0.15 around sample 100, 0.06 at 300, 0.01 at the end
(0.01 + 0.3·e^(−t/150) + 2·e^(−t/10)). Noise, in log units: 3 % per sample for the metrics
(measured 2-4 %), growing by half over the run; for log(loss) 0.3 while the loss is above 0.1,
growing to 1.0 at a loss of 0.01 (the real run's figures: a small batch loss is that noisy).

================================  ==========================================================
kind                              what
================================  ==========================================================
healthy                           null: the healthy shape, Gaussian noise
healthy_ar1                       null: the healthy shape, AR(1) noise (φ = 0.9), same σ
healthy_heavy_tails               null: the healthy shape, Student-t(3) noise, same σ
noise                             null: no learning — constant levels (loss 2.3), Gaussian noise
drift                             null: slow linear drifts (metrics up 5-40 %, loss down 4.5×
                                  over the run), Gaussian noise
bottleneck_mid_run                planted (bottleneck, layer L2): at a random sample in
                                  [150, 400) L2 drops 4× and stays flat, the loss is thrown back
                                  to 1.0 and falls again (the real run with the 128-unit layer
                                  masked to 2 units behaves so)
bottleneck_from_start             planted (bottleneck, L2): slower learning (loss
                                  0.05 + 2.25·e^(−t/200)); L2 never expands
instability                       planted (instability, L2): from a random sample in
                                  [400, 1200) L2's noise is 4× larger
instability_sign_flips            planted (instability, L2): from a random sample in
                                  [400, 1200) L2 alternates ±2σ around its level
information_flow                  planted (information_flow, L2): L1 expands and saturates as
                                  usual, L2 never expands
================================  ==========================================================

An alert *finds* a planted one when it has the planted rule, is for the planted layer, and
comes at a sample in [onset, deadline] (``Planted``); see ``ndt_fast.monitor.validation``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

__all__ = ["FIXTURE_KINDS", "LAYER_NAMES", "NULL_KINDS", "PLANTED_KINDS", "MonitorFixture", "Planted",
           "make_fixture", "standard_fixtures"]

LAYER_NAMES = ("L1", "L2", "L3")
WIDTHS = (256, 128, 10)
ROWS = 64
LENGTH = 1600
SAMPLING_FREQUENCY = 5  # fixture steps are 5 × the sample index (the article's schedule)
_METRIC_SD = 0.03
_LOSS_SD = (0.3, 1.0)


@dataclass(frozen=True)
class Planted:
    """An alert that should be raised: by ``rule``, for ``layer``, at a sample in [onset, deadline]."""

    rule: str
    layer: str
    onset: int
    deadline: int


@dataclass(frozen=True, eq=False)
class MonitorFixture:
    """``loss`` (n,), ``metric`` (layers, n) participation ratios, ``rows`` (layers,), ``widths``
    (layers,), ``steps`` (n,) int64; ``planted``: the alerts that should come (empty: null)."""

    kind: str
    name: str
    loss: np.ndarray
    metric: np.ndarray
    rows: np.ndarray
    widths: tuple[int, ...]
    steps: np.ndarray
    planted: tuple[Planted, ...]
    layer_names: tuple[str, ...] = LAYER_NAMES

    @property
    def is_null(self) -> bool:
        return not self.planted

    def __len__(self) -> int:
        return len(self.loss)


def _decay(t: np.ndarray, tau: float) -> np.ndarray:
    return 1.0 - np.exp(-t / tau)


def _healthy_levels(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(log metric (3, n), log loss (n,)) of the healthy shape, noise-free."""
    collapse = -0.15 * _decay(t, 3.0) * np.exp(-t / 15.0)
    l1 = math.log(13.5) + 0.32 * _decay(t, 25.0) + collapse
    l2 = math.log(8.3) + 0.35 * _decay(t, 60.0) + 0.4 * _decay(t, 700.0) + collapse
    l3 = math.log(6.96) + 0.08 * _decay(t, 60.0)
    loss = np.log(0.01 + 0.3 * np.exp(-t / 150.0) + 2.0 * np.exp(-t / 10.0))
    return np.stack([l1, l2, l3]), loss


def _noise(rng: np.random.Generator, shape: tuple[int, ...], kind: str) -> np.ndarray:
    """Unit-σ noise along the last axis: "gaussian", "ar1" (φ = 0.9, stationary) or "t3"."""
    if kind == "gaussian":
        return rng.standard_normal(shape)
    if kind == "t3":
        return rng.standard_t(3.0, shape) / math.sqrt(3.0)
    phi = 0.9
    e = rng.standard_normal(shape) * math.sqrt(1 - phi * phi)
    out = np.empty(shape)
    out[..., 0] = rng.standard_normal(shape[:-1])
    for i in range(1, shape[-1]):
        out[..., i] = phi * out[..., i - 1] + e[..., i]
    return out


def _build(kind: str, seed: int, log_metric: np.ndarray, log_loss: np.ndarray, rng: np.random.Generator,
           noise: str = "gaussian", planted: tuple[Planted, ...] = (),
           metric_sd: np.ndarray | None = None) -> MonitorFixture:
    n = log_loss.shape[0]
    t = np.arange(n)
    grow = 1.0 + 0.5 * t / n  # the metrics' noise grows by half over the run
    sd = _METRIC_SD * grow if metric_sd is None else metric_sd
    metric = np.exp(log_metric + sd * _noise(rng, log_metric.shape, noise))
    # A batch loss's log noise grows as the loss gets small (a few hard examples dominate it):
    # 0.3 while the loss is above 0.1, 1.0 at 0.01 (the real run's early and late figures).
    loss_sd = np.clip(_LOSS_SD[0] + 0.3 * np.log(0.1 / np.exp(log_loss)), *_LOSS_SD)
    loss = np.exp(log_loss + loss_sd * _noise(rng, (n,), noise))
    for array in (metric, loss):
        array.setflags(write=False)
    steps = (SAMPLING_FREQUENCY * t).astype(np.int64)
    return MonitorFixture(kind, f"{kind}(seed={seed})", loss, metric, np.full(3, ROWS), WIDTHS, steps, planted)


def _healthy(kind: str, seed: int, rng: np.random.Generator, noise: str) -> MonitorFixture:
    t = np.arange(LENGTH, dtype=float)
    log_metric, log_loss = _healthy_levels(t)
    return _build(kind, seed, log_metric, log_loss, rng, noise)


def _no_learning(kind: str, seed: int, rng: np.random.Generator) -> MonitorFixture:
    log_metric, _ = _healthy_levels(np.zeros(LENGTH))
    return _build(kind, seed, log_metric, np.full(LENGTH, math.log(2.3)), rng)


def _drift(kind: str, seed: int, rng: np.random.Generator) -> MonitorFixture:
    t = np.arange(LENGTH, dtype=float) / LENGTH
    base, _ = _healthy_levels(np.zeros(LENGTH))
    log_metric = base + np.array([[0.3], [0.35], [0.05]]) * t
    return _build(kind, seed, log_metric, math.log(2.3) - 1.5 * t, rng)


def _bottleneck_mid_run(kind: str, seed: int, rng: np.random.Generator) -> MonitorFixture:
    onset = int(rng.integers(150, 400))
    t = np.arange(LENGTH, dtype=float)
    log_metric, log_loss = _healthy_levels(t)
    log_metric[1, onset:] = log_metric[1, onset] - math.log(4.0)
    after = t[onset:] - onset
    log_loss[onset:] = np.log(0.05 + 0.95 * np.exp(-after / 300.0))
    return _build(kind, seed, log_metric, log_loss, rng,
                  planted=(Planted("bottleneck", "L2", onset, onset + 360),))


def _bottleneck_from_start(kind: str, seed: int, rng: np.random.Generator) -> MonitorFixture:
    t = np.arange(LENGTH, dtype=float)
    log_metric, _ = _healthy_levels(t)
    log_metric[1] = log_metric[1, 0]
    log_loss = np.log(0.05 + 2.25 * np.exp(-t / 200.0))
    return _build(kind, seed, log_metric, log_loss, rng, planted=(Planted("bottleneck", "L2", 0, 300),))


def _instability(kind: str, seed: int, rng: np.random.Generator) -> MonitorFixture:
    onset = int(rng.integers(400, 1200))
    t = np.arange(LENGTH, dtype=float)
    log_metric, log_loss = _healthy_levels(t)
    sd = np.broadcast_to(_METRIC_SD * (1.0 + 0.5 * t / LENGTH), log_metric.shape).copy()
    sd[1, onset:] *= 4.0
    return _build(kind, seed, log_metric, log_loss, rng, metric_sd=sd,
                  planted=(Planted("instability", "L2", onset, onset + 60),))


def _sign_flips(kind: str, seed: int, rng: np.random.Generator) -> MonitorFixture:
    onset = int(rng.integers(400, 1200))
    t = np.arange(LENGTH, dtype=float)
    log_metric, log_loss = _healthy_levels(t)
    flips = np.where(np.arange(LENGTH - onset) % 2 == 0, 1.0, -1.0)
    log_metric[1, onset:] += 2.0 * _METRIC_SD * (1.0 + 0.5 * t[onset:] / LENGTH) * flips
    return _build(kind, seed, log_metric, log_loss, rng, planted=(Planted("instability", "L2", onset, onset + 60),))


def _information_flow(kind: str, seed: int, rng: np.random.Generator) -> MonitorFixture:
    t = np.arange(LENGTH, dtype=float)
    log_metric, log_loss = _healthy_levels(t)
    log_metric[1] = log_metric[1, 0]
    return _build(kind, seed, log_metric, log_loss, rng, planted=(Planted("information_flow", "L2", 100, 400),))


_MAKERS: dict[str, Callable[[str, int, np.random.Generator], MonitorFixture]] = {
    "healthy": lambda k, s, r: _healthy(k, s, r, "gaussian"),
    "healthy_ar1": lambda k, s, r: _healthy(k, s, r, "ar1"),
    "healthy_heavy_tails": lambda k, s, r: _healthy(k, s, r, "t3"),
    "noise": _no_learning,
    "drift": _drift,
    "bottleneck_mid_run": _bottleneck_mid_run,
    "bottleneck_from_start": _bottleneck_from_start,
    "instability": _instability,
    "instability_sign_flips": _sign_flips,
    "information_flow": _information_flow,
}
NULL_KINDS = ("healthy", "healthy_ar1", "healthy_heavy_tails", "noise", "drift")
PLANTED_KINDS = ("bottleneck_mid_run", "bottleneck_from_start", "instability", "instability_sign_flips",
                 "information_flow")
FIXTURE_KINDS = NULL_KINDS + PLANTED_KINDS


def make_fixture(kind: str, seed: int = 0) -> MonitorFixture:
    """The fixture of ``kind`` (one of ``FIXTURE_KINDS``) for ``seed`` ≥ 0; each kind draws from
    its own random stream. ValueError for an unknown kind or a negative seed."""
    if kind not in _MAKERS:
        raise ValueError(f"kind must be one of {list(FIXTURE_KINDS)}, got {kind!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    rng = np.random.default_rng([int(seed), FIXTURE_KINDS.index(kind), 19])
    return _MAKERS[kind](kind, int(seed), rng)


def standard_fixtures(seeds: Iterable[int] = range(20), kinds: Iterable[str] = FIXTURE_KINDS) -> list[MonitorFixture]:
    """Every kind in ``kinds`` for every seed (kind-major order)."""
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds must not be empty")
    return [make_fixture(kind, seed) for kind in kinds for seed in seeds]
