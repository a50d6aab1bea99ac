"""Where finished samples go besides the tracker's own records: TensorBoard, W&B, any logger.

- ``base``: ``Sink`` (the interface), ``Sample``, ``JumpEvent``, the ``ndt/<layer>/<metric>`` names.
- ``dispatcher``: ``SampleDispatcher``, the thread that batches samples to the sinks and
  disables a failing one after reporting it once.
- ``tensorboard``: ``TensorBoardSink``; ``wandb``: ``WandbSink`` — each imports its package only
  when a sink is created (``import ndt_fast.sinks`` imports neither).

Use: ``FastTracker(model, sinks=[TensorBoardSink("runs/exp1")], on_sample=fn, on_jump=fn)``.
"""

from ndt_fast.sinks.base import DEFAULT_METRICS, JumpEvent, Sample, Sink, metric_tag, scalar_items
from ndt_fast.sinks.dispatcher import SampleDispatcher

_LAZY = {"TensorBoardSink": "ndt_fast.sinks.tensorboard", "WandbSink": "ndt_fast.sinks.wandb"}


def __getattr__(name: str):  # noqa: ANN202 — the names in _LAZY
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ndt_fast.sinks' has no attribute {name!r}")


__all__ = ["DEFAULT_METRICS", "JumpEvent", "Sample", "SampleDispatcher", "Sink", "TensorBoardSink", "WandbSink",
           "metric_tag", "scalar_items"]
