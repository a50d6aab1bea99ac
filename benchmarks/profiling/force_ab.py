"""Interleaved A/B of ``keep_last_output`` (force=True on any step): rounds of the same training
loop alternate between untracked, the switch off and the switch on, in one process, so a slow
spell of a shared machine lands on all three alike. Prints per-variant medians and ratios.

    .venv/bin/python benchmarks/profiling/force_ab.py [tds-mlp|resnet18] [rounds] [steps per round]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks.test_tracker_overhead import MODELS, _make_loop  # noqa: E402
from ndt_fast import FastTracker  # noqa: E402
from ndt_fast.layers import auto_select_layers  # noqa: E402


def main() -> None:
    name = sys.argv[1] if len(sys.argv) > 1 else "tds-mlp"
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    steps = int(sys.argv[3]) if len(sys.argv) > 3 else 20
    torch.manual_seed(0)
    model, layers, inputs, labels = MODELS[name]()
    inputs, labels = inputs[:steps], labels[:steps]
    layers = auto_select_layers(model) if layers is None else layers
    model.train()
    loops = {"untracked": None, "keep-off": False, "keep-on": True}  # variant → keep_last_output
    times: dict[str, list[float]] = {v: [] for v in loops}
    for r in range(rounds + 1):  # round 0: warm-up, not counted
        for variant, keep in loops.items():
            tracker = None if keep is None else FastTracker(model, layers=layers, sampling_frequency=5,
                                                            keep_last_output=keep, enable_jump_detection=True)
            run = _make_loop(model, tracker, inputs, labels, item=False)
            t0 = time.perf_counter()
            run()
            elapsed = time.perf_counter() - t0
            if tracker is not None:
                assert all(len(df) > 0 for df in tracker.get_results().values())
                tracker.close()
            if r:
                times[variant].append(elapsed)
    base = statistics.median(times["untracked"])
    print(f"{name}: {rounds} interleaved rounds of {steps} training steps, sampling 5")
    for variant, ts in times.items():
        q = statistics.quantiles(ts, n=4)
        print(f"  {variant:10s} median {1e3 * statistics.median(ts) / steps:8.3f} ms/step  "
              f"IQR {1e3 * (q[2] - q[0]) / steps:7.3f}  × untracked {statistics.median(ts) / base:.4f}")
    off, on = statistics.median(times["keep-off"]), statistics.median(times["keep-on"])
    paired = [b / a for a, b in zip(times["keep-off"], times["keep-on"])]
    print(f"  keep-on / keep-off: medians {on / off:.4f}; median of per-round ratios {statistics.median(paired):.4f}")


if __name__ == "__main__":
    main()
