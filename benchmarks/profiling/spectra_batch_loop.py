"""Native spectra time per sample inside the TDS MLP training loop: FastTracker(spectra_batch=1)
against spectra_batch=k, interleaved in one process (issue 14).

Each variant hooks its own copy of the MLP 784-256-128-10 (same initial weights, same batches,
batch 64, Adam 1e-3); blocks of ``--block`` steps rotate through the variants, so a slow spell of
the shared machine lands on all of them. A block holds a multiple of every k samples, so each
block pays for whole batches (a block's per-sample figure is then unbiased). Timed per sample: the tracker's native finish — every
call of ``SampleFinisher.finish`` / ``flush`` / ``record`` (spectra, metrics, records, jump banks;
with k > 1 most calls only copy the Grams and every k-th solves k samples' spectra), wrapped
around the native call only. Variants:

- ``batch1``, ``batch<k>``: all six metrics, spectra_batch 1 and each k of ``--batches``;
- ``no-eig``: spectra_batch 1 with ``metrics=["participation_ratio_eig"]`` — the same finish
  without an eigensolver (symmetric Gram, trace/Frobenius, records, banks).

"spectra" = native finish − no-eig's, per sample (the method of ``spectra_ab.py``). Also printed:
the whole training step per variant (ms), for what the batching changes in the loop.

    .venv/bin/python benchmarks/profiling/spectra_batch_loop.py [--batches 4 8] [--frequency 1]
        [--samples 1200] [--block 40] [--torch-threads 1]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time

import torch
from torch import nn

from ndt_fast import FastTracker


class TimedFinisher:
    """The sink's native finisher with the time of its finish/flush/record calls added up."""

    def __init__(self, real) -> None:
        self.real, self.native = real, 0.0

    def _timed(self, name: str, *args, **kwargs):
        start = time.perf_counter()
        try:
            return getattr(self.real, name)(*args, **kwargs)
        finally:
            self.native += time.perf_counter() - start

    def finish(self, *args, **kwargs):
        return self._timed("finish", *args, **kwargs)

    def flush(self, *args, **kwargs):
        return self._timed("flush", *args, **kwargs)

    def record(self, *args, **kwargs):
        return self._timed("record", *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.real, name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[4, 8], help="spectra_batch values besides 1")
    parser.add_argument("--frequency", type=int, default=1, help="sampling_frequency")
    parser.add_argument("--samples", type=int, default=1200, help="samples per variant")
    parser.add_argument("--block", type=int, default=40, help="samples per block before switching variants")
    parser.add_argument("--torch-threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args()
    if any(args.block % k for k in args.batches):
        parser.error(f"--block {args.block} must be a multiple of every --batches value")
    if args.torch_threads is not None:
        torch.set_num_threads(args.torch_threads)

    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
    data, labels = torch.randn(100, 64, 784), torch.randint(0, 10, (100, 64))
    options = {"batch1": {"spectra_batch": 1}}
    options.update({f"batch{k}": {"spectra_batch": k} for k in args.batches})
    options["no-eig"] = {"spectra_batch": 1, "metrics": ["participation_ratio_eig"]}
    runs = {}
    for name, extra in options.items():
        model = copy.deepcopy(base)
        tracker = FastTracker(model, layers=[model[0], model[2], model[4]], sampling_frequency=args.frequency,
                              **extra)
        timed = TimedFinisher(tracker._sink._finisher)
        tracker._sink._finisher = timed
        runs[name] = {"model": model, "tracker": tracker, "timed": timed, "step": 0, "step_times": [],
                      "optimizer": torch.optim.Adam(model.parameters(), lr=1e-3), "block_native": []}

    names = list(runs)
    blocks, block_steps = args.samples // args.block, args.block * args.frequency
    for b in range(blocks):
        for name in names[b % len(names):] + names[:b % len(names)]:  # rotate who goes first
            run = runs[name]
            before = run["timed"].native
            for _ in range(block_steps):
                i = run["step"]
                start = time.perf_counter()
                loss = nn.functional.cross_entropy(run["model"](data[i % 100]), labels[i % 100])
                run["optimizer"].zero_grad(set_to_none=True)
                loss.backward()
                run["optimizer"].step()
                run["tracker"].log(i, loss)
                run["step_times"].append(time.perf_counter() - start)
                run["step"] += 1
            run["block_native"].append((run["timed"].native - before) / args.block)
    for run in runs.values():
        run["tracker"].get_results()  # (flushes what waits; not timed into the blocks)
        assert sum(run["tracker"].errors.values()) == 0, run["tracker"].errors
        run["tracker"].close()

    load = os.getloadavg()
    print(f"TDS MLP, sampling {args.frequency}, {blocks * args.block} samples per variant in blocks of {args.block}, "
          f"torch threads {torch.get_num_threads()}, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    print("native finish per sample: median over blocks (mean over all samples); spectra = − no-eig's median")
    floor = statistics.median(runs["no-eig"]["block_native"])
    for name, run in runs.items():
        per_block = run["block_native"]
        median, mean = statistics.median(per_block), statistics.fmean(per_block)
        spectra = f"spectra {(median - floor) * 1e6:5.0f} µs" if name != "no-eig" else ""
        print(f"  {name:8s}: finish {median * 1e6:5.0f} µs ({mean * 1e6:5.0f}) {spectra:17s} "
              f"step {statistics.median(run['step_times']) * 1e3:.2f} ms (median)")


if __name__ == "__main__":
    main()
