"""The Lightning monitor's cost per training step, read inside each fit: the time of every step
(from one ``on_train_batch_start`` to the next) grouped by its place in the sampling cycle
(``global_step mod 10``), the median per place over every cycle of every fit, for untracked fits
and fits with monitor variants, which rotate round by round.

Whole-fit ratios (``lightning_interleaved.py``, the pytest-benchmark group) carry this VM's drift:
pairs of 400-step fits scatter over 0.8–1.6×. A step's median over hundreds of cycles does not:
runs of this script agree to about 1 %. What it measures is the steady state — the sampled step's
extra time and any slowing of the other steps; the fit's fixed costs (``on_fit_start``, the
``teardown`` that closes the run file: ~25 ms per fit, ``lightning_interleaved.py`` times them)
and rare stalls (a median ignores them) are not in it. Columns:

- ``cycle / untracked``: the sum over the ten places of the variant's step medians ÷ the
  untracked ones — the steady-state overhead, but across fits, so this VM's drift between fits
  (a few per cent, either way) is in it;
- ``sampling``: the same sum ÷ ten times the variant's own median step far from a sample
  (places 3–7), over the untracked fits' same ratio (Lightning logs every 50 steps, at place 0),
  minus 1 — what sampling adds to the steps of the same fits, free of that drift (the idle cost
  of a monitor on every step is not in it: the never-sampling variant shows it, with the drift);
- ``sampled step`` / ``next``: the extra time of place 0 and place 1 over the variant's own
  median step far from a sample (places 3–7).

    .venv/bin/python benchmarks/lightning_step_cycle.py [model=tiny] [rounds=6] [steps=400]
"""

from __future__ import annotations

import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
import lightning as L  # noqa: E402
from lightning.pytorch.loggers import TensorBoardLogger  # noqa: E402
from test_lightning_overhead import SmallModule, loader_for  # noqa: E402

from ndt_fast.integrations.lightning import DimensionalityMonitor  # noqa: E402

SAMPLING = 10
SKIPPED = 20  # the first steps of a fit (warming up) are not counted
VARIANTS: dict[str, dict[str, Any] | None] = {
    "untracked": None,
    "monitor that never samples": {"sampling_frequency": 10**9},
    "monitor (run file, TensorBoard)": {},
    "monitor, finish on the training thread": {"background_finish": False},
    "monitor, no run file, no loggers": {"output": False, "log_to_loggers": False},
}


class StepClock(L.Callback):
    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_batch_start(self, *args: Any) -> None:
        self.starts.append(time.perf_counter())


def step_times(loader: Any, model: str, steps: int, options: dict[str, Any] | None) -> list[float]:
    """Seconds of each step of one fit; entry i is the step that makes ``global_step`` i + 1."""
    torch.manual_seed(0)
    clock = StepClock()
    monitor = [DimensionalityMonitor(**{"sampling_frequency": SAMPLING, **options})] if options is not None else []
    trainer = L.Trainer(max_steps=steps, logger=TensorBoardLogger(tempfile.mkdtemp()), callbacks=[clock, *monitor],
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        accelerator="cpu", devices=1)
    trainer.fit(SmallModule(model), loader)
    return [b - a for a, b in zip(clock.starts, clock.starts[1:])]


def main(model: str = "tiny", rounds: int = 6, steps: int = 400) -> None:
    warnings.simplefilter("ignore")  # Lightning's advice on workers and GPUs: the same in every variant
    logging.getLogger("lightning").setLevel(logging.ERROR)
    torch.set_num_threads(1)
    loader = loader_for(model, steps)
    step_times(loader, model, 100, {})  # warm-up: imports, the first run file
    load_before = os.getloadavg()[0]
    names = list(VARIANTS)
    by_place: dict[str, list[list[float]]] = {name: [[] for _ in range(SAMPLING)] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            times = step_times(loader, model, steps, VARIANTS[name])
            for i, seconds in enumerate(times[SKIPPED:], start=SKIPPED):
                by_place[name][(i + 1) % SAMPLING].append(seconds)
    print(f"{rounds} rounds of {steps}-step fits, {model} MLP, TensorBoard logger, sampling every {SAMPLING} steps; "
          f"load average before {load_before:.2f}, after {os.getloadavg()[0]:.2f}")
    def cycle_over_far(medians: list[float]) -> float:
        return sum(medians) / (SAMPLING * statistics.median(medians[3:8]))

    base = [statistics.median(place) for place in by_place["untracked"]]
    for name in names:
        medians = [statistics.median(place) for place in by_place[name]]
        far = statistics.median(medians[3:8])
        print(f"  {name:40s} step ms by global_step mod {SAMPLING}: " + " ".join(f"{1e3 * m:.2f}" for m in medians))
        print(f"  {'':40s} cycle / untracked {sum(medians) / sum(base):.3f}x   sampling "
              f"{cycle_over_far(medians) / cycle_over_far(base) - 1:+.1%}   sampled step {1e3 * (medians[0] - far):+.2f} ms, "
              f"next {1e3 * (medians[1] - far):+.2f} ms")


if __name__ == "__main__":
    main(*(int(a) if a.isdigit() else a for a in sys.argv[1:]))
