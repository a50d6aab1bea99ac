"""PyTorch Lightning: ``DimensionalityMonitor``, a ``Callback`` that tracks a model during ``fit``.

    from ndt_fast.integrations.lightning import DimensionalityMonitor
    trainer = L.Trainer(callbacks=[DimensionalityMonitor(sampling_frequency=10)])
    trainer.fit(model)      # metrics in the trainer's loggers as ndt/<layer>/<metric>

What it does, hook by hook (it drives only ``FastTracker``'s public API):

- ``on_fit_start``: attaches a ``FastTracker`` to the ``LightningModule`` (one process: there;
  under DDP/FSDP: on every rank, the tracker's ``distributed="global"`` default summing the ranks'
  Grams so that rank 0 records the global batch's metrics), writing a run file (``output=``; default
  ``ndt_fast.h5`` in the trainer's log directory) — or, when the fit resumes from a checkpoint
  that holds this callback's state, appending to the same run file (``resume=True``: steps
  already in it are not written twice).
- ``on_before_optimizer_step``: on a sampled step, the gradient norm (a tensor; no host sync).
  On the other steps: one boolean test.
- ``on_train_batch_end``: on a sampled step, the micro-batch's loss (``outputs["loss"]``, a
  tensor kept on its device); when an optimizer step is complete, ``tracker.log(
  trainer.global_step, loss, grad_norm)`` if that step arms or closes a sample (see
  ``ndt_fast.integrations._common``: two of every ``sampling_frequency`` steps with
  ``window=1``), and the finished samples that other loggers wait for are handed to them.
- Loggers: each finished sample's ``ndt/<layer>/<metric>`` values at its step. A
  ``TensorBoardLogger``'s writer gets them through a ``TensorBoardSink`` and a ``WandbLogger``'s run
  through a ``WandbSink`` (against ``trainer/global_step``, as Lightning logs there), both on the
  sinks' thread (their writers are thread-safe; a TensorBoard ``add_scalar`` costs ~0.1 ms, 18 of
  them per sample here). Any other logger (CSV, MLflow, ...) gets ``log_metrics(metrics, step)``
  on the training thread, at the next batch end: such loggers are not made to be called from
  another thread.
- ``state_dict`` / ``load_state_dict``: the run file's path, saved in every checkpoint.
- ``teardown`` / ``on_exception``: ``tracker.close()`` — every hook removed, the run file
  closed — and the last samples handed to the loggers before they finalize.

Steps and gradient accumulation: see ``ndt_fast.integrations._common`` (a sample is labelled
with the global step after its optimizer step; the metrics are the last micro-batch's; the loss
is the mean over the micro-batches). Validation forwards are ignored (eval mode / no_grad).

Works with the ``lightning`` package and falls back to ``pytorch_lightning``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

try:
    from lightning.pytorch import Callback
except ModuleNotFoundError:  # the older package name (the same API since 2.0)
    from pytorch_lightning import Callback

from ndt_fast.integrations._common import LoggerRelay, TrackingCallback, grad_norm, resolve_layers, run_file_for
from ndt_fast.jumps import Jump
from ndt_fast.sinks.base import DEFAULT_METRICS, Sample, Sink
from ndt_fast.tracker.distributed import ranks_share_tracking


class DimensionalityMonitor(TrackingCallback, Callback):
    """Tracks the dimensionality of a ``LightningModule``'s layers during ``fit`` (see the module
    docstring).

    Args:
        layers: modules, or their names in the LightningModule (``"net.0"``); None = automatic.
        sampling_frequency: sample every this many optimizer steps (default 10).
        output: the run file (HDF5); None → a fresh ``ndt_fast.h5`` in ``trainer.log_dir`` (or
            ``default_root_dir``). A resumed fit uses the path saved in the checkpoint. False →
            no run file: records in memory only (``monitor.tracker.get_results()``), no file
            to create at fit start nor to compress at the end (~0.15 s per fit together), and
            a resumed fit starts a new record.
        log_to_loggers: send each sample's metrics to ``trainer.loggers`` (default True).
        logger_metrics: which columns go to the loggers (default the six metrics).
        log_grad_norm: record the gradient norm of sampled steps (before clipping).
        sinks, on_sample, on_jump: as in ``FastTracker`` (``on_jump(layer, jump)`` on the
            training thread at the callback's first ``log()`` after a jump is confirmed; where a
            core is free, samples are computed on a background thread, see
            ``ndt_fast.integrations._common``).
        **tracker_options: any other ``FastTracker`` keyword (``metrics``, ``window``,
            ``track_weights``, ``jump_rule``, ``max_rows``, ``device_path``,
            ``background_finish`` to override the callback's choice, ...).

    Raises ValueError at construction for a bad ``sampling_frequency`` or tracker options that
    the callback sets itself (``output``/``resume``/``sinks`` go through its own arguments);
    at fit start, ``FastTracker``'s errors for bad layers or options.
    """

    def __init__(self, layers: Sequence[nn.Module | str] | None = None, sampling_frequency: int = 10, *,
                 layer_names: Sequence[str] | None = None, output: str | os.PathLike[str] | bool | None = None,
                 log_to_loggers: bool = True, logger_metrics: Sequence[str] = DEFAULT_METRICS,
                 log_grad_norm: bool = True, sinks: Sequence[Sink] = (),
                 on_sample: Callable[[Sample], Any] | None = None,
                 on_jump: Callable[[str, Jump], Any] | None = None, **tracker_options: Any) -> None:
        super().__init__("DimensionalityMonitor", layers, sampling_frequency, layer_names, log_grad_norm, sinks,
                         on_sample, on_jump, tracker_options)
        if output is True:
            raise ValueError("output must be a path, None (a file in the log directory) or False (no file)")
        self.output = output if output in (None, False) else os.fspath(output)
        self.log_to_loggers = log_to_loggers
        self.logger_metrics = tuple(logger_metrics)
        self._relay = LoggerRelay(self.logger_metrics)
        self._state_key = self._generate_state_key(output=self.output)  # (Lightning asks at every hook)
        self._resume_path: str | None = None
        self._last_global_step = 0
        self._next_due = False  # the optimizer step in progress is sampled (read per step: no property chain)

    # ---- checkpoint state ------------------------------------------------------------------------

    @property
    def state_key(self) -> str:
        return self._state_key

    def state_dict(self) -> dict[str, Any]:
        path = self.tracker.output if self._active else self._resume_path
        return {"output": path, "global_step": self._last_global_step}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        self._resume_path = state_dict.get("output")

    # ---- fit ---------------------------------------------------------------------------------------

    def on_fit_start(self, trainer: Any, pl_module: nn.Module) -> None:
        # Under torch.distributed every rank makes its tracker (distributed="global" by default: the
        # ranks' Grams are summed and rank 0 records); the loggers' sinks only on global rank zero.
        if not trainer.is_global_zero and not ranks_share_tracking():
            return
        path, resume = run_file_for(self.output, self._resume_path, trainer.log_dir or trainer.default_root_dir)
        self._start(pl_module, resolve_layers(pl_module, self.layers), path, resume,
                    self._logger_sinks(trainer) if trainer.is_global_zero else [])
        self._last_global_step = trainer.global_step
        self._next_due = self._due(self._last_global_step + 1)

    def _logger_sinks(self, trainer: Any) -> list[Sink]:
        """Sinks for ``trainer.loggers`` (see the module docstring)."""
        if not self.log_to_loggers:
            return []
        sinks: list[Sink] = []
        relay_needed = False
        for lightning_logger in trainer.loggers:
            kind = type(lightning_logger).__name__
            if kind == "TensorBoardLogger":
                from ndt_fast.sinks.tensorboard import TensorBoardSink

                sinks.append(TensorBoardSink(lightning_logger.experiment, metrics=self.logger_metrics))
            elif kind == "WandbLogger":
                from ndt_fast.sinks.wandb import WandbSink

                sinks.append(WandbSink(lightning_logger.experiment, metrics=self.logger_metrics,
                                       step_metric="trainer/global_step"))
            else:
                relay_needed = True
        return [self._relay, *sinks] if relay_needed else sinks

    def on_before_optimizer_step(self, trainer: Any, pl_module: nn.Module, optimizer: Any) -> None:
        if self._next_due and self._active and self.log_grad_norm:
            self._grad_norm = grad_norm(self._parameters)

    def on_train_batch_end(self, trainer: Any, pl_module: nn.Module, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if not self._active:
            return
        step = trainer.global_step
        completed = step > self._last_global_step  # this micro-batch ended an optimizer step
        if self._next_due:
            # Lightning has divided outputs["loss"] by accumulate_grad_batches: their sum is the mean.
            self._loss.add(_loss_of(outputs), already_divided=True)
        if not completed:
            return
        self._last_global_step = step
        self._next_due = self._due(step + 1)
        if self._log_if_needed(step):
            self._to_loggers(trainer)

    def _to_loggers(self, trainer: Any) -> None:
        """Hand the samples the relay holds to the loggers without a sink of their own."""
        for step, metrics in self._relay.drain():
            for lightning_logger in trainer.loggers:
                if type(lightning_logger).__name__ not in ("TensorBoardLogger", "WandbLogger"):  # (sinks have those)
                    lightning_logger.log_metrics(metrics, step=step)

    # ---- teardown ------------------------------------------------------------------------------------

    def teardown(self, trainer: Any, pl_module: nn.Module, stage: str) -> None:
        self._close(trainer)

    def on_exception(self, trainer: Any, pl_module: nn.Module, exception: BaseException) -> None:
        self._close(trainer)

    def _close(self, trainer: Any) -> None:
        if not self._active:
            return
        self._active = False
        self._resume_path = self.tracker.output  # a later fit with this callback continues the same file
        self.tracker.close()  # (writes what the sinks have not: the relay then holds the last samples)
        self._to_loggers(trainer)


def _loss_of(outputs: Any) -> Any:
    """The loss in a ``training_step``'s outputs (a tensor, or a mapping's ``"loss"``), or None."""
    if isinstance(outputs, torch.Tensor):
        return outputs
    if isinstance(outputs, Mapping):
        return outputs.get("loss")
    return None
