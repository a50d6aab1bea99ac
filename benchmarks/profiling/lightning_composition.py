"""Where the Lightning monitor's overhead comes from: untracked fits interleaved with four
monitors, each adding one part to the one before — a monitor that never samples (a callback and
idle forward hooks), one that samples with neither loggers nor run file, one with the run file,
and the full monitor (run file and TensorBoard) — and the full monitor finishing its samples on
the training thread (``background_finish=False``, the callbacks' default before it existed). In
each round every variant runs once, in a rotating order; per variant, the median over rounds of
its wall time and of its CPU time (all threads) divided by the round's untracked ones. The
background finish shows in wall time only: it moves work to another core, it does not remove it.

    .venv/bin/python benchmarks/profiling/lightning_composition.py [model=tiny] [rounds=10] [steps=400]
"""

from __future__ import annotations

import logging
import os
import statistics
import sys
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1]))
from lightning_interleaved import fit  # noqa: E402
from test_lightning_overhead import STEPS, loader_for  # noqa: E402

VARIANTS = {
    "untracked": None,
    "never samples (sampling_frequency=10**9, no file, no loggers)":
        {"sampling_frequency": 10**9, "output": False, "log_to_loggers": False},
    "samples, no file, no loggers": {"output": False, "log_to_loggers": False},
    "samples, run file, no loggers": {"log_to_loggers": False},
    "full monitor (run file, TensorBoard)": {},
    "full monitor, finish on the training thread": {"background_finish": False},
}


def main(model: str = "tiny", rounds: int = 10, steps: int = STEPS) -> None:
    warnings.simplefilter("ignore")  # Lightning's advice on workers and GPUs: the same in every variant
    logging.getLogger("lightning").setLevel(logging.ERROR)
    torch.set_num_threads(1)
    loader = loader_for(model, steps)
    fit(loader, True, steps, model), fit(loader, False, steps, model)  # warm-up
    load_before = os.getloadavg()[0]
    names = list(VARIANTS)
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            options = VARIANTS[name]
            seconds, cpu_seconds, _ = fit(loader, options is not None, steps, model, **(options or {}))
            wall[name].append(seconds), cpu[name].append(cpu_seconds)
    print(f"{rounds} rounds of {steps}-step fits, {model} MLP, sampling 10 unless said; load average before "
          f"{load_before:.2f}, after {os.getloadavg()[0]:.2f}; untracked median {statistics.median(wall['untracked']):.3f} s "
          f"wall, {statistics.median(cpu['untracked']):.3f} s CPU")
    for name in names[1:]:
        for kind, times in (("wall", wall), ("CPU", cpu)):
            ratios = [a / b for a, b in zip(times[name], times["untracked"])]
            print(f"  {name if kind == 'wall' else '':62s} {kind:4s} x untracked: median {statistics.median(ratios):.3f}  "
                  "rounds: " + " ".join(f"{x:.2f}" for x in ratios))


if __name__ == "__main__":
    main(*(int(a) if a.isdigit() else a for a in sys.argv[1:]))
