"""What a sink receives, and the interface every sink implements.

A *sink* is anything that wants each finished sample as it is recorded: TensorBoard, W&B, a
trainer's loggers, MLflow, a CSV file, a user function. Sinks run on the dispatcher's thread
(``ndt_fast.sinks.dispatcher``), never on the training thread, and receive samples in batches.

Writing another sink is a few lines::

    class PrintSink(Sink):
        def write(self, samples):
            for sample in samples:
                for tag, value in scalar_items(sample):
                    print(sample.step, tag, value)

Only ``write`` is required; ``write_jumps``, ``write_alerts``, ``flush`` and ``close`` default to
doing nothing.
A sink that raises is reported once and disabled; the tracker's own records are unaffected.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ndt_fast.monitor.alert import Alert

# The metric columns a sink writes by default (the tracker's six; `trace`, `lambda_max`, `flags`,
# `rows` and the `weight_*` columns are in `Sample.values` too, for a sink that asks for them).
DEFAULT_METRICS = ("stable_rank", "participation_ratio", "cumulative_90", "nuclear_norm_ratio",
                   "participation_ratio_eig", "effective_rank")
TAG_PREFIX = "ndt"


@dataclass(frozen=True)
class Sample:
    """One finished sample of a tracker: every tracked layer's row at one training step.

    Attributes:
        step: the training step (as given to ``FastTracker.log``).
        loss, grad_norm: as recorded (NaN where none was given or it was not a scalar).
        values: ``{layer name: {column: value}}`` — the columns of ``get_results()`` other than
            ``step``, ``loss`` and ``grad_norm`` (NaN where a metric was not computed or its
            sample met an error; ``flags`` says which).
    """

    step: int
    loss: float
    grad_norm: float
    values: Mapping[str, Mapping[str, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class JumpEvent:
    """A jump the tracker's online detector confirmed (the rule chosen by ``jump_rule``).

    ``step`` is the training step of the change; it is confirmed some samples later (11 to 13
    for the default rule), at the ``log()`` whose step is ``confirmed_at``.
    """

    layer: str
    metric: str
    step: int
    z_score: float
    value_before: float
    value_after: float
    confirmed_at: int


def metric_tag(layer: str, metric: str) -> str:
    """The name every sink gives a metric: ``ndt/<layer>/<metric>``."""
    return f"{TAG_PREFIX}/{layer}/{metric}"


def scalar_items(sample: Sample, metrics: Iterable[str] = DEFAULT_METRICS) -> Iterator[tuple[str, float]]:
    """``(tag, value)`` of ``metrics`` for every layer of ``sample`` (metrics a layer lacks are
    skipped; NaN values are kept: they mark a flagged sample)."""
    metrics = tuple(metrics)
    for layer, columns in sample.values.items():
        for metric in metrics:
            if metric in columns:
                yield metric_tag(layer, metric), columns[metric]


def jump_text(event: JumpEvent) -> str:
    """One line describing a jump, for sinks that show text."""
    direction = "up" if event.value_after > event.value_before else "down"
    z = f"{event.z_score:.2f}" if math.isfinite(event.z_score) else str(event.z_score)
    return (f"{event.layer} {event.metric} jumped {direction} at step {event.step}: "
            f"{event.value_before:.4g} -> {event.value_after:.4g} (z = {z}; confirmed at step {event.confirmed_at})")


def alert_tag(alert: Alert) -> str:
    """The scalar tag of a monitoring alert, ``ndt/<layer>/alert/<rule>`` (its value: the alert's step)."""
    return metric_tag(alert.layer, f"alert/{alert.rule}")


def alert_text(alert: Alert) -> str:
    """One line describing a monitoring alert, for sinks that show text."""
    others = f" (with {', '.join(alert.layers[1:])})" if len(alert.layers) > 1 else ""
    return f"{alert.rule} alert for {alert.layer}{others} at step {alert.step}: {alert.message}"


class Sink:
    """Receives finished samples in batches, on the dispatcher's thread (see the module docstring)."""

    def write(self, samples: Sequence[Sample]) -> None:
        """Write a batch of samples (in step order). Required."""
        raise NotImplementedError

    def write_jumps(self, jumps: Sequence[JumpEvent]) -> None:
        """Write confirmed jumps (optional; default: ignored)."""

    def write_alerts(self, alerts: Sequence[Alert]) -> None:
        """Write alerts of the tracker's monitor (``alerts=``; ``ndt_fast.monitor.Alert``, each
        after the sample that raised it; optional; default: ignored)."""

    def flush(self) -> None:
        """Make what was written visible (called when the tracker flushes or closes)."""

    def close(self) -> None:
        """Release what the sink opened (called once, after the last write)."""

    @property
    def name(self) -> str:
        """How reports name this sink."""
        return type(self).__name__


def check_sinks(sinks: Iterable[Any], on_sample: Any) -> list[Any]:
    """The sinks as a list; TypeError for a sink without a callable ``write`` or a non-callable
    ``on_sample`` (shared by ``SampleDispatcher`` and ``FastTracker``'s argument checks)."""
    if isinstance(sinks, (str, bytes)) or not isinstance(sinks, Iterable):
        raise TypeError(f"sinks must be a sequence of sinks (ndt_fast.sinks), got {type(sinks).__name__}")
    sinks = list(sinks)
    for sink in sinks:
        if not callable(getattr(sink, "write", None)):
            raise TypeError(f"a sink needs a write(samples) method; got {type(sink).__name__}")
    if on_sample is not None and not callable(on_sample):
        raise TypeError(f"on_sample must be callable, got {type(on_sample).__name__}")
    return sinks
