"""The Lightning monitor's overhead as a budget of parts, each read against its own fit's step.

Whole-fit ratios on this 2-core VM scatter by ±20 % between fits a few seconds apart (40 pairs of
400-step fits: a 95 % interval of 0.97–1.16 for the median ratio), so they cannot show a 3 %
bound. The VM's drift scales a fit's parts together, though: each part below is a duration in a
fit divided by the same fit's median step far from a sample (places 3–7 of the cycle), a ratio the
drift largely cancels from. Per variant (rounds rotate the variants), medians over fits:

- ``dispatch``: Lightning's callback hooks on a step far from a sample (``_call_callback_hooks``:
  its profiler context and call for each callback, and the hooks' bodies), over the untracked
  fits' same share — what being a callback costs on every step;
- ``sampling``: the extra time of the sampling cycle over ten far steps, over the untracked
  fits' same ratio (``lightning_step_cycle.py``'s column);
- ``fixed``: the monitor's ``on_fit_start`` and ``teardown`` (the tracker made, its run file
  created; the last samples written, the file compressed), over the fit's steps × its far step;
- ``threads ≤``: the CPU time of the process's Python threads other than the training thread
  (the tracker's run-file writer and sinks, TensorBoard's writer) during the steps, over the
  untracked fits' same share: an upper bound of the GIL they take from the training thread (the
  native finish thread needs none and is left out);
- ``budget``: 1 + their sum, the estimate of the whole-fit ratio;
- ``fit / untracked``: the median whole-fit wall time over the untracked one — the direct ratio,
  with the drift in it, for comparison.

Not in the budget: the forward hooks' idle cost (a Python call per tracked layer per forward,
~1 µs) and any slowing of every step that is not the callback's own code (caches, the GIL taken
by the threads beyond their CPU time); ``lightning_step_cycle.py``'s "cycle / untracked" shows
those, with the drift.

    .venv/bin/python benchmarks/lightning_budget.py [model=tiny] [rounds=6] [steps=400]
"""

from __future__ import annotations

import logging
import os
import statistics
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
import lightning as L  # noqa: E402
from lightning.pytorch.loggers import TensorBoardLogger  # noqa: E402
from lightning.pytorch.trainer import call  # noqa: E402
from test_lightning_overhead import SmallModule, loader_for  # noqa: E402

from ndt_fast.integrations.lightning import DimensionalityMonitor  # noqa: E402

SAMPLING = 10
SKIPPED = 20  # the first steps of a fit (warming up) are not counted
FAR = slice(3, 8)  # places of the cycle far from a sample
VARIANTS: dict[str, dict[str, Any] | None] = {
    "untracked": None,
    "an empty Callback": {"empty": True},
    "monitor (run file, TensorBoard)": {},
    "monitor, no run file": {"output": False},
}


class Empty(L.Callback):
    """A callback with no hook of its own: what any callback costs."""


class FitClock(L.Callback):
    """Step starts, the callback hooks' time per step, the other threads' CPU over the steps."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.dispatch: list[float] = [0.0]  # per step: time in _call_callback_hooks
        self.training = False
        self.threads_cpu = 0.0

    def on_train_start(self, *args: Any) -> None:
        self.training, self._cpu_at_start = True, other_threads_cpu()

    def on_train_batch_start(self, *args: Any) -> None:
        self.starts.append(time.perf_counter())
        self.dispatch.append(0.0)

    def on_train_end(self, *args: Any) -> None:
        self.training = False
        end = other_threads_cpu()
        self.threads_cpu = sum(end[k] - self._cpu_at_start.get(k, 0.0) for k in end)


def other_threads_cpu() -> dict[int, float]:
    """CPU seconds of each live thread of this process but the calling one and the native finish
    thread (Linux: /proc/self/task/*/schedstat)."""
    me, out = threading.get_native_id(), {}
    for task in os.listdir("/proc/self/task"):
        try:
            name = Path(f"/proc/self/task/{task}/comm").read_text().strip()
            if int(task) == me or name == "ndt_fast-finish":
                continue
            out[int(task)] = int(Path(f"/proc/self/task/{task}/schedstat").read_text().split()[0]) / 1e9
        except (OSError, ValueError):  # the thread ended meanwhile
            continue
    return out


class TimedMonitor(DimensionalityMonitor):
    """The monitor, with its on_fit_start and teardown timed."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.fixed = 0.0

    def on_fit_start(self, *args: Any, **kwargs: Any) -> None:
        start = time.perf_counter()
        super().on_fit_start(*args, **kwargs)
        self.fixed += time.perf_counter() - start

    def teardown(self, *args: Any, **kwargs: Any) -> None:
        start = time.perf_counter()
        super().teardown(*args, **kwargs)
        self.fixed += time.perf_counter() - start


CLOCK: list[FitClock] = []  # the clock of the fit in progress (read by the dispatch timer)
_call_callback_hooks = call._call_callback_hooks


def timed_callback_hooks(trainer: Any, hook_name: str, *args: Any, **kwargs: Any) -> Any:
    start = time.perf_counter()
    try:
        return _call_callback_hooks(trainer, hook_name, *args, **kwargs)
    finally:
        if CLOCK and CLOCK[-1].training:
            CLOCK[-1].dispatch[-1] += time.perf_counter() - start


def fit(loader: Any, model: str, steps: int, options: dict[str, Any] | None) -> dict[str, Any]:
    torch.manual_seed(0)
    clock = FitClock()
    CLOCK[:] = [clock]
    extra: list[L.Callback] = []
    if options is not None:
        extra = [Empty()] if options.get("empty") else [TimedMonitor(**{"sampling_frequency": SAMPLING, **options})]
    trainer = L.Trainer(max_steps=steps, logger=TensorBoardLogger(tempfile.mkdtemp()), callbacks=[clock, *extra],
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        accelerator="cpu", devices=1)
    start = time.perf_counter()
    trainer.fit(SmallModule(model), loader)
    wall = time.perf_counter() - start
    times = [b - a for a, b in zip(clock.starts, clock.starts[1:])]
    # dispatch[i + 1] is the step that started at starts[i]; its hooks end it (batch end) and the
    # next one's begin at the next start: close enough to attribute per step.
    places: list[list[float]] = [[] for _ in range(SAMPLING)]
    dispatch_far: list[float] = []
    for i, seconds in enumerate(times[SKIPPED:], start=SKIPPED):
        place = (i + 1) % SAMPLING
        places[place].append(seconds)
        if FAR.start <= place < FAR.stop:
            dispatch_far.append(clock.dispatch[i + 1])
    medians = [statistics.median(p) for p in places]
    far = statistics.median(medians[FAR])
    fixed = extra[0].fixed if extra and isinstance(extra[0], TimedMonitor) else 0.0
    return {"wall": wall, "far": far, "cycle": sum(medians) / (SAMPLING * far),
            "dispatch": statistics.median(dispatch_far) / far, "fixed": fixed / (steps * far),
            "threads": clock.threads_cpu / (len(times) * far)}


def main(model: str = "tiny", rounds: int = 6, steps: int = 400) -> None:
    warnings.simplefilter("ignore")  # Lightning's advice on workers and GPUs: the same in every variant
    logging.getLogger("lightning").setLevel(logging.ERROR)
    torch.set_num_threads(1)
    call._call_callback_hooks = timed_callback_hooks
    loader = loader_for(model, steps)
    fit(loader, model, 100, {})  # warm-up: imports, the first run file
    load_before = os.getloadavg()[0]
    names = list(VARIANTS)
    fits: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            fits[name].append(fit(loader, model, steps, VARIANTS[name]))
    print(f"{rounds} rounds of {steps}-step fits, {model} MLP, TensorBoard logger, sampling every {SAMPLING} steps; "
          f"load average before {load_before:.2f}, after {os.getloadavg()[0]:.2f}")

    def med(name: str, key: str) -> float:
        return statistics.median(f[key] for f in fits[name])

    for name in names:
        dispatch = med(name, "dispatch") - med("untracked", "dispatch")
        sampling = med(name, "cycle") / med("untracked", "cycle") - 1
        fixed = med(name, "fixed")
        threads = med(name, "threads") - med("untracked", "threads")
        budget = 1 + dispatch + sampling + fixed + threads
        print(f"  {name:34s} far step {1e3 * med(name, 'far'):.2f} ms   dispatch {dispatch:+.1%}   sampling "
              f"{sampling:+.1%}   fixed {fixed:+.1%}   threads ≤ {threads:+.1%}   budget {budget:.3f}x   "
              f"fit / untracked {med(name, 'wall') / med('untracked', 'wall'):.3f}x")


if __name__ == "__main__":
    main(*(int(a) if a.isdigit() else a for a in sys.argv[1:]))
