"""The run file's fixed costs, for the Lightning benchmark's layout (three Linear layers, the
default columns): creating the file, four drains of 10 samples per layer (each an append and a
SWMR flush, as the writer thread does), closing it, and the compressing rewrite ``close()``
makes. Medians of 7 rounds, in ms. A/B: run it on two commits (``git stash``) back to back.

    .venv/bin/python benchmarks/profiling/run_file_costs.py
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time

import numpy as np
from torch import nn

from ndt_fast import FastTracker
from ndt_fast.storage.hdf5 import RunFile, rewrite


def main(rounds: int = 7) -> None:
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))
    folder = tempfile.mkdtemp()
    tracker = FastTracker(model, sampling_frequency=10, output=os.path.join(folder, "layout.h5"))
    layout = tracker._layout  # (the layout FastTracker writes for this model)
    tracker.close()
    width = len(layout.sample_columns)
    rng = np.random.default_rng(0)
    times: dict[str, list[float]] = {}
    for r in range(rounds):
        path = os.path.join(folder, f"run{r}.h5")
        t0 = time.perf_counter()
        run = RunFile(path, layout, {"model": "probe"})
        t1 = time.perf_counter()
        for _ in range(4):
            run.append({i: rng.random((10, width)) for i in range(len(layout.layer_names))}, np.empty((0, 7)))
            run.flush()
        t2 = time.perf_counter()
        run.close(compress=False)
        t3 = time.perf_counter()
        rewrite(path, compress=True)
        t4 = time.perf_counter()
        for name, seconds in (("create", t1 - t0), ("4 drains", t2 - t1), ("close", t3 - t2),
                              ("compressing rewrite", t4 - t3)):
            times.setdefault(name, []).append(seconds * 1e3)
    print(f"{len(layout.layer_names)} layers x {width} columns, {rounds} rounds (median ms):")
    for name, values in times.items():
        print(f"  {name:<20} {statistics.median(values):7.2f}")


if __name__ == "__main__":
    main()
