"""AlertMonitor: finished samples in, alerts out — the rules run online, one sample at a time.

The tracker feeds it the records it has finished (``feed_records``: blocks of native records,
as ``RecordStream.listeners`` receive them — on the writer thread with ``output=``, else on the
training thread when ``log()`` drains the ring); the validation harness feeds fixtures one
sample at a time (:meth:`AlertMonitor.add`). Both run the same rule code.

A rule that raises is reported once (logged, kept in ``rule_errors``) and disabled; the other
rules and the tracker's records are unaffected, and training never sees the exception.
"""

from __future__ import annotations

import copy
import logging
import math
import threading
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from ndt_fast.monitor.alert import Alert
from ndt_fast.monitor.history import LayerInfo, MonitorState
from ndt_fast.monitor.rules import AlertRule

logger = logging.getLogger("ndt_fast.monitor")


class AlertMonitor:
    """Runs copies of ``rules`` over the samples of one run.

    Args:
        rules: ``AlertRule`` objects (copied: the caller's objects keep no state).
        layers: the tracked layers' names, earliest first (or ``LayerInfo`` objects with widths).
        widths: optional ``() -> [width or None per layer]``, asked before each sample (a tracker
            learns a layer's width at its first captured forward).
        on_alerts: optional ``fn(list[Alert])`` called with each sample's new alerts, on the
            thread that fed the sample.

    ``alerts``: every alert so far, in order. ``rule_errors``: rule name → the error that disabled it.
    Bad input: TypeError for a rule that is not an ``AlertRule``; ValueError from a rule that
    rejects the layers (e.g. an unknown layer name).
    """

    def __init__(self, rules: Sequence[AlertRule], layers: Sequence[str | LayerInfo], *,
                 widths: Callable[[], Sequence[int | None]] | None = None,
                 on_alerts: Callable[[list[Alert]], None] | None = None) -> None:
        infos = [layer if isinstance(layer, LayerInfo) else LayerInfo(str(layer), i) for i, layer in enumerate(layers)]
        self.layers = tuple(infos)
        self.rules: list[AlertRule] = []
        for rule in rules:
            if not isinstance(rule, AlertRule):
                raise TypeError(f"alert rules must be ndt_fast.monitor.AlertRule objects, got {type(rule).__name__}")
            own = copy.deepcopy(rule)
            own.start(self.layers)
            self.rules.append(own)
        self.metrics = tuple(dict.fromkeys(rule.metric for rule in self.rules))
        self._states = {
            metric: MonitorState(self.layers, max(max(r.lookback for r in self.rules if r.metric == metric), 2),
                                 max(r.loss_reference for r in self.rules if r.metric == metric))
            for metric in self.metrics}
        self._widths = widths
        self._on_alerts = on_alerts
        self._enabled = [True] * len(self.rules)
        self.alerts: list[Alert] = []
        self.rule_errors: dict[str, BaseException] = {}
        self._lock = threading.Lock()  # feed_records may run on the writer thread and a reader's

    def add(self, step: int, loss: float, metrics: Mapping[str, np.ndarray], rows: np.ndarray) -> list[Alert]:
        """One finished sample: ``metrics`` maps each watched metric name to its values, shape
        (layers,) float (NaN: the layer has no value at this sample); ``rows`` (layers,) the
        rows each value was measured on. Returns (and keeps) the alerts it confirmed."""
        with self._lock:
            return self._add(step, loss, metrics, rows)

    def _add(self, step: int, loss: float, metrics: Mapping[str, np.ndarray], rows: np.ndarray) -> list[Alert]:
        widths = self._widths() if self._widths is not None else None
        for metric, state in self._states.items():
            if widths is not None:
                state.widths[:] = widths
            state.add(step, loss, metrics[metric], rows)
        new: list[Alert] = []
        for k, rule in enumerate(self.rules):
            if not self._enabled[k]:
                continue
            try:
                new.extend(rule.update(self._states[rule.metric]))
            except Exception as error:  # a rule's bug must not end the run, nor stop the others
                self._enabled[k] = False
                self.rule_errors[rule.name] = error
                logger.error("ndt_fast: alert rule %r failed (%s: %s) at step %d and is disabled; training and "
                             "the other rules continue", rule.name, type(error).__name__, error, step)
        if new:
            self.alerts.extend(new)
            if self._on_alerts is not None:
                self._on_alerts(new)
        return new

    def replay(self, records: np.ndarray, sample_columns: Sequence[str], *, kind_sample: float,
               offset: int) -> None:
        """Feed the records of a resumed run (as :meth:`feed_records`) without announcing: the
        rules' histories and cool-downs continue as if the run had never stopped, and the alerts
        these samples confirm are dropped (the run file already holds them)."""
        with self._lock:
            on_alerts, self._on_alerts = self._on_alerts, None
            kept = len(self.alerts)
        try:
            self.feed_records(records, sample_columns, kind_sample=kind_sample, offset=offset)
        finally:
            with self._lock:
                self._on_alerts = on_alerts
                del self.alerts[kept:]

    def feed_records(self, records: np.ndarray, sample_columns: Sequence[str], *, kind_sample: float,
                     offset: int) -> None:
        """Native records (n × width, ``ndt_fast.storage.records`` layout), samples in step order:
        one :meth:`add` per step (jump rows are skipped)."""
        samples = records[records[:, 0] == kind_sample]
        if not len(samples):
            return
        columns = list(sample_columns)
        at = {name: offset + columns.index(name) for name in ("step", "loss", "rows", *self.metrics)}
        steps = samples[:, at["step"]]
        starts = np.flatnonzero(np.r_[True, steps[1:] != steps[:-1]])
        n = len(self.layers)
        with self._lock:
            for start, end in zip(starts, np.r_[starts[1:], len(steps)]):
                block = samples[start:end]
                layer = block[:, 1].astype(np.int64)
                values = {}
                for metric in self.metrics:
                    v = np.full(n, math.nan)
                    v[layer] = block[:, at[metric]]
                    values[metric] = v
                rows = np.full(n, math.nan)
                rows[layer] = block[:, at["rows"]]
                self._add(int(steps[start]), float(block[0, at["loss"]]), values, rows)
