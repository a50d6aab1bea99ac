"""Hugging Face ``Trainer``: ``DimensionalityCallback``, a ``TrainerCallback`` that tracks the model.

    from ndt_fast.integrations.transformers import DimensionalityCallback
    trainer = Trainer(model, args, train_dataset=data, callbacks=[DimensionalityCallback(sampling_frequency=10)])
    trainer.train()         # ndt/<layer>/<metric> in TensorBoard / W&B, as args.report_to says

What it does, event by event (it drives only ``FastTracker``'s public API):

- ``on_train_begin``: attaches a ``FastTracker`` to the model (on the world's process zero only)
  and a forward hook on the model that keeps the loss of each training forward of a sampled step
  (the output's ``loss``, a tensor left on its device: no host sync).
- ``on_pre_optimizer_step``: on a sampled step, the gradient norm (a tensor, after the Trainer's
  clipping to ``max_grad_norm``).
- ``on_step_end``: ``tracker.log(state.global_step, loss, grad_norm)`` if that step arms or
  closes a sample (see ``ndt_fast.integrations._common``); else nothing.
- ``on_save``: the run file's path, in ``ndt_fast.json`` beside the checkpoint the Trainer just
  wrote (``<output_dir>/checkpoint-<step>``).
- ``on_train_end``: ``tracker.close()`` (every hook removed, run file and sinks closed) and the
  loss hook removed.

Resume (``trainer.train(resume_from_checkpoint=...)``): the Trainer restores ``state.global_step``
before ``on_train_begin``; the callback then reads ``ndt_fast.json`` of the checkpoint of that
step in ``args.output_dir`` (where the Trainer saves them) and appends to the run file it names
(``FastTracker(resume=True)``: steps already in the file are not written twice). Without that
note (a checkpoint saved before this callback was added, or moved elsewhere), an ``output=``
path that exists is continued; otherwise a new run file is started, with a warning.

Reporting: a ``TrainerCallback`` has no handle on the Trainer's own loggers, so the callback
brings its own sinks, chosen from ``args.report_to`` (or ``report_to=``): ``"tensorboard"`` →
``TensorBoardSink`` in ``$TENSORBOARD_LOGGING_DIR`` (the directory the Trainer's TensorBoard
callback uses when set) or else ``<output_dir>/runs/ndt_fast`` (beside the Trainer's runs, so one
TensorBoard shows both); ``"wandb"`` → ``WandbSink`` on the Trainer's active run, plotted against
``train/global_step`` as the Trainer's own W&B logging is. ``sinks=`` adds others.

Layers (``layers=None``): ``ndt_fast.layers.auto_select_layers`` — the repeated blocks (GPT-2's
``transformer.h``, Llama's ``model.layers``, BERT's and ViT's ``encoder.layer``: the residual stream
after each block) and the last ``nn.Linear`` — except a language-model head whose outputs are the
vocabulary's logits (``out_features == config.vocab_size``): a Gram as wide as the batch's tokens
over the whole vocabulary costs more than the training step and measures logits, not a
representation. Pass ``layers=`` (modules or names) to choose.

Steps and gradient accumulation: see ``ndt_fast.integrations._common``. The loss is the mean
over the step's micro-batches (the models' losses, divided by ``num_items_in_batch`` when the
Trainer passes it, already sum to that mean); NaN when the model's output has no ``loss``
(labels popped for ``label_smoothing_factor`` or a ``compute_loss_func``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from transformers import TrainerCallback

from ndt_fast.integrations._common import TrackingCallback, grad_norm, resolve_layers, run_file_for
from ndt_fast.jumps import Jump
from ndt_fast.layers import auto_select_layers
from ndt_fast.sinks.base import DEFAULT_METRICS, Sample, Sink
from ndt_fast.tracker.distributed import ranks_share_tracking

logger = logging.getLogger(__name__)

CHECKPOINT_NOTE = "ndt_fast.json"  # beside each checkpoint: {"output": the run file's path}


def hf_layers(model: nn.Module) -> list[nn.Module]:
    """The layers tracked by default in a Hugging Face model (see the module docstring)."""
    layers = auto_select_layers(model)
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    head = layers[-1]
    if len(layers) > 1 and isinstance(head, nn.Linear) and vocab is not None and head.out_features == vocab:
        layers = layers[:-1]
    return layers


class DimensionalityCallback(TrackingCallback, TrainerCallback):
    """Tracks the dimensionality of a Hugging Face model's layers during ``Trainer.train()``.

    Args:
        layers: modules, or their names in the model (``"transformer.h.0"``); None = automatic.
        sampling_frequency: sample every this many optimizer steps (default 10).
        output: the run file (HDF5); None → a fresh ``ndt_fast.h5`` in ``args.output_dir``. A
            resumed run continues the file its checkpoint names (see the module docstring).
        report_to: integrations to write to (``"tensorboard"``, ``"wandb"``); None → the
            Trainer's ``args.report_to``; ``()`` → none.
        sink_metrics: which columns the sinks write (default the six metrics).
        log_grad_norm: record the gradient norm of sampled steps.
        sinks, on_sample, on_jump: as in ``FastTracker`` (where a core is free, samples are
            computed on a background thread: ``on_jump`` comes at the callback's first ``log()``
            after a jump is confirmed, see ``ndt_fast.integrations._common``).
        **tracker_options: any other ``FastTracker`` keyword (``metrics``, ``max_rows``,
            ``background_finish`` to override the callback's choice, ...).

    Raises ValueError at construction for a bad ``sampling_frequency`` or ``model``/``resume``
    among the tracker options; at train begin, ``FastTracker``'s errors for bad layers/options.
    """

    def __init__(self, layers: Sequence[nn.Module | str] | None = None, sampling_frequency: int = 10, *,
                 layer_names: Sequence[str] | None = None, output: str | os.PathLike[str] | None = None,
                 report_to: Sequence[str] | None = None, sink_metrics: Sequence[str] = DEFAULT_METRICS,
                 log_grad_norm: bool = True, sinks: Sequence[Sink] = (),
                 on_sample: Callable[[Sample], Any] | None = None,
                 on_jump: Callable[[str, Jump], Any] | None = None, **tracker_options: Any) -> None:
        super().__init__("DimensionalityCallback", layers, sampling_frequency, layer_names, log_grad_norm, sinks,
                         on_sample, on_jump, tracker_options)
        self.output = os.fspath(output) if output is not None else None
        self.report_to = None if report_to is None else [report_to] if isinstance(report_to, str) else list(report_to)
        self.sink_metrics = tuple(sink_metrics)
        self._state: Any = None
        self._loss_hook: Any = None

    def on_train_begin(self, args: Any, state: Any, control: Any, model: nn.Module | None = None,
                       **kwargs: Any) -> None:
        # Under torch.distributed every rank makes its tracker (distributed="global" by default: the
        # ranks' Grams are summed and rank 0 records); report sinks only on the main process.
        if model is None or not (state.is_world_process_zero or ranks_share_tracking()):
            return
        layers = resolve_layers(model, self.layers) if self.layers is not None else hf_layers(model)
        path, resume = run_file_for(self.output, self._saved_run_file(args, state), args.output_dir)
        if state.global_step > 0 and not resume:
            logger.warning("ndt_fast: training resumes at step %d but no existing run file was found for it "
                           "(through %s in %s, or output=); writing %s", state.global_step, CHECKPOINT_NOTE,
                           _checkpoint_dir(args, state.global_step), path)
        self._start(model, layers, path, resume, self._report_sinks(args) if state.is_world_process_zero else [])
        self._state = state
        self._loss_hook = model.register_forward_hook(self._keep_loss, with_kwargs=True)

    def _saved_run_file(self, args: Any, state: Any) -> str | None:
        """On a resumed run: the run file named by the checkpoint it resumes from, else an
        ``output=`` that exists. None on a fresh run."""
        if state.global_step == 0:
            return None
        try:
            with open(os.path.join(_checkpoint_dir(args, state.global_step), CHECKPOINT_NOTE)) as note:
                return json.load(note)["output"]
        except (OSError, ValueError, KeyError, TypeError):
            return self.output if self.output is not None and os.path.exists(self.output) else None

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        checkpoint = _checkpoint_dir(args, state.global_step)
        if not self._active or self.tracker.output is None or not os.path.isdir(checkpoint):
            return
        try:
            with open(os.path.join(checkpoint, CHECKPOINT_NOTE), "w") as note:
                json.dump({"output": os.path.abspath(self.tracker.output)}, note)
        except OSError as error:  # a resumed run then starts a new file: say so, never stop training
            logger.warning("ndt_fast: could not note the run file in %s (%s)", checkpoint, error)

    def _report_sinks(self, args: Any) -> list[Sink]:
        wanted = self.report_to if self.report_to is not None else list(getattr(args, "report_to", None) or [])
        sinks: list[Sink] = []
        if "tensorboard" in wanted:
            from ndt_fast.sinks.tensorboard import TensorBoardSink

            log_dir = os.getenv("TENSORBOARD_LOGGING_DIR") or os.path.join(args.output_dir, "runs", "ndt_fast")
            sinks.append(TensorBoardSink(os.path.expanduser(log_dir), metrics=self.sink_metrics))
        if "wandb" in wanted:
            import wandb

            from ndt_fast.sinks.wandb import WandbSink

            if wandb.run is None:
                logger.warning("ndt_fast: report_to has 'wandb' but no W&B run is active; not logging to W&B")
            else:
                sinks.append(WandbSink(wandb.run, metrics=self.sink_metrics, step_metric="train/global_step"))
        unknown = [name for name in wanted if name not in ("tensorboard", "wandb", "none", "all")]
        if unknown:
            logger.info("ndt_fast: no sink for report_to %s; pass sinks= to write there", unknown)
        return sinks

    def _keep_loss(self, module: nn.Module, args: Any, kwargs: dict[str, Any], output: Any) -> None:
        """Forward hook on the model: the loss of a training forward of a sampled step."""
        if not (self._due(self._state.global_step + 1) and module.training and torch.is_grad_enabled()):
            return
        loss = output.get("loss") if isinstance(output, dict) else getattr(output, "loss", None)
        if isinstance(loss, torch.Tensor):
            # With num_items_in_batch the model divided by the whole step's token count already.
            self._loss.add(loss, already_divided="num_items_in_batch" in kwargs)

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, model: nn.Module | None = None,
                              **kwargs: Any) -> None:
        if self._due(state.global_step + 1) and self._active and self.log_grad_norm and model is not None:
            self._grad_norm = grad_norm(self._parameters)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self._active:
            self._log_if_needed(state.global_step)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not self._active:
            return
        self._active = False
        self._loss_hook.remove()
        self._loss_hook = None
        self.tracker.close()


def _checkpoint_dir(args: Any, step: int) -> str:
    """Where the Trainer saves the checkpoint of ``step`` (its ``checkpoint-<step>`` folders)."""
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    return os.path.join(args.output_dir, f"{PREFIX_CHECKPOINT_DIR}-{step}")
