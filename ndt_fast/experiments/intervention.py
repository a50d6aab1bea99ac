"""``ndt-fast experiment intervention``: does corrupting the training data in a window of steps do
lasting damage early but not late?

    ndt-fast experiment intervention [--corruption label-shuffle|input-noise] [--fraction 0.5]
        [--windows 0:1000,2000:5000,6000:7000] [--steps 8000] [--seeds 3] [--out DIR] …

The TDS article's deployment section says corrupting the data in steps 2,000–5,000 does lasting
damage where the same corruption later does not; ndtracker's guide ("Extending the experiment")
says features that crystallized before a corruption window should be robust to it. This command
trains the article's MLP with the TDS set-up once as a control and once per window, with the same
seeds (so the same initialization and batches: the corruption draws from its own generator), and
corrupts each batch inside the window (:class:`WindowCorruption`):

- ``label-shuffle``: the labels of a random ``fraction`` of the batch are permuted among those
  samples (class balance kept; a permuted label can land on its own sample by chance);
- ``input-noise``: Gaussian noise of standard deviation :data:`NOISE_SD` (in normalized pixel
  units, the data's own scale) is added to a random ``fraction`` of the batch's images.

It reports each run's final MNIST **test** accuracy overall and per class, the damage (control −
corrupted accuracy, paired by seed) per window as mean ± sd over seeds, the dimensionality
trajectories (the activation stable rank of Layer2_256-128, as in the TDS reproduction) with the
window shaded, and a verdict on the article's claim by the rule in :data:`RULE`.

Writes into OUT: ``control/seed<k>/`` and ``window_<a>-<b>/seed<k>/`` (run.h5, results.csv,
jumps.csv), ``intervention.csv`` (one row per run), ``fig_intervention.png``, ``claims.md``,
``claims.json``.
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

from ndt_fast.experiments import comparison
from ndt_fast.experiments.tds.article import CLAIMS_JSON, CLAIMS_MD, DIM_LAYER, JUMPS_CSV, RESULTS_CSV, RUN_FILE
from ndt_fast.experiments.tds.cli import add_training_arguments, command_main, validate_training_args
from ndt_fast.experiments.tds.report import write_json
from ndt_fast.experiments.tds.statistics import Measurement, Stat, _stats
from ndt_fast.experiments.tds.training import SeedRun
from ndt_fast.plots import new_figure

CORRUPTIONS = ("label-shuffle", "input-noise")
NOISE_SD = 1.0  #: input-noise: standard deviation of the added noise, normalized pixel units
DEFAULT_WINDOWS = "0:1000,2000:5000,6000:7000"
ARTICLE_WINDOW = (2000, 5000)  #: the article's damaging window
#: Smallest damage (accuracy, as a fraction) that counts as lasting, whatever the seeds' spread:
#: 0.1 percentage point, ~10 of MNIST's 10,000 test images.
MIN_DAMAGE = 0.001
RULE = ("a window does lasting damage iff its mean paired damage (control − corrupted final test accuracy, same "
        "seed) exceeds both 0.1 percentage points and twice its standard error over seeds (sd/√n; needs ≥ 2 seeds); "
        "reproduced iff the early window (2000:5000 when given, else the first) does lasting damage and the last "
        "window that starts after it does not")
RUNS_CSV, FIGURE = "intervention.csv", "fig_intervention.png"
OUT_FILES = (RUNS_CSV, FIGURE, CLAIMS_MD, CLAIMS_JSON)
RUN_FILES = (RUN_FILE, RESULTS_CSV, JUMPS_CSV)
CLASSES = 10

SUMMARY = ("Corrupt the training data (label shuffle or input noise) during windows of steps and compare the final "
           "test accuracy and the dimensionality trajectories with a control run (MNIST, the TDS set-up).")
EPILOG = ("Writes into OUT: control/seed<k>/ and window_<a>-<b>/seed<k>/ (run.h5, results.csv, jumps.csv), "
          "intervention.csv, fig_intervention.png, claims.md and claims.json.")


class WindowCorruption:
    """Corrupts the batches of steps ``start <= step < stop`` (see the module docstring); any
    other step's batch is returned unchanged. Draws only from its own CPU generator (seeded with
    ``seed``), never from torch's global one, so the run's initialization and batches are the
    control's. ``fraction`` in (0, 1]; the chosen samples are ``round(fraction × batch)``."""

    def __init__(self, kind: str, fraction: float, start: int, stop: int, seed: int) -> None:
        if kind not in CORRUPTIONS:
            raise ValueError(f"corruption must be one of {CORRUPTIONS}, got {kind!r}")
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        self.kind, self.fraction, self.start, self.stop = kind, fraction, start, stop
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, step: int, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.start <= step < self.stop:
            return images, labels
        n = len(labels)
        k = int(round(self.fraction * n))
        if k == 0:
            return images, labels
        chosen = torch.randperm(n, generator=self.generator)[:k].to(labels.device)
        if self.kind == "label-shuffle":
            labels = labels.clone()
            labels[chosen] = labels[chosen[torch.randperm(k, generator=self.generator).to(labels.device)]]
        else:
            images = images.clone()
            noise = torch.randn((k, images.shape[1]), generator=self.generator, dtype=images.dtype)
            images[chosen] += NOISE_SD * noise.to(images.device)
        return images, labels


def parse_windows(text: str) -> list[tuple[int, int]]:
    """``"a:b,c:d"`` → ``[(a, b), (c, d)]``; ArgumentTypeError unless each is ``0 <= a < b``."""
    windows = []
    for part in text.split(","):
        try:
            a, b = (int(x) for x in part.split(":"))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected START:STOP[,START:STOP…] of integers, got {part!r}") from None
        if not 0 <= a < b:
            raise argparse.ArgumentTypeError(f"window {part!r}: need 0 <= START < STOP")
        windows.append((a, b))
    if len(set(windows)) != len(windows):
        raise argparse.ArgumentTypeError(f"a window is given twice in {text!r}")
    return windows


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1], got {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1], got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corruption", choices=CORRUPTIONS, default="label-shuffle",
                        help="label-shuffle: permute the labels of a fraction of each batch; input-noise: add "
                             f"Gaussian noise (sd {NOISE_SD}, normalized units) to a fraction of the images "
                             "(default label-shuffle)")
    parser.add_argument("--fraction", type=_fraction, default=0.5,
                        help="share of each batch's samples corrupted inside a window (default 0.5)")
    parser.add_argument("--windows", type=parse_windows, default=parse_windows(DEFAULT_WINDOWS),
                        help=f"corruption windows START:STOP (steps, STOP excluded), comma-separated; one run each "
                             f"(default {DEFAULT_WINDOWS})")
    add_training_arguments(parser, out="intervention", seeds=3)


def condition_name(window: tuple[int, int] | None) -> str:
    return "control" if window is None else f"window_{window[0]}-{window[1]}"


def _conditions(args: argparse.Namespace) -> list[tuple[int, int] | None]:
    return [None, *args.windows]


def _run_dirs(args: argparse.Namespace) -> list[Path]:
    return [d for w in _conditions(args) for d in comparison.per_seed_dirs(args.out, condition_name(w), args.seeds)]


def validate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """``parser.error`` (exit status 2) on a window past --steps, a bad --device or --out, or an
    earlier run in OUT."""
    late = [w for w in args.windows if w[1] > args.steps]
    if late:
        parser.error(f"argument --windows: window {late[0][0]}:{late[0][1]} ends after --steps {args.steps}")
    earlier = [args.out / name for name in OUT_FILES] + [d / RUN_FILE for d in _run_dirs(args)]
    validate_training_args(args, parser, earlier)


def early_and_late(windows: Sequence[tuple[int, int]]) -> tuple[tuple[int, int], tuple[int, int] | None]:
    """The claim's early window (the article's 2000:5000 when given, else the first) and the last
    window starting at or after its end (None when there is none)."""
    early = ARTICLE_WINDOW if ARTICLE_WINDOW in windows else windows[0]
    later = [w for w in windows if w[0] >= early[1]]
    return early, (later[-1] if later else None)


def lasting(damage: Stat) -> bool | None:
    """Whether a damage Stat counts as lasting by :data:`RULE`; None when its mean is undefined."""
    if math.isnan(damage.mean):
        return None
    noise = 2 * damage.sd / math.sqrt(damage.n) if damage.n > 1 and math.isfinite(damage.sd) else 0.0
    return damage.mean > max(MIN_DAMAGE, noise)


def verdict(damages: dict[str, Stat], windows: Sequence[tuple[int, int]]) -> tuple[str, str | None]:
    early, late = early_and_late(windows)
    if late is None:
        return comparison.VERDICTS[2], f"no window starts after the early window {early[0]}:{early[1]} ends"
    a, b = lasting(damages[condition_name(early)]), lasting(damages[condition_name(late)])
    if a is None or b is None:
        return comparison.VERDICTS[2], "a damage is undefined"
    return (comparison.VERDICTS[0] if a and not b else comparison.VERDICTS[1]), None


def write_figure(runs: dict[str, list[SeedRun]], windows: Sequence[tuple[int, int]],
                 damages: dict[str, Stat], path: Path) -> Path:
    """One panel per window (seed 0's dimensionality, control vs corrupted, the window shaded) and
    the damage per window (mean ± sd over seeds)."""
    fig = new_figure((4.2 * (len(windows) + 1), 4.6))
    axes = fig.subplots(1, len(windows) + 1, squeeze=False)[0]
    control = runs["control"][0].data.results[DIM_LAYER]
    for ax, window in zip(axes, windows):
        df = runs[condition_name(window)][0].data.results[DIM_LAYER]
        ax.plot(control["step"], control["stable_rank"], color="grey", linewidth=0.8, label="control")
        ax.plot(df["step"], df["stable_rank"], color="C3", linewidth=0.8, label="corrupted")
        ax.axvspan(*window, color="C3", alpha=0.12, label=f"window {window[0]}:{window[1]}")
        ax.set_title(f"window {window[0]}:{window[1]} (seed 0)", fontsize=10)
        ax.set_xlabel("training step")
        ax.legend(fontsize=8)
    axes[0].set_ylabel(f"{DIM_LAYER} activation stable rank")
    names = [condition_name(w) for w in windows]
    means = [100 * damages[n].mean for n in names]
    sds = [0.0 if math.isnan(damages[n].sd) else 100 * damages[n].sd for n in names]
    bar = axes[-1]
    bar.bar([f"{w[0]}:{w[1]}" for w in windows], means, yerr=sds, color="C3", capsize=4)
    bar.axhline(100 * MIN_DAMAGE, color="black", linewidth=0.8, linestyle="--", label="0.1 pp")
    bar.set_ylabel("damage: control − corrupted test accuracy (pp)")
    bar.set_title("damage, mean ± sd over seeds", fontsize=10)
    bar.legend(fontsize=8)
    fig.suptitle("Intervention windows — corrupted training data vs control", fontweight="bold")
    fig.savefig(path, dpi=100)
    return path


def render(table: pd.DataFrame, damages: dict[str, Stat], windows: Sequence[tuple[int, int]],
           result: tuple[str, str | None], ctx: dict[str, Any]) -> str:
    """claims.md: the set-up, the claim's row, damage per window and accuracy per class."""
    early, late = early_and_late(windows)
    text, reason = result
    measured = "; ".join(f"{w[0]}:{w[1]}: {100 * damages[condition_name(w)].mean:+.2f} pp"
                         f" (sd {100 * damages[condition_name(w)].sd:.2f})" for w in (early, late) if w is not None)
    lines = [
        "# Intervention windows — corrupted training data vs control",
        "",
        f"Run: {ctx['steps']} steps, seeds 0–{ctx['seeds'] - 1}, layers sampled every {ctx['freq']} steps; "
        f"corruption {ctx['corruption']} of {ctx['fraction']:.0%} of each batch inside each window; data: "
        f"{ctx['data']}; device {ctx['device']} ({ctx['threads']} torch threads); torch {ctx['torch']}, "
        f"ndt_fast {ctx['ndt_fast']}; {ctx['date']}.",
        "Set-up: the TDS article's MLP and training (Adam lr 1e-3, batches of 64); every condition of a seed has the "
        "same initialization and batches. Damage = control − corrupted final test accuracy, paired by seed.",
        "",
        "| # | Claim | How measured | Measured | Verdict | Tolerance rule |",
        "|---|---|---|---|---|---|",
        "| I1 | Corrupting the data in steps 2,000–5,000 does lasting damage; the same corruption later does not | "
        f"damage of the early window {early[0]}:{early[1]} vs the late window "
        f"{'none' if late is None else f'{late[0]}:{late[1]}'} | {measured} | **{text}**"
        f"{f' — {reason}' if reason else ''} | {RULE} |",
        "",
        "## Every condition (mean ± sd over seeds)",
        "",
    ]
    stats = comparison.over_seeds(table, "condition",
                                  ("test_accuracy", *(f"accuracy_{c}" for c in range(CLASSES)), "jumps"))
    header = ["condition", "test accuracy", "damage (pp)", "lasting?", "jumps",
              *(f"class {c}" for c in range(CLASSES))]
    rows = []
    for name, s in stats.items():
        damage = damages.get(name)
        rows.append([name, s["test_accuracy"].fmt(".4f"),
                     "—" if damage is None else Stat(100 * damage.mean, 100 * damage.sd, damage.n, damage.of).fmt("+.2f"),
                     "—" if damage is None else {True: "yes", False: "no", None: "undefined"}[lasting(damage)],
                     s["jumps"].fmt(".0f"), *(s[f"accuracy_{c}"].fmt(".3f") for c in range(CLASSES))])
    lines += comparison.markdown_table(header, rows)
    lines += ["", "Files: " + ", ".join(f"`{f}`" for f in ctx["files"]) + "."]
    return "\n".join(lines) + "\n"


def damages_by_window(table: pd.DataFrame, windows: Sequence[tuple[int, int]]) -> dict[str, Stat]:
    """Per window: control − corrupted test accuracy paired by seed, as a Stat over seeds."""
    control = table[table["condition"] == "control"].set_index("seed")["test_accuracy"]
    out = {}
    for window in windows:
        corrupted = table[table["condition"] == condition_name(window)].set_index("seed")["test_accuracy"]
        paired = (control - corrupted).dropna()
        out[condition_name(window)] = _stats([Measurement({"d": float(v)}) for v in paired] or
                                             [Measurement({"d": math.nan})])["d"]
    return out


def run(args: argparse.Namespace) -> int:
    """Train the control and every window for every seed, then measure, draw and write; exit
    status 0, 1 (the data could not be loaded) or 130 (interrupted; the run files are closed)."""
    def condition(window: tuple[int, int] | None) -> comparison.Condition:
        def options(seed: int) -> tuple[dict[str, Any], str]:
            corrupt = None if window is None else WindowCorruption(args.corruption, args.fraction, *window,
                                                                  seed=10_000 + seed)
            return {"corrupt": corrupt}, DIM_LAYER
        return options

    done = comparison.train_conditions(args, "intervention", {condition_name(w): condition(w) for w in _conditions(args)},
                                       "condition", _run_dirs(args), OUT_FILES + RUN_FILES)
    if isinstance(done, int):
        return done
    runs, table, data, start = done
    table.to_csv(args.out / RUNS_CSV, index=False)
    damages = damages_by_window(table, args.windows)
    result = verdict(damages, args.windows)
    write_figure(runs, args.windows, damages, args.out / FIGURE)
    files = [f"{condition_name(w)}/seed<k>/" for w in _conditions(args)] + list(OUT_FILES)
    ctx = comparison.context(args, data, files, corruption=args.corruption, fraction=args.fraction,
                             windows=[list(w) for w in args.windows], noise_sd=NOISE_SD)
    (args.out / CLAIMS_MD).write_text(render(table, damages, args.windows, result, ctx), encoding="utf-8")
    early, late = early_and_late(args.windows)
    write_json(args.out / CLAIMS_JSON, {
        "context": ctx,
        "claims": [{"id": "I1", "claim": "corruption in steps 2000-5000 does lasting damage, the same later does not",
                    "rule": RULE, "verdict": result[0], "reason": result[1],
                    "early_window": list(early), "late_window": None if late is None else list(late)}],
        "damage": damages,
        "test_accuracy": comparison.over_seeds(table, "condition", ("test_accuracy",)),
    })
    lines = ["", f"Intervention: {args.steps} steps x {args.seeds} seed(s) x {len(_conditions(args))} conditions "
             f"({args.corruption}, {args.fraction:.0%} of each batch); data: {data}",
             comparison.timing_line(start, float(table["train_s"].sum()), len(table), args.steps)]
    accuracy = comparison.over_seeds(table, "condition", ("test_accuracy",))
    for name, s in accuracy.items():
        damage = damages.get(name)
        lines.append(f"  {name:<18} test accuracy {s['test_accuracy'].fmt('.4f'):<22}"
                     + ("" if damage is None else f" damage {100 * damage.mean:+.2f} pp (sd {100 * damage.sd:.2f})"))
    lines.append(f"I1 early corruption damages, late does not: {result[0]}" + (f" ({result[1]})" if result[1] else ""))
    lines.append(f"files in {args.out}/: " + ", ".join(files))
    print("\n".join(lines))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ndt_fast.experiments.intervention``: parse, validate (exit 2 on bad input), run."""
    return command_main(sys.modules[__name__], argv, "python -m ndt_fast.experiments.intervention")


if __name__ == "__main__":
    sys.exit(main())
