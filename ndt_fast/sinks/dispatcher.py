"""The dispatcher: hands each finished sample to the sinks on a thread of its own.

The training thread only queues what the tracker already holds (``submit``: the step, the layer
names, the column names and a float64 array of the sample's rows) — no dict is built, no file or
socket touched, no GPU read. A worker thread turns queued rows into ``Sample`` objects and writes
them to every sink in batches: after the first queued item it sleeps ``interval`` seconds (or
until a flush or close) and then takes everything queued, so that a logger that costs per call
(W&B, a network) is called once per batch, not once per step, and the worker — which shares the
GIL with training — wakes once per interval, not once per sample.

Failures never reach training:
- a sink that raises (in ``write``, ``write_jumps`` or ``flush``) is reported once (logged,
  kept in ``failed``) and disabled; the other sinks and the tracker's own records go on;
- a user ``on_sample`` function that raises is reported once; later calls go on and their errors
  are counted in ``callback_errors``;
- when sinks fall more than ``max_pending`` items behind, new items are dropped for the sinks
  (counted in ``dropped``, reported once) instead of growing memory or blocking training.

Order: items are written in the order they were submitted (a jump right after the sample that
confirmed it), which loggers with monotonic steps (W&B) need.

Interface for whoever feeds it (a tracker's record path): ``submit(step, layers, columns,
values)`` and ``submit_jumps(events)``, then ``close()``. Nothing here imports torch, TensorBoard
or W&B.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ndt_fast.sinks.base import JumpEvent, Sample, Sink, check_sinks

logger = logging.getLogger(__name__)

_SCALAR_COLUMNS = ("step", "loss", "grad_norm")  # per sample, not per layer


class _Flush:
    """A marker: everything queued before it is written and flushed when ``done`` is set."""

    def __init__(self) -> None:
        self.done = threading.Event()


_STOP = object()


class SampleDispatcher:
    """Writes finished samples and confirmed jumps to ``sinks`` (and ``on_sample``) off the training thread.

    Args:
        sinks: objects with the ``Sink`` interface (``write`` required; ``write_jumps``,
            ``flush``, ``close`` used when present).
        on_sample: a function called with each ``Sample`` on the dispatcher's thread.
        interval: the most seconds an item waits for others to join its batch (default 0.5).
        max_pending: items held for slow sinks before new ones are dropped (default 10000).

    Raises TypeError for a sink without a callable ``write`` or a non-callable ``on_sample``,
    ValueError for a negative ``interval`` or ``max_pending < 1``.
    """

    def __init__(self, sinks: Sequence[Sink] = (), on_sample: Callable[[Sample], Any] | None = None, *,
                 interval: float = 0.5, max_pending: int = 10000) -> None:
        sinks = check_sinks(sinks, on_sample)
        if not (isinstance(interval, (int, float)) and 0 <= interval < math.inf):
            raise ValueError(f"interval must be a non-negative number of seconds, got {interval!r}")
        if isinstance(max_pending, bool) or not isinstance(max_pending, int) or max_pending < 1:
            raise ValueError(f"max_pending must be an integer >= 1, got {max_pending!r}")
        self._sinks = sinks
        self._on_sample = on_sample
        self._interval = float(interval)
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_pending)
        self._wake = threading.Event()  # set by flush/close: the worker stops collecting at once
        self._thread: threading.Thread | None = None
        self._closed = False
        self._columns_seen: dict[tuple[str, ...], tuple[list[int], list[str], dict[str, int]]] = {}
        self._disabled: set[int] = set()  # id() of the sinks that failed
        self.failed: dict[str, BaseException] = {}  # sink name → the error that disabled it
        self.dropped = 0
        self.callback_errors = 0

    # ---- the training thread's side --------------------------------------------------------------

    def submit(self, step: int, layers: Sequence[str], columns: Sequence[str], values: np.ndarray) -> None:
        """Queue one sample: ``values`` (len(layers) × len(columns) float64), row i of layer
        ``layers[i]``, columns named by ``columns`` (``step``/``loss``/``grad_norm`` among them
        are read from the first row). The array is kept, not copied: do not modify it afterwards."""
        self._put(("sample", int(step), layers, tuple(columns), values))

    def submit_jumps(self, events: Sequence[JumpEvent]) -> None:
        """Queue confirmed jumps (written after everything submitted before them)."""
        if events:
            self._put(("jumps", list(events)))

    def submit_alerts(self, alerts: Sequence[Any]) -> None:
        """Queue monitoring alerts (``ndt_fast.monitor.Alert``; written after everything
        submitted before them). Safe from any thread."""
        if alerts:
            self._put(("alerts", list(alerts)))

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything submitted so far is written and every sink flushed (at most
        ``timeout`` seconds; False when that ran out)."""
        if self._thread is None or self._closed:
            return True
        marker = _Flush()
        self._queue.put(marker)  # blocks only while sinks are max_pending behind
        self._wake.set()
        return marker.done.wait(timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Write and flush what is queued, close every sink, stop the thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._thread is None:
            self._close_sinks()
            return
        self._queue.put(_STOP)
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.error("ndt_fast: sinks still busy after %.0f s at close; what they had not written is lost",
                         timeout)

    @property
    def sinks(self) -> list[Sink]:
        """The sinks still enabled."""
        return [s for s in self._sinks if id(s) not in self._disabled]

    def _put(self, item: Any) -> None:
        if self._closed:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="ndt_fast-sinks", daemon=True)
            self._thread.start()
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1:
                logger.error("ndt_fast: sinks are %d items behind; new samples are dropped for the sinks "
                             "(the tracker's own records are kept; count in dispatcher.dropped)",
                             self._queue.maxsize)

    # ---- the worker thread -----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            if not _is_control(batch[0]) and self._interval > 0:
                self._wake.wait(self._interval)  # submits do not wake it; a flush or close does
            self._wake.clear()
            while not _is_control(batch[-1]):  # everything queued now, up to a flush/close marker
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            control = batch.pop() if _is_control(batch[-1]) else None
            try:
                self._write(batch)
            except Exception as error:  # a bug of ours: report, keep the thread alive
                logger.exception("ndt_fast: the sink dispatcher failed on a batch (%s); continuing", error)
            if control is None:
                continue
            self._flush_sinks()
            if control is _STOP:
                self._close_sinks()
                return
            control.done.set()

    def _write(self, batch: list[Any]) -> None:
        """Write ``batch`` in order: each run of consecutive samples in one ``write`` per sink."""
        run: list[Sample] = []
        for item in batch:
            if item[0] == "sample":
                run.append(self._sample(*item[1:]))
                continue
            self._write_samples(run)
            run = []
            self._each_sink("write_jumps" if item[0] == "jumps" else "write_alerts", item[1])
        self._write_samples(run)

    def _write_samples(self, samples: list[Sample]) -> None:
        if not samples:
            return
        self._each_sink("write", samples)
        if self._on_sample is not None:
            for sample in samples:
                try:
                    self._on_sample(sample)
                except Exception as error:  # the user's function: reported once, never fatal
                    self.callback_errors += 1
                    if self.callback_errors == 1:
                        logger.error("ndt_fast: on_sample raised %s: %s at step %d; training continues, later "
                                     "errors are counted in callback_errors", type(error).__name__, error,
                                     sample.step)

    def _each_sink(self, method: str, argument: Any) -> None:
        for sink in self.sinks:
            function = getattr(sink, method, None)
            if function is None:
                continue
            try:
                function(argument)
            except Exception as error:
                self._disable(sink, error)

    def _flush_sinks(self) -> None:
        for sink in self.sinks:
            try:
                if hasattr(sink, "flush"):
                    sink.flush()
            except Exception as error:
                self._disable(sink, error)

    def _close_sinks(self) -> None:
        for sink in self._sinks:
            try:
                if hasattr(sink, "close"):
                    sink.close()
            except Exception as error:  # closing a failed sink may fail again: report enabled ones only
                if id(sink) not in self._disabled:
                    self._disable(sink, error)

    def _disable(self, sink: Sink, error: BaseException) -> None:
        self._disabled.add(id(sink))
        self.failed[_name(sink)] = error
        logger.error("ndt_fast: sink %s failed (%s: %s) and is disabled; the tracker's records and the other "
                     "sinks are unaffected", _name(sink), type(error).__name__, error)

    def _sample(self, step: int, layers: Sequence[str], columns: tuple[str, ...], values: np.ndarray) -> Sample:
        layout = self._columns_seen.get(columns)
        if layout is None:  # once per column set: where the per-layer columns are
            per_layer = [i for i, c in enumerate(columns) if c not in _SCALAR_COLUMNS]
            layout = (per_layer, [columns[i] for i in per_layer], {c: columns.index(c) for c in _SCALAR_COLUMNS
                                                                   if c in columns})
            self._columns_seen[columns] = layout
        per_layer, names, scalars = layout
        first = values[0] if len(values) else np.empty(0)
        loss = float(first[scalars["loss"]]) if "loss" in scalars and len(first) else math.nan
        grad_norm = float(first[scalars["grad_norm"]]) if "grad_norm" in scalars and len(first) else math.nan
        table = values[:, per_layer].tolist()
        return Sample(step, loss, grad_norm, {layer: dict(zip(names, row)) for layer, row in zip(layers, table)})


def _is_control(item: Any) -> bool:
    return item is _STOP or isinstance(item, _Flush)


def _name(sink: Any) -> str:
    name = getattr(sink, "name", None)
    return name if isinstance(name, str) else f"{type(sink).__name__}@{id(sink):x}"
