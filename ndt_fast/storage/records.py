"""The fixed-width record every sample and jump becomes, and the in-memory tables they land in.

A record is a row of float64 values, ``RecordLayout.width`` wide::

    sample:  [KIND_SAMPLE, layer index, step, stable_rank, …, rows, weight_*…]   (sample_columns)
    jump:    [KIND_JUMP,   layer index, step, metric index, rule index, z_score,
              value_before, value_after, NaN…]                                   (JUMP_COLUMNS)

float64 holds every integer field exactly (steps < 2**53). One width for both kinds lets one
native ring (``core.RecordRing``) carry them in the order they happened.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

# The header fields and jump columns come from the native schema (ndt_fast._schema).
from ndt_fast._schema import JUMP_COLUMNS, KIND_JUMP, KIND_SAMPLE, SAMPLE_OFFSET

# Columns stored and returned as int64 (cumulative_90 too, unless it holds NaN: not computed).
INTEGER_COLUMNS = frozenset({"step", "flags", "rows"})
INTEGER_IF_COMPLETE = frozenset({"cumulative_90", "weight_cumulative_90"})


@dataclass(frozen=True)
class RecordLayout:
    """What the columns of a run's records mean.

    Attributes:
        layer_names: tracked layers; a record's second field indexes this tuple.
        sample_columns: the per-layer table's columns (``step`` first).
        metric_names: metrics a jump record's ``metric`` field indexes.
        rule_names: detector rules a jump record's ``rule`` field indexes.
    """

    layer_names: tuple[str, ...]
    sample_columns: tuple[str, ...]
    metric_names: tuple[str, ...]
    rule_names: tuple[str, ...]

    def differences(self, other: RecordLayout, mine: str = "this layout", theirs: str = "the other") -> str:
        """What differs from ``other`` ("" when nothing), for a refused resume: per field, what
        only one side has (named ``mine`` / ``theirs``), or that the order differs."""
        parts = []
        for label, a, b in (("layers", self.layer_names, other.layer_names),
                            ("columns", self.sample_columns, other.sample_columns),
                            ("jump metrics", self.metric_names, other.metric_names),
                            ("jump rules", self.rule_names, other.rule_names)):
            if a == b:
                continue
            sides = [f"{[x for x in a if x not in b]} only in {mine}" if set(a) - set(b) else "",
                     f"{[x for x in b if x not in a]} only in {theirs}" if set(b) - set(a) else ""]
            said = ", ".join(side for side in sides if side) or f"the same in another order ({list(a)} vs {list(b)})"
            parts.append(f"{label}: {said}")
        return "; ".join(parts)

    @property
    def width(self) -> int:
        return SAMPLE_OFFSET + max(len(self.sample_columns), len(JUMP_COLUMNS))

    def sample_rows(self, layers: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Records for ``values`` (n × len(sample_columns)) of layers ``layers`` (n indices)."""
        out = np.full((len(values), self.width), np.nan)
        out[:, 0] = KIND_SAMPLE
        out[:, 1] = layers
        out[:, SAMPLE_OFFSET : SAMPLE_OFFSET + len(self.sample_columns)] = values
        return out

    def jump_rows(self, jumps: np.ndarray) -> np.ndarray:
        """Records for ``jumps`` (n × 7: layer index, then JUMP_COLUMNS)."""
        out = np.full((len(jumps), self.width), np.nan)
        out[:, 0] = KIND_JUMP
        out[:, 1 : 2 + len(JUMP_COLUMNS)] = jumps
        return out

    def split(self, rows: np.ndarray) -> tuple[dict[int, np.ndarray], np.ndarray]:
        """Records (n × width) → ({layer index: its sample values}, jumps n × 7 with layer first)."""
        kind = rows[:, 0]
        samples = rows[kind == KIND_SAMPLE]
        layer_of = samples[:, 1].astype(np.int64)
        by_layer = {
            int(i): samples[layer_of == i, SAMPLE_OFFSET : SAMPLE_OFFSET + len(self.sample_columns)]
            for i in np.unique(layer_of)
        }
        jumps = rows[kind == KIND_JUMP, 1 : 2 + len(JUMP_COLUMNS)]
        return by_layer, jumps


class GrowableTable:
    """Rows of float64 values, a fixed number of columns; amortised O(1) append of row blocks."""

    def __init__(self, n_columns: int, initial_capacity: int = 256) -> None:
        self._data = np.empty((initial_capacity, n_columns), dtype=np.float64)
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def extend(self, rows: np.ndarray) -> None:
        """Append ``rows`` (k × n_columns)."""
        needed = self._size + len(rows)
        if needed > len(self._data):
            grown = np.empty((max(needed, 2 * len(self._data)), self._data.shape[1]), dtype=np.float64)
            grown[: self._size] = self._data[: self._size]
            self._data = grown
        self._data[self._size : needed] = rows
        self._size = needed

    def rows(self) -> np.ndarray:
        """A copy of the rows so far, shape ``(len(self), n_columns)``."""
        return self._data[: self._size].copy()


class MemoryRecords:
    """Records kept in memory, per layer and for jumps (the sink when no file is written)."""

    def __init__(self, layout: RecordLayout) -> None:
        self.layout = layout
        self.samples = [GrowableTable(len(layout.sample_columns)) for _ in layout.layer_names]
        self.jumps = GrowableTable(1 + len(JUMP_COLUMNS))

    def add(self, rows: np.ndarray) -> None:
        by_layer, jumps = self.layout.split(rows)
        for layer, values in by_layer.items():
            self.samples[layer].extend(values)
        self.jumps.extend(jumps)


def samples_frame(columns: tuple[str, ...], values: np.ndarray) -> pd.DataFrame:
    """One layer's DataFrame from its sample values (k × len(columns)); integer columns as int64
    (float64 if they hold NaN or inf: only results exported with missing values do).
    No samples (a run killed before its first flush): an empty frame that still has the columns."""
    df = pd.DataFrame(np.asarray(values, dtype=np.float64).reshape(-1, len(columns)), columns=list(columns))
    for name in df.columns:
        if ((name in INTEGER_COLUMNS and np.isfinite(df[name]).all())
                or (name in INTEGER_IF_COMPLETE and len(df) and not df[name].isna().any())):
            df[name] = df[name].astype(np.int64)
    return df


def jumps_frame(layout: RecordLayout, jumps: np.ndarray) -> pd.DataFrame:
    """Jump records (k × 7, layer index first) → DataFrame ``layer, step, metric, rule, z_score,
    value_before, value_after`` with names instead of indices, ordered by step."""
    columns = ["layer", *JUMP_COLUMNS]
    if len(jumps) == 0:
        return pd.DataFrame({name: pd.Series(dtype=object if name in ("layer", "metric", "rule") else float)
                             for name in columns}).astype({"step": np.int64})
    df = pd.DataFrame(jumps, columns=columns)
    df["layer"] = [layout.layer_names[int(i)] for i in df["layer"]]
    df["metric"] = [layout.metric_names[int(i)] for i in df["metric"]]
    df["rule"] = [layout.rule_names[int(i)] for i in df["rule"]]
    df["step"] = df["step"].astype(np.int64)
    return df.sort_values(["step", "layer"], kind="stable").reset_index(drop=True)

