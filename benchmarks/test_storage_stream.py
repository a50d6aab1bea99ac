"""Streaming storage at scale: N samples × 3 layers through ``FastTracker.log()`` with ``output=``.

What it measures (one round; a second round would only repeat a minutes-long run):
- resident memory growth of the process from after warm-up to the end of the run — the bounded
  ring and the writer must keep it flat (the issue's budget: ≤ 20 MB for 1,000,000 samples);
- records per second through ``log()`` and the writer (3 per sample), and the file size.

The model is three ``nn.Identity`` layers on a 2 × 4 input, so the forward pass costs next to
nothing and the time is the tracker's: hooks, the native Gram and metrics, the ring, the writer.
``NDT_BENCH_STREAM_SAMPLES`` sets N: default 200,000 (under a minute on the 2-core VM, keeping
``pytest benchmarks`` short); the README figures are for 1,000,000 (about 4 minutes).
"""

from __future__ import annotations

import os
import time

import pytest
import torch
from torch import nn

from ndt_fast import FastTracker

SAMPLES = int(os.environ.get("NDT_BENCH_STREAM_SAMPLES", "200000"))
WARMUP = 5000
RSS_BUDGET_MB = 20.0


def _rss_mb() -> float:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="resident memory read from Linux /proc")
def test_stream_million_samples_to_hdf5(benchmark, tmp_path):
    model = nn.Sequential(nn.Identity(), nn.Identity(), nn.Identity())
    path = tmp_path / "stream.h5"
    tracker = FastTracker(model, layers=list(model), sampling_frequency=1, output=path)
    x = torch.randn(2, 4)
    loss = torch.tensor(0.5)
    for step in range(WARMUP):
        model(x)
        tracker.log(step, loss)
    tracker.get_results("Identity_0")  # drain once: the writer's buffers are at steady size

    growth: dict[str, float] = {}

    def run() -> None:
        before = _rss_mb()
        for step in range(WARMUP, WARMUP + SAMPLES):
            model(x)
            tracker.log(step, loss)
        growth["rss_mb"] = _rss_mb() - before

    benchmark.group = f"storage stream: {SAMPLES} samples x 3 layers, output=HDF5"
    started = time.perf_counter()
    benchmark.pedantic(run, rounds=1, iterations=1)
    elapsed = time.perf_counter() - started
    close_started = time.perf_counter()
    tracker.close()
    close_seconds = time.perf_counter() - close_started

    rows = tracker.get_results("Identity_2")
    assert len(rows) == WARMUP + SAMPLES and rows["step"].iloc[-1] == WARMUP + SAMPLES - 1
    benchmark.extra_info.update({
        "samples": SAMPLES, "layers": 3, "rss_growth_mb": round(growth["rss_mb"], 2),
        "records_per_second": round(3 * SAMPLES / elapsed), "close_seconds": round(close_seconds, 2),
        "file_mb": round(os.path.getsize(path) / 2**20, 2), "write_error": repr(tracker.write_error),
        "spilled_records": tracker._sink.stream.spilled,
    })
    assert tracker.write_error is None
    assert growth["rss_mb"] <= RSS_BUDGET_MB, f"resident memory grew {growth['rss_mb']:.1f} MB"
