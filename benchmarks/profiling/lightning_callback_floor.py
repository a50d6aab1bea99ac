"""The floor under any Lightning callback: 400-step fits of the tiny MLP (as
``benchmarks/test_lightning_overhead.py``, TensorBoard logger) with no callback, with an empty
``Callback`` subclass (Lightning still calls every hook of it, each in its profiler context), and
with a ``DimensionalityMonitor`` that never samples (its forward hooks idle, one integer test per
batch end). Rounds of all three in a rotating order; per variant the median over rounds of its
CPU time divided by the round's no-callback CPU time.

    .venv/bin/python benchmarks/profiling/lightning_callback_floor.py [rounds=12]
"""

from __future__ import annotations

import logging
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

sys.path.insert(0, str(Path(__file__).parents[1]))
from test_lightning_overhead import STEPS, SmallModule, loader_for  # noqa: E402

from ndt_fast.integrations.lightning import DimensionalityMonitor  # noqa: E402


class EmptyCallback(L.Callback):
    """A callback that overrides nothing."""


def callbacks(kind: str) -> list[L.Callback]:
    if kind == "empty Callback":
        return [EmptyCallback()]
    if kind == "monitor that never samples":
        return [DimensionalityMonitor(sampling_frequency=10**9, output=False, log_to_loggers=False)]
    return []


def fit(loader: torch.utils.data.DataLoader, kind: str) -> float:
    torch.manual_seed(0)
    trainer = L.Trainer(max_steps=STEPS, logger=TensorBoardLogger(tempfile.mkdtemp()), callbacks=callbacks(kind),
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        accelerator="cpu", devices=1)
    module = SmallModule("tiny")
    cpu = time.process_time()
    trainer.fit(module, loader)
    return time.process_time() - cpu


def main(rounds: int = 12) -> None:
    warnings.simplefilter("ignore")  # Lightning's advice on workers and GPUs: the same in every variant
    logging.getLogger("lightning").setLevel(logging.ERROR)
    torch.set_num_threads(1)
    loader = loader_for("tiny", STEPS)
    kinds = ["no callback", "empty Callback", "monitor that never samples"]
    for kind in kinds:  # warm-up
        fit(loader, kind)
    cpu: dict[str, list[float]] = {kind: [] for kind in kinds}
    for r in range(rounds):
        for kind in kinds[r % 3:] + kinds[:r % 3]:
            cpu[kind].append(fit(loader, kind))
    print(f"{rounds} rounds of {STEPS}-step fits, tiny MLP; no-callback CPU median {statistics.median(cpu[kinds[0]]):.3f} s")
    for kind in kinds[1:]:
        ratios = [a / b for a, b in zip(cpu[kind], cpu[kinds[0]])]
        print(f"  {kind:28s} CPU x no callback: median {statistics.median(ratios):.3f}  rounds: "
              + " ".join(f"{x:.2f}" for x in ratios))


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:]))
