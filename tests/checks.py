"""Comparison helpers shared by the test modules (what "matches the reference" means)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

from reference import METRIC_NAMES, Reference

#: Relative tolerance of every float metric against the float64 reference.
RTOL = 1e-5
#: Width of the "knife edge" around the energy threshold inside which a cumulative count one off
#: the reference's is accepted (see Reference.knife_edge).
KNIFE_EDGE = 1e-6


def _close(got: float, want: float, rtol: float) -> bool:
    if math.isnan(want):
        return math.isnan(got)
    return abs(got - want) <= rtol * abs(want)


def metric_mismatches(
    got: Mapping[str, float],
    ref: Reference,
    *,
    names: Iterable[str] = METRIC_NAMES,
    rtol: float = RTOL,
    knife_edge: float = KNIFE_EDGE,
) -> list[str]:
    """Human-readable list of the metrics in ``got`` that do not match ``ref`` (empty if all do).

    An all-zero reference matrix expects every metric to be exactly 0 (the library's definition;
    the textbook formulas are 0/0 there). ``cumulative_90`` must equal the reference exactly; only
    when some cumulative energy ratio of the reference lies within ``knife_edge`` of the threshold
    may it be one off, because there the crossing index is decided by round-off in the last bits.
    """
    bad = []
    for name in names:
        g = float(got[name])
        if ref.is_zero:
            if g != 0.0:
                bad.append(f"{name}: got {g!r}, want exactly 0 for an all-zero matrix")
            continue
        w = ref[name]
        if name == "cumulative_90":
            if g == w:
                continue
            if ref.knife_edge(knife_edge) and abs(g - w) <= 1:
                continue
            bad.append(f"{name}: got {g!r}, want {w!r} (knife edge: {ref.knife_edge(knife_edge)})")
        elif not _close(g, w, rtol):
            rel = abs(g - w) / abs(w) if w else math.inf
            bad.append(f"{name}: got {g!r}, want {w!r} (rel err {rel:.3g} > {rtol:g})")
    return bad


def assert_metrics_match(got: Mapping[str, float], ref: Reference, context: str = "", **kwargs) -> None:
    bad = metric_mismatches(got, ref, **kwargs)
    assert not bad, f"{context}: " + "; ".join(bad)
