"""Interactive Plotly figures with ndtracker's names and signatures (``ndt.visualization.interactive``).

    fig = create_interactive_plot(results["fc1"], layer_name="fc1"); fig.write_html("fc1.html")
    fig = create_multi_layer_plot(tracker.get_results(), metric="stable_rank")
    fig = create_dashboard(ndt_fast.load("run.h5"), layer_name="fc1")

Each returns a ``plotly.graph_objects.Figure`` with the traces, subplot titles and layout of
ndt 2.0.0's function of the same name, so code written for ndt keeps working. They take
``get_results()`` frames, a loaded run (``ndt_fast.load``), or — for the functions that take a
``{layer: DataFrame}`` mapping — the path of a run file. ``plot_single_metric`` is a matplotlib
figure in ndt too; it lives beside the other matplotlib plots in ``ndt_fast.plots``.

Bad input is a ``ValueError`` naming the problem: not a DataFrame / mapping, an empty mapping,
a frame without a ``step`` column, ``create_dashboard`` for a layer that is not in the mapping.
A metric column a frame lacks is skipped, as ndt does. NaN values are drawn as gaps.

For a run of 10⁶ samples per layer these figures hold every point (as ndt's do); to look at such
a run, ``ndt-fast dashboard`` / ``ndt-fast report`` downsample for display.

Needs plotly (``pip install "ndt-fast[dashboard]"``) and pandas.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Union

import pandas as pd

try:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError('ndt_fast.interactive needs plotly: pip install "ndt-fast[dashboard]" (or plotly)') from exc

Results = Union[Mapping[str, pd.DataFrame], str, os.PathLike]

#: ndt's four metrics, the default of create_interactive_plot and the panels of create_dashboard.
NDT_METRICS = ("stable_rank", "participation_ratio", "cumulative_90", "nuclear_norm_ratio")
_PANEL_TITLES = {"stable_rank": "Stable Rank", "participation_ratio": "Participation Ratio",
                 "cumulative_90": "Cumulative 90%", "nuclear_norm_ratio": "Nuclear Norm Ratio",
                 "loss": "Training Loss", "grad_norm": "Gradient Norm"}


def _title(name: str) -> str:
    return name.replace("_", " ").title()


def _frame(df: object, where: str) -> pd.DataFrame:
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"{where}: expected a pandas DataFrame, got {type(df).__name__}")
    if "step" not in df.columns:
        raise ValueError(f"{where}: the DataFrame has no 'step' column (columns: {list(df.columns)})")
    return df


def _results(results_dict: Results, where: str) -> Mapping[str, pd.DataFrame]:
    if isinstance(results_dict, (str, os.PathLike)):
        from ndt_fast.storage import load

        results_dict = load(results_dict)
    if not isinstance(results_dict, Mapping) or len(results_dict) == 0:
        raise ValueError(f"{where}: expected a non-empty {{layer name: DataFrame}} mapping or a run file path, "
                         f"got {type(results_dict).__name__}")
    for name, df in results_dict.items():
        _frame(df, f"{where}: layer {name!r}")
    return results_dict


def _line(df: pd.DataFrame, column: str, name: str, **extra: object) -> go.Scatter:
    return go.Scatter(x=df["step"], y=df[column], mode="lines", name=name, **extra)


def create_interactive_plot(
    df: pd.DataFrame,
    metrics: Sequence[str] | None = None,
    layer_name: str = "Layer",
    show_loss: bool = True,
) -> go.Figure:
    """One layer's metrics, one subplot row each (300 px), plus the loss in a last row.

    ``metrics`` default: ndt's four; those the frame lacks are skipped. The loss row is there
    when ``show_loss`` and the frame has a ``loss`` column. Returns a Figure with one line trace
    per row, titled "Dimensionality Metrics - {layer_name}". ValueError for a bad frame.
    """
    df = _frame(df, "create_interactive_plot")
    chosen = [m for m in (NDT_METRICS if metrics is None else ([metrics] if isinstance(metrics, str) else metrics))
              if m in df.columns]
    with_loss = show_loss and "loss" in df.columns
    rows = len(chosen) + int(with_loss)
    if rows == 0:
        raise ValueError(f"create_interactive_plot: none of {list(metrics or NDT_METRICS)} is a column, and no "
                         f"loss to show (columns: {list(df.columns)})")
    fig = make_subplots(rows=rows, cols=1, vertical_spacing=0.05,
                        subplot_titles=[_title(m) for m in chosen] + (["Loss"] if with_loss else []))
    for row, metric in enumerate(chosen, start=1):
        fig.add_trace(_line(df, metric, _title(metric), line=dict(width=2),
                            hovertemplate=f"Step: %{{x}}<br>{metric}: %{{y:.2f}}<extra></extra>"), row=row, col=1)
    if with_loss:
        fig.add_trace(_line(df, "loss", "Loss", line=dict(width=2, color="coral"),
                            hovertemplate="Step: %{x}<br>Loss: %{y:.3f}<extra></extra>"), row=rows, col=1)
    fig.update_layout(title_text=f"Dimensionality Metrics - {layer_name}", title_font_size=18, height=300 * rows,
                      showlegend=False, hovermode="x unified")
    fig.update_xaxes(title_text="Training Step", row=rows, col=1)
    return fig


def create_multi_layer_plot(results_dict: Results, metric: str = "stable_rank") -> go.Figure:
    """``metric`` of every layer on one axes, a line per layer (layers without it are skipped).

    ``results_dict``: ``{layer: DataFrame}`` (``get_results()``, ``ndt_fast.load``) or a run file
    path. Returns a Figure titled "{Metric} Across Layers". ValueError for bad input.
    """
    results = _results(results_dict, "create_multi_layer_plot")
    fig = go.Figure()
    for name, df in results.items():
        if metric in df.columns:
            fig.add_trace(_line(df, metric, name, line=dict(width=2),
                                hovertemplate=f"{name}<br>Step: %{{x}}<br>{metric}: %{{y:.2f}}<extra></extra>"))
    fig.update_layout(title=f"{_title(metric)} Across Layers", title_font_size=18, xaxis_title="Training Step",
                      yaxis_title=_title(metric), hovermode="x unified", height=600,
                      legend=dict(yanchor="top", y=0.99, xanchor="left", x=0.01))
    return fig


def create_dashboard(results_dict: Results, layer_name: str | None = None) -> go.Figure:
    """A grid of panels: with ``layer_name``, that layer's four metrics, loss and gradient norm
    (3 × 2); without, each of the four metrics across all layers (2 × 2, legend once).

    ``results_dict`` as in :func:`create_multi_layer_plot`. Columns a frame lacks leave their
    panel empty. ValueError for bad input or a ``layer_name`` not in the mapping.
    """
    results = _results(results_dict, "create_dashboard")
    if layer_name is not None:
        if layer_name not in results:
            raise ValueError(f"create_dashboard: no layer {layer_name!r}; layers: {list(results)}")
        panels = (*NDT_METRICS, "loss", "grad_norm")
        fig = make_subplots(rows=3, cols=2, subplot_titles=[_PANEL_TITLES[p] for p in panels],
                            vertical_spacing=0.1, horizontal_spacing=0.1)
        df = results[layer_name]
        for i, column in enumerate(panels):
            if column in df.columns:
                fig.add_trace(_line(df, column, _title(column), line=dict(width=2), showlegend=False),
                              row=i // 2 + 1, col=i % 2 + 1)
        fig.update_layout(title_text=f"Comprehensive Dashboard - {layer_name}", title_font_size=20, height=900)
    else:
        fig = make_subplots(rows=2, cols=2, subplot_titles=[_PANEL_TITLES[m] for m in NDT_METRICS],
                            vertical_spacing=0.12, horizontal_spacing=0.1)
        for i, metric in enumerate(NDT_METRICS):
            for name, df in results.items():
                if metric in df.columns:
                    fig.add_trace(_line(df, metric, name, line=dict(width=2), showlegend=i == 0),
                                  row=i // 2 + 1, col=i % 2 + 1)
        fig.update_layout(title_text="Multi-Layer Comparison Dashboard", title_font_size=20, height=800)
    fig.update_xaxes(title_text="Training Step")
    return fig


__all__ = ["NDT_METRICS", "create_dashboard", "create_interactive_plot", "create_multi_layer_plot"]
