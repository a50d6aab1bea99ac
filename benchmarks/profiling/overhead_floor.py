"""The lowest tracking overhead the exact float64 computation allows on the TDS MLP (issue 3).

Interleaves, in one process, the untracked loop, FastTracker, and two stripped-down trackers that
do only the unavoidable work of a sample with no bookkeeping at all:

* ``floor-f64``: forward hooks keep a reference to the three Linear outputs on sampled steps;
  ``log`` makes the native calls FastTracker makes (sample-side float64 Gram per layer, one
  ``metrics_of_accumulators`` for all three) and nothing else: no records, no jump detection, no
  error handling. What any exact float64 tracker built on this core costs at least.
* ``floor-f32``: float32 torch instead (``x @ x.T``, ``eigvalsh`` per layer, then only three
  metrics: stable rank, participation ratio, nuclear-norm ratio — an underestimate of a float32
  mode's cost). Not accurate enough for numerically low-rank activations (docs/CUDA.md,
  "Precision"); shown for the planning decision only.

Each variant trains its own copy of the model (same initial weights, same batches). Rounds of
``--steps`` steps per variant, in rotating order; prints the median ms/step per variant and its
ratio to the untracked median. Run on a quiet machine:
``.venv/bin/python benchmarks/profiling/overhead_floor.py --frequency 5``.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn

from ndt_fast import FastTracker
from ndt_fast._buffer import torch_matrix_view
from ndt_fast._native import core
from ndt_fast.metrics import metric_mask


class _Floor:
    """Only the work of a sample: keep the outputs, then the native Gram + metrics calls."""

    def __init__(self, layers: list[nn.Module], frequency: int, float32: bool) -> None:
        self.frequency, self.float32 = frequency, float32
        self.outputs: list[torch.Tensor | None] = [None] * len(layers)
        self.armed = True
        self.accumulators = [core.GramAccumulator(64, "sample", center=False) for _ in layers[:2]]
        self.accumulators.append(core.GramAccumulator(10, "feature", center=False))
        self.mask = metric_mask(None)  # all six, as FastTracker by default
        for i, layer in enumerate(layers):
            layer.register_forward_hook(self._hook(i))

    def _hook(self, i: int):
        def hook(module, inputs, output):
            if self.armed:
                self.outputs[i] = output.detach()
        return hook

    def log(self, step: int) -> None:
        if step % self.frequency == 0:
            if self.float32:
                spectra = [torch.linalg.eigvalsh(x @ x.T if x.shape[0] < x.shape[1] else x.T @ x) for x in self.outputs]
                for s in spectra:  # the metrics from the spectrum, as few torch ops as possible
                    s = s.clamp_min(0)
                    (s.sum() / s.max(), s.sqrt().sum() / s.max().sqrt(), s.sum() ** 2 / (s * s).sum())
            else:
                for accumulator, x in zip(self.accumulators, self.outputs):
                    accumulator.reset()
                    accumulator.add(torch_matrix_view(x), threads=1)
                core.metrics_of_accumulators(self.accumulators, eps=1e-10, energy_threshold=0.9, center=False,
                                             metrics=self.mask, solver="auto", threads=1)
        self.armed = (step + 1) % self.frequency == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frequency", type=int, default=5)
    parser.add_argument("--steps", type=int, default=100, help="steps per variant per round")
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()

    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
    xs, ys = torch.randn(50, 64, 784), torch.randint(0, 10, (50, 64))
    variants = {}
    for name in ("untracked", "FastTracker", "floor-f64", "floor-f32"):
        model = copy.deepcopy(base)
        layers = [model[0], model[2], model[4]]
        if name == "FastTracker":
            tracker = FastTracker(model, layers=layers, sampling_frequency=args.frequency)
            log = lambda step, loss, t=tracker: t.log(step, loss)  # noqa: E731
        elif name.startswith("floor"):
            floor = _Floor(layers, args.frequency, float32=name == "floor-f32")
            log = lambda step, loss, f=floor: f.log(step)  # noqa: E731
        else:
            log = None
        variants[name] = (model, torch.optim.Adam(model.parameters(), 1e-3), log, [0])

    def run(name: str) -> float:
        model, optimizer, log, next_step = variants[name]
        start = time.perf_counter()
        for _ in range(args.steps):
            step = next_step[0]
            loss = nn.functional.cross_entropy(model(xs[step % 50]), ys[step % 50])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if log is not None:
                log(step, loss)
            next_step[0] += 1
        return (time.perf_counter() - start) / args.steps * 1e3

    names = list(variants)
    for name in names:  # warm-up
        run(name)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            times[name].append(run(name))
    reference = statistics.median(times["untracked"])
    print(f"TDS MLP, sampling {args.frequency}, {args.rounds} rounds x {args.steps} steps, torch threads "
          f"{torch.get_num_threads()}")
    for name in names:
        median = statistics.median(times[name])
        print(f"  {name:12s} {median:6.3f} ms/step  {median / reference:5.3f}x  "
              f"(+{(median - reference) * args.frequency * 1e3:5.0f} us per sample)")


if __name__ == "__main__":
    main()
