"""Where the Lightning monitor's overhead comes from: untracked fits interleaved with four
monitors, each adding one part to the one before — a monitor that never samples (a callback and
idle forward hooks), one that samples with neither loggers nor run file, one with the run file,
and the full monitor (run file and TensorBoard). In each round every variant runs once, in a
rotating order; per variant, the median over rounds of its CPU time (all threads) divided by
the round's untracked CPU time.

    .venv/bin/python benchmarks/profiling/lightning_composition.py [model=tiny] [rounds=10]
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
}


def main(model: str = "tiny", rounds: int = 10) -> None:
    warnings.simplefilter("ignore")  # Lightning's advice on workers and GPUs: the same in every variant
    logging.getLogger("lightning").setLevel(logging.ERROR)
    torch.set_num_threads(1)
    loader = loader_for(model, STEPS)
    fit(loader, True, STEPS, model), fit(loader, False, STEPS, model)  # warm-up
    load_before = os.getloadavg()[0]
    names = list(VARIANTS)
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            options = VARIANTS[name]
            cpu[name].append(fit(loader, options is not None, STEPS, model, **(options or {}))[1])
    print(f"{rounds} rounds of {STEPS}-step fits, {model} MLP, sampling 10 unless said; load average before "
          f"{load_before:.2f}, after {os.getloadavg()[0]:.2f}; untracked CPU median {statistics.median(cpu['untracked']):.3f} s")
    for name in names[1:]:
        ratios = [a / b for a, b in zip(cpu[name], cpu["untracked"])]
        print(f"  {name:62s} CPU x untracked: median {statistics.median(ratios):.3f}  rounds: "
              + " ".join(f"{x:.2f}" for x in ratios))


if __name__ == "__main__":
    main(*(int(a) if a.isdigit() else a for a in sys.argv[1:]))
