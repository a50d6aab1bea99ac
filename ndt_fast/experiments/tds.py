"""``ndt-fast reproduce tds``: the TDS article's experiment, its figures and a table of its claims.

    ndt-fast reproduce tds [--steps 8000] [--freq 5] [--seeds 1] [--device cpu] [--data DIR] [--out DIR]
    python -m ndt_fast.experiments.tds …            # the same command

The article ("I Measured Neural Network Training Every 5 Steps for 10,000 Iterations", Towards
Data Science, Nov. 2025; ndtracker ships a reproduction script, ``examples/03_reproduce_tds_experiment.py``)
trains an MLP 784-256-128-10 with ReLU on MNIST (normalized with mean 0.1307, std 0.3081) with
Adam (lr 1e-3, betas 0.9/0.999), batches of 64 shuffled, cross-entropy, for 8000 steps, and
measures the three Linear layers' outputs every 5 steps (1600 samples each). This module does the
same with :class:`ndt_fast.FastTracker` (``track_weights=WEIGHT_METRICS``: the weight matrices' stable
rank and eigenvalue participation ratio too; the gradient norm is logged), streams the samples to ``run.h5`` while training, then writes:

============================  =================================================================
``run.h5``                    the run file (``ndt_fast.load``), written while training
``results.csv``               every sample of every layer (``layer`` column first)
``jumps.csv``                 every jump found by ndt's rule, per space and sampling interval
``fig2_activation_stable_rank.png``  Fig. 2: activation stable rank per layer over steps
``fig3_dimensionality_vs_loss.png``  Fig. 3: dimensionality and loss on two axes, with ρ
``fig4_jumps_sampling.png``   Fig. 4: jumps found sampling every 5 vs every 50 steps
``fig5_activation_vs_weight.png``    Fig. 5: activation space vs weight space
``claims.md``                 each claim of the article beside what this run measured, with a
                              verdict: reproduced / not reproduced / not measurable as stated
``claims.json``               the same numbers, machine-readable, with the run's configuration
============================  =================================================================

With ``--seeds N`` (N > 1) seeds 0..N-1 each get these files in ``OUT/seed<k>/`` and
``OUT/claims.md`` / ``OUT/claims.json`` aggregate them (mean ± sd over seeds).

How the article's claims are measured — the readings, rules and tolerances are in
:data:`CLAIMS` and are printed into ``claims.md``. "Dimensionality" is read as the activation
stable rank of the middle layer (Layer2_256-128, the layer ndtracker's reproduction script uses
for Fig. 3), and the weight-space claim is read on that layer's weight matrix; jumps are ndt's
offline rule (``FastTracker.detect_jumps``: |z| > 3 against the 50 previous samples); the
every-50 series of Fig. 4 is the every-5 series subsampled at ``step % 50 == 0``, through the same
detector.

Speed: MNIST is one normalized ``(60000, 784)`` float32 tensor indexed by shuffled batches (no
DataLoader, no per-sample transform); the gradient norm is computed only on sampled steps; Adam
uses torch's fused kernel where available (the same update rule). The tracker is closed — the run
file finished — whatever ends the training loop, Ctrl-C included (exit status 130).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ndt_fast import validity
from ndt_fast.jumps import Jump, JumpDetector

# ---- the article's setup ------------------------------------------------------------------------

ARTICLE_STEPS = 8000  #: training steps; claims are measured on steps < ARTICLE_STEPS
ARTICLE_EVERY = 5  #: the article's sampling interval (steps)
LOW_EVERY = 50  #: Fig. 4's low-frequency sampling interval (steps)
BATCH_SIZE = 64
LEARNING_RATE = 1e-3
BETAS = (0.9, 0.999)
LAYER_NAMES = ("Layer1_784-256", "Layer2_256-128", "Layer3_128-10")  # ndtracker's script's names
LAYER_WIDTHS = (256, 128, 10)
DIM_LAYER = LAYER_NAMES[1]  #: the layer whose activation stable rank is "dimensionality"
WEIGHT_LAYER = DIM_LAYER  #: the layer of the weight-space claim: the same layer as "dimensionality"
#: Jump spaces: the series ndt's rule runs on (activation stable rank, weight stable rank).
SPACES = {"activation": "stable_rank", "weight": "weight_stable_rank"}
SMOOTH_SAMPLES = 50  #: rolling-mean width (samples) of the smoothed correlation shown beside ρ
NDT_METRICS = ("stable_rank", "participation_ratio", "cumulative_90", "nuclear_norm_ratio")

FIGURES = {
    "fig2": "fig2_activation_stable_rank.png",
    "fig3": "fig3_dimensionality_vs_loss.png",
    "fig4": "fig4_jumps_sampling.png",
    "fig5": "fig5_activation_vs_weight.png",
}
RUN_FILE, RESULTS_CSV, JUMPS_CSV, CLAIMS_MD, CLAIMS_JSON = (
    "run.h5", "results.csv", "jumps.csv", "claims.md", "claims.json")
#: Every file one seed's run writes into its folder.
SEED_FILES = (RUN_FILE, RESULTS_CSV, JUMPS_CSV, *FIGURES.values(), CLAIMS_MD, CLAIMS_JSON)

FLUSH_SECONDS = 5.0  #: the run file's flush interval (the most a record waits before it is on disk)
#: Weight-space metrics: the ones the claims read, both without an eigensolver (λmax by Lanczos) —
#: all six would make weight tracking the largest cost of the run (a 256 × 256 eigensolve per sample).
WEIGHT_METRICS = ("stable_rank", "participation_ratio_eig")

#: One line for ``--help`` and ``ndt-fast reproduce --help``.
SUMMARY = ("Reproduce the TDS article's experiment (MLP 784-256-128-10 on MNIST, 8000 steps, layers sampled "
           "every 5 steps) with ndt_fast and check its claims.")
EPILOG = ("Writes into OUT: run.h5 (streamed while training), results.csv, jumps.csv, fig2-fig5 PNGs, claims.md "
          "and claims.json (each claim of the article, what this run measured, and a verdict).")

VERDICTS = ("reproduced", "not reproduced", "not measurable as stated")


class TDSMLP(nn.Module):
    """The article's MLP: ``(batch, 784)`` float → Linear 256 → ReLU → Linear 128 → ReLU → Linear 10
    → logits ``(batch, 10)``. PyTorch's default initialization. The three Linear layers are the
    tracked modules (their outputs, before the ReLU, as in ndtracker's reproduction script)."""

    def __init__(self) -> None:
        super().__init__()
        self.layer1 = nn.Linear(784, 256)
        self.relu1 = nn.ReLU()
        self.layer2 = nn.Linear(256, 128)
        self.relu2 = nn.ReLU()
        self.layer3 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer3(self.relu2(self.layer2(self.relu1(self.layer1(x.flatten(1))))))

    def tracked_layers(self) -> list[nn.Module]:
        return [self.layer1, self.layer2, self.layer3]


# ---- command line ---------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's options (shared by ``python -m ndt_fast.experiments.tds`` and ``ndt-fast``)."""
    from ndt_fast.data import default_data_root

    parser.add_argument("--steps", type=_positive_int, default=ARTICLE_STEPS,
                        help=f"training steps (default {ARTICLE_STEPS}, the article's)")
    parser.add_argument("--freq", type=_positive_int, default=ARTICLE_EVERY,
                        help=f"sample the layers every FREQ steps (default {ARTICLE_EVERY}, the article's)")
    parser.add_argument("--seeds", type=_positive_int, default=1,
                        help="run seeds 0..N-1, each into OUT/seed<k>/; claims.md aggregates mean ± sd (default 1)")
    parser.add_argument("--device", default="cpu",
                        help="torch device for training: cpu, cuda, cuda:1, … or auto (default cpu)")
    parser.add_argument("--data", type=Path, default=None,
                        help="directory holding MNIST/raw/ (torchvision's layout); MNIST is downloaded there "
                             f"if missing (default: $NDT_FAST_DATA, else {default_data_root()})")
    parser.add_argument("--out", type=Path, default=Path("tds_reproduction"),
                        help="output directory (default ./tds_reproduction)")
    parser.add_argument("--threads", type=_positive_int, default=None,
                        help="torch.set_num_threads(THREADS) (default: torch's default, "
                             f"{torch.get_num_threads()} here)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the files of an earlier run in OUT (otherwise an existing run is refused)")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="no progress bar (the summary is still printed)")


def _seed_dirs(out: Path, seeds: int) -> list[Path]:
    return [out] if seeds == 1 else [out / f"seed{k}" for k in range(seeds)]


def validate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Check what argparse cannot; ``parser.error`` (exit status 2) on bad input."""
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError) as error:
        parser.error(f"argument --device: not a torch device: {args.device!r} ({error})")
    if parsed.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"argument --device: {args.device!r} requested but CUDA is not available")
    if parsed.type not in ("cpu", "cuda"):
        parser.error(f"argument --device: only cpu and cuda are supported, got {args.device!r}")
    args.device = str(parsed)
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"argument --out: {str(args.out)!r} exists and is not a directory")
    if not args.overwrite:
        # this layout's run files, and the claims an earlier run with another --seeds left in OUT
        existing = [d / RUN_FILE for d in _seed_dirs(args.out, args.seeds) if (d / RUN_FILE).exists()]
        existing += [args.out / name for name in (RUN_FILE, CLAIMS_MD, CLAIMS_JSON) if (args.out / name).exists()]
        if existing:
            parser.error(f"argument --out: {str(existing[0])!r} already exists (an earlier run); "
                         "pass --overwrite to replace it, or choose another --out")


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=SUMMARY, epilog=EPILOG)
    add_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ndt_fast.experiments.tds``: parse, validate (exit 2 on bad input), run."""
    parser = build_parser(prog="python -m ndt_fast.experiments.tds")
    args = parser.parse_args(argv)
    validate(args, parser)
    return run(args)


# ---- progress -------------------------------------------------------------------------------------


class _Progress:
    """A progress bar with the loss and steps/s: tqdm when importable, else a line on stderr
    every 2 s. ``advance_to(done, loss)`` is called every few steps (the loss a Python float)."""

    def __init__(self, total: int, desc: str, enabled: bool) -> None:
        self._bar: Any = None
        self._enabled = enabled
        self._total, self._desc, self._done = total, desc, 0
        self._start = self._last_print = time.perf_counter()
        if not enabled:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            return
        self._bar = tqdm(total=total, desc=desc, unit="step", file=sys.stderr, mininterval=0.5,
                         dynamic_ncols=True, leave=True)

    def advance_to(self, done: int, loss: float) -> None:
        """``done`` steps are finished; ``loss`` is the latest batch loss."""
        n, self._done = done - self._done, done
        if not self._enabled:
            return
        if self._bar is not None:
            self._bar.set_postfix_str(f"loss {loss:.4f}", refresh=False)
            self._bar.update(n)
            return
        now = time.perf_counter()
        if now - self._last_print >= 2.0 or done >= self._total:
            self._last_print = now
            rate = done / max(now - self._start, 1e-9)
            print(f"{self._desc}: step {done}/{self._total} ({100 * done / self._total:.0f}%), "
                  f"loss {loss:.4f}, {rate:.0f} steps/s", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


# ---- training -------------------------------------------------------------------------------------


class ShuffledBatches:
    """Index batches of ``range(n)`` like ``DataLoader(shuffle=True, drop_last=False)``: a fresh
    permutation per epoch from ``generator`` (CPU), batches of ``batch_size`` int64 indices on
    ``device`` (the last batch of an epoch holds ``n % batch_size`` when that is not zero)."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator, device: torch.device) -> None:
        if n < 1:
            raise ValueError("no training samples")
        self.n, self.batch_size, self.generator, self.device = n, batch_size, generator, device
        self._perm = torch.empty(0, dtype=torch.int64)
        self._pos = 0

    def __iter__(self) -> ShuffledBatches:
        return self

    def __next__(self) -> torch.Tensor:
        if self._pos >= len(self._perm):
            self._perm = torch.randperm(self.n, generator=self.generator).to(self.device)
            self._pos = 0
        batch = self._perm[self._pos : self._pos + self.batch_size]
        self._pos += self.batch_size
        return batch


def _adam(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """Adam(lr 1e-3, betas 0.9/0.999); torch's fused kernel when this build has it (the same
    update, one kernel for all parameters instead of a Python loop over them)."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=LEARNING_RATE, betas=BETAS, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=LEARNING_RATE, betas=BETAS)


def _grad_norm(params: Sequence[nn.Parameter]) -> torch.Tensor:
    """L2 norm of all parameters' gradients together (0-d tensor) — what
    ``clip_grad_norm_(params, inf)`` returns in ndtracker's script, without rescaling anything."""
    norms = [torch.linalg.vector_norm(p.grad) for p in params if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms))


@dataclass
class RunData:
    """What the claims are measured on: one seed's samples and jumps.

    results: ``{layer name: DataFrame}`` as ``FastTracker.get_results()`` (``step``, the
        metrics, ``loss``, ``grad_norm``, ``weight_*``), one row per sampled step.
    jumps: ``{(space, every): {layer name: [Jump]}}``; space "activation" (stable rank) or
        "weight" (weight stable rank); ``every`` the sampling interval of the series the rule ran
        on; ``Jump.step`` is the training step.
    steps: training steps run; freq: the tracker's sampling interval.
    """

    results: dict[str, pd.DataFrame]
    jumps: dict[tuple[str, int], dict[str, list[Jump]]]
    steps: int
    freq: int


@dataclass
class SeedRun:
    """One seed's run: its data, folder, timings (s) and last loss."""

    seed: int
    out_dir: Path
    data: RunData
    train_s: float
    final_loss: float
    write_error: str | None = None


def sampling_intervals(freq: int) -> list[int]:
    """The intervals jumps are looked for at: the run's own, and 5 and 50 where the run's samples
    subsample to them (``every % freq == 0``)."""
    return sorted({freq} | {e for e in (ARTICLE_EVERY, LOW_EVERY) if e >= freq and e % freq == 0})


def detect_on(detector: JumpDetector, df: pd.DataFrame, metric: str, every: int, name: str) -> list[Jump]:
    """ndt's rule (``detector``) on the rows of ``df`` with ``step % every == 0``; Jump.step =
    training step. On the run's own sampling this is exactly ``FastTracker.detect_jumps``."""
    rows = df[df["step"].to_numpy() % every == 0]
    values = rows[metric].to_numpy(dtype=np.float64, na_value=np.nan)
    steps = rows["step"].to_numpy(dtype=np.int64)
    return detector.detect_at_steps(values, steps, f"{name}_{metric}")


def find_jumps(results: Mapping[str, pd.DataFrame], freq: int, detector: JumpDetector,
               tracker: Any = None) -> dict[tuple[str, int], dict[str, list[Jump]]]:
    """Jumps of the activation and weight stable rank of every layer at every interval of
    :func:`sampling_intervals`. At the run's own interval they come from
    ``tracker.detect_jumps(metric=…)`` when a tracker is given; subsampled series go through the
    same rule (``detector``)."""
    out: dict[tuple[str, int], dict[str, list[Jump]]] = {}
    for every in sampling_intervals(freq):
        for space, metric in SPACES.items():
            if every == freq and tracker is not None:
                out[(space, every)] = tracker.detect_jumps(metric=metric)
            else:
                out[(space, every)] = {name: detect_on(detector, df, metric, every, name)
                                       for name, df in results.items()}
    return out


def train_seed(args: argparse.Namespace, seed: int, images: torch.Tensor, labels: torch.Tensor,
               out_dir: Path) -> SeedRun:
    """Train one seed with the article's setup, tracked by FastTracker streaming to ``out_dir/run.h5``.

    ``images``: ``(N, 784)`` float32 normalized, ``labels``: ``(N,)`` int64, both on
    ``args.device``. Seeds ``torch.manual_seed(seed)`` (initialization) and a CPU generator
    (shuffling). The tracker is closed (the run file finished) on every exit path, KeyboardInterrupt
    included. Returns the results, the jumps (:func:`find_jumps`) and the training time.
    """
    from ndt_fast.tracker import FastTracker

    device = torch.device(args.device)
    torch.manual_seed(seed)
    model = TDSMLP().to(device)
    model.train()
    optimizer = _adam(model.parameters())
    criterion = nn.CrossEntropyLoss()
    params = list(model.parameters())
    batches = ShuffledBatches(len(labels), BATCH_SIZE, torch.Generator().manual_seed(seed), device)
    out_dir.mkdir(parents=True, exist_ok=True)
    # flush_interval: the writer thread shares the 2 cores with torch's; flushing every 5 s instead
    # of every 1 s saved ~0.3 ms/step (~2.5 s of the 8000 steps). The file stays live-readable.
    tracker = FastTracker(model, layers=model.tracked_layers(), layer_names=list(LAYER_NAMES),
                          sampling_frequency=args.freq, track_weights=WEIGHT_METRICS, output=out_dir / RUN_FILE,
                          flush_interval=FLUSH_SECONDS)
    progress = _Progress(args.steps, f"seed {seed}", args.progress)
    report_every = 25  # progress updates (one loss.item() each) every 25 steps: ~no cost
    loss = torch.zeros(())
    try:
        start = time.perf_counter()
        for step in range(args.steps):
            batch = next(batches)
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(images[batch]), labels[batch])
            loss.backward()
            # The gradient norm is read only on sampled steps: compute it only there.
            grad_norm = _grad_norm(params) if step % args.freq == 0 else None
            optimizer.step()
            tracker.log(step, loss, grad_norm)  # loss/grad_norm are read only on sampled steps
            if (step + 1) % report_every == 0 or step + 1 == args.steps:
                progress.advance_to(step + 1, loss.item())
        train_s = time.perf_counter() - start
        results = tracker.get_results()
        jumps = find_jumps(results, args.freq, tracker.jump_detector, tracker)
    finally:
        progress.close()
        tracker.close()
    write_error = tracker.write_error  # after close(): its final flush can fail too
    return SeedRun(seed, out_dir, RunData(results, jumps, args.steps, args.freq), train_s, loss.item(),
                   None if write_error is None else f"{type(write_error).__name__}: {write_error}")


# ---- measurement helpers ----------------------------------------------------------------------------


def _series(df: pd.DataFrame, column: str, horizon: int, every: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, values)`` float64 of rows with ``step < horizon`` and ``step % every == 0``."""
    steps = df["step"].to_numpy(dtype=np.float64)
    keep = (steps < horizon) & (steps % every == 0)
    return steps[keep], df[column].to_numpy(dtype=np.float64, na_value=np.nan)[keep]


def level(steps: np.ndarray, values: np.ndarray, lo: float, hi: float) -> float:
    """Mean of the finite ``values`` whose step is in ``[lo, hi)``; NaN when there are none."""
    keep = (steps >= lo) & (steps < hi) & np.isfinite(values)
    return float(values[keep].mean()) if keep.any() else math.nan


def rolling_median(values: np.ndarray, width: int = 5) -> np.ndarray:
    """Centred rolling median over ``width`` samples (fewer at the ends)."""
    return pd.Series(values).rolling(width, center=True, min_periods=1).median().to_numpy()


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of the pairs where both are finite; NaN with < 3 pairs or a constant side."""
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 3:
        return math.nan
    a, b = a[keep] - a[keep].mean(), b[keep] - b[keep].mean()
    denominator = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b) / denominator if denominator > 0 else math.nan


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties) of the finite pairs; NaN as pearson."""
    keep = np.isfinite(a) & np.isfinite(b)
    if keep.sum() < 3:
        return math.nan
    # pandas' ranking (scipy.stats would do the same, but costs ~1 s to import).
    rank = lambda x: pd.Series(x).rank(method="average").to_numpy()  # noqa: E731
    return pearson(rank(a[keep]), rank(b[keep]))


def three_segment_fit(steps: np.ndarray, values: np.ndarray, min_len: int = 3) -> dict[str, float]:
    """Least-squares fit of three independent straight lines to ``values`` over ``steps``.

    The two breakpoints range over every split leaving ≥ ``min_len`` samples per segment (exact
    search, O(n²) with prefix sums). Returns ``b1``, ``b2`` (the steps where segments 2 and 3
    start) and ``s1``, ``s2``, ``s3`` (each segment's slope, per 1000 steps); NaN for all when
    there are fewer than ``3 * min_len`` finite samples.
    """
    keep = np.isfinite(values)
    t, v = steps[keep], values[keep]
    n = len(t)
    nan = {k: math.nan for k in ("b1", "b2", "s1", "s2", "s3")}
    if n < 3 * min_len:
        return nan
    x = (t - t.mean()) / (t.std() or 1.0)  # conditioning for the prefix sums

    def prefix(a: np.ndarray) -> np.ndarray:
        return np.concatenate(([0.0], np.cumsum(a)))

    c1, cx, cy, cxx, cxy, cyy = (prefix(a) for a in (np.ones(n), x, v, x * x, x * v, v * v))

    def sse(a: Any, b: Any) -> np.ndarray:  # residual sum of squares of the line fitted to [a, b)
        m = c1[b] - c1[a]
        sx, sy = cx[b] - cx[a], cy[b] - cy[a]
        vxx = cxx[b] - cxx[a] - sx * sx / m
        vxy = cxy[b] - cxy[a] - sx * sy / m
        vyy = cyy[b] - cyy[a] - sy * sy / m
        safe = np.where(vxx > 1e-12, vxx, 1.0)
        return vyy - np.where(vxx > 1e-12, vxy * vxy / safe, 0.0)

    best, best_ij = math.inf, (0, 0)
    for i in range(min_len, n - 2 * min_len + 1):
        j = np.arange(i + min_len, n - min_len + 1)
        total = sse(0, i) + sse(i, j) + sse(j, n)
        k = int(np.argmin(total))
        if total[k] < best:
            best, best_ij = float(total[k]), (i, int(j[k]))
    i, j = best_ij

    def slope(a: int, b: int) -> float:
        tt, vv = t[a:b] / 1000.0, v[a:b]
        tt = tt - tt.mean()
        return float((tt @ (vv - vv.mean())) / (tt @ tt))

    return {"b1": float(t[i]), "b2": float(t[j]), "s1": slope(0, i), "s2": slope(i, j), "s3": slope(j, n)}


def _count(jumps: Mapping[str, list[Jump]] | None, horizon: int, before: float = math.inf) -> float:
    """Jumps over all layers with step < min(horizon, before); NaN when the set was not computed."""
    if jumps is None:
        return math.nan
    limit = min(horizon, before)
    return float(sum(1 for found in jumps.values() for j in found if j.step < limit))


# ---- the claims ------------------------------------------------------------------------------------


@dataclass
class Measurement:
    """What one seed measured for one claim: named values (NaN = undefined), or why it could not."""

    values: dict[str, float]
    reason: str | None = None  # set → "not measurable as stated", because of this


@dataclass(frozen=True)
class Stat:
    """A value over seeds: mean, sample standard deviation (NaN for one seed), the seeds it is
    taken over (those where the value is defined) and the seeds run."""

    mean: float
    sd: float
    n: int
    of: int = 1

    def fmt(self, spec: str = ".3g") -> str:
        if math.isnan(self.mean):
            return "undefined"
        text = format(self.mean, spec)
        if not (self.n <= 1 or math.isnan(self.sd) or self.sd == 0):
            text = f"{text} ± {format(self.sd, spec.lstrip('+'))}"
        if 0 < self.n < self.of:  # some seeds had no defined value: say over how many
            text += f" (over {self.n} of {self.of} seeds)"
        return text


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


def _stats(measurements: Sequence[Measurement], seeds: int | None = None) -> dict[str, Stat]:
    """Each value over seeds as a Stat of its finite values (all ±inf → inf, none finite → NaN);
    ``seeds``: how many seeds were run (default: one per measurement)."""
    seeds = len(measurements) if seeds is None else seeds
    keys = measurements[0].values.keys()
    out = {}
    for key in keys:
        values = np.array([m.values.get(key, math.nan) for m in measurements], dtype=np.float64)
        finite = values[np.isfinite(values)]
        if len(finite) == 0:
            mean = math.inf if np.isinf(values).all() and len(values) else math.nan
            out[key] = Stat(mean, math.nan, 0, seeds)
        else:
            out[key] = Stat(float(finite.mean()), float(finite.std(ddof=1)) if len(finite) > 1 else math.nan,
                            len(finite), seeds)
    return out


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


# ---- outputs: figures, CSV, claims ----------------------------------------------------------------


def _figure(figsize: tuple[float, float]) -> Any:
    """A pyplot-free Figure with a fixed layout (``subplots_adjust`` by the caller): constrained
    layout would double the time to save these multi-axes figures."""
    from matplotlib.figure import Figure

    return Figure(figsize=figsize)


def _text_figure(path: Path, title: str, message: str) -> None:
    """A PNG that says why a figure could not be drawn (so every figure file exists)."""
    fig = _figure((8, 3))
    fig.text(0.5, 0.6, title, ha="center", fontweight="bold")
    fig.text(0.5, 0.4, message, ha="center", wrap=True)
    fig.savefig(path, dpi=100)


def write_figures(run: RunData, out_dir: Path, rows: Sequence[ClaimRow]) -> list[Path]:
    """Figs. 2–5 of the article for one seed, as PNG files in ``out_dir``; returns their paths.

    A figure whose data cannot be drawn (e.g. every value NaN after a diverged run) is replaced by a
    PNG stating the reason, so that all four files exist."""
    from ndt_fast.plots import plot_metrics_comparison, plot_phases

    results, freq = run.results, run.freq
    by_id = {row.claim.id: row for row in rows}
    paths = [out_dir / FIGURES[k] for k in ("fig2", "fig3", "fig4", "fig5")]
    dpi = 100

    def fig2() -> Any:
        return plot_phases(results, metric="stable_rank", figsize=(11, 5.5),
                           title=f"Fig. 2 — activation stable rank per layer (sampled every {freq} steps)")

    def fig3() -> Any:
        rho = by_id["C5"].values.get("pearson")
        rho_text = "undefined" if rho is None or math.isnan(rho.mean) else f"{rho.mean:+.3f}"
        return plot_metrics_comparison(results[DIM_LAYER], metrics=["stable_rank"], layer_name=DIM_LAYER,
                                       figsize=(11, 5.5),
                                       title=f"Fig. 3 — {DIM_LAYER} activation stable rank (left) vs loss (right): "
                                             f"ρ = {rho_text} (article: −0.951)")

    def fig4() -> Any:
        # Fig. 4 compares every 5 with every 50 steps: the run's own series when it is every 5 (or
        # coarser), its every-5 subsample when finer; every 50 when the samples subsample to it.
        available = sampling_intervals(freq)
        high = ARTICLE_EVERY if ARTICLE_EVERY in available else freq
        intervals = [high] + ([LOW_EVERY] if LOW_EVERY in available and LOW_EVERY != high else [])
        fig = _figure((13, 8.5))
        axes = fig.subplots(len(results), len(intervals), sharex=True, squeeze=False)
        for r, (name, df) in enumerate(results.items()):
            for c, every in enumerate(intervals):
                ax = axes[r, c]
                rows_ = df[df["step"].to_numpy() % every == 0]
                ax.plot(rows_["step"], rows_["stable_rank"], color="steelblue", linewidth=1)
                found = run.jumps[("activation", every)][name]
                if found:
                    xs = [j.step for j in found]
                    ys = rows_.set_index("step").loc[xs, "stable_rank"].to_numpy()
                    ax.scatter(xs, ys, color="red", s=18, zorder=5)
                ax.set_title(f"{name}, every {every} steps: {len(found)} jumps", fontsize=10)
                ax.grid(True, alpha=0.3)
                if c == 0:
                    ax.set_ylabel("stable rank")
                if r == len(results) - 1:
                    ax.set_xlabel("training step")
        missing = "" if LOW_EVERY in intervals else f" (every {LOW_EVERY}: not available from samples every {freq})"
        fig.suptitle(f"Fig. 4 — jumps (ndt's rule) in the activation stable rank, every {high} vs every {LOW_EVERY} "
                     f"steps{missing}", fontweight="bold")
        fig.subplots_adjust(left=0.06, right=0.99, bottom=0.06, top=0.91, hspace=0.3, wspace=0.12)
        return fig

    def fig5() -> Any:
        fig = _figure((11, 8))
        top, bottom = fig.subplots(2, 1, sharex=True)
        for name, df in results.items():
            n_act = len(run.jumps[("activation", freq)][name])
            n_w = len(run.jumps[("weight", freq)][name])
            top.plot(df["step"], df["stable_rank"], linewidth=1, label=f"{name} ({n_act} jumps)")
            bottom.plot(df["step"], df["weight_stable_rank"], linewidth=1.5, label=f"{name} ({n_w} jumps)")
        top.set_ylabel("activation stable rank")
        bottom.set_ylabel("weight stable rank")
        bottom.set_yscale("log")
        bottom.set_xlabel("training step")
        for ax in (top, bottom):
            ax.grid(True, alpha=0.3)
            ax.legend(loc="best", fontsize=9)
        fig.suptitle(f"Fig. 5 — activation space vs weight space (sampled every {freq} steps; jumps: ndt's rule)",
                     fontweight="bold")
        fig.subplots_adjust(left=0.08, right=0.98, bottom=0.07, top=0.93, hspace=0.08)
        return fig

    for path, build in zip(paths, (fig2, fig3, fig4, fig5)):
        try:
            figure = build()
        except (ValueError, KeyError) as error:  # nothing drawable: say so in the file
            _text_figure(path, path.stem, f"not drawn: {error}")
            continue
        figure.savefig(path, dpi=dpi)
    return paths


def write_jumps_csv(run: RunData, path: Path) -> None:
    """Every jump of ``run.jumps`` as CSV: space, every, layer, step, z_score, value_before, value_after."""
    rows = [(space, every, name, j.step, j.z_score, j.value_before, j.value_after)
            for (space, every), per_layer in sorted(run.jumps.items())
            for name, found in per_layer.items() for j in found]
    frame = pd.DataFrame(rows, columns=["space", "every", "layer", "step", "z_score", "value_before", "value_after"])
    frame.to_csv(path, index=False)


def _cell(text: str) -> str:
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
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
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


def _json_value(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) else ("inf" if math.isinf(value) else value)
    if isinstance(value, Stat):
        return {"mean": _json_value(value.mean), "sd": _json_value(value.sd), "n": value.n, "of": value.of}
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    return value


def write_claims(out_dir: Path, rows: Sequence[ClaimRow], context: Mapping[str, Any],
                 appendix: Mapping[str, dict[str, Stat]]) -> tuple[Path, Path]:
    """Write claims.md and claims.json into ``out_dir``."""
    md, js = out_dir / CLAIMS_MD, out_dir / CLAIMS_JSON
    end = context["horizon"] - 1
    md.write_text(render_claims(rows, context, appendix), encoding="utf-8")
    payload = {
        "context": _json_value(dict(context)),
        "claims": [{"id": r.claim.id, "claim": r.claim.text, "method": r.claim.method.format(end=end),
                    "rule": r.claim.rule.format(end=end),
                    "measured": r.measured, "verdict": r.verdict, "reason": r.reason,
                    "seeds_reproduced": r.seeds_reproduced, "values": _json_value(r.values)} for r in rows],
        "readings": _json_value(dict(appendix)),
    }
    js.write_text(json.dumps(payload, indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
    return md, js


def _aggregate_readings(per_seed: Sequence[dict[str, dict[str, float]]]) -> dict[str, dict[str, Stat]]:
    return {key: _stats([Measurement(r[key]) for r in per_seed if key in r]) for key in per_seed[0]}


# ---- the command ------------------------------------------------------------------------------------


def _load_data(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor, str]:
    from ndt_fast.data import load_mnist

    images, labels = load_mnist(args.data, train=True)
    n = len(labels)
    what = ("MNIST train split (60000 images, md5-verified)" if n == 60000 else
            f"IDX files with {n} training images (not the canonical MNIST, not md5-checked)")
    device = torch.device(args.device)
    return images.to(device), labels.to(device), what


def _context(args: argparse.Namespace, data: str, files: Sequence[str]) -> dict[str, Any]:
    import ndt_fast

    return {"steps": args.steps, "horizon": min(args.steps, ARTICLE_STEPS), "freq": args.freq,
            "seeds": args.seeds, "device": args.device,
            "threads": torch.get_num_threads(), "data": data, "torch": torch.__version__,
            "ndt_fast": ndt_fast.__version__, "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M %Z"), "files": list(files)}


def _prepare_out(args: argparse.Namespace) -> list[Path]:
    dirs = _seed_dirs(args.out, args.seeds)
    # OUT itself too: an earlier single-seed run's files must not sit beside a multi-seed run's claims
    for d in dict.fromkeys([args.out, *dirs]):
        d.mkdir(parents=True, exist_ok=True)
        if args.overwrite:
            for name in SEED_FILES:  # only this command's own files, never the rest of the folder
                path = d / name
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
    return dirs


def _summary(args: argparse.Namespace, runs: Sequence[SeedRun], rows: Sequence[ClaimRow],
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


def run(args: argparse.Namespace) -> int:
    """Run the experiment for validated ``args`` (see :func:`add_arguments`); returns the exit
    status: 0, 1 (the data could not be loaded) or 130 (interrupted; run files closed)."""
    from ndt_fast.data import MnistError
    from ndt_fast.storage import export_to_csv

    start = time.perf_counter()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        images, labels, data = _load_data(args)
    except (MnistError, FileNotFoundError, ValueError, OSError) as error:
        print(f"ndt-fast reproduce tds: cannot load the training data: {error}", file=sys.stderr)
        return 1
    dirs = _prepare_out(args)  # (--overwrite removes an earlier run only once the data is here)
    timings = {"data": time.perf_counter() - start}
    runs: list[SeedRun] = []
    try:
        for seed, out_dir in enumerate(dirs):
            runs.append(train_seed(args, seed, images, labels, out_dir))
    except KeyboardInterrupt:
        where = dirs[len(runs)] / RUN_FILE
        print(f"\ninterrupted during seed {len(runs)}: {where} is closed and readable with ndt_fast.load "
              "(no figures or claims were written: they come after the last seed)", file=sys.stderr)
        return 130
    analysis_start = time.perf_counter()
    files: list[Path] = []
    per_seed_readings = []
    all_rows = []
    detector = JumpDetector()  # ndt's defaults, as FastTracker's detect_jumps
    for r in runs:
        rows = evaluate_claims([r.data])
        all_rows.append(rows)
        reading = readings(r.data, detector)
        per_seed_readings.append(reading)
        export_to_csv(r.data.results, str(r.out_dir / RESULTS_CSV))
        write_jumps_csv(r.data, r.out_dir / JUMPS_CSV)
        figures = write_figures(r.data, r.out_dir, rows)
        names = [RUN_FILE, RESULTS_CSV, JUMPS_CSV, *(p.name for p in figures), CLAIMS_MD, CLAIMS_JSON]
        write_claims(r.out_dir, rows, {**_context(args, data, names), "seeds": 1, "seed": r.seed},
                     _aggregate_readings([reading]))
        files += [r.out_dir / n for n in names]
    if len(runs) > 1:
        rows = evaluate_claims([r.data for r in runs])
        names = [f"seed{k}/" for k in range(len(runs))] + [CLAIMS_MD, CLAIMS_JSON]
        write_claims(args.out, rows, _context(args, data, names), _aggregate_readings(per_seed_readings))
        files += [args.out / CLAIMS_MD, args.out / CLAIMS_JSON]
    else:
        rows = all_rows[0]
    timings["analysis"] = time.perf_counter() - analysis_start
    timings["total"] = time.perf_counter() - start
    print(_summary(args, runs, rows, timings, data, files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
