"""The run file's HDF5 layout: creating it, and reading its tables in either format version.

Version 2 (written since 2026-12; ``format = "ndt_fast.run"``, ``format_version = 2``)::

    /          attrs: layout (JSON: layer names, columns, metric and rule names),
                      metadata (JSON: model summary, tracker configuration, versions, start
                      time, resumes)
    /layers/<i>  float64, samples × len(sample_columns), resizable along samples; attr ``name``
                 (the layer's name, which may contain '/' or '.'). Integer columns (step, flags,
                 rows) are exact in float64 (steps < 2**53); ``load`` returns them as int64.
    /jumps       float64, jumps × 7: layer index, then ``JUMP_COLUMNS`` (step, metric, rule,
                 z_score, value_before, value_after); attr ``columns``
    /alerts      one structured row per alert (``ndt_fast.monitor.alert.ALERT_DTYPE``)

Chunks: while a run is written, whole rows (``GROWING_CHUNK_ROWS`` × columns, uncompressed), so
an append touches one or two chunks; column chunks there made the writer's resident memory grow
by ~20 MB on a 200k-sample stream (``benchmarks/NOTES.md``). The compressed file ``close()``
writes has one column per chunk (``(PACKED_CHUNK_ROWS, 1)``): a display that reads three columns
of one layer decompresses only those, and byte shuffling works within one column's values.

Version 1 (the first release) kept a 1-D dataset per column (``/layers/<i>/<column>``,
``/jumps/<column>``, ``/alerts/<column>``): 13-30 datasets per layer. Creating, growing and
flushing that many datasets was most of the file's cost (measured for 3 layers × 13 columns: 9.6
ms to create, 13 ms per drain of 10 samples, 31 ms for the compressing rewrite at close; version
2: 3.1, 0.8 and 8.3 ms; ``benchmarks/results/run-file-costs-cpu-2cores.txt``). Version 1 files
are still read (``RunTables``); resuming one rewrites it as version 2.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import h5py
import numpy as np

from ndt_fast.monitor.alert import ALERT_COLUMNS, ALERT_DTYPE
from ndt_fast.storage.records import JUMP_COLUMNS, RecordLayout

FORMAT = "ndt_fast.run"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
JUMP_TABLE_COLUMNS = ("layer", *JUMP_COLUMNS)
GROWING_CHUNK_ROWS = 1024  # while writing: the last partial chunk rewritten at each flush stays small
PACKED_CHUNK_ROWS = 4096  # in the compressed file written at close
_ALERT_CHUNK_ROWS = 16  # ~29 KB per chunk (an alert row is ~1.8 KB); alerts are rare
_GZIP = {"compression": "gzip", "compression_opts": 4, "shuffle": True}


def open_h5(path: str, mode: str, **kwargs: Any) -> h5py.File:
    """``h5py.File`` as ndt_fast opens every run file: with HDF5's own file locking off.

    One policy for every handle, because HDF5 refuses to open a file a second time in the same
    process with other locking flags ("file locking flag values don't match"): the dashboard
    reading a run its own process trains, or ``load`` while a dashboard reader is open, failed
    that way. HDF5's lock is not needed: a live writer holds its own ``flock`` (``RunFile``),
    which a second writer's probe is refused by, and SWMR readers need no lock; and a reader
    holding HDF5's shared lock would make a ``resume=True`` believe another writer is live."""
    return h5py.File(path, mode, locking=False, **kwargs)


class RunFormatError(ValueError):
    """An HDF5 file that is not an ndt_fast run file, or one of a format version this release
    cannot read (the message names which)."""


def format_version(f: h5py.File) -> int:
    """The run format version of ``f``; RunFormatError when it is not a run file this release reads."""
    if f.attrs.get("format") != FORMAT:
        raise RunFormatError(f"{f.filename} is not an ndt_fast run file (no format attribute {FORMAT!r})")
    raw = f.attrs.get("format_version", -1)
    # Only a whole number names a version: int() would read 2.5 as 2 and fail on text with a
    # ValueError that does not say which file.
    version = int(raw) if isinstance(raw, (int, np.integer)) or (
        isinstance(raw, (float, np.floating)) and float(raw).is_integer()) else None
    if version not in READABLE_VERSIONS:
        shown = raw.item() if isinstance(raw, np.generic) else raw
        raise RunFormatError(f"{f.filename}: run file format version {shown!r}; this release of ndt_fast reads "
                             f"versions {', '.join(map(str, READABLE_VERSIONS))} (a newer ndt_fast wrote it?)")
    return version


def layout_of(f: h5py.File) -> RecordLayout:
    """The record layout stored in ``f`` (RunFormatError for a file that is not a readable run)."""
    format_version(f)
    d = json.loads(f.attrs["layout"])
    return RecordLayout(tuple(d["layer_names"]), tuple(d["sample_columns"]), tuple(d["metric_names"]),
                        tuple(d["rule_names"]))


def layout_json(layout: RecordLayout) -> str:
    return json.dumps({"layer_names": list(layout.layer_names), "sample_columns": list(layout.sample_columns),
                       "metric_names": list(layout.metric_names), "rule_names": list(layout.rule_names)})


def create_tables(f: h5py.File, layout: RecordLayout, attrs: Mapping[str, Any], *,
                  samples: Sequence[np.ndarray] | None = None, jumps: np.ndarray | None = None,
                  alerts: np.ndarray | None = None, compress: bool = False) -> None:
    """Write a version-2 run into the empty, writable ``f``: root ``attrs`` (``format`` and
    ``format_version`` are set here), then every table, empty or holding the given rows
    (``samples``: per layer k × len(sample_columns) float64; ``jumps`` m × 7; ``alerts``
    structured ``ALERT_DTYPE`` rows). ``compress``: gzip with byte shuffling, chunks of up to
    ``PACKED_CHUNK_ROWS`` rows (for a finished run); otherwise uncompressed
    ``GROWING_CHUNK_ROWS`` chunks (for a run still being appended to)."""
    for key, value in attrs.items():
        f.attrs[key] = value
    f.attrs["format"] = FORMAT
    f.attrs["format_version"] = FORMAT_VERSION
    width = len(layout.sample_columns)
    layers = f.create_group("layers")
    for i, name in enumerate(layout.layer_names):
        values = samples[i] if samples is not None else np.empty((0, width))
        _create_table(layers, str(i), np.asarray(values, dtype=np.float64), compress).attrs["name"] = name
    table = np.empty((0, len(JUMP_TABLE_COLUMNS))) if jumps is None else np.asarray(jumps, dtype=np.float64)
    _create_table(f, "jumps", table, compress).attrs["columns"] = json.dumps(JUMP_TABLE_COLUMNS)
    rows = np.zeros(0, dtype=ALERT_DTYPE) if alerts is None else alerts
    f.create_dataset("alerts", data=rows, maxshape=(None,), chunks=(_ALERT_CHUNK_ROWS,),
                     **(_GZIP if compress else {}))


def _create_table(parent: h5py.Group, name: str, values: np.ndarray, compress: bool) -> h5py.Dataset:
    if compress:  # a finished run: one column per chunk (column reads; shuffle compresses one column's bytes)
        chunks = (max(1, min(len(values), PACKED_CHUNK_ROWS)), 1)
    else:  # a growing run: whole rows per chunk (each append touches one or two chunks)
        chunks = (GROWING_CHUNK_ROWS, values.shape[1])
    return parent.create_dataset(name, data=values, maxshape=(None, values.shape[1]), chunks=chunks,
                                 **(_GZIP if compress else {}))


def append_rows(dataset: h5py.Dataset, start: int, values: np.ndarray) -> None:
    """Write ``values`` at row ``start`` of ``dataset``, growing it to ``start + len(values)`` rows.
    If the write fails the dataset is shrunk back to ``start`` rows before the error is raised: a
    grown extent left behind would reach the file at the next flush or close as rows of zeros
    (a sample at step 0)."""
    # HDF5's own calls, not h5py's slicing: ~45 µs per append instead of ~160 (its selection
    # machinery), on the writer thread, with the GIL held, every drain, for every layer.
    rest = values.shape[1:]  # (columns; none for the alerts' structured rows)
    dataset.id.set_extent((start + len(values), *rest))
    try:
        write_rows(dataset, start, values)
    except BaseException:
        try:
            dataset.id.set_extent((start, *rest))
        except Exception:  # the file is failing as a whole: the first error is the one to report
            pass
        raise


def write_rows(dataset: h5py.Dataset, start: int, values: np.ndarray) -> None:
    """Write ``values`` (rows, then the dataset's other dimensions; its dtype) at row ``start``;
    the extent must hold them already."""
    file_space = dataset.id.get_space()
    file_space.select_hyperslab((start,) + (0,) * (values.ndim - 1), values.shape)
    dataset.id.write(h5py.h5s.create_simple(values.shape), file_space, np.ascontiguousarray(values, dataset.dtype))


class RunTables:
    """Read access to the tables of an open run file of either version; each read first
    refreshes the datasets it touches (a live SWMR file grows under the reader) and returns
    only rows complete in every column it reads.

    Raises RunFormatError at construction for a file that is not a readable run.
    """

    def __init__(self, f: h5py.File) -> None:
        self.file = f
        self.version = format_version(f)
        self.layout = layout_of(f)
        self._reader = f.mode == "r"  # a writer's own handle sees its writes; refresh is a reader's call

    # ---- samples --------------------------------------------------------------------------------

    def sample_count(self, layer: int) -> int:
        """Samples of layer index ``layer`` in the file (full rows)."""
        if self.version == 1:
            datasets = [self._v1_column(layer, c) for c in self.layout.sample_columns]
            return min(len(d) for d in datasets)
        return len(self._refreshed(f"layers/{layer}"))

    def last_step(self, layer: int) -> int | None:
        """The step of layer ``layer``'s last sample, or None before its first."""
        n = self.sample_count(layer)
        if n == 0:
            return None
        if self.version == 1:
            return int(self.file[f"layers/{layer}/step"][n - 1])
        return int(self.file[f"layers/{layer}"][n - 1, self.layout.sample_columns.index("step")])

    def columns(self, layer: int, names: Sequence[str], count: int | None = None) -> dict[str, np.ndarray]:
        """The named columns of layer ``layer`` as float64 arrays of equal length (the first
        ``count`` rows, or every full row)."""
        if self.version == 1:
            datasets = {name: self._v1_column(layer, name) for name in names}
            n = min((len(d) for d in datasets.values()), default=0) if count is None else count
            return {name: d[:n].astype(np.float64) for name, d in datasets.items()}
        n = self.sample_count(layer) if count is None else count
        dataset = self.file[f"layers/{layer}"]
        index = [self.layout.sample_columns.index(name) for name in names]
        # One read per column: each is its own chain of chunks, so other columns are never read.
        return {name: dataset[:n, j] for name, j in zip(names, index)}

    def samples(self, layer: int, count: int | None = None) -> np.ndarray:
        """Layer ``layer``'s sample values, n × len(sample_columns) float64."""
        width = len(self.layout.sample_columns)
        if self.version == 1:
            columns = self.columns(layer, self.layout.sample_columns, count)
            n = len(columns["step"])
            return np.stack(list(columns.values()), axis=1) if n else np.empty((0, width))
        n = self.sample_count(layer) if count is None else count
        return self.file[f"layers/{layer}"][:n] if n else np.empty((0, width))

    # ---- jumps and alerts -----------------------------------------------------------------------

    def jumps(self, count: int | None = None) -> np.ndarray:
        """The jumps table, m × 7 float64 (layer index, then ``JUMP_COLUMNS``)."""
        if self.version == 1:
            columns = [self._refreshed(f"jumps/{c}") for c in JUMP_TABLE_COLUMNS]
            m = min(len(c) for c in columns) if count is None else count
            return (np.stack([c[:m].astype(np.float64) for c in columns], axis=1) if m
                    else np.empty((0, len(JUMP_TABLE_COLUMNS))))
        dataset = self._refreshed("jumps")
        return dataset[: len(dataset) if count is None else count]

    def alerts(self, count: int | None = None) -> np.ndarray:
        """The alert rows (structured ``ALERT_DTYPE``); none for a version-1 file written before
        alerts existed."""
        if "alerts" not in self.file:
            return np.zeros(0, dtype=ALERT_DTYPE)
        if self.version == 1:
            columns = {c: self._refreshed(f"alerts/{c}") for c in ALERT_COLUMNS}
            n = min(len(c) for c in columns.values()) if count is None else count
            rows = np.zeros(n, dtype=ALERT_DTYPE)
            for name, column in columns.items():
                rows[name] = column[:n]
            return rows
        dataset = self._refreshed("alerts")
        return dataset[: len(dataset) if count is None else count]

    def _v1_column(self, layer: int, name: str) -> h5py.Dataset:
        return self._refreshed(f"layers/{layer}/{name}")

    def _refreshed(self, path: str) -> h5py.Dataset:
        dataset = self.file[path]
        if self._reader:
            dataset.refresh()
        return dataset
