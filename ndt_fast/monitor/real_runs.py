"""The alert rules on real training runs: the TDS article's MLP on MNIST, healthy and with a
problem planted mid-run. Not a test (it needs MNIST and minutes of CPU); the README quotes it.

    python -m ndt_fast.monitor.real_runs [--steps 8000] [--seed 0]
    python -m ndt_fast.monitor.real_runs --toy-null 80     # false alarms on healthy toy runs

Conditions (Adam 1e-3, batches of 64, every 5 steps, ``FastTracker(alerts=True)`` with the
default rules; the three Linear layers are tracked):

- ``healthy``: the article's 784-256-128-10 as it is;
- ``bottleneck``: from step ``steps/8`` on, the second hidden layer's output (after its ReLU) is
  masked to 2 of its 128 units — a 2-unit bottleneck in front of the output layer;
- ``erratic``: from step ``steps/2`` on, 8 random units of the first hidden layer get random
  gains in [0, 20) at every forward (erratic activations, as a broken normalisation would give).

Prints one markdown row per alert (condition, rule, layer, step, evidence), and the run time.

``--toy-null N``: instead, N healthy runs (seeds 0 … N−1, 1000 steps, every step sampled) of the
toy loop of ``tests/test_monitor.py`` without its plant (MLP 32-64-32-4 learning a random linear
teacher, Adam 1e-3, batches of 64): every alert there is a false alarm; prints their count per
rule and per 1000 samples.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence


def run(condition: str, steps: int, seed: int) -> list:
    import torch
    from torch import nn

    from ndt_fast import FastTracker
    from ndt_fast.data import load_mnist

    torch.manual_seed(seed)
    images, labels = load_mnist()
    model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
    state = {"step": 0}
    mask = torch.zeros(128)
    mask[:2] = 1

    def bottleneck(module, inputs, output):
        return output * mask if state["step"] >= steps // 8 else output

    def erratic(module, inputs, output):
        if state["step"] < steps // 2:
            return output
        gains = torch.ones(output.shape[1])
        gains[torch.randperm(output.shape[1])[:8]] = torch.rand(8) * 20
        return output * gains

    if condition == "bottleneck":
        model[3].register_forward_hook(bottleneck)
    elif condition == "erratic":
        model[1].register_forward_hook(erratic)
    tracker = FastTracker(model, sampling_frequency=5, alerts=True)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    batches = torch.Generator().manual_seed(seed)
    for step in range(steps):
        state["step"] = step
        index = torch.randint(0, len(labels), (64,), generator=batches)
        loss = nn.functional.cross_entropy(model(images[index]), labels[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        tracker.log(step, loss)
    tracker.close()
    return tracker.alerts


def teacher_run(steps: int, *, forward_hook=None, before_step=None, resume_at=None,  # noqa: ANN001, ANN201
                **tracker_kwargs):
    """The toy run (also the loop of ``tests/test_monitor.py``): an MLP 32-64-32-4 learning a random
    linear teacher (Adam 1e-3, batches of 64, torch's global generator), its three Linear layers
    tracked as ``fc1, fc2, out`` with ``FastTracker(**tracker_kwargs)``; ``forward_hook`` goes on the
    first ReLU (a plant), ``before_step(step)`` runs before each step. ``resume_at``: before that
    step the tracker is closed and a new one continues its run file (``resume=True``; needs
    ``output=``), as a restarted job would. Returns the (last) tracker, not closed."""
    import torch
    from torch import nn

    from ndt_fast import FastTracker

    teacher = torch.randn(32, 4)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4))
    if forward_hook is not None:
        model[1].register_forward_hook(forward_hook)
    def track(**extra):  # noqa: ANN003, ANN202
        return FastTracker(model, layers=[model[0], model[2], model[4]], layer_names=["fc1", "fc2", "out"],
                           **tracker_kwargs, **extra)

    tracker = track()
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    for step in range(steps):
        if step == resume_at:
            tracker.close()
            tracker = track(resume=True)
        if before_step is not None:
            before_step(step)
        x = torch.randn(64, 32)
        loss = nn.functional.cross_entropy(model(x), (x @ teacher).argmax(1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        tracker.log(step, loss)
    return tracker


def toy_null(seeds: int, steps: int = 1000) -> None:
    import collections

    import torch

    counts: collections.Counter[str] = collections.Counter()
    for seed in range(seeds):
        torch.manual_seed(seed)
        tracker = teacher_run(steps, alerts=True)
        tracker.close()
        for a in tracker.alerts:
            counts[a.rule] += 1
            print(f"seed {seed}: {a.rule} {a.layer} step {a.step} {dict(a.evidence)}")
    samples = seeds * steps
    print(f"{samples} samples: " + (", ".join(f"{rule} {n} ({1000 * n / samples:.3f} / 1000)"
                                                for rule, n in counts.items()) or "no alert"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ndt_fast.monitor.real_runs", description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=8000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--conditions", default="healthy,bottleneck,erratic")
    parser.add_argument("--toy-null", type=int, default=0, metavar="N", help="N healthy toy runs instead")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    if args.toy_null:
        toy_null(args.toy_null)
        return 0
    print("| condition | rule | layer | step | evidence |\n|---|---|---|---:|---|")
    for condition in args.conditions.split(","):
        start = time.perf_counter()
        alerts = run(condition, args.steps, args.seed)
        for a in alerts:
            evidence = ", ".join(f"{k} {v:.3g}" for k, v in a.evidence.items())
            print(f"| {condition} | {a.rule} | {' ← '.join(a.layers)} | {a.step} | {evidence} |")
        if not alerts:
            print(f"| {condition} | (none) | | | |")
        print(f"({condition}: {time.perf_counter() - start:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
