"""The cost of ``DimensionalityMonitor`` in a real Lightning fit: the same fit with and without it.

Each timed call is one ``Trainer.fit`` of ``STEPS`` optimizer steps of a small MLP (``MODELS``:
"tiny" 64-128-128-10 with batch 64, ~2.5 ms per step, and "mnist" 784-256-256-10 with batch 128;
Adam, random data prepared in advance) on the CPU, with a TensorBoard logger in both
variants (Lightning's default ``log_every_n_steps=50``). The tracked variant adds
``DimensionalityMonitor(sampling_frequency=10)``: its three Linear layers, every metric, a run
file in the log directory, and each sample's metrics sent to the TensorBoard logger; the third
variant keeps the records in memory (``output=False``: no run file to create and compress). The Trainer
and model are built untimed before each call (``benchmark.pedantic`` setup); the fit's own
start-up (loggers, strategy, dataloader) is inside the timed call in both variants. One torch
thread (as ``tests/`` run): on the shared 2-core machine, two OpenMP threads contending with other
processes made each step ~50× slower and the timings meaningless.

Read ``ndt_fast median / untracked median`` off the group. The goal is ≤ 1.03×.
"""

from __future__ import annotations

import itertools
import warnings
from typing import Any

import pytest
import torch
from torch import nn

L = pytest.importorskip("lightning")
pytest.importorskip("tensorboard")
from lightning.pytorch.loggers import TensorBoardLogger  # noqa: E402

from ndt_fast.integrations.lightning import DimensionalityMonitor  # noqa: E402

STEPS = 400
ROUNDS = 7
VARIANTS = {"untracked": ("Lightning fit, TensorBoard logger", "reference"),
            "ndt_fast": ("same + DimensionalityMonitor(sampling_frequency=10)", "subject"),
            "ndt_fast-no-file": ("same + DimensionalityMonitor(sampling_frequency=10, output=False)", "subject")}


# name: (layer widths, batch size). "tiny": ~2.5 ms per step on one thread, most of it Lightning's
# own per-step work — the worst case for a per-sample cost; "mnist": an MNIST-shaped classifier.
MODELS = {"tiny": ((64, 128, 128, 10), 64), "mnist": ((784, 256, 256, 10), 128)}


class SmallModule(L.LightningModule):
    def __init__(self, model: str = "tiny") -> None:
        super().__init__()
        (a, b, c, d), _ = MODELS[model]
        self.net = nn.Sequential(nn.Linear(a, b), nn.ReLU(), nn.Linear(b, c), nn.ReLU(), nn.Linear(c, d))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = nn.functional.cross_entropy(self.net(batch[0]), batch[1])
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def loader_for(model: str, steps: int) -> torch.utils.data.DataLoader:
    """``steps`` batches of random inputs and labels for ``MODELS[model]``, made in advance."""
    (inputs, *_, classes), batch = MODELS[model]
    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(steps * batch, inputs, generator=g),
                                          torch.randint(0, classes, (steps * batch,), generator=g))
    return torch.utils.data.DataLoader(data, batch_size=batch)


@pytest.mark.parametrize("model", list(MODELS))
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_lightning_fit_overhead(benchmark: Any, tmp_path: Any, variant: str, model: str) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _run(benchmark, tmp_path, variant, model)
    finally:
        torch.set_num_threads(threads)


def _run(benchmark: Any, tmp_path: Any, variant: str, model: str) -> None:
    label, role = VARIANTS[variant]
    (widths, batch) = MODELS[model]
    benchmark.group = (f"Lightning fit overhead, {model} MLP {'-'.join(map(str, widths))} batch {batch}, "
                       f"{STEPS} steps per call, TensorBoard on")
    benchmark.extra_info.update(label=label, role=role, steps=STEPS, sampling_frequency=10, model=model)
    loader = loader_for(model, STEPS)
    runs = itertools.count()
    monitors: list[DimensionalityMonitor] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        torch.manual_seed(0)
        callbacks = []
        if variant != "untracked":
            monitors.append(DimensionalityMonitor(sampling_frequency=10,
                                                  **({"output": False} if variant == "ndt_fast-no-file" else {})))
            callbacks.append(monitors[-1])
        trainer = L.Trainer(max_steps=STEPS, logger=TensorBoardLogger(tmp_path / str(next(runs))),
                            callbacks=callbacks, enable_checkpointing=False, enable_progress_bar=False,
                            enable_model_summary=False, accelerator="cpu", devices=1)
        return (trainer, SmallModule(model)), {}

    def fit(trainer: L.Trainer, module: L.LightningModule) -> None:
        with warnings.catch_warnings():
            # Lightning's advice for a CPU run without DataLoader workers: true and the same in both variants.
            warnings.filterwarnings("ignore", message=".*does not have many workers", category=UserWarning)
            warnings.filterwarnings("ignore", message=".*GPU available but not used")
            # Lightning 2.6 on torch 2.14 asks torch's pytree about LeafSpec, which torch deprecates.
            warnings.filterwarnings("ignore", message=".*LeafSpec.*is deprecated", category=FutureWarning)
            trainer.fit(module, loader)

    benchmark.pedantic(fit, setup=setup, rounds=ROUNDS, warmup_rounds=1)
    for monitor in monitors:  # a monitor that recorded nothing would time as free
        results = monitor.tracker.get_results()
        assert all(df["step"].tolist() == list(range(10, STEPS + 1, 10)) for df in results.values())
        assert sum(monitor.tracker.errors.values()) == 0
