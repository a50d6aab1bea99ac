"""The record schema, as the native core defines it (``csrc/include/ndt/record_schema.h``).

Every Python module takes column names and offsets from here, and here takes them from the
binding's exports: one definition, in the native header. Also the one rule that decides which
Gram a matrix is measured through.
"""

from __future__ import annotations

from ndt_fast._native import core

#: A metric record (one matrix): the six metrics, then trace, lambda_max, flags.
METRIC_COLUMNS: tuple[str, ...] = tuple(core.RECORD_COLUMNS)
METRIC_NAMES: tuple[str, ...] = METRIC_COLUMNS[:6]
METRIC_WIDTH = len(METRIC_COLUMNS)
FLAGS_AT = METRIC_COLUMNS.index("flags")
#: A layer's table: ndt's columns first, then the extras; weight columns follow with track_weights.
SAMPLE_COLUMNS: tuple[str, ...] = tuple(core.SAMPLE_COLUMNS)
NDT_COLUMNS: tuple[str, ...] = SAMPLE_COLUMNS[: SAMPLE_COLUMNS.index("grad_norm") + 1]
EXTRA_COLUMNS: tuple[str, ...] = SAMPLE_COLUMNS[len(NDT_COLUMNS):]
WEIGHT_COLUMNS: tuple[str, ...] = tuple(core.WEIGHT_COLUMNS)
JUMP_COLUMNS: tuple[str, ...] = tuple(core.JUMP_COLUMNS)
#: Record header: (kind, layer index) before a sample's or a jump's columns.
SAMPLE_OFFSET = len(core.RECORD_HEADER)
KIND_SAMPLE: int = core.KIND_SAMPLE
KIND_JUMP: int = core.KIND_JUMP
#: Flag of a row whose sample met a caught error (in a hook or the computation): metrics NaN.
FLAG_TRACKER_ERROR: int = core.FLAG_TRACKER_ERROR
#: Online detector rules, in the native rule tags' order (JumpEvent::rule).
JUMP_RULES: tuple[str, ...] = ("ndt", "default")


def gram_side(rows: int, cols: int, window: int = 1) -> tuple[str, int]:
    """``(side, dim)`` of the Gram a ``rows × cols`` matrix is measured through.

    One batch (``window == 1``): the smaller one, ``("sample", rows)`` (XXᵀ) when rows < cols,
    else ``("feature", cols)`` (XᵀX) — same nonzero eigenvalues, less work. A window of several
    batches can only be summed on the feature side (DESIGN.md, "Accumulation").
    """
    if window == 1 and rows < cols:
        return "sample", rows
    return "feature", cols
