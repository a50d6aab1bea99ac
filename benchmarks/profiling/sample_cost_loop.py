"""The CPU cost of one sample outside any framework: a plain training loop of the Lightning
benchmark's tiny MLP (64-128-128-10, batch 64, Adam, one torch thread), every step sampled, 300
steps per run, 5 runs per variant (medians). Variants: ``untracked``; ``mem`` (records in memory);
``mem+tb`` (and a TensorBoardSink on torch's SummaryWriter); ``file+tb`` (a run file instead of
memory). "extra cpu" is the process CPU time per step (all threads: writer, sinks, TensorBoard's
writer) above the untracked loop's: the cost of one sample of three layers.

A/B across commits: run it with each checkout's interpreter back to back, e.g.

    .venv/bin/python benchmarks/profiling/sample_cost_loop.py untracked file+tb mem+tb
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

import torch
from torch import nn

from ndt_fast import FastTracker


def run(variant: str, steps: int = 300) -> tuple[float, float]:
    """(CPU µs per step, wall µs per step) of one loop."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    x, y = torch.randn(64, 64), torch.randint(0, 10, (64,))
    tracker = None
    if variant != "untracked":
        options = {"sampling_frequency": 1, "keep_last_output": False, "capacity": 8192}
        if "file" in variant:
            options["output"] = os.path.join(tempfile.mkdtemp(), "run.h5")
        if "tb" in variant:
            from torch.utils.tensorboard import SummaryWriter

            from ndt_fast.sinks import TensorBoardSink

            options["sinks"] = [TensorBoardSink(SummaryWriter(tempfile.mkdtemp()))]
        tracker = FastTracker(model, **options)
    cpu, wall = time.process_time(), time.perf_counter()
    train_loop(model, optimizer, x, y, tracker, steps)
    if tracker is not None:
        tracker.close()
    return (time.process_time() - cpu) / steps * 1e6, (time.perf_counter() - wall) / steps * 1e6


def train_loop(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               tracker: FastTracker | None, steps: int) -> None:
    """``steps`` training steps on the same batch (cross-entropy), each logged to ``tracker``."""
    for step in range(steps):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if tracker is not None:
            tracker.log(step, loss.detach())


def main(variants: list[str]) -> None:
    torch.set_num_threads(1)
    variants = variants or ["untracked", "mem", "mem+tb", "file+tb"]
    if "untracked" not in variants:
        variants.insert(0, "untracked")
    times: dict[str, list[tuple[float, float]]] = {v: [] for v in variants}
    for _ in range(5):
        for variant in variants:
            times[variant].append(run(variant))
    base = statistics.median(c for c, _ in times["untracked"])
    for variant in variants:
        cpu = statistics.median(c for c, _ in times[variant])
        wall = statistics.median(w for _, w in times[variant])
        print(f"{variant:10s} cpu/step {cpu:7.0f} us  wall/step {wall:7.0f} us   extra cpu {cpu - base:6.0f} us")


if __name__ == "__main__":
    main(sys.argv[1:])
