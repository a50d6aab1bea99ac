"""DimensionalityMonitor in real Lightning fits on the CPU: what reaches the TensorBoard and CSV
loggers equals the tracker's results, gradient accumulation measures the last micro-batch with
the mean loss, a fit resumed from a checkpoint continues the run file without a step twice, no
hook stays behind, and the older ``pytorch_lightning`` package works too."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

L = pytest.importorskip("lightning")
pytest.importorskip("tensorboard")
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.util import tensor_util  # noqa: E402

import ndt_fast  # noqa: E402
from ndt_fast.integrations import lightning as lightning_integration  # noqa: E402
from ndt_fast.integrations.lightning import DimensionalityMonitor  # noqa: E402
from ndt_fast.sinks import DEFAULT_METRICS  # noqa: E402

pytestmark = [
    pytest.mark.usefixtures("torch_env"),
    # Lightning's advice for a tiny CPU run (no workers in the DataLoader, few batches per log
    # interval, the GPU of the build machine unused): true here and irrelevant to what is tested.
    pytest.mark.filterwarnings("ignore:.*does not have many workers:UserWarning"),
    pytest.mark.filterwarnings("ignore:.*number of training batches.*is smaller than the logging interval"),
    pytest.mark.filterwarnings("ignore:.*GPU available but not used"),
    pytest.mark.filterwarnings("ignore:.*LeafSpec.*is deprecated:FutureWarning"),
]

ACCUMULATE = 2


class TinyModule(L.LightningModule):
    """A 16-32-32-4 MLP on random data; remembers what the tracker should have seen."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
        self.hidden_of_step: dict[int, torch.Tensor] = {}  # optimizer step (1-based) → last micro-batch's
        self.losses_of_step: dict[int, list[float]] = {}
        self.all_hidden_of_step: dict[int, list[torch.Tensor]] = {}  # every micro-batch's
        self.grad_norm_of_step: dict[int, float] = {}  # before the optimizer step, by the library

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        first = self.net[0](x)
        loss = nn.functional.cross_entropy(self.net[2:](self.net[1](first)), y)
        step = self.trainer.global_step + 1  # the optimizer step this micro-batch belongs to
        self.hidden_of_step[step] = first.detach().clone()
        self.all_hidden_of_step.setdefault(step, []).append(first.detach().clone())
        self.losses_of_step.setdefault(step, []).append(loss.item())
        self.log("train_loss", loss)
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        self.grad_norm_of_step[self.trainer.global_step + 1] = float(torch.nn.utils.get_total_norm(grads))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05)


def loader(n: int = 512, batch: int = 8) -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 16, generator=g), torch.randint(0, 4, (n,), generator=g)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch)


def trainer(tmp_path, max_steps: int, loggers, callbacks, **kwargs) -> L.Trainer:
    return L.Trainer(max_steps=max_steps, accumulate_grad_batches=ACCUMULATE, logger=loggers, callbacks=callbacks,
                     default_root_dir=tmp_path, enable_progress_bar=False, enable_model_summary=False,
                     log_every_n_steps=50, accelerator="cpu", devices=1, **kwargs)


def tensorboard_values(log_dir: str) -> dict[str, dict[int, float]]:
    """Every scalar TensorBoard reads from ``log_dir``: old-style (float32, Lightning's own) and
    new-style (float64 tensors, what TensorBoardSink writes with torch's writer)."""
    events = EventAccumulator(log_dir, size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    values = {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}
    for tag in events.Tags()["tensors"]:
        values[tag] = {e.step: float(tensor_util.make_ndarray(e.tensor_proto)) for e in events.Tensors(tag)}
    return values


def test_fit_reaches_tensorboard_and_csv_loggers_value_for_value(tmp_path):
    model = TinyModule()
    monitor = DimensionalityMonitor(layers=["net.0", "net.2"], layer_names=["first", "second"], sampling_frequency=5)
    tb, csv = TensorBoardLogger(tmp_path, name="tb"), CSVLogger(tmp_path, name="csv")
    trainer(tmp_path, 150, [tb, csv], [monitor], enable_checkpointing=False).fit(model, loader())

    results = monitor.tracker.get_results()
    expected_steps = list(range(5, 151, 5))
    assert results["first"]["step"].tolist() == expected_steps  # one sample per 5 optimizer steps (300 batches)
    # TensorBoard, read back with its own reader, in the logger's own event file: every metric of
    # every layer at every sampled step, exactly (float64), beside Lightning's own scalars.
    scalars = tensorboard_values(tb.log_dir)
    assert len(list(Path(tb.log_dir).glob("events.out.tfevents.*"))) == 1 and "train_loss" in scalars
    csv_rows = pd.read_csv(os.path.join(csv.log_dir, "metrics.csv"))
    for layer, df in results.items():
        for metric in DEFAULT_METRICS:
            tag = f"ndt/{layer}/{metric}"
            assert list(scalars[tag]) == expected_steps
            np.testing.assert_array_equal(list(scalars[tag].values()), df[metric].to_numpy(np.float64))
            written = csv_rows.dropna(subset=[tag])
            assert written["step"].tolist() == expected_steps
            np.testing.assert_allclose(written[tag].to_numpy(), df[metric].to_numpy(float), rtol=1e-15)
    # Gradient accumulation: the metrics are the last micro-batch's, the loss the micro-batches' mean.
    first = results["first"].set_index("step")
    for step in (5, 75, 150):
        assert first.loc[step, "stable_rank"] == pytest.approx(
            ndt_fast.stable_rank(model.hidden_of_step[step]), rel=1e-9)
        assert len(model.losses_of_step[step]) == ACCUMULATE
        assert first.loc[step, "loss"] == pytest.approx(np.mean(model.losses_of_step[step]), rel=1e-6)
        assert first.loc[step, "grad_norm"] == pytest.approx(model.grad_norm_of_step[step], rel=1e-6)
    assert np.isfinite(first["grad_norm"]).all() and (first["grad_norm"] > 0).all()
    # Teardown: no hook anywhere, the run file closed and complete.
    assert all(not m._forward_hooks for m in model.modules())
    run = ndt_fast.load(monitor.tracker.output)
    assert run["first"]["step"].tolist() == expected_steps
    assert os.path.dirname(monitor.tracker.output) == tb.log_dir  # the default place: the logger's directory


# The resumed fit saves its checkpoints where the first one did (as a user's resumed run does).
@pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty:UserWarning")
# A mid-epoch checkpoint with a plain DataLoader: which batches follow does not matter here, the steps do.
@pytest.mark.filterwarnings("ignore:You're resuming from a checkpoint that ended before the epoch ended")
def test_resume_from_a_checkpoint_continues_the_run_file_without_a_step_twice(tmp_path):
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=30, save_top_k=-1)
    first = DimensionalityMonitor(sampling_frequency=5)
    trainer(tmp_path, 60, False, [first, checkpoints]).fit(TinyModule(), loader())
    path = first.tracker.output
    assert ndt_fast.load(path)[first.tracker.layer_names[0]]["step"].tolist() == list(range(5, 61, 5))

    # Resume from step 30 (the run file already holds 35..60): a new callback finds the file in the
    # checkpoint, appends to it, and the steps 35..60 done again are not written twice.
    resumed = DimensionalityMonitor(sampling_frequency=5)
    again = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=30, save_top_k=-1)
    trainer(tmp_path, 90, False, [resumed, again]).fit(TinyModule(), loader(),
                                                       ckpt_path=tmp_path / "ckpt" / "epoch=0-step=30.ckpt")
    assert resumed.tracker.output == path
    run = ndt_fast.load(path)
    for layer in resumed.tracker.layer_names:
        assert run[layer]["step"].tolist() == list(range(5, 91, 5))


def test_the_older_pytorch_lightning_package_is_used_when_lightning_is_missing(tmp_path, monkeypatch):
    pl = pytest.importorskip("pytorch_lightning")
    # As if only pytorch_lightning were installed: importing `lightning` fails while the
    # integration module is loaded afresh and while the fit runs.
    monkeypatch.setitem(sys.modules, "lightning", None)
    monkeypatch.setitem(sys.modules, "lightning.pytorch", None)
    spec = importlib.util.spec_from_file_location("monitor_on_pytorch_lightning",
                                                  lightning_integration.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert issubclass(module.DimensionalityMonitor, pl.Callback)
    assert not issubclass(module.DimensionalityMonitor, L.Callback)

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))

        def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
            return nn.functional.cross_entropy(self.net(batch[0]), batch[1])

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    monitor = module.DimensionalityMonitor(sampling_frequency=2)
    pl.Trainer(max_steps=8, accumulate_grad_batches=ACCUMULATE, logger=False, enable_checkpointing=False,
               enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", default_root_dir=tmp_path,
               callbacks=[monitor]).fit(Module(), loader(64))
    for df in monitor.tracker.get_results().values():
        assert df["step"].tolist() == [2, 4, 6, 8]


def test_a_window_of_two_steps_measures_every_micro_batch_of_both(tmp_path):
    # window=k >= 2: the feature-side Gram sums every forward of the k steps ending at a sampled
    # step, so all their micro-batches are measured exactly (window=1: the last micro-batch).
    model = TinyModule()
    monitor = DimensionalityMonitor(layers=["net.0"], sampling_frequency=5, window=2, output=False)
    trainer(tmp_path, 20, False, [monitor], enable_checkpointing=False).fit(model, loader())
    frame = monitor.tracker.get_results()["Linear_0"].set_index("step")
    assert frame.index.tolist() == [5, 10, 15, 20]
    for step in (5, 10, 15, 20):
        micro_batches = model.all_hidden_of_step[step - 1] + model.all_hidden_of_step[step]
        assert len(micro_batches) == 2 * ACCUMULATE
        both = torch.cat(micro_batches)
        assert frame.loc[step, "rows"] == len(both)
        assert frame.loc[step, "stable_rank"] == pytest.approx(ndt_fast.stable_rank(both), rel=1e-9)


def test_output_false_keeps_the_records_in_memory_only(tmp_path):
    monitor = DimensionalityMonitor(sampling_frequency=2, output=False)
    trainer(tmp_path, 6, CSVLogger(tmp_path), [monitor], enable_checkpointing=False).fit(TinyModule(), loader(64))
    assert monitor.tracker.output is None and not list(tmp_path.rglob("*.h5"))
    assert monitor.tracker.get_results()["Linear_0"]["step"].tolist() == [2, 4, 6]


def test_bad_arguments_are_refused_when_the_callback_is_made():
    with pytest.raises(ValueError, match="output"):
        DimensionalityMonitor(output=True)
    with pytest.raises(ValueError, match="sampling_frequency"):
        DimensionalityMonitor(sampling_frequency=0)
    with pytest.raises(ValueError, match="resume"):
        DimensionalityMonitor(resume=True)
