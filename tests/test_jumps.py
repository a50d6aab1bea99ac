"""ndt_fast.JumpDetector reproduces ndtracker's JumpDetector exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest

import ndt_fast

ndt_jumps = pytest.importorskip("ndt.core.jump_detector")

#: (window_size, z_threshold, min_samples): ndt's defaults and a spread around them
SETTINGS = [(50, 3.0, 20), (10, 2.0, 5), (5, 1.5, 1), (2, 0.5, 1), (100, 2.5, 30), (3, 10.0, 2)]
SERIES = ["random_walk", "step", "noisy_step", "spikes", "constant", "constant_then_jump", "short", "ints"]


def make_series(kind: str, rng: np.random.Generator) -> list:
    if kind == "random_walk":
        return list(np.cumsum(rng.standard_normal(150)))
    if kind == "step":
        return [1.0] * 40 + [5.0] * 40 + [2.0] * 30
    if kind == "noisy_step":
        v = rng.normal(10.0, 0.1, 120)
        v[60:] += rng.uniform(1.0, 3.0)
        return list(v)
    if kind == "spikes":
        v = rng.normal(0.0, 1.0, 100)
        v[rng.choice(100, 5, replace=False)] += rng.choice([-8.0, 8.0], 5)
        return list(v)
    if kind == "constant":  # std < 1e-10 everywhere: every index skipped
        return [3.25] * 80
    if kind == "constant_then_jump":  # the first jump sees a zero-std window: skipped, later ones not
        return [2.0] * 30 + [7.0] + [2.0] * 20 + list(rng.normal(2.0, 0.5, 20))
    if kind == "short":
        return list(rng.standard_normal(int(rng.integers(0, 20))))
    if kind == "ints":
        return [int(v) for v in rng.integers(0, 10, 90)]
    raise KeyError(kind)


def assert_same_jumps(ours, theirs, context: str) -> None:
    assert len(ours) == len(theirs), f"{context}: {ours} vs {theirs}"
    for o, t in zip(ours, theirs):
        assert isinstance(o, ndt_fast.Jump)
        assert o.step == t.step, context
        assert math.isclose(o.z_score, float(t.z_score), rel_tol=1e-12, abs_tol=0.0), context
        assert o.value_before == t.value_before and o.value_after == t.value_after, context
        assert o.metric_name == t.metric_name, context
        assert repr(o) == repr(t), context


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: "w{}-z{}-m{}".format(*s))
@pytest.mark.parametrize("kind", SERIES)
def test_detect_jumps_matches_ndt(kind, settings, rng, seed):
    window, threshold, min_samples = settings
    values = make_series(kind, rng)
    ours = ndt_fast.JumpDetector(window_size=window, z_threshold=threshold, min_samples=min_samples)
    theirs = ndt_jumps.JumpDetector(window_size=window, z_threshold=threshold, min_samples=min_samples)
    context = f"{kind} {settings} seed={seed}"
    for offset in (0, 7):
        got = ours.detect_jumps(values, metric_name="sr", step_offset=offset)
        assert_same_jumps(got, theirs.detect_jumps(values, metric_name="sr", step_offset=offset), context)
        for direction in (None, "up", "down"):
            assert_same_jumps(
                ours.detect_jumps_with_direction(values, "pr", offset, direction),
                theirs.detect_jumps_with_direction(values, "pr", offset, direction),
                f"{context} direction={direction}",
            )
    # numpy input gives the same answer as a list
    assert_same_jumps(ours.detect_jumps(np.asarray(values, dtype=np.float64), "sr"),
                      theirs.detect_jumps(values, "sr"), context)
    if kind == "constant" or len(values) <= min_samples:
        assert ours.detect_jumps(values) == []


def test_detections_are_not_vacuous():
    """The comparison above covers series where ndt does detect jumps."""
    step = [1.0] * 40 + [5.0] * 40 + [2.0] * 30
    theirs = ndt_jumps.JumpDetector().detect_jumps(step)
    ours = ndt_fast.JumpDetector().detect_jumps(step)
    # index 40 sees a zero-std window (skipped); the windows right after it, holding one or a few
    # 5.0s among forty 1.0s, flag the next values until the z-score falls under 3
    assert [j.step for j in ours] == [j.step for j in theirs] == [41, 42, 43, 44]
    assert ndt_fast.JumpDetector().detect_jumps([3.25] * 80) == []
    assert ndt_fast.JumpDetector().detect_jumps(list(range(19))) == []


def test_direction_filtering():
    values = [0.0, 1.0] * 15 + [10.0] + [0.0, 1.0] * 10 + [-10.0] + [0.0, 1.0] * 5
    det = ndt_fast.JumpDetector(window_size=20, z_threshold=3.0, min_samples=10)
    up = det.detect_jumps_with_direction(values, direction="up")
    down = det.detect_jumps_with_direction(values, direction="down")
    assert [j.step for j in up] == [30]
    assert 51 in [j.step for j in down]
    assert all(j.value_after < j.value_before for j in down)
    assert sorted(j.step for j in det.detect_jumps(values)) == sorted(j.step for j in up + down)


@pytest.mark.parametrize(
    "kwargs",
    [dict(window_size=1), dict(window_size=0), dict(window_size=-3), dict(z_threshold=0.0),
     dict(z_threshold=-1.0), dict(min_samples=0), dict(min_samples=-2)],
    ids=repr,
)
def test_bad_constructor_arguments_raise_like_ndt(kwargs):
    with pytest.raises(ValueError):
        ndt_jumps.JumpDetector(**kwargs)
    with pytest.raises(ValueError):
        ndt_fast.JumpDetector(**kwargs)


def test_bad_direction_raises_like_ndt():
    values = [1.0] * 30
    with pytest.raises(ValueError):
        ndt_jumps.JumpDetector().detect_jumps_with_direction(values, direction="sideways")
    with pytest.raises(ValueError):
        ndt_fast.JumpDetector().detect_jumps_with_direction(values, direction="sideways")
