"""Run files for the dashboard tests: a synthetic one of any size through the real writer
(``ndt_fast.storage.hdf5.RunFile``, the class FastTracker streams through), and a live training
run in a subprocess (``dashboard_child.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ndt_fast.monitor.alert import Alert, alert_rows
from ndt_fast.storage.hdf5 import RunFile
from ndt_fast.storage.records import RecordLayout

CHILD = Path(__file__).with_name("dashboard_child.py")
COLUMNS = ("step", "stable_rank", "participation_ratio", "loss", "grad_norm", "flags", "weight_stable_rank")
METRICS = ("stable_rank", "participation_ratio", "weight_stable_rank")
RULES = ("ndt", "default")


def write_synthetic_run(path: Path, rng: np.random.Generator, samples: int, layers: tuple[str, ...] = ("a", "b"),
                        jumps: int = 0, metadata: dict | None = None, alerts: int = 0) -> np.ndarray:
    """A run of ``samples`` samples per layer at steps 0, 5, 10, … with noisy metrics,
    ``jumps`` ndt-rule jumps of layer 0's stable rank (z drawn at random) and ``alerts``
    instability alerts for layer 0 at sampled steps (drawn at random), closed as FastTracker
    closes it (compressed). Returns layer 0's stable rank (float64, ``samples``)."""
    layout = RecordLayout(layers, COLUMNS, METRICS, RULES)
    writer = RunFile(path, layout, metadata or {"model": {"class": "Synthetic"}, "host": {"pid": -1}})
    steps = np.arange(samples, dtype=np.float64) * 5
    first = None
    for i in range(len(layers)):
        values = np.column_stack([
            steps, 5 + rng.standard_normal(samples), 3 + rng.standard_normal(samples),
            np.exp(-steps / steps[-1]) + 0.01 * rng.standard_normal(samples), rng.uniform(0.5, 1.5, samples),
            np.zeros(samples), 10 + 0.1 * rng.standard_normal(samples)])
        if first is None:
            first = values[:, 1]
        writer.append({i: values}, np.empty((0, 7)))
    if jumps:
        at = np.sort(rng.choice(samples, jumps, replace=False))
        table = np.column_stack([np.zeros(jumps), steps[at], np.zeros(jumps), np.zeros(jumps),
                                 rng.uniform(3, 10, jumps) * rng.choice([-1, 1], jumps), first[at] - 1, first[at]])
        writer.append({}, table)
    if alerts:
        at = np.sort(rng.choice(samples, alerts, replace=False))
        writer.append({}, np.empty((0, 7)), alert_rows(
            [Alert("instability", (layers[0],), int(steps[i]), f"{layers[0]} erratic ({k})", {"ratio": 4.0})
             for k, i in enumerate(at)]))
    writer.flush()
    writer.close()
    return first


def train(model, tracker, steps: int, inputs: int, before_step=None) -> None:
    """``steps`` SGD steps of ``model`` on random (32, inputs) batches, each logged to ``tracker``
    with its loss and gradient norm; ``before_step(step)`` runs first if given."""
    import torch

    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for step in range(steps):
        if before_step is not None:
            before_step(step)
        loss = model(torch.randn(32, inputs)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1e9)
        optimizer.step()
        tracker.log(step, loss, grad_norm)


def start_training(path: Path, steps: int = 100000, step_sleep: float = 0.004) -> subprocess.Popen:
    """Start ``dashboard_child.py`` writing ``path`` (a few hundred steps per second); returns at
    once: :func:`wait_ready` waits for its tracker. The caller kills it, or it closes the file
    after ``steps``."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(CHILD.parent), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen([sys.executable, str(CHILD), str(path), str(steps), str(step_sleep)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wait_ready(child: subprocess.Popen) -> None:
    """Wait until the child's tracker has created its file (it prints ``ready``)."""
    line = child.stdout.readline().strip()
    if line != "ready":
        child.kill()
        raise RuntimeError(f"the training child did not start: {line!r} {child.stderr.read()}")


def wait_for(condition, timeout: float = 30.0, what: str = "condition"):
    """Poll ``condition()`` every 50 ms until it returns a truthy value (returned) or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
