"""The Python around FastTracker's native calls, per sample, inside the TDS MLP training loop:
the tracker before issue 13 (extracted from git at run time) and the current one, interleaved.

Each tracker hooks its own copy of the MLP 784-256-128-10 (same weights, same batches, batch 64,
Adam); blocks of ``--block`` steps alternate between them, so a slow spell of the shared machine
lands on both. Timed per sample:

- hooks: the work of the armed hooks (old ``FastTracker._capture``; new ``Capture.take``);
- log(): the work of a sampled ``log()`` (``FastTracker._record`` in both);
- native: the native calls inside them — ``GramAccumulator.add`` in both (new: ``refill``, reset + add); old:
  ``metrics_of_accumulators`` and the jump banks' ``JumpBank.push``; new: ``SampleFinisher.finish``
  (spectra, metrics, records, jump banks in one call).

"Python" = hooks + log() − native: what the issue's budget (≤ 0.10 ms per sample) is about. The
timers' own overhead lands in the Python share of both trackers (the old one makes more native
calls, so it pays a little more of it).

    .venv/bin/python benchmarks/profiling/tracker_loop.py [--base REV] [--steps 600] [--block 50] [--torch-threads 1]
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

import ndt_fast.tracker as new_tracker_module
import ndt_fast.tracker.backends as new_backends
import ndt_fast.tracker.sink as new_sink
from ndt_fast._native import core
from ndt_fast.tracker.capture import Capture

REPO = Path(__file__).resolve().parents[2]


def load_old_tracker(base: str):
    """The tracker module of ``base`` (``ndt_fast/tracker.py`` + ``_device_path.py``), importable
    from a temporary folder as ``old_ndt_tracker`` — never part of the package."""
    folder = Path(tempfile.mkdtemp(prefix="old_tracker_")) / "old_ndt_tracker"
    folder.mkdir()
    for name in ("tracker.py", "_device_path.py"):
        text = subprocess.run(["git", "show", f"{base}:ndt_fast/{name}"], cwd=REPO, check=True, capture_output=True,
                              text=True).stdout
        text = text.replace("from ndt_fast import _device_path", "from old_ndt_tracker import _device_path")
        text = text.replace("from ndt_fast._device_path import", "from old_ndt_tracker._device_path import")
        (folder / name).write_text(text)
    (folder / "__init__.py").write_text("")
    sys.path.insert(0, str(folder.parent))
    spec = importlib.util.find_spec("old_ndt_tracker.tracker")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class Spent:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.hooks = self.log = self.native = 0.0
        self.samples = 0


def timed(spent: Spent, field: str, fn):
    def wrapper(*a, **k):
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            setattr(spent, field, getattr(spent, field) + time.perf_counter() - t)

    return wrapper


def timed_core(spent: Spent, finisher: bool):
    """A stand-in for ``core`` whose GramAccumulator.add, metrics_of_accumulators, JumpBank.push
    and SampleFinisher.finish add their time to ``spent.native`` (subclasses of the native
    classes: the core still gets its own objects)."""

    class TimedAccumulator(core.GramAccumulator):
        def add(self, view, threads=0):
            t = time.perf_counter()
            super().add(view, threads=threads)
            spent.native += time.perf_counter() - t

        def refill(self, view, threads):
            t = time.perf_counter()
            super().refill(view, threads)
            spent.native += time.perf_counter() - t

    class TimedJumpBank(core.JumpBank):
        def push(self, step, values):
            t = time.perf_counter()
            out = super().push(step, values)
            spent.native += time.perf_counter() - t
            return out

    class TimedFinisher(core.SampleFinisher):
        def finish(self, *a):
            t = time.perf_counter()
            out = super().finish(*a)
            spent.native += time.perf_counter() - t
            return out

    class TimedCore:
        GramAccumulator = TimedAccumulator
        JumpBank = TimedJumpBank
        SampleFinisher = TimedFinisher
        metrics_of_accumulators = staticmethod(timed(spent, "native", core.metrics_of_accumulators))

        def __getattr__(self, name):
            return getattr(core, name)

    return TimedCore()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="32d2f42", help="git revision of the old tracker (before issue 13)")
    parser.add_argument("--steps", type=int, default=600, help="training steps per tracker")
    parser.add_argument("--block", type=int, default=50, help="steps per block before switching trackers")
    parser.add_argument("--frequency", type=int, default=1)
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch.set_num_threads (1 keeps a shared machine's load from swamping the loop)")
    args = parser.parse_args()
    if args.torch_threads is not None:
        torch.set_num_threads(args.torch_threads)

    old_module = load_old_tracker(args.base)
    spent = {"old": Spent(), "new": Spent()}
    # old: its module's core, its hook and log() methods
    old_module.core = timed_core(spent["old"], finisher=False)
    old_module.FastTracker._capture = timed(spent["old"], "hooks", old_module.FastTracker._capture)
    old_record = old_module.FastTracker._record
    # new: the backends' and the sink's core, the capture and log() methods
    new_backends.core = new_sink.core = timed_core(spent["new"], finisher=True)
    Capture.take = timed(spent["new"], "hooks", Capture.take)
    new_record = new_tracker_module.FastTracker._record

    def counting(name, record):
        def wrapper(self, *a):
            spent[name].samples += 1
            return record(self, *a)

        return timed(spent[name], "log", wrapper)

    old_module.FastTracker._record = counting("old", old_record)
    new_tracker_module.FastTracker._record = counting("new", new_record)

    torch.manual_seed(0)
    xs, ys = torch.randn(50, 64, 784), torch.randint(0, 10, (50, 64))
    base_model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
    loops = {}
    for name, cls in (("old", old_module.FastTracker), ("new", new_tracker_module.FastTracker)):
        model = copy.deepcopy(base_model)
        tracker = cls(model, layers=[model[0], model[2], model[4]], sampling_frequency=args.frequency)
        loops[name] = (model, torch.optim.Adam(model.parameters(), 1e-3), tracker, [0], [0.0])

    def run(name: str, steps: int) -> None:
        model, optimizer, tracker, step, wall = loops[name]
        start = time.perf_counter()
        for _ in range(steps):
            s = step[0]
            loss = nn.functional.cross_entropy(model(xs[s % 50]), ys[s % 50])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            tracker.log(s, loss)
            step[0] += 1
        wall[0] += time.perf_counter() - start

    run("old", 20)  # warm-up of both (first-time set-up is not a per-sample cost)
    run("new", 20)
    for name in loops:  # the warm-up does not count
        spent[name].reset()
        loops[name][4][0] = 0.0
    done = 0
    while done < args.steps:
        block = min(args.block, args.steps - done)
        run("old", block)
        run("new", block)
        done += block
    for name in loops:
        loops[name][2].close()
    print(f"TDS MLP, batch 64, sampling every {args.frequency}, {args.steps} steps per tracker, blocks of "
          f"{args.block} interleaved; old = {args.base}; torch threads {torch.get_num_threads()}")
    for name in ("old", "new"):
        s, n = spent[name], max(spent[name].samples, 1)
        python = s.hooks + s.log - s.native
        print(f"  {name}: per step {loops[name][4][0] / args.steps * 1e3:.2f} ms; per sample: hooks "
              f"{s.hooks / n * 1e6:.0f} µs, log() {s.log / n * 1e6:.0f} µs, native {s.native / n * 1e6:.0f} µs, "
              f"Python around the native calls {python / n * 1e6:.0f} µs ({s.samples} samples)")


if __name__ == "__main__":
    main()
