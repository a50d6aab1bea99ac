"""Reads back what an offline W&B run wrote, for the tests.

wandb 0.31 ships no Python reader for its ``run-<id>.wandb`` transaction log (the older
``wandb.sdk.internal.datastore`` is gone; its Go core reads the file). The file is a LevelDB-style
log — a 7-byte header (``:W&B``, 0xBEE1, version 0), then 32 KiB blocks of chunks, each
``crc32c (4) | length (2, little-endian) | type (1: full, 2: first, 3: middle, 4: last)`` — whose
records are wandb's own protobuf ``Record`` messages: they are parsed with wandb's schema
(``wandb.proto.wandb_internal_pb2``), and each history item's value is the JSON wandb encoded.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

_HEADER = b":W&B\xe1\xbe\x00"
_BLOCK = 32768
_CHUNK_HEADER = 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def records(path: Path) -> list[Any]:
    """Every ``wandb_internal_pb2.Record`` in the transaction log at ``path``, in order."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    if not data.startswith(_HEADER):
        raise ValueError(f"{path} is not a W&B transaction log (header {data[:7]!r})")
    out, pending, position = [], b"", len(_HEADER)
    while position + _CHUNK_HEADER <= len(data):
        left_in_block = _BLOCK - position % _BLOCK
        if left_in_block < _CHUNK_HEADER:  # block trailer: padding
            position += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[position:position + _CHUNK_HEADER])
        if kind == 0:  # zero padding up to the end of the block
            position += left_in_block
            continue
        payload = data[position + _CHUNK_HEADER:position + _CHUNK_HEADER + length]
        position += _CHUNK_HEADER + length
        pending = payload if kind in (_FULL, _FIRST) else pending + payload
        if kind in (_FULL, _LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            out.append(record)
            pending = b""
    return out


def history(run_dir: Path) -> dict[int, dict[str, Any]]:
    """``{step: {key: value}}`` of every history row the run in ``run_dir`` logged."""
    (log,) = run_dir.glob("run-*.wandb")
    rows: dict[int, dict[str, Any]] = {}
    for record in records(log):
        if record.WhichOneof("record_type") != "history":
            continue
        row = {"/".join(item.nested_key) if item.nested_key else item.key: json.loads(item.value_json)
               for item in record.history.item}
        rows.setdefault(int(row["_step"]), {}).update(row)
    return rows
