"""Per-sample spectra time of the TDS MLP, before/after the batched eigensolver, in one process.

A sample of the TDS MLP (batch 64) has three Linear outputs, 64 × 256, 64 × 128 and 64 × 10:
two 64 × 64 sample-side Grams and one 10 × 10 feature-side Gram. This script times the native
``metrics`` call (Grams + spectra + metrics, float64, one thread) of the current build and of a
baseline build of the extension loaded beside it, alternating the two, and subtracts the same
call with only ``participation_ratio_eig`` (Grams + trace/Frobenius, no eigensolver) to get the
spectra's share. Two settings: isolated (the same activations every call, warm caches) and inside
the TDS training loop (real activations after each optimizer step, the caches the step leaves).

Build the baseline from the commit before the batched solver, with pybind11 told it is another
ABI so that both extensions can live in one process:

    git archive <commit> | tar -x -C /tmp/ndt_base && cd /tmp/ndt_base
    cmake -S . -B build -G Ninja -DNDT_BUILD_PYTHON=ON -DNDT_ENABLE_CUDA=OFF \\
        -DPython_EXECUTABLE=$PWD/../wt/.venv/bin/python -Dpybind11_DIR=... \\
        '-DCMAKE_CXX_FLAGS=-DPYBIND11_COMPILER_TYPE=\\"_ab_baseline\\"' && ninja -C build _core
    python benchmarks/profiling/spectra_ab.py --baseline-core /tmp/ndt_base/build/_core*.so
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import statistics
import time

import numpy as np
import torch
from torch import nn

from ndt_fast._buffer import describe
from ndt_fast._native import core

ALL = sum(core.METRIC_BITS.values())
NO_EIGENSOLVER = core.METRIC_BITS["participation_ratio_eig"]


def load_baseline(path: str):
    loader = importlib.machinery.ExtensionFileLoader("_core", path)
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("_core", loader))
    loader.exec_module(module)
    from scipy.linalg import cython_blas, cython_lapack

    module.register_linalg(cython_blas.__pyx_capi__, cython_lapack.__pyx_capi__)
    return module


def timed_metrics(module, views, mask: int) -> float:
    start = time.perf_counter()
    module.metrics(views, eps=1e-10, energy_threshold=0.9, center=False, metrics=mask, solver="auto", threads=1)
    return time.perf_counter() - start


def one_round(modules: dict, views, times: dict, order: list[str]) -> None:
    for name in order:
        times[name, "all"].append(timed_metrics(modules[name], views, ALL))
        times[name, "grams"].append(timed_metrics(modules[name], views, NO_EIGENSOLVER))


def report(title: str, times: dict, statistic) -> None:
    print(title)
    for name in ("baseline", "batched"):
        total = statistic(times[name, "all"]) * 1e6
        grams = statistic(times[name, "grams"]) * 1e6
        print(f"  {name:8s}: metrics {total:6.0f} µs, of which Grams {grams:4.0f} µs → spectra {total - grams:5.0f} µs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-core", required=True, help="path of the baseline build's _core*.so")
    parser.add_argument("--rounds", type=int, default=400, help="isolated rounds")
    parser.add_argument("--steps", type=int, default=1000, help="training steps")
    args = parser.parse_args()
    torch.set_num_threads(1)
    modules = {"baseline": load_baseline(args.baseline_core), "batched": core}

    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((64, d), dtype=np.float32) for d in (256, 128, 10)]
    views = [describe(x)[1] for x in xs]
    times: dict = {(n, k): [] for n in modules for k in ("all", "grams")}
    for r in range(args.rounds):
        one_round(modules, views, times, ["baseline", "batched"] if r % 2 else ["batched", "baseline"])
    report(f"isolated, TDS sample shapes, median of {args.rounds} alternated rounds:", times, statistics.median)
    # What solving several samples' spectra in one call would give (the lanes fill only from four
    # matrices on; a sample has two large ones): four samples' activations per call, per sample.
    four_samples = [rng.standard_normal((64, d), dtype=np.float32) for _ in range(4) for d in (256, 128, 10)]
    four = [describe(x)[1] for x in four_samples]  # (the arrays stay alive in four_samples)
    grouped = {(n, k): [] for n in modules for k in ("all", "grams")}
    for r in range(args.rounds // 4):
        one_round(modules, four, grouped, ["baseline", "batched"] if r % 2 else ["batched", "baseline"])
    report("  the same, four samples per call, per sample:",
           {key: [t / 4 for t in values] for key, values in grouped.items()}, statistics.median)

    torch.manual_seed(0)
    data, labels = torch.randn(50, 64, 784), torch.randint(0, 10, (50, 64))
    model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    outputs: list[torch.Tensor] = []
    for layer in (model[0], model[2], model[4]):
        layer.register_forward_hook(lambda module, inputs, output: outputs.append(output.detach()))
    times = {(n, k): [] for n in modules for k in ("all", "grams")}
    for step in range(args.steps):
        outputs.clear()
        loss = nn.functional.cross_entropy(model(data[step % 50]), labels[step % 50])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        views = [describe(o)[1] for o in outputs]
        # One measured call per step, right after the optimizer step (as a tracker's log() runs),
        # cycling through the four (build, metrics) pairs.
        name = ("baseline", "batched")[step % 2]
        kind = ("all", "grams")[(step // 2) % 2]
        times[name, kind].append(timed_metrics(modules[name], views, ALL if kind == "all" else NO_EIGENSOLVER))
    report(f"in the TDS training loop, median over {args.steps // 4} steps per row:", times, statistics.median)


if __name__ == "__main__":
    main()
