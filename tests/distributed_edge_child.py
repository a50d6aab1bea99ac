"""Edge cases of distributed="global" in small gloo ranks, for tests/test_distributed.py.

    python distributed_edge_child.py SCENARIO RANK WORLD PORT OUT_DIR

- ``dim_change``: rank 1's tracked layer (a Flatten) has another feature count at step 2 only;
- ``partial``: rank 1's forward of step 1 runs under no_grad (the layer is captured on rank 0 only);
- ``steps``: at the first log() the ranks pass different steps (rank r logs 9 + r), later the same.
Writes ``OUT_DIR/rank<k>.json``: per log() whether the tracker's reduction had failed after it,
and on rank 0 the records (step, rows, flags) and ``partial_samples``.
"""

from __future__ import annotations

import datetime
import json
import os
import sys

import torch
import torch.distributed as dist
from torch import nn

from ndt_fast import FastTracker


def main() -> None:
    scenario, rank, world, port, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    torch.manual_seed(rank)
    model = nn.Sequential(nn.Linear(8, 8), nn.Flatten())
    tracker = FastTracker(model, layers=[model[1]], layer_names=["flat"], distributed="global", distributed_timeout=20)
    failed_after = []
    for i in range(4):
        features = 3 if scenario == "dim_change" and rank == 1 and i == 2 else 2
        x = torch.randn(4, 8, features).transpose(1, 2)  # → Flatten: (4, features · 8)
        if scenario == "partial" and rank == 1 and i == 1:
            with torch.no_grad():
                model(x)
        else:
            model(x)
        step = 10 + i + (rank - 1 if scenario == "steps" and i == 0 else 0)
        tracker.log(step, 1.0)
        failed_after.append(tracker.distributed_error is not None)
    frame = tracker.get_results("flat")
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({"failed_after": failed_after, "steps": frame["step"].tolist(), "rows": frame["rows"].tolist(),
                   "flags": frame["flags"].tolist(), "partial": tracker.partial_samples}, f)
    tracker.close()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
