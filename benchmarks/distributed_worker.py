"""One rank of the distributed overhead benchmark (benchmarks/test_distributed_overhead.py).

    python distributed_worker.py RANK WORLD PORT

Joins a gloo process group (one torch thread), then serves JSON commands, one per stdin line,
answering each with one JSON line on stdout (every rank gets every command, so collectives match):

- ``{"op": "prepare", "model": "tds-mlp"|"transformer", "mode": "untracked"|"global"|"local",
  "sampling": k}`` — a fresh model (same seed on every rank) under DistributedDataParallel, SGD,
  ``STEPS`` batches of this rank's shard prepared in advance, and a FastTracker in that mode;
- ``{"op": "run"}`` — ``STEPS`` training steps (forward, loss, backward, step, ``log``), then a
  barrier; answers the seconds they took and the tracker's collective seconds during them;
- ``{"op": "finish"}`` — closes the tracker; answers the rows it recorded and its caught errors;
- ``{"op": "quit"}``.
"""

from __future__ import annotations

import datetime
import json
import sys
import time
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ndt_fast import FastTracker

STEPS = 20  # a multiple of every sampling frequency used


class SmallTransformer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(64, nhead=4, dim_feedforward=128, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x).mean(dim=1))


def build(kind: str, rank: int) -> tuple[nn.Module, list[nn.Module], torch.Tensor, torch.Tensor]:
    """Model, tracked layers, and STEPS batches of this rank's shard (inputs, labels)."""
    torch.manual_seed(0)
    if kind == "tds-mlp":  # the TDS article's MLP, 64 rows per rank
        model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
        layers = [model[0], model[2], model[4]]
        shape: tuple[int, ...] = (STEPS, 64, 784)
    else:  # 16 sequences of 32 tokens per rank, d = 64: 512 rows per layer and rank
        model = SmallTransformer()
        layers = [*model.encoder.layers, model.head]
        shape = (STEPS, 16, 32, 64)
    generator = torch.Generator().manual_seed(100 + rank)
    return model, layers, torch.randn(shape, generator=generator), torch.randint(0, 10, shape[:2], generator=generator)


def main() -> None:
    rank, world, port = (int(a) for a in sys.argv[1:4])
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=120))
    state: dict[str, Any] = {}
    for line in sys.stdin:
        command = json.loads(line)
        op = command["op"]
        if op == "quit":
            break
        if op == "prepare":
            model, layers, inputs, labels = build(command["model"], rank)
            ddp = DistributedDataParallel(model)
            tracker = None
            if command["mode"] != "untracked":
                tracker = FastTracker(ddp, layers=layers, sampling_frequency=command["sampling"],
                                      distributed=command["mode"])
            state = {"ddp": ddp, "tracker": tracker, "inputs": inputs, "labels": labels, "step": 0,
                     "optimizer": torch.optim.SGD(ddp.parameters(), lr=0.01)}
            reply: dict[str, Any] = {"ok": True}
        elif op == "run":
            ddp, tracker, optimizer = state["ddp"], state["tracker"], state["optimizer"]
            collective_before = tracker.collective_seconds if tracker is not None else 0.0
            started = time.perf_counter()
            for i in range(STEPS):
                loss = nn.functional.cross_entropy(ddp(state["inputs"][i]), state["labels"][i])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if tracker is not None:
                    tracker.log(state["step"], loss)
                state["step"] += 1
            dist.barrier()
            reply = {"seconds": time.perf_counter() - started,
                     "collective_seconds": (tracker.collective_seconds if tracker is not None else 0.0)
                     - collective_before}
        elif op == "finish":
            tracker = state.get("tracker")
            reply = {"rows": 0, "errors": 0}
            if tracker is not None:
                reply = {"rows": sum(len(f) for f in tracker.get_results().values()),
                         "errors": sum(tracker.errors.values()), "collectives": tracker.collectives}
                tracker.close()
        else:
            reply = {"error": f"unknown op {op!r}"}
        print(json.dumps(reply), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
