"""What an alert is, and the one table form it takes in memory, in a run file and in a DataFrame.

An :class:`Alert` names the rule that raised it, the layer(s) it is about (the first is the
layer the alert is *for*; a rule comparing layers names the other ones after it), the training
step of the sample at which the rule's condition was confirmed, a one-line message, and the
evidence values the rule compared with its thresholds (``{name: float}``).

Storage (``ndt_fast.storage.hdf5``, group ``/alerts``) keeps one row per alert in fixed-width
columns, because an HDF5 file written in SWMR mode can only grow datasets it already has:
``step`` int64, ``rule`` / ``layers`` / ``message`` / ``evidence`` as UTF-8 bytes of at most
:data:`TEXT_WIDTHS` bytes (``layers`` and ``evidence`` as JSON). Text longer than its column is
cut at a character boundary; evidence that would not fit is replaced by ``{"truncated": 1}``
rather than stored as broken JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

__all__ = ["ALERT_COLUMNS", "Alert", "TEXT_WIDTHS", "alert_rows", "alerts_frame", "alerts_from_rows"]

#: Bytes per stored text column (numpy ``S<n>`` dtypes in memory and in the run file).
TEXT_WIDTHS = {"rule": 32, "layers": 256, "message": 512, "evidence": 1024}
#: The columns of the stored alerts table, in order (``step`` is int64, the others text).
ALERT_COLUMNS = ("step", "rule", "layers", "message", "evidence")
#: The structured dtype of stored alert rows.
ALERT_DTYPE = np.dtype([("step", np.int64)] + [(name, f"S{TEXT_WIDTHS[name]}") for name in ALERT_COLUMNS[1:]])


@dataclass(frozen=True)
class Alert:
    """One alert: ``rule`` (its name), ``layers`` (the layer it is for first), ``step`` (training
    step of the sample that confirmed it), ``message`` (one line), ``evidence`` ({name: value})."""

    rule: str
    layers: tuple[str, ...]
    step: int
    message: str
    evidence: Mapping[str, float] = field(default_factory=dict)

    @property
    def layer(self) -> str:
        """The layer the alert is for (``layers[0]``)."""
        return self.layers[0]


def _cut(text: str, width: int) -> bytes:
    data = text.encode("utf-8")
    if len(data) <= width:
        return data
    return data[:width].decode("utf-8", errors="ignore").encode("utf-8")  # whole characters only


def _finite_or_none(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) else None  # JSON has no NaN/inf


def alert_rows(alerts: Iterable[Alert]) -> np.ndarray:
    """Alerts → structured rows (``ALERT_DTYPE``, shape (n,)), as the run file stores them."""
    alerts = list(alerts)
    rows = np.zeros(len(alerts), dtype=ALERT_DTYPE)
    for i, a in enumerate(alerts):
        evidence = json.dumps({k: _finite_or_none(v) for k, v in a.evidence.items()})
        if len(evidence.encode("utf-8")) > TEXT_WIDTHS["evidence"]:
            evidence = '{"truncated": 1}'
        rows[i] = (a.step, _cut(a.rule, TEXT_WIDTHS["rule"]), _cut(json.dumps(list(a.layers)), TEXT_WIDTHS["layers"]),
                   _cut(a.message, TEXT_WIDTHS["message"]), evidence.encode("utf-8"))
    return rows


def _json(data: bytes, fallback: object) -> object:
    try:
        return json.loads(data.decode("utf-8"))
    except ValueError:  # cut by the column width (a long list of layer names)
        return fallback


def alerts_from_rows(rows: np.ndarray) -> list[Alert]:
    """Stored rows (``ALERT_DTYPE``) → Alerts (evidence ``None`` values come back as NaN)."""
    out = []
    for row in rows:
        evidence = _json(bytes(row["evidence"]), {})
        layers = _json(bytes(row["layers"]), [bytes(row["layers"]).decode("utf-8", errors="replace")])
        out.append(Alert(bytes(row["rule"]).decode("utf-8"), tuple(str(x) for x in layers), int(row["step"]),
                         bytes(row["message"]).decode("utf-8"),
                         {str(k): (math.nan if v is None else float(v)) for k, v in dict(evidence).items()}))
    return out


def alerts_frame(alerts: Iterable[Alert]) -> pd.DataFrame:
    """DataFrame ``step, rule, layer, layers, message, evidence`` ordered by step (``layer``:
    the layer the alert is for; ``layers``: tuple; ``evidence``: dict). No alerts: the same
    columns, no rows."""
    alerts = sorted(alerts, key=lambda a: a.step)
    df = pd.DataFrame({"step": pd.Series([a.step for a in alerts], dtype=np.int64),
                       "rule": pd.Series([a.rule for a in alerts], dtype=object),
                       "layer": pd.Series([a.layer for a in alerts], dtype=object),
                       "layers": pd.Series([a.layers for a in alerts], dtype=object),
                       "message": pd.Series([a.message for a in alerts], dtype=object),
                       "evidence": pd.Series([dict(a.evidence) for a in alerts], dtype=object)})
    return df.reset_index(drop=True)
