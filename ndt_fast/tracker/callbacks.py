"""Sinks and callbacks: finished samples to ``ndt_fast.sinks``, confirmed jumps to ``on_jump``.

Two feeds, both from places the tracker already has:

- samples: a ``RecordStream`` listener turns each drained block of records into one
  ``SampleDispatcher.submit`` per step (the step, its layers' names, the sample columns, their
  rows). With ``output=`` the writer thread drains; without it nothing drains on its own, so
  :meth:`TrackerCallbacks.after_log` drains the ring at the end of each ``log()`` (a copy into
  the in-memory tables, where the records go anyway). Either way the sinks' own work (building
  ``Sample`` objects, TensorBoard, W&B, ``on_sample``) runs on the dispatcher's thread.
- jumps: a ``RecordSink.jump_listeners`` entry collects each jump of ``jump_rule`` as the
  native banks confirm it; :meth:`after_log` (at the end of the ``log()`` that confirmed it, or
  in ``close()``) hands them to ``on_jump`` on the training thread and, as ``JumpEvent``s, to the
  sinks — after the stream was drained, so a jump reaches the sinks after the sample that
  confirmed it (with ``output=`` that drain runs on the training thread, only at such a log()).

- alerts (``alerts=``, ``ndt_fast.monitor``): a ``RecordStream`` listener feeds each drained
  block of records to an ``AlertMonitor`` (on the thread that drains: the writer thread with
  ``output=``, else the training thread in :meth:`after_log`); its alerts are stored with that
  drain's records (``RecordStream.add_alerts``), queued for the sinks right after that drain's
  samples (``Sink.write_alerts``), and handed to ``on_alert`` on the training thread at the next
  ``log()`` (or in ``close()``).

A user function or sink that raises never reaches training: reported once, counted.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ndt_fast._schema import KIND_SAMPLE, SAMPLE_OFFSET
from ndt_fast.monitor.alert import Alert, alert_rows
from ndt_fast.jumps import Jump
from ndt_fast.storage.records import RecordLayout
from ndt_fast.tracker.config import TrackerConfig
from ndt_fast.tracker.sink import RecordSink

logger = logging.getLogger("ndt_fast.tracker")


class TrackerCallbacks:
    """The glue between a tracker's ``RecordSink`` and its ``sinks`` / ``on_sample`` / ``on_jump``.

    Build it after the config was checked and before the ``RecordSink`` (the dispatcher exists,
    with no thread yet, before any run file is opened); :meth:`attach` it to the sink.
    """

    def __init__(self, config: TrackerConfig, layout: RecordLayout,
                 widths: Callable[[], Sequence[int | None]] | None = None) -> None:
        self._on_jump = config.on_jump
        self._layout = layout
        self._metrics = set(layout.metric_names)
        self.on_jump_errors = 0
        self._unannounced: list[Jump] = []
        self._sink: RecordSink | None = None
        self.dispatcher = None
        if config.sinks or config.on_sample is not None:
            from ndt_fast.sinks.dispatcher import SampleDispatcher  # only when sinks are asked for

            self.dispatcher = SampleDispatcher(list(config.sinks), config.on_sample)
        # ---- alerts (ndt_fast.monitor) ----
        self.monitor = None
        self._on_alert = config.on_alert
        self.on_alert_errors = 0
        self._alerts_due: list[Alert] = []  # raised on the draining thread, announced on the training thread
        self._alerts_lock = threading.Lock()
        if config.alerts:
            from ndt_fast.monitor.engine import AlertMonitor

            self.monitor = AlertMonitor(config.alerts, layout.layer_names, widths=widths, on_alerts=self._raised)

    @property
    def active(self) -> bool:
        return self.dispatcher is not None or self._on_jump is not None or self.monitor is not None

    def attach(self, sink: RecordSink) -> None:
        self._sink = sink
        sink.jump_listeners.append(self._unannounced.append)
        if self.dispatcher is not None:
            sink.stream.listeners.append(self._submit_samples)
        if self.monitor is not None:
            sink.stream.listeners.append(self._monitor_samples)

    # ---- alerts: drained records → monitor → run file, then on_alert at the next log() ------------

    def _monitor_samples(self, rows: np.ndarray) -> None:
        self.monitor.feed_records(rows, self._layout.sample_columns, kind_sample=KIND_SAMPLE, offset=SAMPLE_OFFSET)

    def replay(self, samples: Sequence[np.ndarray]) -> None:
        """On resume: the run file's samples (per layer, k × sample columns) to the alert monitor,
        in step order, so its rules continue where the earlier run left them."""
        if self.monitor is None or not any(len(values) for values in samples):
            return
        layers = np.concatenate([np.full(len(values), i) for i, values in enumerate(samples)])
        records = self._layout.sample_rows(layers, np.concatenate(samples))
        step = SAMPLE_OFFSET + self._layout.sample_columns.index("step")
        records = records[np.lexsort((records[:, 1], records[:, step]))]  # by step, then layer
        self.monitor.replay(records, self._layout.sample_columns, kind_sample=KIND_SAMPLE, offset=SAMPLE_OFFSET)

    def _raised(self, alerts: list[Alert]) -> None:
        """The monitor's new alerts (on the draining thread): stored with this drain, announced later."""
        self._sink.stream.add_alerts(alert_rows(alerts))
        if self.dispatcher is not None:  # to the sinks now, after the samples of this drain
            self.dispatcher.submit_alerts(alerts)
        with self._alerts_lock:
            self._alerts_due.extend(alerts)

    def _announce_alerts(self) -> None:
        with self._alerts_lock:
            due, self._alerts_due = self._alerts_due, []
        if self._on_alert is None:
            return
        for alert in due:
            try:
                self._on_alert(alert)
            except Exception as error:  # the user's function: reported once, never stops training
                self.on_alert_errors += 1
                if self.on_alert_errors == 1:
                    logger.error("ndt_fast: on_alert raised %s: %s (for %r); training continues, later errors are "
                                 "counted in tracker.callback_errors", type(error).__name__, error, alert)

    # ---- samples: drained records → dispatcher --------------------------------------------------

    def _submit_samples(self, rows: np.ndarray) -> None:
        """One ``submit`` per step of a drained block (n × layout.width; jump rows are skipped)."""
        is_sample = rows[:, 0] == KIND_SAMPLE
        samples = rows if is_sample.all() else rows[is_sample]
        if not len(samples):
            return
        columns = self._layout.sample_columns
        values = samples[:, SAMPLE_OFFSET:SAMPLE_OFFSET + len(columns)]
        steps = values[:, columns.index("step")]
        names = self._layout.layer_names
        layer_of = samples[:, 1].astype(np.int64).tolist()
        # Records arrive in step order; a block holds whole samples (one push per sample). The
        # common block is one sample: no search for step changes (this runs on the training
        # thread at each sample when there is no run file).
        if (steps == steps[0]).all():
            edges = [0, len(steps)]
        else:
            edges = [0, *(np.flatnonzero(np.diff(steps)) + 1).tolist(), len(steps)]
        for start, end in zip(edges[:-1], edges[1:]):
            self.dispatcher.submit(int(steps[start]), [names[i] for i in layer_of[start:end]], columns,
                                   np.ascontiguousarray(values[start:end]))

    # ---- the end of each log() and close() --------------------------------------------------------

    def after_log(self, step: int, recorded: bool = True) -> None:
        """Feed the sinks (and the alert monitor) what this ``log(step)`` finished, then announce
        its confirmed jumps. ``recorded``: this log() submitted a sample or took a background
        finish's result (else, without a run file, there is nothing new to drain unless device
        results came in, which the next sample's drain takes)."""
        if ((self.dispatcher is not None and self._unannounced) or
                ((self.dispatcher is not None or self.monitor is not None) and recorded
                 and self._sink.stream.path is None)):
            self._sink.stream.sync()  # without a writer thread nothing else drains the ring
        if self._unannounced:
            self._announce(step)
        if self._alerts_due:
            self._announce_alerts()

    def _announce(self, confirmed_at: int) -> None:
        found, self._unannounced[:] = list(self._unannounced), []
        if self.dispatcher is not None:
            from ndt_fast.sinks.base import JumpEvent

            self.dispatcher.submit_jumps([JumpEvent(*self._layer_metric(jump), jump.step, jump.z_score,
                                                    jump.value_before, jump.value_after, confirmed_at)
                                          for jump in found])
        if self._on_jump is None:
            return
        for jump in found:
            try:
                self._on_jump(self._layer_metric(jump)[0], jump)
            except Exception as error:  # the user's function: reported once, never stops training
                self.on_jump_errors += 1
                if self.on_jump_errors == 1:
                    logger.error("ndt_fast: on_jump raised %s: %s (for %r); training continues, later errors are "
                                 "counted in tracker.callback_errors", type(error).__name__, error, jump)

    def _layer_metric(self, jump: Jump) -> tuple[str, str]:
        """(layer, metric) of ``jump.metric_name`` (``f"{layer}_{metric}"``; layer names may hold ``_``)."""
        for layer in self._layout.layer_names:
            metric = jump.metric_name[len(layer) + 1:]
            if jump.metric_name.startswith(layer + "_") and metric in self._metrics:
                return layer, metric
        return jump.metric_name, ""  # not reached: the sink builds every name this way

    def flush(self, step: int, timeout: float) -> bool:
        """Drain, announce, wait for the sinks (False: ``timeout`` seconds ran out)."""
        if self.dispatcher is not None or self.monitor is not None:
            self._sink.stream.sync()
        if self._unannounced:
            self._announce(step)
        if self._alerts_due:
            self._announce_alerts()
        return self.dispatcher.flush(timeout) if self.dispatcher is not None else True

    def close(self, step: int) -> None:
        """After the record stream closed (everything drained): announce, then close the sinks."""
        if self._unannounced:
            self._announce(step)
        if self._alerts_due:
            self._announce_alerts()
        if self.dispatcher is not None:
            self.dispatcher.close()  # writes what the sinks have not, closes them

    @property
    def errors(self) -> dict[str, int]:
        return {"on_jump": self.on_jump_errors,
                "on_sample": self.dispatcher.callback_errors if self.dispatcher is not None else 0,
                "on_alert": self.on_alert_errors}

    @property
    def failures(self) -> dict[str, BaseException]:
        return dict(self.dispatcher.failed) if self.dispatcher is not None else {}
