"""The article's claims (:data:`CLAIMS`): how each is measured on a run, its tolerance rule, and
the verdict over one or several seeds (:func:`evaluate_claims`); :func:`readings`, every layer ×
metric reading behind the choices the claims make."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ndt_fast import validity
from ndt_fast.experiments.tds.article import (
    ARTICLE_EVERY, ARTICLE_STEPS, BATCH_SIZE, DIM_LAYER, LAYER_WIDTHS, LOW_EVERY, NDT_METRICS, SMOOTH_SAMPLES,
    WEIGHT_LAYER)
from ndt_fast.experiments.tds.statistics import (
    Measurement, Stat, _count, _series, _stats, level, pearson, rolling_median, spearman, three_segment_fit)
from ndt_fast.experiments.tds.training import RunData
from ndt_fast.jumps import Jump, JumpDetector

VERDICTS = ("reproduced", "not reproduced", "not measurable as stated")


@dataclass(frozen=True)
class Claim:
    """One claim of the article and how this command checks it.

    ``measure(run)`` → Measurement on one seed; ``judge(means)`` → True (reproduced) / False on
    the values (means over seeds), None when the claim has no verdict but "not measurable";
    ``show(stats)`` → the "Measured" cell. ``needs_steps``: shortest run that covers the claim;
    ``needs_every5``: the claim counts jumps of an every-5 series (needs --freq 1 or 5);
    ``uses``: the values the rule reads (one undefined → "not measurable").
    """

    id: str
    text: str
    method: str
    rule: str
    measure: Callable[[RunData], Measurement]
    judge: Callable[[dict[str, float]], bool] | None
    show: Callable[[dict[str, Stat]], str]
    uses: tuple[str, ...] = ()
    short: str = ""  # the claim in a few words, for the terminal summary
    needs_steps: int = ARTICLE_STEPS
    needs_every5: bool = False


def _horizon(run: RunData) -> int:
    return min(run.steps, ARTICLE_STEPS)


def _dim(run: RunData) -> tuple[np.ndarray, np.ndarray]:
    return _series(run.results[DIM_LAYER], "stable_rank", _horizon(run))


def _collapse(run: RunData) -> dict[str, float]:
    steps, values = _dim(run)
    if len(values) == 0:
        return {"d0": math.nan, "dmin": math.nan, "ratio": math.nan, "t_min": math.nan}
    smooth = rolling_median(values)
    candidates = np.where(steps < 2000, smooth, np.nan)
    if not np.isfinite(candidates).any():
        return {"d0": float(values[0]), "dmin": math.nan, "ratio": math.nan, "t_min": math.nan}
    k = int(np.nanargmin(candidates))
    d0, dmin = float(values[0]), float(smooth[k])
    return {"d0": d0, "dmin": dmin, "ratio": dmin / d0 if d0 > 0 else math.nan, "t_min": float(steps[k])}


def _measure_phases(run: RunData) -> Measurement:
    return Measurement(three_segment_fit(*_dim(run)))


def _measure_absolute(run: RunData) -> Measurement:
    horizon = _horizon(run)
    best, which = -math.inf, 0
    for index, metric in enumerate(NDT_METRICS):
        total = sum(_series(df, metric, horizon)[1] for df in run.results.values())
        if len(total) and np.isfinite(total).any() and np.nanmax(total) > best:
            best, which = float(np.nanmax(total)), index
    bound = float(sum(min(BATCH_SIZE, w) for w in LAYER_WIDTHS))
    return Measurement({"max_sum": best if best > -math.inf else math.nan, "metric": float(which), "bound": bound},
                       reason="ndt's four metrics of a 64-row batch are each ≤ min(64, width) per layer, "
                              f"≤ {bound:.0f} summed over the three layers, so no reading reaches ~2500 "
                              "(the scale-free reading is C3/C4)")


def _measure_collapse(run: RunData) -> Measurement:
    return Measurement(_collapse(run))


def _measure_expansion(run: RunData) -> Measurement:
    steps, values = _dim(run)
    c = _collapse(run)
    at5000 = level(steps, values, 4750, 5250)
    return Measurement({"dmin": c["dmin"], "l5000": at5000,
                        "ratio": at5000 / c["dmin"] if c["dmin"] > 0 else math.nan})


def _measure_correlation(column: str) -> Callable[[RunData], Measurement]:
    def measure(run: RunData) -> Measurement:
        steps, dim = _dim(run)
        other = _series(run.results[DIM_LAYER], column, _horizon(run))[1]
        def smooth(x: np.ndarray) -> np.ndarray:
            return pd.Series(x).rolling(SMOOTH_SAMPLES, center=True, min_periods=1).mean().to_numpy()

        return Measurement({"pearson": pearson(dim, other), "spearman": spearman(dim, other),
                            "pearson_smooth": pearson(smooth(dim), smooth(other)),
                            "n": float(np.sum(np.isfinite(dim) & np.isfinite(other)))})

    return measure


def _measure_rise(run: RunData) -> Measurement:
    steps, values = _dim(run)
    h = _horizon(run)
    return Measurement({"first": level(steps, values, 0, 0.1 * h), "last": level(steps, values, 0.9 * h, h)})


def _measure_weight_range(run: RunData) -> Measurement:
    """Min/max of each layer's weight stable rank over the claim's steps, and of the C8 layer's over
    the second half (where a plateau would be)."""
    h = _horizon(run)
    out: dict[str, float] = {}
    for index, (name, df) in enumerate(run.results.items(), start=1):
        steps, values = _series(df, "weight_stable_rank", h)
        for suffix, keep in (("", np.isfinite(values)), ("_late", np.isfinite(values) & (steps >= h / 2))):
            if name != WEIGHT_LAYER and suffix:
                continue
            key = suffix if name == WEIGHT_LAYER else f"_{index}"
            found = values[keep]
            out[f"min{key}"], out[f"max{key}"] = ((float(found.min()), float(found.max())) if len(found)
                                                  else (math.nan, math.nan))
    return Measurement(out)


def _every5(run: RunData, space: str) -> Mapping[str, list[Jump]] | None:
    return run.jumps.get((space, ARTICLE_EVERY))


def _measure_jump_counts(run: RunData) -> Measurement:
    h = _horizon(run)
    return Measurement({"act": _count(_every5(run, "activation"), h), "weight": _count(_every5(run, "weight"), h)})


def _measure_early_fraction(run: RunData) -> Measurement:
    h = _horizon(run)
    act = _every5(run, "activation")
    total, early = _count(act, h), _count(act, h, before=2000)
    if total == 0:
        return Measurement({"early": early, "total": total, "fraction": math.nan},
                           reason="no activation jumps were found, so the fraction is undefined")
    return Measurement({"early": early, "total": total, "fraction": early / total})


def _measure_frequency(run: RunData) -> Measurement:
    h = _horizon(run)
    high = _count(_every5(run, "activation"), h)
    low = _count(run.jumps.get(("activation", LOW_EVERY)), h)
    ratio = high / low if low > 0 else (math.inf if high > 0 else math.nan)  # NaN: 0/0 or not computed
    return Measurement({"high": high, "low": low, "ratio": ratio})


def _metric_label(stat: Stat) -> str:
    """The metric an index Stat names (seeds agreeing), else "the largest metric varies over seeds"."""
    if math.isnan(stat.mean):
        return "no metric"
    if stat.n > 1 and stat.sd > 0:
        return "which metric varies over seeds;"
    return NDT_METRICS[int(round(stat.mean))].replace("_", " ")


def _show_correlation(s: Mapping[str, Stat]) -> str:
    return (f"ρ = {s['pearson'].fmt('+.3f')} ({s['n'].fmt('.0f')} samples; Spearman {s['spearman'].fmt('+.3f')}, "
            f"smoothed {s['pearson_smooth'].fmt('+.3f')})")


def _within_factor(value: float, target: float, factor: float) -> bool:
    return target / factor <= value <= target * factor


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "C1", "Three phases — collapse, expansion, stabilization — with boundaries near steps 300 and 5000",
        f"{DIM_LAYER} activation stable rank, every sample of steps 0–{{end}}: least-squares fit of three "
        "straight segments with free breakpoints (≥ 3 samples each); boundaries b1, b2 and slopes per 1000 steps",
        "reproduced iff slopes go down, up, flat (s1 < 0 < s2, abs(s3) ≤ abs(s2)/2) and 150 ≤ b1 ≤ 600, "
        "4000 ≤ b2 ≤ 6000",
        _measure_phases,
        lambda m: (m["s1"] < 0 < m["s2"] and abs(m["s3"]) <= 0.5 * abs(m["s2"])
                   and 150 <= m["b1"] <= 600 and 4000 <= m["b2"] <= 6000),
        lambda s: (f"b1 = {s['b1'].fmt('.0f')}, b2 = {s['b2'].fmt('.0f')}; slopes {s['s1'].fmt('+.3g')}, "
                   f"{s['s2'].fmt('+.3g')}, {s['s3'].fmt('+.3g')} per 1000 steps"),
        uses=("b1", "b2", "s1", "s2", "s3"),
        short="three phases, boundaries ~300 / ~5000",
    ),
    Claim(
        "C2", "Phase 1: dimensionality collapses from ~2500 to ~500 (absolute values)",
        "largest value of any of ndt's four metrics (stable rank, participation ratio, cumulative-90, "
        "nuclear-norm ratio) summed over the three layers, over steps 0–{end}",
        "the values themselves: a reading must be able to reach ~2500",
        _measure_absolute, None,
        lambda s: (f"largest: {s['max_sum'].fmt('.1f')} ({_metric_label(s['metric'])} summed over layers); "
                   f"bound {s['bound'].fmt('.0f')}"),
        needs_steps=0,
        short="collapse ~2500 → ~500 (absolute)",
    ),
    Claim(
        "C3", "Collapse, scale-free reading: dimensionality falls to ~20 % of its initial value (2500 → 500) "
              "by ~step 300",
        f"{DIM_LAYER} activation stable rank: first sample (step 0) vs the minimum of its 5-sample rolling "
        "median over steps 0–1999, and the step of that minimum",
        "reproduced iff min/initial is within a factor 1.5 of 0.2 (0.133–0.30) and the minimum is at step 150–600",
        _measure_collapse,
        lambda m: _within_factor(m["ratio"], 0.2, 1.5) and 150 <= m["t_min"] <= 600,
        lambda s: (f"{s['d0'].fmt('.2f')} → {s['dmin'].fmt('.2f')} (ratio {s['ratio'].fmt('.2f')}) "
                   f"at step {s['t_min'].fmt('.0f')}"),
        needs_steps=2000,
        uses=("ratio", "t_min"),
        short="collapse to ~20 % by ~step 300",
    ),
    Claim(
        "C4", "Phase 2: dimensionality expands to ~1000 by step ~5000, i.e. ~2× its collapsed value (500 → 1000)",
        f"{DIM_LAYER} activation stable rank: mean over steps 4750–5249 divided by the C3 minimum",
        "reproduced iff the ratio is within a factor 1.5 of 2 (1.33–3.0)",
        _measure_expansion,
        lambda m: _within_factor(m["ratio"], 2.0, 1.5),
        lambda s: f"{s['dmin'].fmt('.2f')} → {s['l5000'].fmt('.2f')} (×{s['ratio'].fmt('.2f')})",
        needs_steps=5250,
        uses=("ratio",),
        short="expansion to ~2× by ~step 5000",
    ),
    Claim(
        "C5", "ρ(dimensionality, loss) = −0.951",
        f"Pearson correlation of {DIM_LAYER} activation stable rank with the batch loss over all samples of "
        "steps 0–{end} (Spearman's, and Pearson's of 50-sample centred rolling means, shown too)",
        "reproduced iff Pearson ρ is within ±0.10 of −0.951",
        _measure_correlation("loss"),
        lambda m: abs(m["pearson"] - (-0.951)) <= 0.10,
        _show_correlation,
        uses=("pearson",),
        short="ρ(dim, loss) = −0.951",
    ),
    Claim(
        "C6", "ρ(dimensionality, gradient norm) = −0.701",
        f"Pearson correlation of {DIM_LAYER} activation stable rank with the L2 norm of all gradients "
        "(before the Adam step) over all samples of steps 0–{end} (Spearman's, and Pearson's of 50-sample centred "
        "rolling means, shown too)",
        "reproduced iff Pearson ρ is within ±0.10 of −0.701",
        _measure_correlation("grad_norm"),
        lambda m: abs(m["pearson"] - (-0.701)) <= 0.10,
        _show_correlation,
        uses=("pearson",),
        short="ρ(dim, grad norm) = −0.701",
    ),
    Claim(
        "C7", "Stable rank rises from 9.0 to 9.6 as the loss falls (Fig. 3)",
        f"{DIM_LAYER} activation stable rank: mean over the first and the last 10 % of steps 0–{{end}}",
        "reproduced iff both means are within ±0.3 of 9.0 and 9.6",
        _measure_rise,
        lambda m: abs(m["first"] - 9.0) <= 0.3 and abs(m["last"] - 9.6) <= 0.3,
        lambda s: f"{s['first'].fmt('.2f')} → {s['last'].fmt('.2f')}",
        uses=("first", "last"),
        short="stable rank 9.0 → 9.6",
    ),
    Claim(
        "C8", "Weight-space stable rank nearly constant at 9.72–9.79 (Fig. 5)",
        f"stable rank of the {WEIGHT_LAYER} weight matrix (128×256; the layer read as 'dimensionality', so "
        "activation and weight space are compared on one layer): min and max over every sample of steps 0–{end} "
        "(and over its second half); the other layers' ranges beside it",
        "reproduced iff min ≥ 9.62 and max ≤ 9.89 over steps 0–{end} (the claimed range widened by 0.1 each "
        "side)",
        _measure_weight_range,
        lambda m: m["min"] >= 9.62 and m["max"] <= 9.89,
        lambda s: (f"min {s['min'].fmt('.2f')}, max {s['max'].fmt('.2f')} (second half: {s['min_late'].fmt('.2f')} "
                   f"to {s['max_late'].fmt('.2f')}); Layer1 {s['min_1'].fmt('.1f')} to {s['max_1'].fmt('.1f')}, "
                   f"Layer3 {s['min_3'].fmt('.2f')} to {s['max_3'].fmt('.2f')}"),
        uses=("min", "max"),
        short="weight stable rank 9.72–9.79",
    ),
    Claim(
        "C9", "~85 jumps in activation space vs 1 in weight space",
        "ndt's rule (FastTracker.detect_jumps: abs(z) > 3 vs the 50 previous samples) on the activation stable rank "
        "and on the weight stable rank of the three layers, sampled every 5 steps, jumps at steps 0–{end}, summed "
        "over layers",
        "reproduced iff activation jumps are within a factor 1.5 of 85 (57–127) and weight jumps ≤ 3",
        _measure_jump_counts,
        lambda m: _within_factor(m["act"], 85, 1.5) and m["weight"] <= 3,
        lambda s: f"activation {s['act'].fmt('.0f')}, weight {s['weight'].fmt('.0f')}",
        needs_every5=True,
        uses=("act", "weight"),
        short="~85 activation vs 1 weight jumps",
    ),
    Claim(
        "C10", "Two thirds of the jumps occur in the first 2000 steps (25 % of training)",
        "share of the C9 activation jumps at steps < 2000",
        "reproduced iff the share is within ±0.10 of 0.667",
        _measure_early_fraction,
        lambda m: abs(m["fraction"] - 2 / 3) <= 0.10,
        lambda s: f"{s['fraction'].fmt('.2f')} ({s['early'].fmt('.0f')} of {s['total'].fmt('.0f')})",
        needs_every5=True,
        uses=("fraction",),
        short="2/3 of the jumps before step 2000",
    ),
    Claim(
        "C11", "Sampling every 5 steps finds many more jumps than sampling every 50 (Fig. 4)",
        "C9's activation jumps (every 5) vs the same rule on the every-5 series subsampled at step % 50 == 0, "
        "steps 0–{end}, summed over layers",
        "'many more' read as ≥ 3× and ≥ 10 more: reproduced iff every-5 ≥ 3 × every-50 and "
        "every-5 − every-50 ≥ 10",
        _measure_frequency,
        lambda m: m["high"] >= 3 * m["low"] and m["high"] - m["low"] >= 10,
        lambda s: f"every 5: {s['high'].fmt('.0f')}, every 50: {s['low'].fmt('.0f')} (×{s['ratio'].fmt('.1f')})",
        needs_every5=True,
        uses=("high", "low"),
        short="more jumps every 5 than every 50",
    ),
)



@dataclass
class ClaimRow:
    """One row of claims.md: the claim, how measured, the measured cell, the verdict and why."""

    claim: Claim
    measured: str
    verdict: str
    reason: str | None
    values: dict[str, Stat] = field(default_factory=dict)
    seeds_reproduced: int | None = None  # per-seed verdicts that were "reproduced" (seeds > 1)
    seeds: int = 1



def _unmeasurable(claim: Claim, run: RunData) -> str | None:
    """Why ``claim`` cannot be checked on ``run`` as stated (its run length or sampling), or None."""
    if run.steps < claim.needs_steps:
        return (f"the claim covers steps 0–{claim.needs_steps - 1}; this run trained {run.steps} steps "
                f"(run --steps {max(claim.needs_steps, ARTICLE_STEPS)})")
    if claim.needs_every5 and ("activation", ARTICLE_EVERY) not in run.jumps:
        return (f"the claim counts jumps in a series sampled every {ARTICLE_EVERY} steps; this run sampled every "
                f"{run.freq} (run --freq 1 or 5)")
    return None


def _judge(claim: Claim, values: Mapping[str, float]) -> str | None:
    """Verdict of ``claim``'s rule on ``values``; None when a value the rule reads is undefined (NaN)."""
    assert claim.judge is not None
    if any(math.isnan(values.get(key, math.nan)) for key in claim.uses):
        return None
    return VERDICTS[0] if claim.judge(values) else VERDICTS[1]


def evaluate_claims(runs: Sequence[RunData]) -> list[ClaimRow]:
    """Measure every claim of :data:`CLAIMS` on each seed's run and give each a verdict.

    One seed: the verdict is the rule applied to that seed's values. Several: the rule applied to
    the means over seeds, with the number of seeds that reproduce it on their own. A claim whose
    run length or sampling does not cover it, or whose values are undefined, is "not measurable as
    stated" with the reason.
    """
    rows = []
    for claim in CLAIMS:
        reason = _unmeasurable(claim, runs[0])
        all_measurements = [claim.measure(run) for run in runs]
        # A seed whose value is not measurable (e.g. a share of zero jumps) is left out like a
        # seed with an undefined value; the claim is "not measurable" only if no seed is left.
        measurements = [m for m in all_measurements if not m.reason] or all_measurements
        stats = _stats(measurements, seeds=len(runs))
        measured = claim.show(stats)  # shown even when the run does not cover the claim
        if reason is None and measurements is all_measurements:
            reason = next((m.reason for m in measurements if m.reason), None)
        if reason is not None or claim.judge is None:
            rows.append(ClaimRow(claim, measured, VERDICTS[2], reason or "no rule", stats, None, len(runs)))
            continue
        means = {k: s.mean for k, s in stats.items()}
        verdict = _judge(claim, means)
        per_seed = [_judge(claim, m.values) for m in measurements]
        if verdict is None:
            rows.append(ClaimRow(claim, measured, VERDICTS[2], "a value the rule needs is undefined on this run "
                                 "(a constant series or no samples in a window)", stats, None, len(runs)))
            continue
        rows.append(ClaimRow(claim, measured, verdict, None, stats,
                             sum(v == VERDICTS[0] for v in per_seed) if len(runs) > 1 else None, len(runs)))
    return rows



# ---- every reading: the numbers behind the choices ----------------------------------------------------------

APPENDIX_METRICS = ("stable_rank", "participation_ratio", "cumulative_90", "nuclear_norm_ratio",
                    "participation_ratio_eig", "effective_rank", "weight_stable_rank", "weight_participation_ratio_eig")


APPENDIX_METRICS = ("stable_rank", "participation_ratio", "cumulative_90", "nuclear_norm_ratio",
                    "participation_ratio_eig", "effective_rank", "weight_stable_rank", "weight_participation_ratio_eig")


def readings(run: RunData, detector: JumpDetector) -> dict[str, dict[str, float]]:
    """For every layer × metric of :data:`APPENDIX_METRICS` (key ``"layer|metric"``): first
    sample, minimum of the 5-sample rolling median over steps < 2000 and its step, mean over
    4750–5249, mean over the last 10 %, Pearson with loss and with gradient norm, ndt-rule jumps
    (run's sampling) — steps < 8000. Lets a reader try readings other than the ones CLAIMS uses."""
    h = _horizon(run)
    out = {}
    for name, df in run.results.items():
        loss = _series(df, "loss", h)[1]
        grad = _series(df, "grad_norm", h)[1]
        for metric in APPENDIX_METRICS:
            if metric not in df.columns:
                continue
            steps, values = _series(df, metric, h)
            row = dict.fromkeys(("first", "min", "t_min", "l5000", "last", "r_loss", "r_grad", "jumps"), math.nan)
            if len(values) and np.isfinite(values).any():
                smooth = np.where((steps < 2000) & np.isfinite(values), rolling_median(values), np.inf)
                k = int(np.argmin(smooth))
                row.update(first=float(values[0]), min=float(smooth[k]) if np.isfinite(smooth[k]) else math.nan,
                           t_min=float(steps[k]), l5000=level(steps, values, 4750, 5250),
                           last=level(steps, values, 0.9 * h, h), r_loss=pearson(values, loss),
                           r_grad=pearson(values, grad),
                           jumps=float(len(validity.ndt_rule_indices(values, detector.window_size, detector.z_threshold,
                                                                     detector.min_samples))))
            out[f"{name}|{metric}"] = row
    return out



def _aggregate_readings(per_seed: Sequence[dict[str, dict[str, float]]]) -> dict[str, dict[str, Stat]]:
    return {key: _stats([Measurement(r[key]) for r in per_seed if key in r]) for key in per_seed[0]}

