"""A run on disk: HDF5 written while training (SWMR), readable live and after a crash.

File layout (``format = "ndt_fast.run"``, ``format_version = 1``)::

    /                  attrs: layout (JSON: layer names, columns, metric and rule names),
                              metadata (JSON: model summary, tracker configuration, versions,
                              start time, resumes)
    /layers/<i>/<col>  1-D resizable chunked datasets, one per sample column, for layer i
                       (attr ``name``: the layer's name, which may contain '/' or '.')
    /jumps/<col>       the jumps table: layer (index), step, metric, rule, z_score, value_before,
                       value_after
    /alerts/<col>      the monitoring alerts (``ndt_fast.monitor``): step (int64), rule, layers
                       (JSON), message, evidence (JSON) as fixed-width UTF-8 bytes
                       (``ndt_fast.monitor.alert``). Files written before alerts existed lack
                       the group: ``load`` returns no alerts for them, and ``resume=True`` adds it.

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
from collections.abc import Mapping
from typing import Any

import h5py
import numpy as np
import pandas as pd

from ndt_fast.monitor.alert import ALERT_COLUMNS, ALERT_DTYPE, alerts_frame, alerts_from_rows
from ndt_fast.storage.files import check_writable_file, replace_via_temporary
from ndt_fast.storage.records import (
    INTEGER_COLUMNS,
    JUMP_COLUMNS,
    RecordLayout,
    jumps_frame,
    samples_frame,
)

FORMAT = "ndt_fast.run"
FORMAT_VERSION = 1
_CHUNK = 1024  # rows per chunk: small enough that rewriting the last partial chunk each flush is cheap
_JUMP_DTYPES = {"layer": np.int32, "step": np.int64, "metric": np.int16, "rule": np.int16}


def _dtype(column: str) -> type:
    return np.int64 if column in INTEGER_COLUMNS else np.float64


def _create_column(group: h5py.Group, name: str, dtype: type, data: np.ndarray | None = None,
                   compress: bool = False) -> None:
    group.create_dataset(name, shape=(0,) if data is None else data.shape, maxshape=(None,), chunks=(_CHUNK,),
                         dtype=dtype, data=data, **({"compression": "gzip", "compression_opts": 4, "shuffle": True}
                                                    if compress else {}))


def _layout_of(f: h5py.File) -> RecordLayout:
    if f.attrs.get("format") != FORMAT:
        raise ValueError(f"{f.filename} is not an ndt_fast run file (no format attribute {FORMAT!r})")
    d = json.loads(f.attrs["layout"])
    return RecordLayout(tuple(d["layer_names"]), tuple(d["sample_columns"]), tuple(d["metric_names"]),
                        tuple(d["rule_names"]))


def rewrite(path: str | os.PathLike[str], *, compress: bool) -> None:
    """Rewrite a run file in place (a temporary copy, then an atomic rename), with or without
    compression. Opens the source as a SWMR reader, so a file left by a killed writer works too,
    and the copy no longer carries that writer's "open" flag. Raises OSError on I/O failure.
    """
    path = os.fspath(path)

    def copy(tmp: str) -> None:
        with h5py.File(path, "r", swmr=True) as src, h5py.File(tmp, "w", libver="latest") as dst:
            for key, value in src.attrs.items():
                dst.attrs[key] = value
            _copy_group(src, dst, compress)

    replace_via_temporary(path, copy, suffix=".h5")


def _copy_group(src: h5py.Group, dst: h5py.Group, compress: bool) -> None:
    for name, item in src.items():
        if isinstance(item, h5py.Group):
            group = dst.create_group(name)
            for key, value in item.attrs.items():
                group.attrs[key] = value
            _copy_group(item, group, compress)
        else:
            _create_column(dst, name, item.dtype, item[...], compress)


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
                self._file = h5py.File(self.path, "w", libver="latest")
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
        self.committed_samples = [len(g["step"]) for g in self._layers]
        self.committed_jumps = len(self._jumps["step"])
        self.committed_alerts = len(self._alerts["step"])
        self._staged_samples = list(self.committed_samples)
        self._staged_jumps = self.committed_jumps
        self._staged_alerts = self.committed_alerts

    def _create(self, metadata: Mapping[str, Any]) -> None:
        f = self._file
        f.attrs["format"] = FORMAT
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["layout"] = json.dumps({
            "layer_names": list(self.layout.layer_names), "sample_columns": list(self.layout.sample_columns),
            "metric_names": list(self.layout.metric_names), "rule_names": list(self.layout.rule_names)})
        f.attrs["metadata"] = json.dumps(dict(metadata), default=str)
        for i, name in enumerate(self.layout.layer_names):
            group = f.create_group(f"layers/{i}")
            group.attrs["name"] = name
            for column in self.layout.sample_columns:
                _create_column(group, column, _dtype(column))
        jumps = f.create_group("jumps")
        for column in ("layer", *JUMP_COLUMNS):
            _create_column(jumps, column, _JUMP_DTYPES.get(column, np.float64))
        _create_alerts(f)

    def _open_existing(self, metadata: Mapping[str, Any]) -> h5py.File:
        probe = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise ValueError(f"output={self.path!r} is being written by another process") from None
        finally:
            os.close(probe)
        # Uncompressed for appending (see the module doc); this also clears the flag a killed
        # writer leaves.
        rewrite(self.path, compress=False)
        f = h5py.File(self.path, "a", libver="latest")
        try:
            stored = _layout_of(f)
            if stored != self.layout:
                raise ValueError(f"output={self.path!r} holds a run with another layout (layers "
                                 f"{list(stored.layer_names)}, {len(stored.sample_columns)} columns); resume "
                                 f"needs the same layers and options (here {list(self.layout.layer_names)}, "
                                 f"{len(self.layout.sample_columns)} columns)")
            if "alerts" not in f:  # a run written before alerts existed (no SWMR yet: may add objects)
                _create_alerts(f)
            old = json.loads(f.attrs["metadata"])
            old.setdefault("resumes", []).append(dict(metadata))
            f.attrs["metadata"] = json.dumps(old, default=str)
            for i, name in enumerate(self.layout.layer_names):
                steps = f[f"layers/{i}/step"]
                if len(steps):
                    self.resumed_from[name] = int(np.max(steps[...]))
        except BaseException:
            f.close()
            raise
        return f

    # ---- writing --------------------------------------------------------------------------------

    def append(self, samples: Mapping[int, np.ndarray], jumps: np.ndarray, alerts: np.ndarray | None = None) -> None:
        """Stage sample values per layer index (k × len(sample_columns)), jumps (m × 7) and
        alerts (structured rows of ``ALERT_DTYPE``, or None)."""
        for layer, values in samples.items():
            group, start = self._layers[layer], self._staged_samples[layer]
            for j, column in enumerate(self.layout.sample_columns):
                _append(group[column], start, values[:, j])
            self._staged_samples[layer] = start + len(values)
        if len(jumps):
            for j, column in enumerate(("layer", *JUMP_COLUMNS)):
                _append(self._jumps[column], self._staged_jumps, jumps[:, j])
            self._staged_jumps += len(jumps)
        if alerts is not None and len(alerts):
            for column in ALERT_COLUMNS:
                _append(self._alerts[column], self._staged_alerts, alerts[column])
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
        if self._file.id.valid:
            return _read_alerts(self._file, self.committed_alerts)
        with h5py.File(self.path, "r", swmr=True) as f:
            return _read_alerts(f, self.committed_alerts)

    def committed_frames(self) -> tuple[list[np.ndarray], np.ndarray]:
        """(per layer: committed sample values k × columns, committed jumps m × 7)."""
        if self._file.id.valid:
            return _read(self._file, self.layout, self.committed_samples, self.committed_jumps)
        with h5py.File(self.path, "r", swmr=True) as f:
            return _read(f, self.layout, self.committed_samples, self.committed_jumps)


def _create_alerts(f: h5py.File) -> None:
    group = f.create_group("alerts")
    for column in ALERT_COLUMNS:
        _create_column(group, column, ALERT_DTYPE[column])


def _read_alerts(f: h5py.File, count: int | None) -> np.ndarray:
    """Alert rows of ``f`` (the first ``count``; None: every full row); none for a file
    written before alerts existed."""
    if "alerts" not in f:
        return np.zeros(0, dtype=ALERT_DTYPE)
    columns = {c: f[f"alerts/{c}"] for c in ALERT_COLUMNS}
    n = min(len(c) for c in columns.values()) if count is None else count
    rows = np.zeros(n, dtype=ALERT_DTYPE)
    for name, column in columns.items():
        rows[name] = column[:n]
    return rows


def _append(dataset: h5py.Dataset, start: int, values: np.ndarray) -> None:
    dataset.resize((start + len(values),))
    dataset[start:] = values.astype(dataset.dtype) if dataset.dtype.kind == "i" else values


def _read(f: h5py.File, layout: RecordLayout, sample_counts: list[int] | None,
          jump_count: int | None) -> tuple[list[np.ndarray], np.ndarray]:
    samples = []
    for i in range(len(layout.layer_names)):
        group = f[f"layers/{i}"]
        n = len(group["step"]) if sample_counts is None else sample_counts[i]
        columns = [group[c] for c in layout.sample_columns]
        n = min([n, *(len(c) for c in columns)])  # a live file may be mid-resize: only full rows
        samples.append(np.stack([c[:n].astype(np.float64) for c in columns], axis=1)
                       if n else np.empty((0, len(layout.sample_columns))))
    jump_columns = [f[f"jumps/{c}"] for c in ("layer", *JUMP_COLUMNS)]
    m = min(len(c) for c in jump_columns) if jump_count is None else jump_count
    jumps = (np.stack([c[:m].astype(np.float64) for c in jump_columns], axis=1) if m
             else np.empty((0, 1 + len(JUMP_COLUMNS))))
    return samples, jumps


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
    with h5py.File(path, "r", swmr=True) as f:
        layout = _layout_of(f)
        metadata = json.loads(f.attrs["metadata"])
        for c in ("layer", *JUMP_COLUMNS):
            f[f"jumps/{c}"].refresh()
        for i in range(len(layout.layer_names)):
            for c in layout.sample_columns:
                f[f"layers/{i}/{c}"].refresh()
        if "alerts" in f:
            for c in ALERT_COLUMNS:
                f[f"alerts/{c}"].refresh()
        samples, jumps = _read(f, layout, None, None)
        alerts = _read_alerts(f, None)
    run = LoadedRun((name, samples_frame(layout.sample_columns, values))
                    for name, values in zip(layout.layer_names, samples))
    run.jumps = jumps_frame(layout, jumps)
    run.alerts = alerts_frame(alerts_from_rows(alerts))
    run.metadata = metadata
    run.layout = layout
    return run
