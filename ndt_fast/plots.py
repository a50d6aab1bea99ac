"""Figures of tracked metrics, with ndtracker's plotting signatures (``ndt.visualization``).

    fig = plot_phases(tracker.get_results(), metric="stable_rank", title="MNIST MLP")
    fig = plot_metrics_comparison(results["fc1"], layer_name="fc1", save="fc1.png")
    fig = plot_jumps(results["fc1"], tracker.detect_jumps("fc1")["fc1"], metric="stable_rank")
    fig = plot_single_metric(results["fc1"], metric="stable_rank", layer_name="fc1")

Same parameters and defaults as ndt's ``plot_phases``, ``plot_metrics_comparison``,
``plot_jumps`` and ``plot_single_metric``, plus two keywords: ``title=`` (replaces the default
title) and ``save=`` (a path; the figure is written there, format from the suffix). Differences
from ndt, on purpose:

- Jump markers are drawn at ``Jump.step`` as a *training step*, i.e. at the x of the row whose
  ``step`` column equals it (ndt_fast's detector reports training steps; ndt's reports sample
  indices and draws them on the step axis). A jump whose step is not in the frame is a
  ``ValueError`` — the usual sign of index-based jumps or of a frame sliced after detection.
- Bad input is a ``ValueError`` naming the problem: an empty frame, no ``step`` column, a missing
  metric column (ndt silently skips it, or fails inside matplotlib when nothing is left), a
  series with no finite value. Isolated NaN/±inf values (e.g. samples flagged non-finite) are
  drawn as gaps.
- Rows are drawn in ``step`` order.
- Figures are ``matplotlib.figure.Figure`` objects made without pyplot, so nothing is
  registered in pyplot's global figure list (no leak across calls, works on any backend,
  thread-safe). Save them with ``save=`` or ``fig.savefig``; in Jupyter, ``display(fig)`` or
  leave the figure as the cell's last expression.

Needs matplotlib (and pandas for the inputs).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, Union

import numpy as np

try:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("ndt_fast.plots needs matplotlib: pip install 'ndt-fast[plots]' (or matplotlib)") from exc

import pandas as pd

StrPath = Union[str, os.PathLike]

#: ndt's default metrics for plot_metrics_comparison.
DEFAULT_METRICS = ("stable_rank", "participation_ratio", "cumulative_90", "nuclear_norm_ratio")

_METRIC_COLOR = "steelblue"
_LOSS_COLOR = "coral"
_JUMP_COLOR = "red"


class JumpLike(Protocol):
    """What plot_jumps reads from a jump: ``ndt_fast.jumps.Jump`` (or ndt's, with a step)."""

    step: int
    value_after: float


def _label(metric: str) -> str:
    return metric.replace("_", " ").title()


def _series(df: Any, metric: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, values)`` float64 ``(n,)`` of one metric, sorted by step; non-finite values → NaN."""
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"{where}: expected a pandas DataFrame, got {type(df).__name__}")
    if len(df) == 0:
        raise ValueError(f"{where}: the DataFrame is empty (no rows to plot)")
    if "step" not in df.columns:
        raise ValueError(f"{where}: the DataFrame has no 'step' column (columns: {list(df.columns)})")
    if metric not in df.columns:
        raise ValueError(f"{where}: no column {metric!r}; available: {[c for c in df.columns if c != 'step']}")
    try:
        steps = df["step"].to_numpy(dtype=np.float64, copy=True)
        # copy=True: the NaN fill below must not write into the caller's frame.
        values = df[metric].to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: 'step' and {metric!r} must be numeric ({exc})") from exc
    if not np.isfinite(steps).all():
        raise ValueError(f"{where}: the 'step' column has NaN/inf values")
    values[~np.isfinite(values)] = np.nan  # gaps, not spikes to ±inf
    if np.isnan(values).all():
        raise ValueError(f"{where}: every value of {metric!r} is NaN/inf; nothing to plot")
    order = np.argsort(steps, kind="stable")
    return steps[order], values[order]


def new_figure(figsize: tuple[float, float], layout: str | None = "constrained") -> Figure:
    """A pyplot-free Figure (no global state, safe off the main thread) of ``figsize`` inches.

    ``layout="constrained"`` (default) rather than tight_layout(): it also places a suptitle and
    twin axes, and needs no renderer at creation time. ``layout=None``: a fixed layout that the
    caller sets with ``subplots_adjust`` — saving a many-axes figure is then about twice as fast.
    """
    return Figure(figsize=figsize, layout=layout)


def _loss_twin(ax: Axes, df: pd.DataFrame) -> Axes | None:
    """Loss on a secondary y axis of ``ax`` when the frame has a loss with a finite value."""
    if "loss" not in df.columns:
        return None
    try:
        steps, loss = _series(df, "loss", "loss")
    except ValueError:
        return None  # no usable loss: the metric plot stands alone, as in ndt without a loss column
    twin = ax.twinx()
    twin.plot(steps, loss, linewidth=1, alpha=0.5, color=_LOSS_COLOR, linestyle="--", label="loss")
    twin.set_ylabel("Loss", color=_LOSS_COLOR)
    twin.tick_params(axis="y", labelcolor=_LOSS_COLOR)
    return twin


def _finish(fig: Figure, save: StrPath | None) -> Figure:
    if save is not None:
        path = os.fspath(save)
        try:
            fig.savefig(path)
        except OSError as exc:
            # Keep the subclass (PermissionError, FileNotFoundError, ...) but say what was being done.
            raise type(exc)(f"could not save the figure to {path!r}: {exc.strerror or exc}") from exc
    return fig


def plot_single_metric(
    df: pd.DataFrame,
    metric: str = "stable_rank",
    layer_name: str = "Layer",
    ax: Axes | None = None,
    show_loss: bool = True,
    figsize: tuple[float, float] = (12, 6),
    *,
    title: str | None = None,
    save: StrPath | None = None,
) -> Figure:
    """One metric of one layer over training, with the loss on a secondary y axis.

    ``ax``: draw into this Axes (its figure is returned) instead of a new ``figsize`` figure.
    The loss (dashed, right axis) is drawn when ``show_loss`` and the frame has a loss with a
    finite value. Title (default "{Metric} - {layer_name}"), ``save`` and the ValueErrors for bad
    frames as in :func:`plot_phases`.
    """
    steps, values = _series(df, metric, f"plot_single_metric: {layer_name}")
    if ax is None:
        fig = new_figure(figsize)
        ax = fig.add_subplot()
    else:
        fig = ax.get_figure()
    ax.plot(steps, values, linewidth=2, label=metric, color=_METRIC_COLOR)
    ax.set_xlabel("Training Step")
    ax.set_ylabel(_label(metric), color=_METRIC_COLOR)
    ax.tick_params(axis="y", labelcolor=_METRIC_COLOR)
    ax.grid(True, alpha=0.3)
    if show_loss:
        _loss_twin(ax, df)
    ax.set_title(title if title is not None else f"{_label(metric)} - {layer_name}", fontweight="bold")
    return _finish(fig, save)


def plot_phases(
    results_dict: Mapping[str, pd.DataFrame],
    metric: str = "stable_rank",
    figsize: tuple[float, float] = (15, 8),
    *,
    title: str | None = None,
    save: StrPath | None = None,
) -> Figure:
    """One metric of every layer over training, on one axes: ``{layer name: DataFrame}`` → Figure.

    Each frame needs a ``step`` column (x, training step) and ``metric`` (y); one line per layer,
    in the dict's order, labelled with its name. Returns a Figure with one Axes. ``ValueError``
    for an empty dict, or a layer whose frame is empty, lacks the column or has no finite value
    (the layer is named). ``save``: write the figure to this path (``OSError`` if impossible).
    """
    if not isinstance(results_dict, Mapping) or len(results_dict) == 0:
        raise ValueError("plot_phases: results_dict must be a non-empty {layer name: DataFrame} mapping")
    series = {name: _series(df, metric, f"plot_phases: layer {name!r}") for name, df in results_dict.items()}
    fig = new_figure(figsize)
    ax = fig.add_subplot()
    for name, (steps, values) in series.items():
        ax.plot(steps, values, linewidth=2, alpha=0.8, label=str(name))
    ax.set_xlabel("Training Step")
    ax.set_ylabel(_label(metric))
    ax.set_title(title if title is not None else f"{_label(metric)} Across Layers", fontweight="bold")
    ax.legend(loc="best")
    ax.grid(True, alpha=0.3)
    return _finish(fig, save)


def plot_metrics_comparison(
    df: pd.DataFrame,
    metrics: Sequence[str] | None = None,
    layer_name: str = "Layer",
    figsize: tuple[float, float] = (15, 10),
    *,
    title: str | None = None,
    save: StrPath | None = None,
) -> Figure:
    """Several metrics of one layer, one row of axes each, sharing the step axis.

    ``metrics=None`` plots those of :data:`DEFAULT_METRICS` the frame has (ValueError if none);
    an explicit list must all be columns (ValueError naming the missing ones). The loss, when the
    frame has one, is drawn on a secondary y axis of the last row. Returns a Figure with
    ``len(metrics)`` Axes (+1 twin for the loss); the title (default "Dimensionality Metrics -
    {layer_name}") is the figure's suptitle. ``save`` as in :func:`plot_phases`.
    """
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"plot_metrics_comparison: expected a pandas DataFrame, got {type(df).__name__}")
    if metrics is None:
        chosen = [m for m in DEFAULT_METRICS if m in df.columns]
        if not chosen:
            raise ValueError(
                f"plot_metrics_comparison: none of the default metrics {list(DEFAULT_METRICS)} is a column "
                f"(columns: {list(df.columns)})"
            )
    else:
        if isinstance(metrics, str):
            metrics = [metrics]  # a lone name, not its characters
        chosen = list(metrics)
        if not chosen:
            raise ValueError("plot_metrics_comparison: metrics is empty")
        missing = [m for m in chosen if m not in df.columns]
        if missing:
            raise ValueError(f"plot_metrics_comparison: no column(s) {missing}; available: {list(df.columns)}")
    series = [_series(df, m, f"plot_metrics_comparison: {layer_name}") for m in chosen]
    fig = new_figure(figsize)
    axes = fig.subplots(len(chosen), 1, sharex=True, squeeze=False)[:, 0]
    for ax, metric, (steps, values) in zip(axes, chosen, series):
        ax.plot(steps, values, linewidth=2, color=_METRIC_COLOR)
        ax.set_ylabel(_label(metric))
        ax.grid(True, alpha=0.3)
    _loss_twin(axes[-1], df)
    axes[-1].set_xlabel("Training Step")
    fig.suptitle(title if title is not None else f"Dimensionality Metrics - {layer_name}", fontweight="bold")
    return _finish(fig, save)


def plot_jumps(
    df: pd.DataFrame,
    jumps: Sequence[JumpLike],
    metric: str = "stable_rank",
    layer_name: str = "Layer",
    figsize: tuple[float, float] = (14, 6),
    *,
    title: str | None = None,
    save: StrPath | None = None,
) -> Figure:
    """A metric over training with its detected jumps marked.

    ``jumps``: ``ndt_fast.jumps.Jump`` objects (from ``FastTracker.detect_jumps``), whose ``step``
    is a training step: each is drawn as a dashed vertical line at x = step and a marker on the
    curve at that row's value (``value_after`` if that value is NaN). Returns a Figure with one
    Axes holding the metric line, one vertical line per jump and one marker collection (none
    when ``jumps`` is empty). ``ValueError`` for the bad frames of :func:`plot_phases`, or for a
    jump whose step is not one of the frame's steps. ``save`` as in :func:`plot_phases`.
    """
    where = f"plot_jumps: {layer_name}"
    steps, values = _series(df, metric, where)
    jumps = list(jumps)
    xs: list[float] = []
    ys: list[float] = []
    for jump in jumps:
        step = float(jump.step)
        hit = np.flatnonzero(steps == step)
        if hit.size == 0:
            raise ValueError(
                f"{where}: a jump at step {jump.step} is not a step of this DataFrame "
                f"(steps {steps[0]:g}..{steps[-1]:g}); Jump.step must be a training step from the 'step' column "
                f"(ndt's own detector reports sample indices instead)"
            )
        y = values[hit[-1]]
        xs.append(step)
        ys.append(float(jump.value_after) if math.isnan(y) else float(y))
    fig = new_figure(figsize)
    ax = fig.add_subplot()
    ax.plot(steps, values, linewidth=2, color=_METRIC_COLOR, label=metric)
    for x in xs:
        ax.axvline(x=x, color=_JUMP_COLOR, linestyle="--", alpha=0.3, linewidth=1)
    if jumps:
        ax.scatter(xs, ys, color=_JUMP_COLOR, s=100, zorder=5, marker="o", edgecolors="darkred", linewidths=2,
                   label=f"Jumps (n={len(jumps)})")
    ax.set_xlabel("Training Step")
    ax.set_ylabel(_label(metric))
    ax.set_title(title if title is not None else f"Dimensionality Jumps - {layer_name}", fontweight="bold")
    ax.legend(loc="best")
    ax.grid(True, alpha=0.3)
    return _finish(fig, save)


__all__ = ["DEFAULT_METRICS", "plot_jumps", "plot_metrics_comparison", "plot_phases", "plot_single_metric"]
