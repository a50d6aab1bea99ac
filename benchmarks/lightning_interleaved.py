"""The Lightning overhead of ``test_lightning_overhead.py``, measured A/B interleaved.

pytest-benchmark runs all rounds of one variant, then all of the other; on a shared machine whose
load drifts over a minute that order alone can move the ratio by tens of percent. This script
alternates the two fits (same model, data, Trainer settings, TensorBoard logger) and reports
the median of each, the median of the per-pair ratios with a 95 % bootstrap interval (pairs
resampled: what the goal's 3 % needs is enough pairs for that interval to be narrow) and the
ratio of the fastest fits (noise on this VM only ever adds time) — of wall time, and of the process's
CPU time (all threads: the tracker's writer and sinks threads count; less sensitive than wall
time to other processes on the machine) — plus where the monitor's time goes (its hooks, timed
inside the fit) and the load average before and after.

    .venv/bin/python benchmarks/lightning_interleaved.py [pairs=8] [run_file=1] [steps=400] [model=tiny]

(``model``: a key of ``test_lightning_overhead.MODELS``.)
"""

from __future__ import annotations

import logging
import os
import random
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import lightning as L  # noqa: E402
from lightning.pytorch.loggers import TensorBoardLogger  # noqa: E402
from test_lightning_overhead import MODELS, STEPS, SmallModule, loader_for  # noqa: E402

from ndt_fast.integrations.lightning import DimensionalityMonitor  # noqa: E402

HOOKS = ("on_fit_start", "on_before_optimizer_step", "on_train_batch_end", "teardown")


class TimedMonitor(DimensionalityMonitor):
    """The monitor, with the wall time of each of its hooks summed per fit."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.spent = dict.fromkeys(HOOKS, 0.0)
        for name in HOOKS:
            setattr(self, name, self._timed(name, getattr(self, name)))

    def _timed(self, name, hook):
        def run(*args, **kwargs):
            start = time.perf_counter()
            try:
                return hook(*args, **kwargs)
            finally:
                self.spent[name] += time.perf_counter() - start
        return run


def fit(loader, tracked: bool, steps: int = STEPS, model: str = "tiny",
        **options) -> tuple[float, float, dict[str, float]]:
    torch.manual_seed(0)
    monitor = TimedMonitor(**{"sampling_frequency": 10, **options}) if tracked else None
    trainer = L.Trainer(max_steps=steps, logger=TensorBoardLogger(tempfile.mkdtemp()),
                        callbacks=[monitor] if monitor else [], enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1)
    module = SmallModule(model)
    start, cpu = time.perf_counter(), time.process_time()
    trainer.fit(module, loader)
    return time.perf_counter() - start, time.process_time() - cpu, (monitor.spent if monitor else {})


def bootstrap_interval(values: list[float], statistic=statistics.median, draws: int = 4000) -> tuple[float, float]:
    """A 95 % interval of ``statistic`` over ``values`` (independent pairs): the 2.5th and 97.5th
    percentiles of the statistic of ``draws`` resamples with replacement (fixed seed)."""
    rng = random.Random(0)
    stats = sorted(statistic(rng.choices(values, k=len(values))) for _ in range(draws))
    return stats[int(0.025 * draws)], stats[int(0.975 * draws) - 1]


def main(pairs: int = 8, run_file: bool = True, steps: int = STEPS, model: str = "tiny") -> None:
    warnings.simplefilter("ignore")  # Lightning's advice on workers and GPUs: the same in both variants
    logging.getLogger("lightning").setLevel(logging.ERROR)
    torch.set_num_threads(1)
    loader = loader_for(model, steps)
    options = {} if run_file else {"output": False}
    fit(loader, True, steps, model, **options), fit(loader, False, steps, model)  # warm-up: imports, first file, …
    load_before = os.getloadavg()
    plain, tracked, ratios, cpu_ratios, spent = [], [], [], [], []
    for i in range(pairs):
        order = (False, True) if i % 2 == 0 else (True, False)  # neither variant always runs first
        runs = {variant: fit(loader, variant, steps, model, **options) for variant in order}
        (a, a_cpu, _), (b, b_cpu, hooks) = runs[False], runs[True]
        plain.append(a), tracked.append(b), ratios.append(b / a), cpu_ratios.append(b_cpu / a_cpu)
        spent.append(hooks)
    (widths, batch) = MODELS[model]
    print(f"{pairs} interleaved pairs of {steps}-step fits ({model} MLP {'-'.join(map(str, widths))}, batch {batch}, "
          f"TensorBoard logger, sampling 10, "
          f"{'run file' if run_file else 'output=False: no run file'}); load average before "
          f"{load_before[0]:.2f}, after {os.getloadavg()[0]:.2f} (2 cores)")
    print(f"untracked median {statistics.median(plain):.3f} s   tracked median {statistics.median(tracked):.3f} s")
    low, high = bootstrap_interval(ratios)
    print(f"wall: median of per-pair ratios {statistics.median(ratios):.3f}x (95 % bootstrap interval "
          f"{low:.3f}-{high:.3f})   ratio of medians "
          f"{statistics.median(tracked) / statistics.median(plain):.3f}x   ratio of minimums "
          f"{min(tracked) / min(plain):.3f}x   per-pair: "
          + " ".join(f"{r:.2f}" for r in ratios))
    low, high = bootstrap_interval(cpu_ratios)
    print(f"CPU:  median of per-pair ratios {statistics.median(cpu_ratios):.3f}x (95 % bootstrap interval "
          f"{low:.3f}-{high:.3f})   per-pair: "
          + " ".join(f"{r:.2f}" for r in cpu_ratios))
    for name in HOOKS:
        print(f"  {name:26s} median {1000 * statistics.median(h[name] for h in spent):7.1f} ms per fit")


if __name__ == "__main__":
    main(*(int(a) if a.isdigit() else a for a in sys.argv[1:]))
