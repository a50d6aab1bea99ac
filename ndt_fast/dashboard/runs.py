"""Reading a run file for display — while its writer is still appending, or after it stopped.

``RunReader`` keeps one read-only SWMR handle per file and, on every request, refreshes only
the datasets it is about to read (the writer process is never contacted). It reads only the
columns it shows, of one layer (``ndt_fast.storage.run_format.RunTables``: each column is its own
chain of chunks, in either format version) rather than through ``ndt_fast.load``, which reads every
column of every layer: a display needs three or four columns of one layer, and at 10⁶ samples per
layer that is the difference between tens of milliseconds and seconds.

The handle is opened with HDF5 file locking off, as every ndt_fast handle
(``ndt_fast.storage.run_format.open_h5``): a reader holding HDF5's shared lock would make the
writer's ``resume=True`` believe another writer is live, and mixed flags in one process fail.
When the file is replaced (the writer's ``close()`` rewrites it compressed, ``resume`` rewrites
it uncompressed), the next request sees a new inode and reopens it.

Bad input gets ``RunFileError`` (a ValueError) with a one-line message: a missing file, one that
is not HDF5, one that is HDF5 but not an ndt_fast run.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from typing import Any

import h5py
import numpy as np

from ndt_fast.dashboard.downsample import downsample
from ndt_fast.dashboard.writer_state import writer_state
from ndt_fast.monitor.alert import alerts_from_rows
from ndt_fast.storage.run_format import FORMAT, JUMP_TABLE_COLUMNS, RunFormatError, RunTables, open_h5

# Per rule, at most this many jump markers per view (the largest |z| first): ndt's rule fires
# ~10 times per 1000 samples on noise, i.e. ~10⁴ markers on a 10⁶-sample layer.
MAX_JUMP_MARKERS = 2000
MAX_ALERT_MARKERS = 500  # per view, the latest in range (a rule raises one alert per episode)
_RATE_WINDOW_S = 30.0  # samples/s is measured over the reader's observations of the last 30 s


class RunFileError(ValueError):
    """A file given to the dashboard or report that cannot be shown (message: one line)."""


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _on_curve(at_steps: np.ndarray, fallback: np.ndarray, steps: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Marker heights at ``at_steps``: the curve's value where it has one at that step, else ``fallback``."""
    y = np.asarray(fallback, dtype=np.float64).copy()
    if len(steps) and len(at_steps):
        at = np.clip(np.searchsorted(steps, at_steps), 0, len(steps) - 1)
        on_curve = (steps[at] == at_steps) & np.isfinite(values[at])
        y[on_curve] = values[at][on_curve]
    return y


def _alert_markers(alerts: list, layer: str, steps: np.ndarray, values: np.ndarray, x0: float | None,
                   x1: float | None) -> dict[str, Any]:
    """Markers for the alerts *for* ``layer`` (their first layer) in steps [x0, x1]: at most
    ``MAX_ALERT_MARKERS`` (the latest), on the curve (at its mean where the curve has no value)."""
    mine = [a for a in alerts if a.layer == layer and (x0 is None or a.step >= x0) and (x1 is None or a.step <= x1)]
    total = len(mine)
    mine = mine[-MAX_ALERT_MARKERS:]
    at = np.array([a.step for a in mine], dtype=np.float64)
    level = float(np.nanmean(values)) if np.isfinite(values).any() else 0.0
    y = _on_curve(at, np.full(len(at), level), steps, values)
    return {"x": json_floats(at), "y": json_floats(y), "text": [f"{a.rule}: {a.message}" for a in mine],
            "total": total}


def json_floats(values: np.ndarray) -> list[float | None]:
    """float64 array → list for JSON, NaN/±inf as ``None`` (JSON has no NaN; Plotly draws a gap)."""
    values = np.asarray(values, dtype=np.float64)
    out: list[float | None] = values.tolist()
    for i in np.flatnonzero(~np.isfinite(values)):
        out[i] = None
    return out


class RunReader:
    """One run file, read for display. Thread-safe (one lock per file: h5py handles are not).

    Attributes set at open (and re-read when the file is replaced): ``path``, ``name`` (file
    name), ``layer_names``, ``sample_columns``, ``metric_names`` (metrics with a column, in the
    file's order), ``rule_names``, ``metadata`` (dict).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.path.abspath(os.fspath(path))
        self.name = os.path.basename(self.path)
        self._lock = threading.Lock()
        self._file: h5py.File | None = None
        self._inode: int | None = None
        self._observations: deque[tuple[float, int]] = deque()
        with self._lock:
            self._open()

    # ---- the handle ---------------------------------------------------------------------------

    def _open(self) -> None:
        if not os.path.exists(self.path):
            raise RunFileError(f"{self.path}: no such file")
        if os.path.isdir(self.path):
            raise RunFileError(f"{self.path}: is a directory, not a run file")
        try:
            is_hdf5 = h5py.is_hdf5(self.path)
        except OSError as error:
            raise RunFileError(f"{self.path}: cannot be read ({_one_line(error)})") from None
        if not is_hdf5:
            raise RunFileError(f"{self.path}: not an HDF5 file (an ndt_fast run file is written by "
                               "FastTracker(output=...))")
        try:
            handle = open_h5(self.path, "r", swmr=True)
        except OSError as error:
            raise RunFileError(f"{self.path}: cannot be opened ({_one_line(error)})") from None
        try:
            if handle.attrs.get("format") != FORMAT:
                raise RunFileError(f"{self.path}: an HDF5 file, but not an ndt_fast run (no format attribute "
                                   f"{FORMAT!r})")
            try:
                tables = RunTables(handle)
            except RunFormatError as error:
                raise RunFileError(_one_line(error)) from None
            self.metadata: dict[str, Any] = json.loads(handle.attrs["metadata"])
        except BaseException:
            handle.close()
            raise
        layout = tables.layout
        self.layer_names: list[str] = list(layout.layer_names)
        self.sample_columns: list[str] = list(layout.sample_columns)
        self.metric_names: list[str] = [m for m in layout.metric_names if m in self.sample_columns]
        self.rule_names: list[str] = list(layout.rule_names)
        self._jump_metrics: list[str] = list(layout.metric_names)  # what a jump's metric field indexes
        if self._file is not None:
            self._file.close()
        self._file = handle
        self._tables = tables
        self._inode = os.stat(self.path).st_ino

    def _read(self) -> RunTables:
        """The tables of the open handle, reopened first if the path now names another file."""
        self._handle()
        return self._tables

    def _handle(self) -> h5py.File:
        """The open handle, reopened first if the path now names another file (a rewrite)."""
        try:
            inode = os.stat(self.path).st_ino
        except FileNotFoundError:
            inode = self._inode  # removed mid-rewrite or by the user: keep showing what was read
        if inode != self._inode or self._file is None:
            self._open()
        assert self._file is not None
        return self._file

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

    # ---- columns ------------------------------------------------------------------------------


    def _layer_index(self, layer: str) -> int:
        try:
            return self.layer_names.index(layer)
        except ValueError:
            raise RunFileError(f"{self.name}: no layer {layer!r} (layers: {self.layer_names})") from None

    def _jumps(self, layer: int, metric: int) -> dict[str, np.ndarray]:
        table = self._read().jumps()
        keep = (table[:, 0] == layer) & (table[:, JUMP_TABLE_COLUMNS.index("metric")] == metric)
        return {c: table[keep, j] for j, c in enumerate(JUMP_TABLE_COLUMNS)}

    # ---- what the page asks for ---------------------------------------------------------------

    def view(self, layer: str, metric: str, *, buckets: int = 1000, x0: float | None = None,
             x1: float | None = None) -> dict[str, Any]:
        """One layer's ``metric`` over steps, ready for JSON, each trace downsampled to ≤ 3 · buckets
        + 2 points (``ndt_fast.dashboard.downsample``), within steps [x0, x1] when given.

        Returns ``{"layer", "metric", "rows" (samples in range), "metric_trace", "loss",
        "grad_norm", "weight" (None unless ``weight_<metric>`` holds a finite value), "jumps":
        {rule: {"x", "y", "z", "total"}}, "alerts": {"x", "y", "text", "total"}}`` (the monitoring
        alerts for this layer: ``alerts=``); each trace is ``{"x": [...], "y": [...]}``.
        ``RunFileError`` for an unknown layer or metric.
        """
        with self._lock:
            index = self._layer_index(layer)
            if metric not in self.metric_names:
                raise RunFileError(f"{self.name}: no metric {metric!r} (metrics: {self.metric_names})")
            wanted = ["step", metric] + [c for c in ("loss", "grad_norm", f"weight_{metric}")
                                         if c in self.sample_columns]
            columns = self._read().columns(index, wanted)
            jumps = self._jumps(index, self._jump_metrics.index(metric))
            alerts = self._read().alerts()
        steps = columns["step"]
        if len(steps) > 1 and np.any(np.diff(steps) < 0):  # never written so, but a display must not break
            order = np.argsort(steps, kind="stable")
            columns = {name: values[order] for name, values in columns.items()}
            steps = columns["step"]
        lo = 0 if x0 is None else int(np.searchsorted(steps, x0, side="left"))
        hi = len(steps) if x1 is None else int(np.searchsorted(steps, x1, side="right"))
        # One sample either side of the range, so the line runs to the edges of a zoomed view.
        lo, hi = max(lo - 1, 0), min(hi + 1, len(steps))

        def trace(name: str) -> dict[str, list] | None:
            if name not in columns:
                return None
            values = columns[name][lo:hi]
            if not np.isfinite(values).any() and name != metric:
                return None
            x, y = downsample(steps[lo:hi], values, buckets)
            return {"x": json_floats(x), "y": json_floats(y)}

        return {"layer": layer, "metric": metric, "rows": hi - lo, "metric_trace": trace(metric),
                "loss": trace("loss"), "grad_norm": trace("grad_norm"), "weight": trace(f"weight_{metric}"),
                "jumps": self._jump_markers(jumps, steps, columns[metric], x0, x1),
                "alerts": _alert_markers(alerts_from_rows(alerts), layer, steps, columns[metric], x0, x1)}

    def _jump_markers(self, jumps: dict[str, np.ndarray], steps: np.ndarray, values: np.ndarray,
                      x0: float | None, x1: float | None) -> dict[str, dict[str, Any]]:
        """Per rule: markers at each jump's step, on the curve (``value_after`` where the curve
        has no value there), the ``MAX_JUMP_MARKERS`` largest |z| in range, and the total."""
        out = {}
        in_range = np.ones(len(jumps["step"]), dtype=bool)
        if x0 is not None:
            in_range &= jumps["step"] >= x0
        if x1 is not None:
            in_range &= jumps["step"] <= x1
        for r, rule in enumerate(self.rule_names):
            mine = in_range & (jumps["rule"] == r)
            step, z, after = jumps["step"][mine], jumps["z_score"][mine], jumps["value_after"][mine]
            total = len(step)
            if total > MAX_JUMP_MARKERS:
                top = np.sort(np.argsort(-np.abs(z), kind="stable")[:MAX_JUMP_MARKERS])
                step, z, after = step[top], z[top], after[top]
            y = _on_curve(step, after, steps, values)
            out[rule] = {"x": json_floats(step), "y": json_floats(y), "z": json_floats(z), "total": total}
        return out

    def status(self) -> dict[str, Any]:
        """The status line: ``samples`` (per layer), ``last_step``, ``samples_per_s`` and how it was
        measured (``rate_basis``), ``writer`` (``ndt_fast.dashboard.writer_state``), ``modified_s_ago``."""
        with self._lock:
            tables = self._read()
            counts, last = [], None
            for i in range(len(self.layer_names)):
                counts.append(tables.sample_count(i))
                step = tables.last_step(i)
                if step is not None:
                    last = step if last is None else max(last, step)
            now = time.monotonic()
            total = max(counts, default=0)  # samples per layer
            self._observations.append((now, total))
            while len(self._observations) > 2 and now - self._observations[0][0] > _RATE_WINDOW_S:
                self._observations.popleft()
            state = writer_state(self.path, self.metadata)
        try:
            modified = os.stat(self.path).st_mtime
        except FileNotFoundError:
            modified = None
        rate, basis = self._rate(total, modified, state["state"])
        return {"samples": dict(zip(self.layer_names, counts)), "last_step": last, "samples_per_s": rate,
                "rate_basis": basis, "writer": state,
                "modified_s_ago": None if modified is None else max(0.0, time.time() - modified)}

    def _rate(self, total: int, modified: float | None, state: str) -> tuple[float | None, str]:
        """Samples (all layers) per second: over this reader's own observations while the writer
        is live and the window spans ≥ 1 s; otherwise the average from the run's start time to
        the file's last modification (the whole run, for a stopped or closed one)."""
        first_t, first_n = self._observations[0]
        last_t, last_n = self._observations[-1]
        if state == "writing" and last_t - first_t >= 1.0:
            return (last_n - first_n) / (last_t - first_t), f"last {last_t - first_t:.0f} s"
        start = self.metadata.get("start_time")
        if start and modified is not None:
            from datetime import datetime

            try:
                began = datetime.fromisoformat(start).timestamp()
            except ValueError:
                return None, "unknown"
            if modified > began:
                return total / (modified - began), "average since start"
        return None, "unknown"

    def summary(self) -> dict[str, Any]:
        """What the page needs once: name, layers, metrics, rules, metadata, whether weights are tracked."""
        with self._lock:
            self._handle()
            return {"name": self.name, "path": self.path, "layers": self.layer_names, "metrics": self.metric_names,
                    "rules": self.rule_names, "metadata": self.metadata,
                    "weights": [m for m in self.metric_names if f"weight_{m}" in self.sample_columns]}
