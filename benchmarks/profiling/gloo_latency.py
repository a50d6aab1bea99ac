"""Latency of a gloo all-reduce between two processes on this machine (what distributed="global"
pays once per sample; benchmarks/NOTES.md, issue 16).

    .venv/bin/python benchmarks/profiling/gloo_latency.py        # starts both ranks itself

Each rank: one torch thread, the tracker's kind of group (``new_group(backend="gloo")``), 20
warm-up calls, then the median of 200 all-reduces of 10, 6 500 and 41 000 float64 (a header
alone; the transformer's bucket; the TDS MLP's summed triangles plus gathered rows).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import numpy as np
import torch
import torch.distributed as dist

SIZES = (10, 6_500, 41_000)


def rank_main(rank: int, port: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    group = dist.new_group(backend="gloo")
    for n in SIZES:
        values = torch.zeros(n, dtype=torch.float64)
        for _ in range(20):
            dist.all_reduce(values, group=group)
        times = []
        for _ in range(200):
            started = time.perf_counter()
            dist.all_reduce(values, group=group)
            times.append(time.perf_counter() - started)
        if rank == 0:
            print(f"all_reduce of {n:>6} float64: median {1e6 * np.median(times):7.0f} us", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    if len(sys.argv) == 3:
        rank_main(int(sys.argv[1]), int(sys.argv[2]))
    else:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            free = s.getsockname()[1]
        ranks = [subprocess.Popen([sys.executable, __file__, str(r), str(free)]) for r in range(2)]
        sys.exit(max(p.wait() for p in ranks))
