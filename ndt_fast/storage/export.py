"""Exports of finished results (``{layer: DataFrame}``) under ndtracker's names and signatures.

- ``export_to_csv``: one CSV with a leading ``layer`` column, or one file per layer.
- ``export_to_json``: ``{layer: [ {column: value, …}, … ]}``; NaN (e.g. ``grad_norm=None``) → null.
- ``export_to_hdf5``: an ndt_fast run file (readable by ``ndt_fast.load``), gzip-compressed;
  works with ``grad_norm`` left at None (NaN), where ndtracker's export raises.

Errors: an unwritable path or a bad argument → ValueError naming it; nothing half-written is
left behind (each file is written to a temporary name and renamed).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from ndt_fast.storage.files import check_writable_file, replace_via_temporary
from ndt_fast.storage.records import RecordLayout

ResultsLike = Mapping[str, pd.DataFrame]


def _check_results(results: ResultsLike) -> None:
    if isinstance(results, pd.DataFrame) or not isinstance(results, Mapping):
        raise ValueError("results must be a dict {layer name: DataFrame} (tracker.get_results())")
    for name, df in results.items():
        if not isinstance(df, pd.DataFrame):
            raise ValueError(f"results[{name!r}] is a {type(df).__name__}, not a DataFrame")


def _write_atomically(path: str, write: Callable[[str], None]) -> None:
    check_writable_file(path, f"cannot write {path!r}")
    replace_via_temporary(path, write)


def export_to_csv(results: ResultsLike, output_path: str, separate_files: bool = False) -> None:
    """Write ``results`` as CSV: one file with a leading ``layer`` column, or with
    ``separate_files=True`` a folder ``output_path`` holding ``<layer>.csv`` per layer."""
    _check_results(results)
    output_path = os.fspath(output_path)
    if separate_files:
        try:
            os.makedirs(output_path, exist_ok=True)
        except OSError as error:
            raise ValueError(f"cannot create folder {output_path!r}: {error}") from error
        for name, df in results.items():
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
            _write_atomically(os.path.join(output_path, f"{safe}.csv"),
                              lambda tmp, df=df: df.to_csv(tmp, index=False))
        return
    frames = [df.assign(layer=name)[["layer", *df.columns]] for name, df in results.items() if len(df)]
    combined = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["layer"])
    _write_atomically(output_path, lambda tmp: combined.to_csv(tmp, index=False))


def json_value(value: Any, infinity: str | None = None) -> Any:
    """``value`` as something ``json.dump(..., allow_nan=False)`` writes: numpy integers → int,
    floats → float with NaN → null and ±inf → ``infinity`` (null by default; the experiments'
    claims.json writes ``"inf"``); dicts, lists, tuples and dataclass instances (as their fields'
    dict) converted item by item; anything else returned as it is."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else (infinity if math.isinf(value) else float(value))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {k: json_value(v, infinity) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(v, infinity) for v in value]
    return value


def export_to_json(results: ResultsLike, output_path: str, pretty: bool = True) -> None:
    """Write ``results`` as JSON ``{layer: [record, …]}``; NaN and ±Inf become null."""
    _check_results(results)
    payload = {
        name: [{column: json_value(v) for column, v in zip(df.columns, row)}
               for row in df.itertuples(index=False, name=None)]
        for name, df in results.items()
    }

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2 if pretty else None, allow_nan=False)

    _write_atomically(os.fspath(output_path), write)


def export_to_hdf5(results: ResultsLike, output_path: str, compression: str | None = "gzip",
                   compression_opts: int = 4, metadata: Mapping[str, Any] | None = None) -> None:
    """Write ``results`` as an ndt_fast run file (``ndt_fast.load`` reads it back).

    Every layer needs the same columns, with ``step`` among them. ``compression`` is accepted
    for ndtracker compatibility; the file is always gzip-compressed (level ``compression_opts``
    is ignored: the run format fixes it).
    """
    from ndt_fast.storage.hdf5 import RunFile  # h5py only when asked for

    _check_results(results)
    if compression not in ("gzip", "lzf", None):
        raise ValueError(f"compression must be 'gzip', 'lzf' or None, got {compression!r}")
    non_empty = {name: df for name, df in results.items() if len(df)}
    columns = next(iter(non_empty.values())).columns if non_empty else pd.Index(["step"])
    for name, df in non_empty.items():
        if list(df.columns) != list(columns):
            raise ValueError(f"layer {name!r} has columns {list(df.columns)}, expected {list(columns)}")
    if "step" not in columns:
        raise ValueError("results need a 'step' column")
    layout = RecordLayout(tuple(results), tuple(columns), (), ())
    output_path = os.fspath(output_path)

    def write(tmp: str) -> None:
        os.unlink(tmp)  # RunFile refuses to overwrite
        run = RunFile(tmp, layout, {"exported": True, **dict(metadata or {})})
        try:
            run.append({i: results[name][list(columns)].to_numpy(dtype=np.float64, na_value=np.nan)
                        for i, name in enumerate(results) if len(results[name])}, np.empty((0, 7)))
            run.flush()
        finally:
            run.close()

    _write_atomically(output_path, write)
