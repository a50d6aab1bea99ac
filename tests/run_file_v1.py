"""Run files in format version 1 — one 1-D dataset per column (``/layers/<i>/<column>``,
``/jumps/<column>``, ``/alerts/<column>``), as ndt_fast wrote them before format version 2 — for
the tests that old runs still load, display and resume. Written from a version-2 file's tables,
so the two files hold the same records."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from ndt_fast.monitor.alert import ALERT_COLUMNS
from ndt_fast.storage.records import INTEGER_COLUMNS
from ndt_fast.storage.run_format import JUMP_TABLE_COLUMNS, RunTables

_JUMP_DTYPES = {"layer": np.int32, "step": np.int64, "metric": np.int16, "rule": np.int16}


def _column(group: h5py.Group, name: str, values: np.ndarray) -> None:
    group.create_dataset(name, data=values, maxshape=(None,), chunks=(1024,))


def write_v1_copy(source: Path, target: Path, *, with_alerts: bool = True) -> None:
    """Write the run in ``source`` (any readable version) to ``target`` in format version 1;
    ``with_alerts=False``: without the ``/alerts`` group, as files written before alerts existed."""
    with h5py.File(source, "r", swmr=True) as src, h5py.File(target, "w", libver="latest") as dst:
        tables = RunTables(src)
        layout = tables.layout
        dst.attrs["format"] = "ndt_fast.run"
        dst.attrs["format_version"] = 1
        dst.attrs["layout"] = src.attrs["layout"]
        dst.attrs["metadata"] = src.attrs["metadata"]
        for i, name in enumerate(layout.layer_names):
            group = dst.create_group(f"layers/{i}")
            group.attrs["name"] = name
            values = tables.samples(i)
            for j, column in enumerate(layout.sample_columns):
                _column(group, column, values[:, j].astype(np.int64 if column in INTEGER_COLUMNS else np.float64))
        jumps = dst.create_group("jumps")
        table = tables.jumps()
        for j, column in enumerate(JUMP_TABLE_COLUMNS):
            _column(jumps, column, table[:, j].astype(_JUMP_DTYPES.get(column, np.float64)))
        if with_alerts:
            alerts, rows = dst.create_group("alerts"), tables.alerts()
            for column in ALERT_COLUMNS:
                _column(alerts, column, rows[column])
