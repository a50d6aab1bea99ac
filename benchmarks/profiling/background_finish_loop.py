"""``background_finish`` in a plain training loop, every step sampled: the wall and CPU time per
step of the untracked loop, FastTracker finishing on the training thread (``sync``) and on its
background thread (``background``). Models: the Lightning benchmark's "tiny" MLP 64-128-128-10
(batch 64: two 64 × 64 and one 10 × 10 Gram per sample) and "mnist" 784-256-256-10 (batch 128:
two 128 × 128 and one 10 × 10); Adam, one torch thread, records in memory. Each round runs every
variant once (the order reversed every other round); medians over rounds. The background thread
saves wall time where a core is free for it, and costs some CPU (the hand-over, and the Grams
read from another core's cache).

    .venv/bin/python benchmarks/profiling/background_finish_loop.py [models=tiny,mnist] [rounds=7] [steps=300]
"""

from __future__ import annotations

import os
import statistics
import sys
import time

import torch
from torch import nn

from ndt_fast import FastTracker
from sample_cost_loop import train_loop  # (this script's folder is on sys.path)

MODELS = {"tiny": ((64, 128, 128, 10), 64), "mnist": ((784, 256, 256, 10), 128)}
VARIANTS = ("untracked", "sync", "background")


def run(model_name: str, variant: str, steps: int) -> tuple[float, float]:
    """(wall µs, CPU µs of all threads) per step of one loop, results and close included."""
    torch.manual_seed(0)
    (a, b, c, d), batch = MODELS[model_name]
    model = nn.Sequential(nn.Linear(a, b), nn.ReLU(), nn.Linear(b, c), nn.ReLU(), nn.Linear(c, d))
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    x, y = torch.randn(batch, a), torch.randint(0, d, (batch,))
    tracker = None
    if variant != "untracked":
        tracker = FastTracker(model, sampling_frequency=1, keep_last_output=False, capacity=8192,
                              background_finish=variant == "background")
    start, cpu = time.perf_counter(), time.process_time()
    train_loop(model, optimizer, x, y, tracker, steps)
    if tracker is not None:
        assert len(tracker.get_results("Linear_0")) == steps and sum(tracker.errors.values()) == 0
        tracker.close()
    return 1e6 * (time.perf_counter() - start) / steps, 1e6 * (time.process_time() - cpu) / steps


def main(models: str = "tiny,mnist", rounds: int = 7, steps: int = 300) -> None:
    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]
    print(f"{rounds} rounds of {steps}-step loops per variant, every step sampled, one torch thread; load average "
          f"before {load_before:.2f}")
    for name in models.split(","):
        times: dict[str, list[tuple[float, float]]] = {v: [] for v in VARIANTS}
        run(name, "background", 20)  # warm-up
        for r in range(rounds):
            for variant in VARIANTS if r % 2 == 0 else VARIANTS[::-1]:
                times[variant].append(run(name, variant, steps))
        base = statistics.median(w for w, _ in times["untracked"])
        for variant, samples in times.items():
            walls, cpus = [w for w, _ in samples], [c for _, c in samples]
            print(f"{name:6s} {variant:10s} wall {statistics.median(walls):7.0f} µs/step "
                  f"({statistics.median(walls) / base:.3f}x untracked; rounds {min(walls):.0f}-{max(walls):.0f})  "
                  f"CPU {statistics.median(cpus):7.0f} µs/step")
    print(f"load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main(*(int(a) if a.isdigit() else a for a in sys.argv[1:]))
