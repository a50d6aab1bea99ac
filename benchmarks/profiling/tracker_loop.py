"""Where FastTracker's time goes inside the TDS MLP training loop (see benchmarks/NOTES.md).

Wraps FastTracker._capture (the work of an armed hook) and FastTracker._record (the work of a
sampled log()) with timers and trains 300 steps. With ``--native``, also times the native calls
inside them (GramAccumulator.add, metrics_of_accumulators) and the online jump banks
(``_detect_online``), so the Python around them is the difference.
"""

import argparse
import time

import torch
from torch import nn

import ndt_fast.tracker as tracker_module
from ndt_fast import FastTracker
from ndt_fast._native import core


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frequency", type=int, default=1)
    parser.add_argument("--core-threads", type=int, default=None, help="ndt_fast's threads across layers")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--native", action="store_true", help="also time the native calls and the jump banks")
    args = parser.parse_args()
    if args.core_threads is not None:
        core.set_num_threads(args.core_threads)

    spent = {"capture": 0.0, "record": 0.0, "samples": 0, "native add": 0.0, "native metrics": 0.0, "jump banks": 0.0}
    if args.native:
        _time_native_calls(spent)
    capture, record = tracker_module.FastTracker._capture, tracker_module.FastTracker._record

    def timed_capture(self, *a):
        t = time.perf_counter()
        capture(self, *a)
        spent["capture"] += time.perf_counter() - t

    def timed_record(self, *a):
        t = time.perf_counter()
        record(self, *a)
        spent["record"] += time.perf_counter() - t
        spent["samples"] += 1

    tracker_module.FastTracker._capture, tracker_module.FastTracker._record = timed_capture, timed_record

    torch.manual_seed(0)
    xs, ys = torch.randn(50, 64, 784), torch.randint(0, 10, (50, 64))
    model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    tracker = FastTracker(model, layers=[model[0], model[2], model[4]], sampling_frequency=args.frequency)
    start = time.perf_counter()
    for step in range(args.steps):
        loss = nn.functional.cross_entropy(model(xs[step % 50]), ys[step % 50])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        tracker.log(step, loss)
    total = time.perf_counter() - start
    tracker.close()
    n = max(spent["samples"], 1)
    print(f"per step {total / args.steps * 1e6:.0f} µs; per sample: hooks {spent['capture'] / n * 1e6:.0f} µs, "
          f"log() {spent['record'] / n * 1e6:.0f} µs; {spent['samples']} samples")
    if args.native:
        print("  of which, per sample: " + ", ".join(
            f"{name} {spent[name] / n * 1e6:.0f} µs" for name in ("native add", "native metrics", "jump banks")))


def _time_native_calls(spent: dict) -> None:
    """Route the tracker module's native calls through timers (a stand-in for ``core`` in it)."""

    def timed(name, fn):
        def wrapper(*a, **k):
            t = time.perf_counter()
            result = fn(*a, **k)
            spent[name] += time.perf_counter() - t
            return result
        return wrapper

    class TimedAccumulator:
        def __init__(self, *a, **k):
            self.native = core.GramAccumulator(*a, **k)
            self.add = timed("native add", self.native.add)

        def __getattr__(self, name):
            return getattr(self.native, name)

    class TimedCore:
        GramAccumulator = TimedAccumulator
        metrics_of_accumulators = staticmethod(timed("native metrics", lambda accumulators, **k: (
            core.metrics_of_accumulators([a.native for a in accumulators], **k))))

        def __getattr__(self, name):
            return getattr(core, name)

    tracker_module.core = TimedCore()
    tracker_module.FastTracker._detect_online = timed("jump banks", tracker_module.FastTracker._detect_online)


if __name__ == "__main__":
    main()
