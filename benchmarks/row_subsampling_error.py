"""Error of FastTracker(max_rows=k) against every row, on token activations of a Transformer.

Workload: ``nn.TransformerEncoder`` (4 blocks, d=256, 4 heads, feed-forward 512, random init)
on batches of 8 × 512 tokens drawn from a 1000-token vocabulary (embedding + learned-free
positional signal), i.e. 4096 rows × 256 features per block output — the shape the tracker sees
for 3-D activations (``batch·seq`` rows). For each block and batch: the metrics of all 4096 rows
(exact) and of the tracker's fixed random subset of ``k`` rows, signed relative error per metric
((subset − all) / all); the table gives the median signed error and the largest absolute one
over 4 blocks × ``--batches`` batches, and the time of ``ndt_fast.compute_metrics`` for each row
count (one thread for the core and for BLAS, as FastTracker's default ``threads=1``; median).

Run: ``.venv/bin/python benchmarks/row_subsampling_error.py [--batches 8] [--out FILE.md]``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch import nn

import ndt_fast

METRICS = ("stable_rank", "participation_ratio", "cumulative_90", "nuclear_norm_ratio",
           "participation_ratio_eig", "effective_rank")
ROWS = (128, 256, 512, 1024, 2048)


def block_outputs(batches: int) -> list[torch.Tensor]:
    """Every block's output (batch·seq, d) float32 for ``batches`` random batches."""
    torch.manual_seed(0)
    d, seq, batch = 256, 512, 8
    layer = nn.TransformerEncoderLayer(d_model=d, nhead=4, dim_feedforward=512, batch_first=True, dropout=0.0)
    encoder = nn.TransformerEncoder(layer, num_layers=4, enable_nested_tensor=False).eval()
    embedding = nn.Embedding(1000, d)
    position = torch.sin(torch.arange(seq)[:, None] / 10000 ** (torch.arange(d)[None, :] / d))
    outputs: list[torch.Tensor] = []
    hooks = [block.register_forward_hook(lambda m, i, o: outputs.append(o.detach().reshape(-1, d)))
             for block in encoder.layers]
    with torch.no_grad():
        for _ in range(batches):
            tokens = torch.randint(0, 1000, (batch, seq))
            encoder(embedding(tokens) + position)
    for hook in hooks:
        hook.remove()
    return outputs


def subset(rows: int, k: int, layer_index: int) -> torch.Tensor:
    """The rows FastTracker(max_rows=k) measures for a layer at index ``layer_index``."""
    return torch.randperm(rows, generator=torch.Generator().manual_seed(layer_index))[:k].sort().values


def timed_metrics(x: np.ndarray) -> tuple[dict[str, float], float]:
    start = time.perf_counter()
    values = ndt_fast.compute_metrics(x)
    return values, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--out", default=None, help="also write the markdown table here")
    args = parser.parse_args()
    ndt_fast._native.core.set_num_threads(1)
    threadpool_limits(limits=1, user_api="blas")  # SciPy's OpenBLAS too (see FastTracker(threads=1))
    outputs = block_outputs(args.batches)
    errors = {k: {m: [] for m in METRICS} for k in ROWS}
    seconds: dict[int, list[float]] = {k: [] for k in (*ROWS, 4096)}
    for i, x in enumerate(outputs):
        layer_index = i % 4
        exact, t = timed_metrics(x.numpy())
        seconds[4096].append(t)
        for k in ROWS:
            approx, t = timed_metrics(x[subset(len(x), k, layer_index)].numpy())
            seconds[k].append(t)
            for m in METRICS:
                errors[k][m].append((approx[m] - exact[m]) / abs(exact[m]))
    lines = [f"Token activations 4096 rows × 256 features (4 TransformerEncoder blocks, random init, "
             f"{args.batches} batches); relative error (subset − all) / all: median (signed) / largest |error|.", "",
             "| max_rows | compute_metrics time | " + " | ".join(METRICS) + " |",
             "|---:|---:|" + "---:|" * len(METRICS)]
    lines.append(f"| all (4096) | {np.median(seconds[4096]) * 1e3:.1f} ms | " + " | ".join("0" for _ in METRICS) + " |")
    for k in ROWS:
        cells = [f"{np.median(errors[k][m]):+.3f} / {np.max(np.abs(errors[k][m])):.3f}" for m in METRICS]
        lines.append(f"| {k} | {np.median(seconds[k]) * 1e3:.1f} ms | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
