"""A run on disk: HDF5 written while training (SWMR), readable live and after a crash.

The layout (one 2-D table per layer, one for jumps, one for alerts; format version 2) and the
reading of both format versions are in ``ndt_fast.storage.run_format``.

Crash safety: the file is written in HDF5's single-writer/multiple-reader (SWMR) mode, in which
the library orders its metadata writes so that the file is consistent on disk after every
flush. ``kill -9`` of the writer therefore loses only what came after the last flush, and the
file opens with ``h5py.File(path, "r", swmr=True)`` (``ndt_fast.load`` does this). What a crash
leaves set is the superblock's "open for writing" flag; ``resume=True`` rewrites the file
without it (a copy through a SWMR reader, then an atomic rename).

Size: while the run goes on, datasets are uncompressed, because a flush rewrites the last,
partial chunk of every dataset and a compressed chunk that grows is written to a new place each
time (measured: a 2000-step run grew to 18× its CSV). ``close()`` then rewrites the file
gzip-compressed with byte shuffling. A file left by a crash stays uncompressed (still readable).

A live writer holds a shared ``flock`` on the file, so a second writer (``resume=True`` from
another process) is refused rather than corrupting the run, while readers may open it freely.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Mapping
from typing import Any

import h5py
import numpy as np
import pandas as pd

from ndt_fast.monitor.alert import alerts_frame, alerts_from_rows
from ndt_fast.storage.files import check_writable_file, replace_via_temporary
from ndt_fast.storage.records import RecordLayout, jumps_frame, samples_frame
from ndt_fast.storage.run_format import (
    RunFormatError,
    RunTables,
    append_rows,
    create_tables,
    layout_json,
    layout_of,
    open_h5,
)

# The writer's handle keeps no chunk cache: it only appends to uncompressed chunks, which HDF5
# then writes straight to the file. With HDF5's default cache (1 MB per dataset) and column
# chunks, a 200k-sample stream's resident memory grew 25-40 MB (benchmarks/test_storage_stream.py's
# budget is 20 MB); without the cache and with whole-row chunks (run_format), 0.3-10 MB.
_WRITER_CACHE = {"rdcc_nbytes": 0}


def rewrite(path: str | os.PathLike[str], *, compress: bool) -> None:
    """Rewrite a run file in place (a temporary copy, then an atomic rename) in the current
    format version, with or without compression. Opens the source as a SWMR reader, so a file
    left by a killed writer works too, and the copy no longer carries that writer's "open"
    flag; a version-1 file is converted. Raises OSError on I/O failure, RunFormatError for a
    file that is not a readable run.
    """
    path = os.fspath(path)

    def copy(tmp: str) -> None:
        with open_h5(path, "r", swmr=True) as src, open_h5(tmp, "w", libver="latest") as dst:
            tables = RunTables(src)
            layers = range(len(tables.layout.layer_names))
            create_tables(dst, tables.layout, dict(src.attrs), samples=[tables.samples(i) for i in layers],
                          jumps=tables.jumps(), alerts=tables.alerts(), compress=compress)

    replace_via_temporary(path, copy, suffix=".h5")


class RunFile:
    """The writer of one run file. Not thread-safe: its owner (``RecordStream``) serialises calls.

    ``append`` stages records into the datasets; ``flush`` makes them durable and visible to
    readers. ``committed_*`` count what the last successful flush made durable: after a failure
    the owner keeps everything later in memory, so file + memory never hold a record twice.
    """

    def __init__(self, path: str | os.PathLike[str], layout: RecordLayout, metadata: Mapping[str, Any],
                 *, resume: bool = False) -> None:
        self.path = os.fspath(path)
        self.layout = layout
        check_writable_file(self.path, f"output={self.path!r}")
        exists = os.path.exists(self.path)
        if exists and not resume:
            raise ValueError(f"output={self.path!r} exists; pass resume=True to append to that run, "
                             "or choose a new path (a finished run is never overwritten)")
        self.resumed_from: dict[str, int] = {}  # layer name → last step already in the file
        try:
            if exists:
                self._file = self._open_existing(metadata)
            else:
                self._file = open_h5(self.path, "w", libver="latest", **_WRITER_CACHE)
                self._create(metadata)
            self._file.swmr_mode = True  # from here on: no new objects or attributes
        except OSError as error:
            raise ValueError(f"output={self.path!r} cannot be written: {error}") from error
        self._lock_fd = os.open(self.path, os.O_RDONLY)
        fcntl.flock(self._lock_fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        self._inode = os.fstat(self._lock_fd).st_ino
        self._layers = [self._file[f"layers/{i}"] for i in range(len(layout.layer_names))]
        self._jumps = self._file["jumps"]
        self._alerts = self._file["alerts"]
        self.committed_samples = [len(d) for d in self._layers]
        self.committed_jumps = len(self._jumps)
        self.committed_alerts = len(self._alerts)
        self._staged_samples = list(self.committed_samples)
        self._staged_jumps = self.committed_jumps
        self._staged_alerts = self.committed_alerts

    def _create(self, metadata: Mapping[str, Any]) -> None:
        create_tables(self._file, self.layout, {"layout": layout_json(self.layout),
                                                "metadata": json.dumps(dict(metadata), default=str)})

    def _open_existing(self, metadata: Mapping[str, Any]) -> h5py.File:
        probe = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ValueError(f"output={self.path!r} is being written by another process") from None
        finally:
            os.close(probe)
        # Checked before the rewrite below, so that a refused resume leaves the file as it was
        # (a version-1 run stays readable by the release that wrote it).
        try:
            with open_h5(self.path, "r", swmr=True) as f:
                stored = layout_of(f)
        except RunFormatError as error:
            raise ValueError(f"output={self.path!r} cannot be resumed: {error}") from None
        if stored != self.layout:
            raise ValueError(f"output={self.path!r} holds a run with another layout; resume needs the same "
                             f"layers and options ({stored.differences(self.layout, 'the file', 'this tracker')})")
        # Uncompressed for appending (see the module doc), in the current format version; this
        # also clears the flag a killed writer leaves.
        try:
            rewrite(self.path, compress=False)
        except RunFormatError as error:
            raise ValueError(f"output={self.path!r} cannot be resumed: {error}") from None
        f = open_h5(self.path, "a", libver="latest", **_WRITER_CACHE)
        try:
            old = json.loads(f.attrs["metadata"])
            old.setdefault("resumes", []).append(dict(metadata))
            f.attrs["metadata"] = json.dumps(old, default=str)
            tables = RunTables(f)
            for i, name in enumerate(self.layout.layer_names):
                steps = tables.columns(i, ["step"])["step"]
                if len(steps):
                    self.resumed_from[name] = int(np.max(steps))
        except BaseException:
            f.close()
            raise
        return f

    # ---- writing --------------------------------------------------------------------------------

    def append(self, samples: Mapping[int, np.ndarray], jumps: np.ndarray, alerts: np.ndarray | None = None) -> None:
        """Stage sample values per layer index (k × len(sample_columns)), jumps (m × 7) and
        alerts (structured rows of ``ALERT_DTYPE``, or None)."""
        for layer, values in samples.items():
            append_rows(self._layers[layer], self._staged_samples[layer], values)
            self._staged_samples[layer] += len(values)
        if len(jumps):
            append_rows(self._jumps, self._staged_jumps, jumps)
            self._staged_jumps += len(jumps)
        if alerts is not None and len(alerts):
            append_rows(self._alerts, self._staged_alerts, alerts)
            self._staged_alerts += len(alerts)

    def flush(self) -> None:
        """Make everything staged durable and visible to readers. Raises OSError on failure,
        including when the file was removed or replaced under the writer."""
        try:
            on_disk = os.stat(self.path).st_ino
        except FileNotFoundError:
            on_disk = None
        if on_disk != self._inode:
            raise OSError(f"{self.path} was removed or replaced while the run was writing it")
        self._file.flush()
        self.committed_samples = list(self._staged_samples)
        self.committed_jumps = self._staged_jumps
        self.committed_alerts = self._staged_alerts

    def close(self, compress: bool = True) -> None:
        """Close the file and (by default) rewrite it compressed; idempotent. Errors are raised
        after the lock is released; the uncompressed file is then left as it was."""
        was_open = self._file.id.valid
        try:
            if was_open:
                self._file.close()
        finally:
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
                self._lock_fd = -1
        if was_open and compress:
            rewrite(self.path, compress=True)

    # ---- reading back what was committed --------------------------------------------------------

    def committed_alerts_rows(self) -> np.ndarray:
        """The committed alerts, structured rows of ``ALERT_DTYPE``."""
        return self._committed(lambda tables: tables.alerts(self.committed_alerts))

    def committed_frames(self) -> tuple[list[np.ndarray], np.ndarray]:
        """(per layer: committed sample values k × columns, committed jumps m × 7)."""
        return self._committed(lambda tables: ([tables.samples(i, n) for i, n in enumerate(self.committed_samples)],
                                               tables.jumps(self.committed_jumps)))

    def _committed(self, read: Callable[[RunTables], Any]) -> Any:
        """``read`` of the committed rows: through the open handle (which also works when the
        file was unlinked), or the file at ``path`` after close."""
        if self._file.id.valid:
            return read(RunTables(self._file))
        with open_h5(self.path, "r", swmr=True) as f:
            return read(RunTables(f))


class LoadedRun(dict):
    """``{layer name: DataFrame}`` of a run file, with ``.jumps`` and ``.alerts`` (DataFrames),
    ``.metadata`` (dict) and ``.layout`` (RecordLayout)."""

    jumps: pd.DataFrame
    alerts: pd.DataFrame
    metadata: dict[str, Any]
    layout: RecordLayout


def load(path: str | os.PathLike[str]) -> LoadedRun:
    """Read a run file written by ``FastTracker(output=...)`` — finished, live, or left by a crash.

    Returns ``{layer: DataFrame}`` (ndt's columns first, as ``get_results``) with ``.jumps``,
    ``.alerts`` (``ndt_fast.monitor.alerts_frame``: empty for a run without alerts, or written
    before they existed) and ``.metadata``. Raises FileNotFoundError, or ValueError for a file that is not a run.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(path)
    with open_h5(path, "r", swmr=True) as f:
        tables = RunTables(f)
        layout = tables.layout
        metadata = json.loads(f.attrs["metadata"])
        samples = [tables.samples(i) for i in range(len(layout.layer_names))]
        jumps = tables.jumps()
        alerts = tables.alerts()
    run = LoadedRun((name, samples_frame(layout.sample_columns, values))
                    for name, values in zip(layout.layer_names, samples))
    run.jumps = jumps_frame(layout, jumps)
    run.alerts = alerts_frame(alerts_from_rows(alerts))
    run.metadata = metadata
    run.layout = layout
    return run
