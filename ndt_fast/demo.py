"""A short demo: train a small MLP on synthetic data and watch each layer's dimensionality.

    python -m ndt_fast.demo [--steps 300] [--every 10]

Every ``--every`` steps, forward hooks capture the three Linear layers' activations and one
native call (``compute_metrics_batch``) computes all metrics of all layers. If ndtracker is
installed, the same activations are also run through ``ndt.compute_all_metrics`` and the
agreement and time are printed beside ours. (The TDS-article reproduction on MNIST is a later
command; this demo needs no data download.)
"""

from __future__ import annotations

import argparse
import time


def main(argv: list[str] | None = None) -> None:
    import torch
    from torch import nn

    import ndt_fast

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    # Synthetic 10-class problem in 784 dimensions: class means plus noise (MNIST-shaped).
    means = torch.randn(10, 784)
    model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
    layers = {"fc1": model[0], "fc2": model[2], "fc3": model[4]}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    captured: dict[str, torch.Tensor] = {}
    handles = [
        layer.register_forward_hook(lambda _m, _i, out, name=name: captured.__setitem__(name, out.detach()))
        for name, layer in layers.items()
    ]
    try:
        from ndt.core.estimators import compute_all_metrics as ndt_compute_all_metrics
    except ImportError:
        ndt_compute_all_metrics = None

    print(f"{'step':>5} {'loss':>7}  " + "  ".join(f"{n + ' SR':>8} {n + ' PR':>8}" for n in layers))
    ours_s = ndt_s = 0.0
    worst_rel = 0.0
    for step in range(args.steps):
        labels = torch.randint(0, 10, (64,))
        x = means[labels] + 3.0 * torch.randn(64, 784)
        loss = nn.functional.cross_entropy(model(x), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % args.every:
            continue
        acts = [captured[n] for n in layers]
        t0 = time.perf_counter()
        records = ndt_fast.compute_metrics_batch(acts)
        ours_s += time.perf_counter() - t0
        if ndt_compute_all_metrics is not None:
            t0 = time.perf_counter()
            theirs = [ndt_compute_all_metrics(a) for a in acts]
            ndt_s += time.perf_counter() - t0
            for rec, ref in zip(records, theirs):
                ours = (rec["stable_rank"], rec["participation_ratio"], rec["cumulative_90"], rec["nuclear_norm_ratio"])
                worst_rel = max(worst_rel, *(abs(a - b) / max(abs(b), 1e-12) for a, b in zip(ours, ref)))
        print(f"{step:>5} {loss.item():>7.4f}  "
              + "  ".join(f"{r['stable_rank']:>8.3f} {r['participation_ratio']:>8.3f}" for r in records))
    for h in handles:
        h.remove()
    samples = len(range(0, args.steps, args.every))
    print(f"\nndt_fast: {samples} samples x {len(layers)} layers in {ours_s * 1e3:.1f} ms "
          f"({ours_s / samples * 1e6:.0f} us per sample, all layers)")
    if ndt_compute_all_metrics is not None:
        print(f"ndtracker compute_all_metrics on the same activations: {ndt_s * 1e3:.1f} ms "
              f"({ndt_s / max(ours_s, 1e-12):.1f}x ours); largest relative difference {worst_rel:.1e}")


if __name__ == "__main__":
    main()
