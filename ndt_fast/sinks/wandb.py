"""WandbSink: each sample's metrics logged to a Weights & Biases run, off the training thread.

``run.log({"ndt/<layer>/<metric>": value, ...}, step=sample.step)`` — one call per sample, the
batch of a dispatcher interval at a time (W&B itself warns that calling ``log`` at every step
slows training; here it never runs on the training thread). A confirmed jump is logged at the
step that confirmed it (W&B steps only go forward) as ``ndt/<layer>/<metric>/jump_step``: the
step of the change. A monitoring alert (``alerts=``) is logged at its step as
``ndt/<layer>/alert/<rule>``: the alert's step (a W&B notification through ``run.alert`` is left
to ``on_alert``, which runs on the training thread).

Sharing a run with a logger that counts its own steps (the Hugging Face ``WandbCallback`` logs
without ``step=`` and plots against ``train/global_step``): pass ``step_metric=
"train/global_step"``; the step is then logged as that key instead of ``step=``.

Imports ``wandb`` only when a sink is created (``pip install "ndt-fast[wandb]"``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ndt_fast.sinks.base import DEFAULT_METRICS, JumpEvent, Sample, Sink, alert_tag, metric_tag, scalar_items

if TYPE_CHECKING:
    from ndt_fast.monitor.alert import Alert


class WandbSink(Sink):
    """Logs samples to a W&B run (see the module docstring).

    Args:
        run: a ``wandb`` run; None → ``wandb.run`` (the active run; one must exist).
        metrics: the columns logged per layer (default the six metrics).
        step_metric: None → ``log(..., step=step)``; a key → the step is logged under that key.

    Raises ModuleNotFoundError naming the extra when wandb is not installed, ValueError when
    ``run`` is None and no run is active.
    """

    def __init__(self, run: Any = None, metrics: Iterable[str] = DEFAULT_METRICS,
                 step_metric: str | None = None) -> None:
        if run is None:
            try:
                import wandb
            except ModuleNotFoundError as error:
                raise ModuleNotFoundError('WandbSink needs wandb: pip install "ndt-fast[wandb]"') from error
            run = wandb.run
            if run is None:
                raise ValueError("WandbSink: no active W&B run; call wandb.init() first or pass run=")
        if not callable(getattr(run, "log", None)):
            raise TypeError(f"WandbSink needs a W&B run (with a log method), got {type(run).__name__}")
        self.run = run
        self.metrics = tuple(metrics)
        self.step_metric = step_metric
        self._last_step = -1

    def write(self, samples: Sequence[Sample]) -> None:
        for sample in samples:
            self._log(dict(scalar_items(sample, self.metrics)), sample.step)

    def write_jumps(self, jumps: Sequence[JumpEvent]) -> None:
        by_step: dict[int, dict[str, float]] = {}
        for event in jumps:
            by_step.setdefault(event.confirmed_at, {})[f"{metric_tag(event.layer, event.metric)}/jump_step"] = \
                event.step
        for step, data in sorted(by_step.items()):
            self._log(data, max(step, self._last_step))

    def write_alerts(self, alerts: Sequence[Alert]) -> None:
        by_step: dict[int, dict[str, float]] = {}
        for alert in alerts:
            by_step.setdefault(alert.step, {})[alert_tag(alert)] = alert.step
        for step, data in sorted(by_step.items()):
            self._log(data, max(step, self._last_step))

    def _log(self, data: dict[str, Any], step: int) -> None:
        if self.step_metric is not None:
            self.run.log({**data, self.step_metric: step})
        else:
            self.run.log(data, step=step)
        self._last_step = max(self._last_step, step)
