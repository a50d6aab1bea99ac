"""Parts of one sample's cost on the Lightning benchmark's tiny MLP (64-128-128-10, batch 64,
three Linear layers, one torch thread), each timed alone:

- the native finish (spectra, metrics, records) per sample: ``FastTracker(sampling_frequency=1)``
  over 600 steps, the median time of ``RecordSink.finish`` after 100 warm-up samples;
- the callbacks' gradient norm (``ndt_fast.integrations._common.grad_norm``), median µs per call;
- ``TensorBoardSink.write`` of one 18-scalar sample (3 layers × the six metrics) on torch's
  ``SummaryWriter``, then a flush: process CPU time per sample (all threads: TensorBoard's writer
  thread serialises the event and computes its CRC), over 2000 samples.

    .venv/bin/python benchmarks/profiling/sample_parts.py
"""

from __future__ import annotations

import statistics
import tempfile
import time

import torch
from torch import nn

from ndt_fast import FastTracker
from ndt_fast.sinks.base import Sample
from ndt_fast.tracker import sink as record_sink


def tiny_mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))


def finish_us() -> float:
    model, x = tiny_mlp(), torch.randn(64, 64)
    tracker = FastTracker(model, sampling_frequency=1, keep_last_output=False)
    times: list[float] = []
    original = record_sink.RecordSink.finish

    def timed(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        start = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            times.append(time.perf_counter() - start)

    record_sink.RecordSink.finish = timed
    try:
        for step in range(600):
            model(x)
            tracker.log(step, 1.0)
    finally:
        record_sink.RecordSink.finish = original
        tracker.close()
    return statistics.median(times[100:]) * 1e6


def grad_norm_us() -> float:
    from ndt_fast.integrations._common import grad_norm

    model = tiny_mlp()
    model(torch.randn(64, 64)).sum().backward()
    for _ in range(100):
        grad_norm(model)
    runs = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(1000):
            grad_norm(model)
        runs.append((time.perf_counter() - start) / 1000 * 1e6)
    return statistics.median(runs)


def tensorboard_us(samples: int = 2000) -> float:
    from torch.utils.tensorboard import SummaryWriter

    from ndt_fast.sinks import TensorBoardSink

    writer = SummaryWriter(tempfile.mkdtemp())
    sink = TensorBoardSink(writer)
    columns = ("stable_rank", "participation_ratio", "cumulative_90", "nuclear_norm_ratio", "participation_ratio_eig",
               "effective_rank", "trace", "lambda_max", "flags", "rows")
    sample = Sample(10, 1.0, 2.0, {f"Linear_{i}": {c: j + 0.123456789 for j, c in enumerate(columns)}
                                   for i in range(3)})
    sink.write([sample])
    writer.flush()
    cpu = time.process_time()
    for _ in range(samples):
        sink.write([sample])
    writer.flush()
    used = (time.process_time() - cpu) / samples * 1e6
    writer.close()
    return used


def main() -> None:
    torch.set_num_threads(1)
    print(f"native finish per sample (3 layers)     {finish_us():7.1f} us (median)")
    print(f"gradient norm (callbacks' grad_norm)     {grad_norm_us():7.1f} us (median of 5 x 1000)")
    print(f"TensorBoardSink, one 18-scalar sample    {tensorboard_us():7.1f} us CPU (all threads)")


if __name__ == "__main__":
    main()
