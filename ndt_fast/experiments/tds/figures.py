"""The article's Figs. 2–5 for one seed, as PNG files (:func:`write_figures`), drawn with
:mod:`ndt_fast.plots` on pyplot-free figures."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ndt_fast.experiments.tds.article import ARTICLE_EVERY, DIM_LAYER, FIGURES, LOW_EVERY
from ndt_fast.experiments.tds.claims import ClaimRow
from ndt_fast.experiments.tds.training import RunData, sampling_intervals
from ndt_fast.plots import new_figure


def text_figure(path: Path, title: str, message: str) -> None:
    """A PNG that says why a figure could not be drawn (so every figure file exists)."""
    fig = new_figure((8, 3), layout=None)
    fig.text(0.5, 0.6, title, ha="center", fontweight="bold")
    fig.text(0.5, 0.4, message, ha="center", wrap=True)
    fig.savefig(path, dpi=100)


def write_figures(run: RunData, out_dir: Path, rows: Sequence[ClaimRow]) -> list[Path]:
    """Figs. 2–5 of the article for one seed, as PNG files in ``out_dir``; returns their paths.

    A figure whose data cannot be drawn (e.g. every value NaN after a diverged run) is replaced by a
    PNG stating the reason, so that all four files exist."""
    from ndt_fast.plots import plot_metrics_comparison, plot_phases

    results, freq = run.results, run.freq
    by_id = {row.claim.id: row for row in rows}
    paths = [out_dir / FIGURES[k] for k in ("fig2", "fig3", "fig4", "fig5")]
    dpi = 100

    def fig2() -> Any:
        return plot_phases(results, metric="stable_rank", figsize=(11, 5.5),
                           title=f"Fig. 2 — activation stable rank per layer (sampled every {freq} steps)")

    def fig3() -> Any:
        rho = by_id["C5"].values.get("pearson")
        rho_text = "undefined" if rho is None or math.isnan(rho.mean) else f"{rho.mean:+.3f}"
        return plot_metrics_comparison(results[DIM_LAYER], metrics=["stable_rank"], layer_name=DIM_LAYER,
                                       figsize=(11, 5.5),
                                       title=f"Fig. 3 — {DIM_LAYER} activation stable rank (left) vs loss (right): "
                                             f"ρ = {rho_text} (article: −0.951)")

    def fig4() -> Any:
        # Fig. 4 compares every 5 with every 50 steps: the run's own series when it is every 5 (or
        # coarser), its every-5 subsample when finer; every 50 when the samples subsample to it.
        available = sampling_intervals(freq)
        high = ARTICLE_EVERY if ARTICLE_EVERY in available else freq
        intervals = [high] + ([LOW_EVERY] if LOW_EVERY in available and LOW_EVERY != high else [])
        fig = new_figure((13, 8.5), layout=None)  # fixed layout: see new_figure
        axes = fig.subplots(len(results), len(intervals), sharex=True, squeeze=False)
        for r, (name, df) in enumerate(results.items()):
            for c, every in enumerate(intervals):
                ax = axes[r, c]
                rows_ = df[df["step"].to_numpy() % every == 0]
                ax.plot(rows_["step"], rows_["stable_rank"], color="steelblue", linewidth=1)
                found = run.jumps[("activation", every)][name]
                if found:
                    xs = [j.step for j in found]
                    ys = rows_.set_index("step").loc[xs, "stable_rank"].to_numpy()
                    ax.scatter(xs, ys, color="red", s=18, zorder=5)
                ax.set_title(f"{name}, every {every} steps: {len(found)} jumps", fontsize=10)
                ax.grid(True, alpha=0.3)
                if c == 0:
                    ax.set_ylabel("stable rank")
                if r == len(results) - 1:
                    ax.set_xlabel("training step")
        missing = "" if LOW_EVERY in intervals else f" (every {LOW_EVERY}: not available from samples every {freq})"
        fig.suptitle(f"Fig. 4 — jumps (ndt's rule) in the activation stable rank, every {high} vs every {LOW_EVERY} "
                     f"steps{missing}", fontweight="bold")
        fig.subplots_adjust(left=0.06, right=0.99, bottom=0.06, top=0.91, hspace=0.3, wspace=0.12)
        return fig

    def fig5() -> Any:
        fig = new_figure((11, 8), layout=None)
        top, bottom = fig.subplots(2, 1, sharex=True)
        for name, df in results.items():
            n_act = len(run.jumps[("activation", freq)][name])
            n_w = len(run.jumps[("weight", freq)][name])
            top.plot(df["step"], df["stable_rank"], linewidth=1, label=f"{name} ({n_act} jumps)")
            bottom.plot(df["step"], df["weight_stable_rank"], linewidth=1.5, label=f"{name} ({n_w} jumps)")
        top.set_ylabel("activation stable rank")
        bottom.set_ylabel("weight stable rank")
        bottom.set_yscale("log")
        bottom.set_xlabel("training step")
        for ax in (top, bottom):
            ax.grid(True, alpha=0.3)
            ax.legend(loc="best", fontsize=9)
        fig.suptitle(f"Fig. 5 — activation space vs weight space (sampled every {freq} steps; jumps: ndt's rule)",
                     fontweight="bold")
        fig.subplots_adjust(left=0.08, right=0.98, bottom=0.07, top=0.93, hspace=0.08)
        return fig

    for path, build in zip(paths, (fig2, fig3, fig4, fig5)):
        try:
            figure = build()
        except (ValueError, KeyError) as error:  # nothing drawable: say so in the file
            text_figure(path, path.stem, f"not drawn: {error}")
            continue
        figure.savefig(path, dpi=dpi)
    return paths

