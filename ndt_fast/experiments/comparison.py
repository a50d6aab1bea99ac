"""What the experiments that compare training runs share: the trained model's MNIST test accuracy,
the dynamics read from one run's samples (collapse, expansion, phase boundaries, jumps), one run's
files, and the mean ± sd over seeds of a table of per-run values.

The runs are :func:`ndt_fast.experiments.tds.train_seed` (the TDS article's set-up: Adam 1e-3,
batches of 64, every layer's output tracked, the run streamed to ``run.h5``, by
:func:`train_conditions`); the statistics and verdicts (:data:`VERDICTS`) are the TDS
reproduction's (:mod:`ndt_fast.experiments.tds.statistics`, :mod:`~ndt_fast.experiments.tds.claims`).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ndt_fast.experiments.tds.article import JUMPS_CSV, RESULTS_CSV, load_training_data
from ndt_fast.experiments.tds.claims import VERDICTS
from ndt_fast.experiments.tds.cli import prepare_out, run_context
from ndt_fast.experiments.tds.report import write_jumps_csv
from ndt_fast.experiments.tds.statistics import (
    Measurement, Stat, _stats, level, rolling_median, three_segment_fit)
from ndt_fast.experiments.tds.training import SeedRun, train_seed


#: The share of the run's steps that counts as "early" (the issue's first 10 % of steps).
EARLY_SHARE = 0.10
#: The collapse minimum is looked for in the first quarter of the run (the TDS run's collapse
#: bottoms out near step 300 of 8000; a quarter leaves room for slower architectures).
COLLAPSE_SHARE = 0.25


@torch.no_grad()
def test_accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                  classes: int = 10, batch: int = 2000) -> tuple[float, np.ndarray]:
    """Accuracy of ``model`` (eval mode, restored after) on ``images`` ``(N, 784)`` float32 and
    ``labels`` ``(N,)`` int64: overall, and per class ``(classes,)`` float64 (NaN for a class
    with no test sample)."""
    was_training = model.training
    model.eval()
    try:
        predicted = torch.cat([model(images[i:i + batch]).argmax(1) for i in range(0, len(labels), batch)])
    finally:
        model.train(was_training)
    correct = (predicted == labels).cpu().numpy()
    truth = labels.cpu().numpy()
    per_class = np.array([correct[truth == c].mean() if (truth == c).any() else math.nan for c in range(classes)])
    return float(correct.mean()), per_class


def dynamics(run: SeedRun, layer: str) -> dict[str, float]:
    """One run's dynamics, read on ``layer``'s activation stable rank over all its samples.

    ``collapse_min``: minimum of the 5-sample rolling median over the first :data:`COLLAPSE_SHARE`
    of the steps; ``expansion``: mean over the last 10 % of the steps / ``collapse_min``;
    ``early_expansion``: mean over steps [0.08, 0.10) × steps / minimum of the rolling median over
    the first 10 % (how far the layer has re-expanded by the end of the early window); ``b1``,
    ``b2``: the phase boundaries of a three-segment fit (:func:`three_segment_fit`);
    ``jumps``: ndt-rule jumps of the activation stable rank of all layers at the run's sampling.
    NaN where undefined (too few samples, a non-positive minimum).
    """
    df = run.data.results[layer]
    steps = df["step"].to_numpy(dtype=np.float64)
    values = df["stable_rank"].to_numpy(dtype=np.float64, na_value=np.nan)
    total = run.data.steps
    smooth = rolling_median(values)

    def minimum(share: float) -> float:
        window = np.where((steps < share * total) & np.isfinite(smooth), smooth, np.nan)
        return float(np.nanmin(window)) if np.isfinite(window).any() else math.nan

    def ratio(a: float, b: float) -> float:
        return a / b if b > 0 else math.nan

    collapse_min, early_min = minimum(COLLAPSE_SHARE), minimum(EARLY_SHARE)
    fit = three_segment_fit(steps, values)
    jumps = run.data.jumps.get(("activation", run.data.freq), {})
    return {
        "first": float(values[0]) if len(values) else math.nan,
        "collapse_min": collapse_min,
        "expansion": ratio(level(steps, values, 0.9 * total, total), collapse_min),
        "early_expansion": ratio(level(steps, values, 0.8 * EARLY_SHARE * total, EARLY_SHARE * total), early_min),
        "b1": fit["b1"], "b2": fit["b2"],
        "jumps": float(sum(len(found) for found in jumps.values())),
    }


def write_run_files(run: SeedRun) -> list[Path]:
    """results.csv and jumps.csv beside the run's run.h5; returns their paths."""
    from ndt_fast.storage import export_to_csv

    export_to_csv(run.data.results, str(run.out_dir / RESULTS_CSV))
    write_jumps_csv(run.data, run.out_dir / JUMPS_CSV)
    return [run.out_dir / RESULTS_CSV, run.out_dir / JUMPS_CSV]


def over_seeds(table: pd.DataFrame, by: str, columns: Sequence[str]) -> dict[str, dict[str, Stat]]:
    """``{group: {column: Stat over the group's rows}}`` — mean ± sample sd of each column over the
    seeds of each value of ``by`` (groups in order of first appearance)."""
    out = {}
    for group, rows in table.groupby(by, sort=False):
        out[str(group)] = _stats([Measurement({c: float(v) for c, v in zip(columns, row)})
                                  for row in rows[list(columns)].itertuples(index=False, name=None)])
    return out


#: ``condition(seed) -> (train_seed keyword arguments, the layer dynamics are read on)``.
Condition = Callable[[int], tuple[dict[str, Any], str]]


def train_conditions(args: argparse.Namespace, command: str, conditions: Mapping[str, Condition], key: str,
                     dirs: Sequence[Path], own_files: Sequence[str]) -> tuple[dict[str, list[SeedRun]], pd.DataFrame,
                                                                             str, float] | int:
    """Load the data, then train every condition for every seed (``OUT/<condition>/seed<k>/``).

    Returns ``(runs per condition, one table row per run, the data's description, start time)``
    or an exit status: 1 (the data could not be loaded, said on stderr), 130 (interrupted; the
    run files written so far are closed). Each row: ``key`` = the condition, ``seed``, the test
    accuracy overall and per class (``accuracy_<c>``), :func:`dynamics`, train_s, final_loss.
    The trained models are dropped once their accuracy is measured.
    """
    start = time.perf_counter()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    loaded = load_train_and_test(args, command)
    if loaded is None:
        return 1
    (train_x, train_y, test_x, test_y), data = loaded
    prepare_out(args.out, dirs, args.overwrite, own_files)  # (--overwrite removes files only once the data is here)
    runs: dict[str, list[SeedRun]] = {name: [] for name in conditions}
    rows = []
    try:
        for seed in range(args.seeds):
            for name, condition in conditions.items():
                options, layer = condition(seed)
                run = train_seed(args, seed, train_x, train_y, args.out / name / f"seed{seed}",
                                 desc=f"{name} seed {seed}", **options)
                accuracy, per_class = test_accuracy(run.model, test_x, test_y)
                write_run_files(run)
                run.model = None
                runs[name].append(run)
                rows.append({key: name, "seed": seed, "test_accuracy": accuracy,
                             **{f"accuracy_{c}": float(v) for c, v in enumerate(per_class)},
                             **dynamics(run, layer), "train_s": run.train_s, "final_loss": run.final_loss})
    except KeyboardInterrupt:
        print("\ninterrupted: the run files written so far are closed and readable with ndt_fast.load "
              "(no table, figure or claims were written)", file=sys.stderr)
        return 130
    return runs, pd.DataFrame(rows), data, start


def load_train_and_test(args: argparse.Namespace, command: str) -> tuple[tuple[Any, ...], str] | None:
    """``((train images, train labels, test images, test labels), description)`` on ``args.device``;
    None after printing why on stderr when the data cannot be loaded."""
    from ndt_fast.data import MnistError

    try:
        train_x, train_y, what = load_training_data(args.data, args.device)
        test_x, test_y, test_what = load_training_data(args.data, args.device, train=False)
    except (MnistError, FileNotFoundError, ValueError, OSError) as error:
        print(f"ndt-fast experiment {command}: cannot load the data: {error}", file=sys.stderr)
        return None
    return (train_x, train_y, test_x, test_y), f"{what}; accuracy on the {test_what}"


def context(args: argparse.Namespace, data: str, files: Sequence[str], **extra: Any) -> dict[str, Any]:
    """The run's configuration for claims.json (:func:`ndt_fast.experiments.tds.cli.run_context`
    with the horizon = the steps run, and ``extra``)."""
    return {**run_context(args, data, files), "horizon": args.steps, **extra}


def timing_line(start: float, train_s: float, runs: int, steps: int) -> str:
    """``time: … s (training + tracking … s, … steps/s); load average …`` for the summaries."""
    import os

    total = time.perf_counter() - start
    load = os.getloadavg() if hasattr(os, "getloadavg") else (math.nan,) * 3
    return (f"time: {total:.1f} s (training + tracking {train_s:.1f} s = {runs * steps / max(train_s, 1e-9):.0f} "
            f"steps/s over {runs} runs; {torch.get_num_threads()} torch threads); load average "
            f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table's lines (cells with ``|`` escaped)."""
    from ndt_fast.experiments.tds.report import markdown_cell

    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(markdown_cell(str(c)) for c in row) + " |" for row in rows])


def per_seed_dirs(out: Path, name: str, seeds: int) -> list[Path]:
    """``OUT/<name>/seed<k>`` for k in 0..seeds-1."""
    return [out / name / f"seed{k}" for k in range(seeds)]
