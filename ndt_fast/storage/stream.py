"""RecordStream: records from the training thread → native ring → memory or an HDF5 run file.

The training thread only pushes rows into the bounded native ring (``core.RecordRing``): a
memcpy, no I/O, no allocation. With a file, a writer thread drains the ring every
``flush_interval / 2`` seconds and flushes, so a record is durable within ``flush_interval``
of being logged (while a write takes less than half the interval). Without a file the ring is
drained into in-memory tables when it fills and whenever results are read.

Nothing recorded is lost:
- If the ring is full because the writer lags, rows wait in a spill queue (memory grows only
  while that lasts; ``spilled`` counts them) and are written after the ring's older rows.
- If writing fails (disk full, file removed, …), the failure is logged once, ``write_error``
  keeps it, and from then on records stay in memory; ``results()`` joins what the file
  committed with what memory holds, so every record is returned exactly once.
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

from ndt_fast._native import core
from ndt_fast.storage.hdf5 import RunFile
from ndt_fast.storage.records import MemoryRecords, RecordLayout

logger = logging.getLogger(__name__)

# Streams still writing a file: closed at interpreter exit, so a script that never calls
# tracker.close() still gets every record written and a compressed, closed file.
_open_streams: weakref.WeakSet[RecordStream] = weakref.WeakSet()
# Run files a fork()ed child inherited: the parent's to write and close. Held here so that the
# child never closes (or compresses and replaces) them itself; HDF5's own handles in the child are
# beyond our reach, so a forked child should still leave with os._exit, as multiprocessing's do.
_files_of_the_parent: list[Any] = []


@atexit.register
def _close_open_streams() -> None:
    for stream in list(_open_streams):
        try:
            stream.close()
        except Exception as error:  # exiting anyway; say what happened
            logger.error("ndt_fast: closing %s at exit failed: %s", stream.path, error)


class RecordStream:
    """Where a tracker's records go. ``append`` is called from the training thread only.

    Args:
        layout: the meaning of the record columns.
        capacity: records the native ring holds (memory: capacity × layout.width × 8 bytes).
        output: an open ``RunFile`` to stream to, or None to keep records in memory.
        flush_interval: with ``output``, the most seconds a logged record waits before it is durable.
    """

    def __init__(self, layout: RecordLayout, *, capacity: int, output: RunFile | None,
                 flush_interval: float) -> None:
        self.layout = layout
        self._ring = core.RecordRing(capacity, layout.width)
        self._memory = MemoryRecords(layout)
        self._file = output
        self._pid = os.getpid()  # (a fork()ed child must not write the parent's file)
        self._spill: collections.deque[np.ndarray] = collections.deque()
        self.spilled = 0
        self.write_error: BaseException | None = None
        self.records_written = 0
        #: Called with every drained block of records (n × layout.width), in order, off the training
        #: thread when a writer runs: where consumers of finished samples (sinks) attach.
        self.listeners: list[Callable[[np.ndarray], None]] = []
        self._failed_listeners: set[int] = set()
        # Alerts (ndt_fast.monitor) a listener raised during a drain: written with that drain's rows.
        self._alerts_pending: collections.deque[np.ndarray] = collections.deque()
        self._memory_alerts: list[np.ndarray] = []
        self._drain_lock = threading.Lock()  # one drain at a time: the writer thread or a reader
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        if output is not None:
            self._period = flush_interval / 2
            self._thread = threading.Thread(target=self._writer_loop, name="ndt_fast-writer", daemon=True)
            self._thread.start()
            _open_streams.add(self)

    @property
    def path(self) -> str | None:
        return self._file.path if self._file is not None else None

    def ring_for_push(self) -> Any:
        """The native ring a producer may push into directly (``core.SampleFinisher``), or None
        while rows wait in the spill queue (pushing past them would reorder records); rows a
        producer could not push go to :meth:`append`."""
        return None if self._spill else self._ring

    def append(self, rows: np.ndarray) -> None:
        """Record ``rows`` (n × layout.width float64). Never raises for a full ring."""
        # Rows spilled earlier are older than anything pushed now: keep the order by spilling
        # too until the writer has emptied the queue.
        if not self._spill and self._ring.push(rows):
            return
        if self._thread is None:  # no writer: make room by draining to memory, here
            self.sync()
            if self._ring.push(rows):
                return
        self._spill.append(rows)
        self.spilled += len(rows)
        self._wake.set()

    def add_alerts(self, rows: np.ndarray) -> None:
        """Record alert rows (structured, ``ndt_fast.monitor.alert.ALERT_DTYPE``) with the next
        drain (a listener calls this from inside the drain that fed it)."""
        self._alerts_pending.append(rows)

    def _take_alerts(self) -> np.ndarray | None:
        pieces = []
        while self._alerts_pending:
            pieces.append(self._alerts_pending.popleft())
        return np.concatenate(pieces) if pieces else None

    def sync(self) -> None:
        """Drain everything appended so far to its destination (and flush the file)."""
        with self._drain_lock:
            self._drain()

    def _drain(self) -> None:
        if self._file is not None and self._pid != os.getpid():
            self._leave_file_to_parent()  # (before any read or write of it)
        if not self._spill and len(self._ring) == 0:
            return  # the common case between samples: nothing to move, no array to build
        pieces = [self._ring.pop(self._ring.capacity)]
        while self._spill:
            pieces.append(self._spill.popleft())
        rows = np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
        if len(rows) == 0:
            return
        for listener in self.listeners:
            try:
                listener(rows)
            except Exception as error:  # a consumer's failure never reaches storage or training
                if id(listener) not in self._failed_listeners:  # reported once per listener
                    self._failed_listeners.add(id(listener))
                    logger.error("ndt_fast: a record listener failed (%s: %s); further failures of it are not "
                                 "reported", type(error).__name__, error)
        alerts = self._take_alerts()
        if self._file is None or self.write_error is not None:
            self._memory.add(rows)
            if alerts is not None:
                self._memory_alerts.append(alerts)
            return
        try:
            by_layer, jumps = self.layout.split(rows)
            self._file.append(by_layer, jumps, alerts)
            self._file.flush()
            self.records_written += len(rows)
        except Exception as error:  # never let storage end the user's run
            self._fail(error)
            # Earlier drains were committed by their own flush (and are in memory now); this
            # drain's rows were not.
            self._memory.add(rows)
            if alerts is not None:
                self._memory_alerts.append(alerts)

    def _fail(self, error: BaseException) -> None:
        """Switch to memory: copy what the file committed into memory, then let the file go."""
        self.write_error = error
        logger.error("ndt_fast: writing %s failed (%s: %s); the run's records are kept in memory from now "
                     "on (get_results() returns all of them) and training continues",
                     self._file.path, type(error).__name__, error)
        try:
            # Through the still-open handle, so this works even if the file was unlinked.
            samples, jumps = self._file.committed_frames()
            for table, values in zip(self._memory.samples, samples):
                table.extend(values)
            self._memory.jumps.extend(jumps)
            self._memory_alerts.insert(0, self._file.committed_alerts_rows())
        except Exception as read_error:
            logger.error("ndt_fast: could not read back the records %s had committed (%s); they are only "
                         "in that file", self._file.path, read_error)
        try:
            self._file.close(compress=False)
        except Exception:  # the file is broken already
            pass

    def _writer_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._period)
            self._wake.clear()
            self.sync()

    def results(self) -> tuple[list[np.ndarray], np.ndarray]:
        """Everything recorded: (per layer: sample values k × columns, jumps m × 7), oldest first."""
        with self._drain_lock:
            self._drain()
            memory_samples = [table.rows() for table in self._memory.samples]
            memory_jumps = self._memory.jumps.rows()
            if self._file is None or self.write_error is not None:
                return memory_samples, memory_jumps
            file_samples, file_jumps = self._file.committed_frames()
        return ([np.concatenate([a, b]) for a, b in zip(file_samples, memory_samples)],
                np.concatenate([file_jumps, memory_jumps]))

    def alerts(self) -> np.ndarray:
        """Every alert recorded (structured rows, ``ALERT_DTYPE``), oldest first: the file's
        committed ones, then those in memory."""
        from ndt_fast.monitor.alert import ALERT_DTYPE

        with self._drain_lock:
            self._drain()
            pieces = list(self._memory_alerts)
            if self._file is not None and self.write_error is None:
                pieces.insert(0, self._file.committed_alerts_rows())
        return np.concatenate(pieces) if pieces else np.zeros(0, dtype=ALERT_DTYPE)

    def _leave_file_to_parent(self) -> None:
        """In a fork()ed child: from now on records stay in this process's memory; the file (and
        what the parent had not written yet, which the parent writes) is the parent's."""
        _files_of_the_parent.append(self._file)
        self._file, self._thread = None, None
        _open_streams.discard(self)

    def close(self) -> None:
        """Stop the writer, write what is left, close the file. Results stay readable. In a
        fork()ed child the file is left to the parent (see ``_files_of_the_parent``)."""
        if self._file is not None and self._pid != os.getpid():
            self._leave_file_to_parent()
        if self._thread is not None:
            self._stop.set()
            self._wake.set()
            self._thread.join()
            self._thread = None
        self.sync()
        _open_streams.discard(self)
        if self._file is not None and self.write_error is None:
            try:
                self._file.close()
            except Exception as error:
                self._fail(error)
