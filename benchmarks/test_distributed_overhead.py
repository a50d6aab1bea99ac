"""Distributed training overhead: untracked vs FastTracker ``distributed="global"`` vs ``"local"``.

Two ranks (gloo, one torch thread each: the 2-core machine's two cores) train under
DistributedDataParallel in worker processes that stay up for the whole module
(benchmarks/distributed_worker.py); each timed call sends both ranks one ``run`` command:
``STEPS`` full training steps (forward, loss, backward, DDP's gradient all-reduce, SGD step, and
``tracker.log``) and a barrier. One group per model and sampling frequency, so the ratio
tracked ÷ untracked is the overhead. ``extra_info["collective_us_per_sample"]``: rank 0's time in
the tracker's all-reduce (packing the Grams' triangles and waiting for the other rank included)
per sample.

Models: the TDS MLP (784-256-128-10, 64 rows per rank; feature-side Grams 256², 128², 10²) and a
2-block transformer encoder (d = 64, 16 × 32 tokens per rank; blocks + head tracked).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

WORKER = os.path.join(os.path.dirname(__file__), "distributed_worker.py")
WORLD = 2
STEPS = 20  # (distributed_worker.STEPS)
MODES = {"untracked": ("untracked DDP loop", "reference"), "global": ('FastTracker distributed="global"', "subject"),
         "local": ('FastTracker distributed="local"', "variant")}


class Ranks:
    """The worker processes; :meth:`ask` sends one command to every rank and returns their answers."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.procs = [subprocess.Popen([sys.executable, WORKER, str(rank), str(WORLD), str(port)],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                       text=True) for rank in range(WORLD)]

    def ask(self, **command: Any) -> list[dict[str, Any]]:
        line = json.dumps(command) + "\n"
        for proc in self.procs:
            proc.stdin.write(line)
            proc.stdin.flush()
        answers = []
        for rank, proc in enumerate(self.procs):
            reply = proc.stdout.readline()
            if not reply:
                raise RuntimeError(f"rank {rank} exited (return code {proc.poll()})")
            answers.append(json.loads(reply))
        return answers

    def close(self) -> None:
        try:
            self.ask(op="quit")
        except (RuntimeError, OSError, json.JSONDecodeError):
            pass
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stdin.close()
            proc.stdout.close()


def _cpu_accounts(ranks: Ranks) -> tuple[float, float, float, float] | None:
    """(machine busy CPU s, this process's CPU s, the ranks' CPU s, wall s) now — Linux /proc."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            ticks = [int(v) for v in stat.readline().split()[1:9]]
        workers = 0
        for proc in ranks.procs:
            with open(f"/proc/{proc.pid}/stat", encoding="ascii") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
            workers += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15 of stat)
    except (OSError, ValueError, IndexError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    own = os.times()
    return ((sum(ticks) - ticks[3] - ticks[4]) / hz, own.user + own.system, workers / hz, time.perf_counter())


@pytest.fixture(scope="module")
def ranks() -> Iterator[Ranks]:
    workers = Ranks()
    try:
        yield workers
    finally:
        workers.close()


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize(("model", "sampling"), [("tds-mlp", 10), ("tds-mlp", 1), ("transformer", 10),
                                                 ("transformer", 1)])
def test_distributed_overhead(benchmark, measure, ranks, model, sampling, mode):
    label, role = MODES[mode]
    benchmark.group = f"distributed {model} sampling={sampling} ({WORLD} ranks x 1 thread, {STEPS} steps per call)"
    benchmark.extra_info.update(label=label, role=role, steps=STEPS, sampling_frequency=sampling, ranks=WORLD)
    ranks.ask(op="prepare", model=model, mode=mode, sampling=sampling)
    spent = {"collective": 0.0, "calls": 0}

    def run() -> None:
        answers = ranks.ask(op="run")
        spent["collective"] += answers[0]["collective_seconds"]
        spent["calls"] += 1

    before = _cpu_accounts(ranks)
    try:
        measure(run)
    finally:
        finished = ranks.ask(op="finish")
    after = _cpu_accounts(ranks)
    if before is not None and after is not None:
        # conftest's other_cores counts every process but pytest's: here that includes the ranks
        # themselves, which are the benchmark. What the others took, over the whole measurement:
        busy, own, workers, wall = (b - a for a, b in zip(before, after))
        benchmark.extra_info["other_cores"] = round(max((busy - own - workers) / wall, 0.0), 2)
    if mode == "untracked":
        return
    samples = spent["calls"] * STEPS // sampling
    benchmark.extra_info["collective_us_per_sample"] = round(1e6 * spent["collective"] / max(samples, 1), 1)
    assert all(f["errors"] == 0 for f in finished), finished
    if mode == "global":  # rank 0 records the global batch, the others nothing; one collective per sample
        assert finished[0]["rows"] > 0 and all(f["rows"] == 0 for f in finished[1:]), finished
        assert all(f["collectives"] >= samples for f in finished), finished
    else:
        assert all(f["rows"] > 0 and f["collectives"] == 0 for f in finished), finished
