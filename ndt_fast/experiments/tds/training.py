"""Training one seed tracked by FastTracker, and the jumps found on its samples.

:func:`train_seed` is the one training loop of :mod:`ndt_fast.experiments`: the TDS
reproduction calls it with the article's MLP; the architecture comparison passes another model,
the intervention experiment a corruption of the batches inside a window of steps.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ndt_fast.experiments.tds.article import (
    ARTICLE_EVERY, BATCH_SIZE, FLUSH_SECONDS, LAYER_NAMES, LOW_EVERY, RUN_FILE, SPACES, TDSMLP, WEIGHT_METRICS,
    ShuffledBatches, _adam, _grad_norm)
from ndt_fast.jumps import Jump, JumpDetector

#: ``corrupt(step, images, labels) -> (images, labels)``: what the model trains on at ``step``
#: instead of the batch drawn (the batch itself when the step is outside the corruption).
BatchCorruption = Callable[[int, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class Progress:
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
    """One seed's run: its data, folder, timings (s), last loss and the trained model."""

    seed: int
    out_dir: Path
    data: RunData
    train_s: float
    final_loss: float
    write_error: str | None = None
    model: nn.Module | None = None  # the trained model (for a test accuracy after training)



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
               out_dir: Path, *, make_model: Callable[[], nn.Module] = TDSMLP,
               layer_names: Sequence[str] = LAYER_NAMES, corrupt: BatchCorruption | None = None,
               desc: str | None = None) -> SeedRun:
    """Train one seed with the article's setup, tracked by FastTracker streaming to ``out_dir/run.h5``.

    ``images``: ``(N, 784)`` float32 normalized, ``labels``: ``(N,)`` int64, both on
    ``args.device``. Seeds ``torch.manual_seed(seed)`` (initialization) and a CPU generator
    (shuffling). ``make_model()`` (called after seeding) builds the model; its
    ``tracked_layers()`` are tracked under ``layer_names``. ``corrupt`` (see
    :data:`BatchCorruption`) replaces the batch the model trains on; it must not draw from torch's
    global generator, so that a corrupted run sees the same batches and initialization as its
    control. The tracker is closed (the run file finished) on every exit path, KeyboardInterrupt
    included. Returns the results, the jumps (:func:`find_jumps`), the training time and the
    trained model.
    """
    from ndt_fast.tracker import FastTracker

    device = torch.device(args.device)
    torch.manual_seed(seed)
    model = make_model().to(device)
    model.train()
    optimizer = _adam(model.parameters())
    criterion = nn.CrossEntropyLoss()
    params = list(model.parameters())
    batches = ShuffledBatches(len(labels), BATCH_SIZE, torch.Generator().manual_seed(seed), device)
    out_dir.mkdir(parents=True, exist_ok=True)
    # flush_interval: the writer thread shares the 2 cores with torch's; flushing every 5 s instead
    # of every 1 s saved ~0.3 ms/step (~2.5 s of the 8000 steps). The file stays live-readable.
    tracker = FastTracker(model, layers=model.tracked_layers(), layer_names=list(layer_names),
                          sampling_frequency=args.freq, track_weights=WEIGHT_METRICS, output=out_dir / RUN_FILE,
                          flush_interval=FLUSH_SECONDS)
    progress = Progress(args.steps, desc or f"seed {seed}", args.progress)
    report_every = 25  # progress updates (one loss.item() each) every 25 steps: ~no cost
    loss = torch.zeros(())
    try:
        start = time.perf_counter()
        for step in range(args.steps):
            batch = next(batches)
            optimizer.zero_grad(set_to_none=True)
            inputs, targets = images[batch], labels[batch]
            if corrupt is not None:
                inputs, targets = corrupt(step, inputs, targets)
            loss = criterion(model(inputs), targets)
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
                   None if write_error is None else f"{type(write_error).__name__}: {write_error}", model)
