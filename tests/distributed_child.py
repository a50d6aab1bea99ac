"""One rank of a DDP training run with FastTracker, for tests/test_distributed.py (a subprocess).

    python distributed_child.py CONFIG_JSON RANK

CONFIG_JSON holds: ``world``, ``port``, ``out`` (a directory), ``model`` ("mlp" | "transformer"),
``steps``, ``sampling``, ``mode`` ("global" | "local" | null), ``kill_rank`` / ``kill_step``
(that rank SIGKILLs itself after that step's optimizer step, before its ``log()``), ``timeout``,
``mismatch`` ("layers" | "sampling": rank 1 asks for a tracker that differs from the others'),
``wrap`` ("ddp", default, or "fsdp": FSDP2's ``fully_shard`` on the CPU), ``track_weights``.

Every rank trains the same model (same seed) under DistributedDataParallel (or FSDP2) on its own shard of a
deterministic global batch whose shard sizes vary with the step and the rank (uneven shards).
On each sampled step the rank saves, besides what the tracker does, the exact activation matrices
its tracked layers produced (a separate hook of this script, float64) and its loss, so the parent
can compute the metrics of the concatenated global batch in one process. It also counts the
calls to ``torch.distributed.all_reduce`` and ``gather`` (the real functions, wrapped) per
step: the tracker's collectives, since DDP reduces gradients in C++ without those Python functions.
Writes ``OUT/rank<k>.npz`` (activations, losses) and ``OUT/rank<k>.json`` (collective counts,
tracker state, last finished step).
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import sys

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ndt_fast import FastTracker
from ndt_fast.layers import activation_matrix, first_tensor

IN_FEATURES, SEQ, D_MODEL = 20, 6, 16


def shard_sizes(step: int, world: int) -> list[int]:
    """Uneven local batch sizes: they differ by rank and change with the step."""
    return [5 + 3 * r + (step + r) % 4 for r in range(world)]


def global_batch(step: int, world: int, model_kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1000 + step)
    rows = sum(shard_sizes(step, world))
    if model_kind == "mlp":
        x = torch.randn(rows, IN_FEATURES, generator=generator)
        return x, torch.randint(0, 5, (rows,), generator=generator)
    x = torch.randn(rows, SEQ, D_MODEL, generator=generator)
    return x, torch.randint(0, 5, (rows,), generator=generator)


class SmallTransformer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(D_MODEL, nhead=2, dim_feedforward=32, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.head = nn.Linear(D_MODEL, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x).mean(dim=1))


def build(model_kind: str) -> tuple[nn.Module, list[nn.Module]]:
    torch.manual_seed(0)
    if model_kind == "mlp":
        model = nn.Sequential(nn.Linear(IN_FEATURES, 48), nn.ReLU(), nn.Linear(48, 24), nn.ReLU(), nn.Linear(24, 5))
        return model, [model[0], model[2], model[4]]
    model = SmallTransformer()
    return model, [*model.encoder.layers, model.head]


def main() -> None:
    config = json.loads(open(sys.argv[1]).read())
    rank, world = int(sys.argv[2]), config["world"]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{config['port']}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=config.get("timeout", 60)))
    counts: dict[str, int] = {"calls": 0}

    def counting(collective):  # noqa: ANN001, ANN202 — passes through to the real function
        def call(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            counts["calls"] += 1
            return collective(*args, **kwargs)
        return call

    dist.all_reduce, dist.gather = counting(dist.all_reduce), counting(dist.gather)

    model, layers = build(config["model"])
    if config.get("wrap") == "fsdp":  # FSDP2: each tracked layer and the whole model sharded over the ranks
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh("cpu", (world,))
        for layer in layers:
            fully_shard(layer, mesh=mesh)
        ddp = fully_shard(model, mesh=mesh)
    else:
        ddp = DistributedDataParallel(model)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.05)
    output = os.path.join(config["out"], "run.h5")
    # The MLP is tracked through the DDP wrapper (auto-selection); the transformer's layers are given.
    tracked, sampling = (None if config["model"] == "mlp" else layers), config["sampling"]
    if rank == 1 and config.get("mismatch") == "layers":
        tracked = layers[:-1]
    if rank == 1 and config.get("mismatch") == "sampling":
        sampling += 1
    try:
        tracker = FastTracker(ddp, layers=tracked, sampling_frequency=sampling, distributed=config["mode"],
                              output=output, distributed_timeout=config.get("timeout", 60),
                              track_weights=config.get("track_weights", False))
    except ValueError as error:  # expected on every rank when the ranks disagree
        with open(os.path.join(config["out"], f"rank{rank}.json"), "w") as f:
            json.dump({"construct_error": str(error), "file_exists": os.path.exists(output)}, f)
        dist.destroy_process_group()
        return
    saved: dict[str, np.ndarray] = {}
    sampled = {"now": False}

    def recorder(index: int):  # noqa: ANN202
        def hook(module: nn.Module, inputs: object, output: object) -> None:
            if sampled["now"] and module.training and torch.is_grad_enabled():
                matrix = activation_matrix(first_tensor(output), False).detach().double().numpy()
                saved[f"act_{sampled['step']}_{index}"] = matrix
        return hook

    for i, layer in enumerate(layers):
        layer.register_forward_hook(recorder(i))

    per_step: dict[int, int] = {}
    losses: dict[int, float] = {}
    last_finished = -1
    try:
        for step in range(config["steps"]):
            x, y = global_batch(step, world, config["model"])
            sizes = shard_sizes(step, world)
            start = sum(sizes[:rank])
            xs, ys = x[start:start + sizes[rank]], y[start:start + sizes[rank]]
            sampled.update(now=step % config["sampling"] == 0, step=step)
            loss = nn.functional.cross_entropy(ddp(xs), ys)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if rank == config.get("kill_rank") and step == config.get("kill_step"):
                os.kill(os.getpid(), signal.SIGKILL)
            losses[step] = float(loss)
            before = counts["calls"]
            tracker.log(step, loss)
            per_step[step] = counts["calls"] - before
            last_finished = step
    except Exception as error:  # a peer died: DDP itself fails; the run file must still hold what was done
        print(f"rank {rank}: training stopped at step {last_finished + 1}: {type(error).__name__}", flush=True)
    results = tracker.get_results()
    tracker.close()
    np.savez(os.path.join(config["out"], f"rank{rank}.npz"), **saved,
             losses=np.array([losses.get(s, np.nan) for s in range(config["steps"])]))
    with open(os.path.join(config["out"], f"rank{rank}.json"), "w") as f:
        json.dump({"per_step": per_step, "collectives": tracker.collectives, "rank": tracker.rank,
                   "world_size": tracker.world_size, "mode": tracker.distributed, "output": tracker.output,
                   "rows": {name: len(frame) for name, frame in results.items()}, "last_finished": last_finished,
                   "layer_names": tracker.layer_names, "errors": tracker.errors,
                   "error": repr(tracker.distributed_error) if tracker.distributed_error else None}, f)
    if config.get("kill_rank") is None:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
