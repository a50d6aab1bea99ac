"""``ndt-fast experiment architectures``: do early dimensionality dynamics rank architectures as
their final test accuracy does?

    ndt-fast experiment architectures [--steps 8000] [--freq 5] [--seeds 3] [--out DIR] …

The TDS article's deployment section says early expansion dynamics help choose architectures;
ndtracker's reproduction guide ("Extending the experiment") asks for wider and deeper variants.
This command trains three MLPs with the article's set-up (MNIST normalized, Adam lr 1e-3, batches
of 64, the same seeds, so the same batches; every Linear layer's output tracked every FREQ
steps, weights too): the article's 784-256-128-10, the guide's wide 784-512-256-10 and deep
784-256-256-128-10. Per architecture and seed it reads, on the last hidden layer's activation
stable rank (the layer the TDS reproduction calls "dimensionality": Layer2 of the article's MLP),
the collapse minimum, the expansion ratio, the phase boundaries, the jump count
(:func:`ndt_fast.experiments.comparison.dynamics`) and the final accuracy on MNIST's **test**
split. The claim is tested per seed as Spearman's ρ between the architectures' early expansion
(over the first 10 % of the steps) and their test accuracy, reported as mean ± sd over seeds with
a verdict by the rule in :data:`RULE`.

Writes into OUT: ``<architecture>/seed<k>/`` (run.h5, results.csv, jumps.csv), ``architectures.csv``
(one row per architecture × seed), ``fig_architectures.png``, ``claims.md`` and ``claims.json``.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from ndt_fast.experiments import comparison
from ndt_fast.experiments.tds.article import CLAIMS_JSON, CLAIMS_MD, JUMPS_CSV, RESULTS_CSV, RUN_FILE
from ndt_fast.experiments.tds.cli import add_training_arguments, command_main, validate_training_args
from ndt_fast.experiments.tds.report import write_json
from ndt_fast.experiments.tds.statistics import Measurement, Stat, _stats, spearman
from ndt_fast.experiments.tds.training import SeedRun
from ndt_fast.plots import new_figure

#: name → layer widths (input first). The article's MLP and ndtracker's guide's two variants.
ARCHITECTURES = {"article": (784, 256, 128, 10), "wide": (784, 512, 256, 10), "deep": (784, 256, 256, 128, 10)}
RUNS_CSV, FIGURE = "architectures.csv", "fig_architectures.png"
#: Every file the command writes into OUT itself (each run's files are in OUT/<arch>/seed<k>/).
OUT_FILES = (RUNS_CSV, FIGURE, CLAIMS_MD, CLAIMS_JSON)
RUN_FILES = (RUN_FILE, RESULTS_CSV, JUMPS_CSV)
#: The tolerance rule of the claim, as printed in claims.md.
RULE = ("reproduced iff the mean over seeds of Spearman's ρ(early expansion, test accuracy) across the "
        "architectures is ≥ 0.5 (with three architectures ρ is −1, −0.5, 0.5 or 1: at most one pair in the "
        "wrong order, on average); not measurable when ρ is undefined on every seed (tied values)")
COLUMNS = ("test_accuracy", "first", "collapse_min", "expansion", "early_expansion", "b1", "b2", "jumps")

SUMMARY = ("Compare the article's MLP with a wider and a deeper one (MNIST, the TDS set-up): dimensionality "
           "dynamics, test accuracy, and whether early dynamics rank them as test accuracy does.")
EPILOG = ("Writes into OUT: <architecture>/seed<k>/ (run.h5, results.csv, jumps.csv), architectures.csv, "
          "fig_architectures.png, claims.md and claims.json.")


class MLP(nn.Module):
    """``(batch, 784)`` float → Linear → ReLU → … → Linear → logits ``(batch, widths[-1])``, with
    PyTorch's default initialization; ``widths`` = (784, hidden…, 10). The Linear layers are the
    tracked modules (their outputs, before the ReLU, as in the TDS reproduction)."""

    def __init__(self, widths: Sequence[int]) -> None:
        super().__init__()
        if len(widths) < 2 or any(w < 1 for w in widths):
            raise ValueError(f"widths must be ≥ 2 positive layer sizes, got {tuple(widths)}")
        self.linears = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for index, linear in enumerate(self.linears):
            x = linear(x)
            if index < len(self.linears) - 1:
                x = torch.relu(x)
        return x

    def tracked_layers(self) -> list[nn.Module]:
        return list(self.linears)


def layer_names(widths: Sequence[int]) -> list[str]:
    """``Layer<i>_<in>-<out>``, as the TDS reproduction names the article's layers."""
    return [f"Layer{i}_{a}-{b}" for i, (a, b) in enumerate(zip(widths[:-1], widths[1:]), start=1)]


def dimensionality_layer(widths: Sequence[int]) -> str:
    """The last hidden layer (the one before the logits): the article's Layer2_256-128."""
    return layer_names(widths)[-2]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_training_arguments(parser, out="architectures", seeds=3)


def _run_dirs(out: Path, seeds: int) -> list[Path]:
    return [d for name in ARCHITECTURES for d in comparison.per_seed_dirs(out, name, seeds)]


def validate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """``parser.error`` (exit status 2) on a bad --device or --out, or an earlier run in OUT."""
    earlier = [args.out / name for name in OUT_FILES] + [d / RUN_FILE for d in _run_dirs(args.out, args.seeds)]
    validate_training_args(args, parser, earlier)


def rank_agreement(table: pd.DataFrame) -> pd.DataFrame:
    """Per seed, Spearman's ρ between the architectures' early expansion and test accuracy."""
    rows = [(seed, spearman(rows["early_expansion"].to_numpy(), rows["test_accuracy"].to_numpy()))
            for seed, rows in table.groupby("seed")]
    return pd.DataFrame(rows, columns=["seed", "rho"])


def verdict(rho: Stat) -> tuple[str, str | None]:
    """The claim's verdict by :data:`RULE` on ρ over seeds, and the reason when not measurable."""
    if math.isnan(rho.mean):
        return comparison.VERDICTS[2], "ρ is undefined on every seed (tied early expansion or test accuracy)"
    return (comparison.VERDICTS[0] if rho.mean >= 0.5 else comparison.VERDICTS[1]), None


def write_figure(runs: dict[str, list[SeedRun]], stats: dict[str, dict[str, Stat]], path: Path) -> Path:
    """Three panels: seed 0's last-hidden-layer activation stable rank per architecture (the early
    window shaded), early expansion and test accuracy per architecture (mean ± sd over seeds)."""
    fig = new_figure((15, 4.8))
    left, middle, right = fig.subplots(1, 3, gridspec_kw={"width_ratios": [2.2, 1, 1]})
    names = list(runs)
    for name in names:
        run = runs[name][0]
        df = run.data.results[dimensionality_layer(ARCHITECTURES[name])]
        left.plot(df["step"], df["stable_rank"], linewidth=1, label=f"{name} ({dimensionality_layer(ARCHITECTURES[name])})")
    steps = runs[names[0]][0].data.steps
    left.axvspan(0, comparison.EARLY_SHARE * steps, color="grey", alpha=0.15, label="early window (first 10 %)")
    left.set_xlabel("training step")
    left.set_ylabel("activation stable rank, last hidden layer")
    left.set_title("seed 0")
    left.legend(fontsize=8)
    for ax, column, label in ((middle, "early_expansion", "early expansion (×)"),
                              (right, "test_accuracy", "test accuracy")):
        means = [stats[n][column].mean for n in names]
        sds = [0.0 if math.isnan(stats[n][column].sd) else stats[n][column].sd for n in names]
        ax.bar(names, means, yerr=sds, color=["C0", "C1", "C2"][:len(names)], capsize=4)
        finite = [m for m in means if math.isfinite(m)]
        if column == "test_accuracy" and finite:
            ax.set_ylim(max(0.0, min(finite) - 0.05), min(1.0, max(finite) + 0.02))
        ax.set_title(f"{label}, mean ± sd over seeds")
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle("Architectures — does early expansion rank them as test accuracy does?", fontweight="bold")
    fig.savefig(path, dpi=100)
    return path


def render(stats: dict[str, dict[str, Stat]], rho: Stat, per_seed: pd.DataFrame, verdict_: tuple[str, str | None],
           ctx: dict[str, Any]) -> str:
    """claims.md: the set-up, the claim's row, and every architecture's readings."""
    seeds = ctx["seeds"]
    rho_cells = ", ".join(f"seed {int(s)}: {r:+.2f}" if math.isfinite(r) else f"seed {int(s)}: undefined"
                          for s, r in per_seed.itertuples(index=False, name=None))
    text, reason = verdict_
    lines = [
        "# Architectures — early dynamics vs final test accuracy",
        "",
        f"Run: {ctx['steps']} steps per architecture × seeds 0–{seeds - 1}, layers sampled every {ctx['freq']} "
        f"steps; data: {ctx['data']}; device {ctx['device']} ({ctx['threads']} torch threads); torch "
        f"{ctx['torch']}, ndt_fast {ctx['ndt_fast']}; {ctx['date']}.",
        "Set-up: the TDS article's (Adam lr 1e-3, batches of 64, the same seeds and batches for every "
        "architecture); " + "; ".join(f"*{n}* {'-'.join(map(str, w))}" for n, w in ARCHITECTURES.items()) + ".",
        "Readings, on the last hidden layer's activation stable rank (the article's MLP: Layer2_256-128): "
        "*early expansion* = mean over steps [8 %, 10 %) of the run / minimum of the 5-sample rolling median over "
        "the first 10 %; *expansion* = mean over the last 10 % / minimum over the first 25 %; *b1*, *b2* = "
        "three-segment fit; *jumps* = ndt's rule on every layer's activation stable rank.",
        "",
        "| # | Claim | How measured | Measured | Verdict | Tolerance rule |",
        "|---|---|---|---|---|---|",
        "| A1 | Early expansion dynamics help choose architectures (the article's deployment section) | "
        "per seed, Spearman's ρ between the architectures' early expansion and their final MNIST test accuracy | "
        f"ρ = {rho.fmt('+.2f')} ({rho_cells}) | **{text}**{f' — {reason}' if reason else ''} | {RULE} |",
        "",
        "## Every architecture (mean ± sd over seeds)",
        "",
    ]
    header = ["architecture", "test accuracy", "first", "collapse min", "expansion", "early expansion", "b1", "b2",
              "jumps"]
    rows = [[name, s["test_accuracy"].fmt(".4f"), s["first"].fmt(".3g"), s["collapse_min"].fmt(".3g"),
             s["expansion"].fmt(".3g"), s["early_expansion"].fmt(".3g"), s["b1"].fmt(".0f"), s["b2"].fmt(".0f"),
             s["jumps"].fmt(".0f")] for name, s in stats.items()]
    lines += comparison.markdown_table(header, rows)
    lines += ["", "Files: " + ", ".join(f"`{f}`" for f in ctx["files"]) + "."]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    """Train every architecture for every seed, then measure, draw and write; exit status 0, 1
    (the data could not be loaded) or 130 (interrupted; the run files are closed)."""
    conditions = {name: (lambda seed, w=widths: ({"make_model": lambda: MLP(w), "layer_names": layer_names(w)},
                                                 dimensionality_layer(w)))
                  for name, widths in ARCHITECTURES.items()}
    done = comparison.train_conditions(args, "architectures", conditions, "architecture",
                                       _run_dirs(args.out, args.seeds), OUT_FILES + RUN_FILES)
    if isinstance(done, int):
        return done
    runs, table, data, start = done
    table.to_csv(args.out / RUNS_CSV, index=False)
    stats = comparison.over_seeds(table, "architecture", COLUMNS)
    per_seed = rank_agreement(table)
    rho = _stats([Measurement({"rho": r}) for r in per_seed["rho"]])["rho"]
    result = verdict(rho)
    write_figure(runs, stats, args.out / FIGURE)
    files = [f"{n}/seed<k>/" for n in ARCHITECTURES] + list(OUT_FILES)
    ctx = comparison.context(args, data, files, architectures={n: list(w) for n, w in ARCHITECTURES.items()})
    (args.out / CLAIMS_MD).write_text(render(stats, rho, per_seed, result, ctx), encoding="utf-8")
    write_json(args.out / CLAIMS_JSON, {
        "context": ctx,
        "claims": [{"id": "A1", "claim": "early expansion dynamics rank architectures as final test accuracy does",
                    "rule": RULE, "verdict": result[0], "reason": result[1], "rho": rho,
                    "rho_per_seed": [float(r) for r in per_seed["rho"]]}],
        "architectures": stats,
    })
    lines = ["", f"Architectures: {args.steps} steps x {args.seeds} seed(s) x {len(ARCHITECTURES)} architectures, "
             f"sampled every {args.freq} steps; data: {data}",
             comparison.timing_line(start, float(table["train_s"].sum()), len(table), args.steps)]
    for name, s in stats.items():
        lines.append(f"  {name:<8} test accuracy {s['test_accuracy'].fmt('.4f'):<22} early expansion "
                     f"{s['early_expansion'].fmt('.3g'):<18} expansion {s['expansion'].fmt('.3g'):<16} "
                     f"jumps {s['jumps'].fmt('.0f')}")
    lines.append(f"A1 early dynamics rank architectures as test accuracy: ρ = {rho.fmt('+.2f')} → {result[0]}"
                 + (f" ({result[1]})" if result[1] else ""))
    lines.append(f"files in {args.out}/: " + ", ".join(files))
    print("\n".join(lines))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ndt_fast.experiments.architectures``: parse, validate (exit 2 on bad input), run."""
    return command_main(sys.modules[__name__], argv, "python -m ndt_fast.experiments.architectures")


if __name__ == "__main__":
    sys.exit(main())
