"""A Lightning fit under DDP on the CPU (2 processes, gloo) with DimensionalityMonitor, for
tests/test_distributed.py. Lightning's "ddp" strategy starts the second process by running this
script again (with its rank in the environment).

    python lightning_ddp_child.py OUT_DIR

Every rank saves the first Linear's output of every micro-batch, by the optimizer step it
belongs to (the step the monitor labels its sample with), to ``OUT_DIR/rank<k>.npz``; rank 0's
monitor writes ``OUT_DIR/run.h5``.
"""

from __future__ import annotations

import os
import sys

import lightning as L
import numpy as np
import torch
from torch import nn

from ndt_fast.integrations.lightning import DimensionalityMonitor

STEPS, SAMPLING, BATCH = 20, 2, 16


class Module(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
        self.first: dict[str, np.ndarray] = {}

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        first = self.net[0](x)
        self.first[f"step_{self.trainer.global_step + 1}"] = first.detach().double().numpy()
        return nn.functional.cross_entropy(self.net[2](self.net[1](first)), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        generator = torch.Generator().manual_seed(0)
        data = torch.utils.data.TensorDataset(torch.randn(2 * STEPS * BATCH, 16, generator=generator),
                                              torch.randint(0, 4, (2 * STEPS * BATCH,), generator=generator))
        return torch.utils.data.DataLoader(data, batch_size=BATCH)


def main() -> None:
    out = sys.argv[1]
    torch.set_num_threads(1)
    monitor = DimensionalityMonitor(layers=["net.0", "net.2"], sampling_frequency=SAMPLING,
                                    output=os.path.join(out, "run.h5"))
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_steps=STEPS, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[monitor])
    module = Module()
    trainer.fit(module)
    np.savez(os.path.join(out, f"rank{trainer.global_rank}.npz"), **module.first,
             mode=np.array(monitor.tracker.distributed), collectives=np.array(monitor.tracker.collectives))


if __name__ == "__main__":
    main()
