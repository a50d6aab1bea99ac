"""ndt_fast.validity: the harness judges detectors correctly, the default rule passes it and
ndt's own harness, ndt's z=3 rule fails it, and both reference loops do what their docstrings say."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from ndt_fast import validity as V
from ndt_fast.jumps import JumpDetector

ndt_validity = pytest.importorskip("ndt.validity")
ndt_jumps = pytest.importorskip("ndt.core.jump_detector")

BLOCK = 7
DELAY = 2 * BLOCK - 2  # a default-rule detection at c is final once sample c + DELAY arrived


def fresh_seeds(seed: int, count: int) -> list[int]:
    """``count`` battery seeds derived from the test's (printed-on-failure) seed."""
    return [(seed + i) % 2**32 for i in range(count)]


def oracle(fixtures: Sequence[V.Fixture], shift: int = 0, extra: dict[str, int] | None = None) -> V.Detector:
    """A detector that knows the answer: each fixture's planted steps (moved by ``shift``), plus
    ``extra[kind]`` false detections spread over the fixture."""
    answers = {}
    for fx in fixtures:
        wrong = np.linspace(10, len(fx.values) - 10, (extra or {}).get(fx.kind, 0)).astype(int)
        answers[fx.values.tobytes()] = [s + shift for s in fx.steps] + [int(i) for i in wrong]
    return lambda values: answers[np.asarray(values).tobytes()]


# ---------------------------------------------------------------------------------------------
# verdicts on the battery


def test_default_detector_is_valid(seed):
    report = V.validate_detector(V.default_detector(), V.standard_fixtures(fresh_seeds(seed, 4)))
    assert report.valid, report.table()
    assert report.recall >= 0.9 and max(report.fp_per_1000.values()) <= 1.0
    assert set(report.fp_per_1000) == set(V.PLANTED_KINDS + V.NULL_KINDS)


def test_ndt_rule_is_invalid_it_fires_on_noise_and_drift(seed):
    # 4000 samples per kind: on white noise ~19 false positives are expected (|z| > 3 has
    # probability 0.0027, more with σ estimated from 50 samples), and > 4 are needed here
    report = V.validate_detector(V.ndt_detector(), V.standard_fixtures(fresh_seeds(seed, 2), length=2000))
    assert not report.valid and report.verdict == "INVALID"
    assert report.recall >= 0.9  # it finds the steps: what fails is its false positives
    for kind in V.NULL_KINDS:
        assert report.fp_per_1000[kind] > 1.0, report.table()


def test_ndt_harness_calls_the_default_detector_valid():
    # ndt's detector protocol: a callable taking the values (ndt passes an ndarray; a list works
    # too) and returning the step indices. Its battery: a 33σ step, steps of 20/10/30σ, 400
    # samples of white noise, and a drift of 0.08σ per sample.
    ours = V.default_detector()

    def adapter(values: Sequence[float]) -> list[int]:
        return ours(list(values))

    report = ndt_validity.validate_detector(adapter, ndt_validity.standard_battery(), name="ndt_fast default")
    assert report.valid, report.render()
    assert report.mean_recall == 1.0 and report.false_positives_on_null == 0
    # the same harness rejects ndt's own rule
    theirs = ndt_validity.jump_detector_as_callable(ndt_jumps.JumpDetector(z_threshold=3.0))
    assert not ndt_validity.validate_detector(theirs, ndt_validity.standard_battery()).valid


# ---------------------------------------------------------------------------------------------
# the harness can fail


@pytest.fixture(scope="module")
def battery() -> list[V.Fixture]:
    return V.standard_fixtures(range(2), length=2000)


def test_right_answers_are_valid(battery):
    report = V.validate_detector(oracle(battery), battery, name="oracle")
    assert report.valid and report.recall == 1.0
    assert all(r.false_positives == 0 for r in report.results)
    assert "VALID" in report.table() and "| multi_step | 2 | 4000 | 10 | 10 | 1.00 | 0 | 0.00 |" in report.table()


def test_every_index_is_invalid(battery):
    report = V.validate_detector(lambda v: np.arange(len(v)), battery)
    assert report.recall == 1.0 and not report.valid
    assert all(rate > 900 for rate in report.fp_per_1000.values())


def test_nothing_is_invalid(battery):
    report = V.validate_detector(lambda v: [], battery)
    assert report.recall == 0.0 and not report.valid
    assert report.reasons == ["recall 0.00 < 0.9"]


def test_tolerance_is_the_matching_distance(battery):
    assert V.validate_detector(oracle(battery, shift=V.DEFAULT_TOLERANCE), battery).recall == 1.0
    missed = V.validate_detector(oracle(battery, shift=-V.DEFAULT_TOLERANCE - 1), battery)
    assert missed.recall == 0.0 and not missed.valid  # and each misplaced detection is a false positive
    assert sum(r.false_positives for r in missed.results) == missed.planted


@pytest.mark.parametrize("kind", V.NULL_KINDS + V.PLANTED_KINDS)
def test_false_positive_bar_applies_to_every_kind(battery, kind):
    # 2 fixtures of 2000 samples: 4 extra detections = 1.0 / 1000 (passes), 5 = 1.25 (fails)
    assert V.validate_detector(oracle(battery, extra={kind: 2}), battery).valid
    failing = V.validate_detector(oracle(battery, extra={kind: 3}), battery)
    assert not failing.valid and failing.reasons == [f"1.50 FP / 1000 samples on {kind} > 1"]
    assert failing.recall == 1.0


def test_repeated_index_is_a_false_positive(battery):
    def twice(values):
        return [i for i in V.default_detector()(values) for _ in range(2)]

    report = V.validate_detector(twice, battery[:1] + battery[-1:])
    assert report.results[0].found == 1 and report.results[0].false_positives == 1


def test_comparison_table(battery):
    good = V.validate_detector(oracle(battery), battery, name="oracle")
    bad = V.validate_detector(lambda v: [], battery, name="silent")
    table = V.comparison_table(good, bad)
    assert table.splitlines()[0] == "| | oracle | silent |"
    assert "| recall (12 planted steps) | 1.00 | 0.00 |" in table
    assert "| FP / 1000: ar1_noise (null) | 0.00 | 0.00 |" in table
    assert table.endswith("| **verdict** | **VALID** | **INVALID** |")


# ---------------------------------------------------------------------------------------------
# bad input to the harness


@pytest.mark.parametrize("detector", [None, 3, "default", [1, 2]], ids=repr)
def test_non_callable_detector(battery, detector):
    with pytest.raises(TypeError, match="callable"):
        V.validate_detector(detector, battery)


@pytest.mark.parametrize(
    "output, error",
    [
        (lambda n: [n], ValueError),
        (lambda n: [-1], ValueError),
        (lambda n: [0, n + 10], ValueError),
        (lambda n: [1.5], TypeError),
        (lambda n: [10.0], TypeError),
        (lambda n: [(10, 3.2)], TypeError),  # JumpDetector.detect_indices' (index, |z|) pairs
        (lambda n: [True], TypeError),
        (lambda n: ["7"], TypeError),
        (lambda n: None, TypeError),
    ],
    ids=["n", "-1", "n+10", "1.5", "10.0", "pairs", "bool", "str", "None"],
)
def test_detector_with_bad_output(battery, output, error):
    with pytest.raises(error, match=r"on (single_step|multi_step|gaussian_noise)\(seed=0\)"):
        V.validate_detector(lambda v: output(len(v)), battery, name="broken")


def test_battery_needs_planted_and_null_fixtures(battery):
    planted = [f for f in battery if f.steps]
    null = [f for f in battery if not f.steps]
    for fixtures in (planted, null, []):
        with pytest.raises(ValueError, match="one planted and one null"):
            V.validate_detector(lambda v: [], fixtures)
    with pytest.raises(ValueError, match="tolerance"):
        V.validate_detector(lambda v: [], battery, tolerance=-1)


def test_detector_cannot_alter_the_fixtures(battery):
    def vandal(values):
        values[:] = 0.0
        return []

    before = [f.values.copy() for f in battery]
    V.validate_detector(vandal, battery)
    assert all(np.array_equal(b, f.values) for b, f in zip(before, battery))
    with pytest.raises(ValueError):
        battery[0].values[0] = 1.0  # read-only


# ---------------------------------------------------------------------------------------------
# fixtures


def test_fixtures_are_what_they_say(seed):
    fixtures = V.standard_fixtures([seed % 2**31], length=3000)
    assert [f.kind for f in fixtures] == list(V.PLANTED_KINDS + V.NULL_KINDS)
    for fx in fixtures:
        assert fx.values.dtype == np.float64 and fx.values.shape == (3000,)
        assert fx.is_null == (fx.kind in V.NULL_KINDS) and fx.name == f"{fx.kind}(seed={seed % 2**31})"
        if fx.steps:  # each planted step shifts the level by ±5σ (σ = 1)
            bounds = (0, *fx.steps, len(fx.values))
            levels = [np.mean(fx.values[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
            assert np.allclose(np.abs(np.diff(levels)), V.DEFAULT_STEP_SIZE, atol=1.0)
    single, multi = fixtures[0], fixtures[1]
    assert len(single.steps) == 1 and 750 <= single.steps[0] < 2250
    assert len(multi.steps) == 5 and min(np.diff(multi.steps)) >= 50
    assert 300 <= multi.steps[0] and multi.steps[-1] < 2700
    drift = fixtures[3].values
    assert np.polyfit(np.arange(3000), drift, 1)[0] == pytest.approx(0.05, rel=0.02)
    ar1 = fixtures[4].values
    assert np.corrcoef(ar1[1:], ar1[:-1])[0, 1] == pytest.approx(0.9, abs=0.05)


def test_fixtures_are_reproducible_and_independent():
    a, b = V.standard_fixtures([3]), V.standard_fixtures([3])
    assert all(np.array_equal(x.values, y.values) and x.steps == y.steps for x, y in zip(a, b))
    assert not np.array_equal(V.gaussian_noise(seed=3).values, V.gaussian_noise(seed=4).values)
    assert not np.array_equal(V.gaussian_noise(seed=3).values[:100], V.slow_drift(seed=3).values[:100])


@pytest.mark.parametrize(
    "make",
    [
        lambda: V.multi_step(300, n_steps=5),
        lambda: V.multi_step(2000, n_steps=0),
        lambda: V.single_step(399),
        lambda: V.ar1_noise(phi=1.0),
        lambda: V.student_t_noise(dof=2.0),
        lambda: V.gaussian_noise(seed=-1),
        lambda: V.standard_fixtures([]),
    ],
)
def test_bad_fixture_parameters(make):
    with pytest.raises(ValueError):
        make()


# ---------------------------------------------------------------------------------------------
# ndt's rule: the reference loop is JumpDetector


def ndt_series(kind: str, rng: np.random.Generator, n: int) -> np.ndarray:
    if kind == "walk":
        return np.cumsum(rng.standard_normal(n))
    if kind == "steps":
        return np.repeat(rng.normal(0, 3, n // 100 + 1), 100)[:n] + rng.normal(0, 0.5, n)
    if kind == "ints":  # many exact ties and zero-std windows
        return np.repeat(rng.integers(0, 3, n // 30 + 1), 30)[:n].astype(float)
    if kind == "heavy":
        return rng.standard_t(2, n) * 1e3 + 1e6
    raise KeyError(kind)


@pytest.mark.parametrize("kind", ["walk", "steps", "ints", "heavy"])
@pytest.mark.parametrize("settings", [(50, 3.0, 20), (10, 2.0, 5), (3, 1.0, 1)], ids=str)
def test_ndt_rule_indices_equal_jump_detector(kind, settings, rng):
    window, z, min_samples = settings
    values = ndt_series(kind, rng, 2000)
    expected = [i for i, _ in JumpDetector(window, z, min_samples).detect_indices(values)]
    assert V.ndt_rule_indices(values, window, z, min_samples) == expected
    assert len(expected) > 0


def test_ndt_detector_is_jump_detector(rng):
    values = ndt_series("walk", rng, 500)
    assert V.ndt_detector(10, 2.0, 5)(values) == [i for i, _ in JumpDetector(10, 2.0, 5).detect_indices(values)]


def test_ndt_rule_indices_equal_ndt_itself(rng):
    values = list(ndt_series("steps", rng, 3000))
    theirs = [j.step for j in ndt_jumps.JumpDetector().detect_jumps(values)]
    assert V.ndt_rule_indices(values) == theirs and theirs


def test_ndt_rule_nan_poisons_its_window(rng):
    values = rng.standard_normal(600)
    values[[100, 400]] += 50.0  # jumps for any window
    values[300] = np.nan
    found = V.ndt_rule_indices(values)
    assert 100 in found and 400 in found
    assert not [i for i in found if 300 <= i <= 350]  # NaN at 300: windows up to 350 hold it
    assert found == [i for i, _ in JumpDetector().detect_indices(values)]
    values[450] = np.inf  # a jump, then poison; no warning (the suite turns warnings into errors)
    assert [i for i in V.ndt_rule_indices(values) if 450 <= i <= 500] == [450]


# ---------------------------------------------------------------------------------------------
# the default rule


def test_clean_step_found_exactly():
    assert V.default_rule_indices([2.0] * 150 + [7.0] * 100) == [150]
    assert V.default_rule_indices([2.0] * 150 + [-7.0] * 100 + [2.0] * 100) == [150, 250]
    assert V.default_rule_indices([3.25] * 500) == []
    assert V.default_rule_indices(np.arange(500.0)) == []  # a perfect ramp is not a jump


def test_too_short_or_too_early():
    assert V.default_rule_indices([]) == [] and V.default_rule_indices([1.0] * 13) == []
    # 120 samples fill the reference; a step well before that is not seen
    assert V.default_rule_indices([0.0] * 110 + [1.0] * 60) == []
    assert V.default_rule_indices([0.0] * 120 + [1.0] * 60) == [120]


def test_clear_steps_located_exactly(rng):
    # (5σ steps: ~96% exact, ~99.5% within ±1, per the location step; the battery covers them)
    steps = [300, 380, 460, 800]
    for size in (20.0, 1e3):
        values = rng.standard_normal(1200)
        for s in steps:
            values[s:] += size * rng.choice([-1.0, 1.0])
        found = V.default_rule_indices(values)
        assert set(steps) <= set(found), (size, found)


def test_affine_invariance(rng):
    fx = V.multi_step(1500, seed=int(rng.integers(2**31)))
    base = V.default_rule_indices(fx.values)
    assert len(base) >= 4
    for a, b in ((3.0, 0.0), (-1.0, 0.0), (1e-3, 1e6), (1e6, -5.0)):
        assert V.default_rule_indices(a * fx.values + b) == base, (a, b)


def test_non_finite_samples_are_skipped(rng):
    fx = V.multi_step(1500, seed=int(rng.integers(2**31)))
    clean = fx.values
    holes = np.sort(rng.choice(np.arange(1, 1700), 200, replace=False))  # positions in the longer series
    values = np.empty(len(clean) + len(holes))
    mask = np.ones(len(values), dtype=bool)
    mask[holes] = False
    values[mask] = clean
    values[~mask] = rng.choice([np.nan, np.inf, -np.inf], len(holes))
    where = np.flatnonzero(mask)  # where each clean sample went
    expected = [int(where[i]) for i in V.default_rule_indices(clean)]
    assert V.default_rule_indices(values) == expected and len(expected) >= 4
    assert all(np.isfinite(values[i]) for i in expected)
    assert V.default_rule_indices([np.nan] * 300) == []


def test_detections_are_causal_with_a_fixed_delay(rng):
    # The online contract: running on a prefix gives a prefix of the detections, and a detection
    # at d (candidate within d ± 1) is already there once sample d + 1 + DELAY has arrived.
    fx = V.multi_step(1500, seed=int(rng.integers(2**31)))
    values = fx.values + rng.standard_t(3, 1500) * 0.3
    full = V.default_rule_indices(values)
    assert full
    for end in sorted({int(e) for e in rng.integers(80, 1500, 8)} | {f + 2 + DELAY for f in full}):
        part = V.default_rule_indices(values[:end])
        assert part == full[: len(part)], end
        assert all(f in part for f in full if f + 2 + DELAY <= end), end


@pytest.mark.parametrize(
    "kwargs",
    [dict(block=2), dict(window=40), dict(min_reference=0), dict(threshold=0.0), dict(min_scale=0.0)],
    ids=repr,
)
def test_default_rule_bad_parameters(kwargs):
    with pytest.raises(ValueError):
        V.default_rule_indices(np.zeros(300), **kwargs)
    if "min_scale" not in kwargs:
        with pytest.raises(ValueError):
            V.default_detector(**kwargs)


def test_default_rule_bad_values():
    with pytest.raises(ValueError, match="1-D"):
        V.default_rule_indices(np.zeros((10, 10)))
    with pytest.raises(ValueError, match="1-D"):
        V.ndt_rule_indices(np.zeros((10, 10)))
