"""The run's written report: jumps.csv, claims.md / claims.json (:func:`write_claims`) and the
one-screen summary printed at the end (:func:`summary`)."""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ndt_fast.experiments.tds.article import CLAIMS_JSON, CLAIMS_MD, DIM_LAYER, RUN_FILE, WEIGHT_METRICS
from ndt_fast.experiments.tds.claims import VERDICTS, ClaimRow, _horizon
from ndt_fast.experiments.tds.statistics import Stat, _count
from ndt_fast.experiments.tds.training import RunData, SeedRun
from ndt_fast.storage.export import json_value


def write_jumps_csv(run: RunData, path: Path) -> None:
    """Every jump of ``run.jumps`` as CSV: space, every, layer, step, z_score, value_before, value_after."""
    rows = [(space, every, name, j.step, j.z_score, j.value_before, j.value_after)
            for (space, every), per_layer in sorted(run.jumps.items())
            for name, found in per_layer.items() for j in found]
    frame = pd.DataFrame(rows, columns=["space", "every", "layer", "step", "z_score", "value_before", "value_after"])
    frame.to_csv(path, index=False)


def markdown_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_claims(rows: Sequence[ClaimRow], context: Mapping[str, Any],
                  appendix: Mapping[str, dict[str, Stat]]) -> str:
    """claims.md: the setup, one table row per claim, how to read it, and every reading."""
    seeds = context["seeds"]
    end = context["horizon"] - 1
    who = f"seed {context.get('seed', 0)}" if seeds == 1 else f"seeds 0–{seeds - 1} (values: mean ± sd over seeds)"
    lines = [
        "# TDS article — claims vs this run",
        "",
        f"Run: {context['steps']} steps, layers sampled every {context['freq']} steps, "
        f"{who}; data: {context['data']}; "
        f"device {context['device']} ({context['threads']} torch threads); torch {context['torch']}, "
        f"ndt_fast {context['ndt_fast']}; {context['date']}.",
        "Setup: MLP 784-256-128-10 with ReLU; MNIST normalized with (0.1307, 0.3081); Adam lr 1e-3, betas "
        "(0.9, 0.999); batches of 64 shuffled each epoch; cross-entropy; FastTracker on the three Linear layers "
        f"(their outputs, before the ReLU) with track_weights={WEIGHT_METRICS}; the gradient norm logged at every "
        "sample.",
        "",
        "Readings (the article does not say which layer or metric each number is; these are the choices made, "
        "the alternatives are in the last table):",
        f"- *Dimensionality* = activation stable rank of {DIM_LAYER}, the middle layer — the layer ndtracker's "
        "own reproduction script uses for Fig. 3 and its guide attributes the 2500/1000 numbers to; the "
        "weight-space claim (C8) is read on the same layer's weight matrix.",
        "- The absolute values 2500 / 500 / 1000 are out of range for every metric ndt computes on a 64-row "
        "batch (C2 says why); C3 and C4 read them as ratios: a collapse to 0.2× the initial value, then 2× back.",
        f"- Claims are measured on steps 0–{end} (the article's run is 8000 steps); *ρ* is Pearson's correlation "
        "of the sampled "
        "rows (what `DataFrame.corr()` gives on ndtracker's results), Spearman's shown beside it.",
        "- Jumps: ndt's offline rule, `FastTracker.detect_jumps(metric=…)` — abs(z) > 3 against the mean and sd of "
        "the 50 previous samples, from the 21st sample on; `Jump.step` is the training step. The every-50 series "
        "is the every-5 series subsampled at `step % 50 == 0`, run through the same rule. z > 3 is the tracker's "
        "default `jump_z_threshold`; ndtracker's own reproduction script calls `detect_jumps(..., threshold_z=2.0)`, "
        "an argument ndtracker 2.0.0's `detect_jumps` does not take (it raises TypeError), so which threshold the "
        "article's counts used is not known.",
        "- Verdict: *reproduced* / *not reproduced* by the stated tolerance rule"
        + (" applied to the means over seeds (k/N: seeds that reproduce it alone)" if seeds > 1 else "")
        + "; *not measurable as stated* with the reason.",
        "",
        "| # | Article's claim | How measured | Measured | Verdict | Tolerance rule |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        verdict = f"**{row.verdict}**"
        if row.seeds_reproduced is not None:
            verdict += f" ({row.seeds_reproduced}/{row.seeds} seeds)"
        if row.reason:
            verdict += f" — {row.reason}"
        cells = (row.claim.id, row.claim.text, row.claim.method.format(end=end), row.measured, verdict,
                 row.claim.rule.format(end=end))
        lines.append("| " + " | ".join(markdown_cell(c) for c in cells) + " |")
    counts = {v: sum(r.verdict == v for r in rows) for v in VERDICTS}
    lines += ["", "Totals: " + ", ".join(f"{n} {v}" for v, n in counts.items()) + ".", ""]
    lines += [
        "## Every reading",
        "",
        f"Each layer × metric over steps 0–{end} (sampled every {context['freq']} steps): first sample, minimum of "
        "the 5-sample rolling median before step 2000 (and its step), mean over steps 4750–5249, mean over the "
        "last 10 %, Pearson ρ with loss and with gradient norm, ndt-rule jumps. `weight_*` rows are the layer's "
        "weight matrix.",
        "",
        "| layer | metric | first | min (step) | ~5000 | last 10 % | ρ loss | ρ grad | jumps |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, stats in appendix.items():
        layer, metric = key.split("|")
        lines.append(
            f"| {layer} | {metric} | {stats['first'].fmt('.3g')} | {stats['min'].fmt('.3g')} "
            f"({stats['t_min'].fmt('.0f')}) | {stats['l5000'].fmt('.3g')} | {stats['last'].fmt('.3g')} | "
            f"{stats['r_loss'].fmt('+.2f')} | {stats['r_grad'].fmt('+.2f')} | {stats['jumps'].fmt('.0f')} |")
    files = context.get("files")
    if files:
        lines += ["", "Files: " + ", ".join(f"`{f}`" for f in files) + "."]
    return "\n".join(lines) + "\n"


def write_json(path: Path, payload: Mapping[str, Any]) -> None:
    """``payload`` as indented UTF-8 JSON (NaN → null, ±inf → "inf", Stat → its fields)."""
    text = json.dumps(json_value(dict(payload), infinity="inf"), indent=2, ensure_ascii=False, allow_nan=False)
    path.write_text(text + "\n", encoding="utf-8")


def write_claims(out_dir: Path, rows: Sequence[ClaimRow], context: Mapping[str, Any],
                 appendix: Mapping[str, dict[str, Stat]]) -> tuple[Path, Path]:
    """Write claims.md and claims.json into ``out_dir``."""
    md, js = out_dir / CLAIMS_MD, out_dir / CLAIMS_JSON
    end = context["horizon"] - 1
    md.write_text(render_claims(rows, context, appendix), encoding="utf-8")
    write_json(js, {
        "context": dict(context),
        "claims": [{"id": r.claim.id, "claim": r.claim.text, "method": r.claim.method.format(end=end),
                    "rule": r.claim.rule.format(end=end),
                    "measured": r.measured, "verdict": r.verdict, "reason": r.reason,
                    "seeds_reproduced": r.seeds_reproduced, "values": r.values} for r in rows],
        "readings": dict(appendix),
    })
    return md, js


def summary(args: argparse.Namespace, runs: Sequence[SeedRun], rows: Sequence[ClaimRow],
             timings: Mapping[str, float], data: str, files: Sequence[Path]) -> str:
    """The one-screen summary printed at the end (≤ ~25 lines for one seed)."""
    train = sum(r.train_s for r in runs)
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    lines = [
        "",
        f"TDS reproduction: {args.steps} steps x {len(runs)} seed(s), sampled every {args.freq} steps, "
        f"{args.device} ({torch.get_num_threads()} torch threads); data: {data}",
        f"time: {timings['total']:.1f} s (data {timings['data']:.1f} s, training + tracking {train:.1f} s = "
        f"{args.steps * len(runs) / max(train, 1e-9):.0f} steps/s, analysis + files {timings['analysis']:.1f} s); "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
    ]
    for r in runs:
        h = _horizon(r.data)
        last = ", ".join(f"{name.split('_')[0]} {df['stable_rank'].iloc[-1]:.2f}"
                         for name, df in r.data.results.items() if len(df))
        counts = ", ".join(f"{space} every {every}: {_count(found, h):.0f}"
                           for (space, every), found in sorted(r.data.jumps.items()))
        lines.append(f"seed {r.seed}: final loss {r.final_loss:.4f}; last activation stable rank {last}")
        lines.append(f"  jumps (ndt's rule, steps < {h}): {counts}")
        if r.write_error:
            lines.append(f"  WARNING: writing {r.out_dir / RUN_FILE} failed ({r.write_error}); results kept in memory")
    counts = ", ".join(f"{sum(row.verdict == v for row in rows)} {v}" for v in VERDICTS)
    lines.append(f"claims ({args.out / CLAIMS_MD}): {counts}")
    for row in rows:
        verdict = row.verdict + (f" ({row.seeds_reproduced}/{row.seeds})" if row.seeds_reproduced is not None else "")
        line = f"  {row.claim.id:<4}{row.claim.short:<35} {verdict:<25} {row.measured}"
        lines.append(line if len(line) <= 150 else line[:149] + "…")
    names = sorted({str(p.relative_to(args.out)) for p in files})
    lines.append(f"files in {args.out}/: " + (", ".join(names) if len(names) <= 12 else
                                              ", ".join(names[:11]) + f", … ({len(names)} files)"))
    return "\n".join(lines)


