"""ndt_fast.plots: figure structure, jump markers at training steps, bad input, saving."""

from __future__ import annotations

import ast
import importlib.util
import inspect
from pathlib import Path

import numpy as np
import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("matplotlib")

from matplotlib.collections import PathCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ndt_fast import plots  # noqa: E402
from ndt_fast.jumps import Jump  # noqa: E402
from ndt_fast.plots import plot_jumps, plot_metrics_comparison, plot_phases  # noqa: E402

COLUMNS = ("stable_rank", "participation_ratio", "cumulative_90", "nuclear_norm_ratio", "loss", "grad_norm")


def make_frame(rng: np.random.Generator, n: int = 40, every: int = 5, start: int = 0) -> pd.DataFrame:
    """A FastTracker-like frame: training steps start, start+every, ... and ndt's columns + extras."""
    data = {"step": np.arange(start, start + n * every, every, dtype=np.int64)}
    for c in COLUMNS:
        data[c] = rng.uniform(1.0, 10.0, n)
    data["effective_rank"] = rng.uniform(1.0, 10.0, n)
    data["flags"] = np.zeros(n, np.int32)
    return pd.DataFrame(data)


@pytest.fixture
def results(rng) -> dict[str, pd.DataFrame]:
    return {name: make_frame(rng) for name in ("fc1", "fc2", "fc3")}


@pytest.fixture
def df(rng) -> pd.DataFrame:
    return make_frame(rng)


def lines(ax):
    return list(ax.get_lines())


# ---- plot_phases -------------------------------------------------------------------------------


def test_phases_one_line_per_layer(results):
    fig = plot_phases(results, metric="participation_ratio")
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    got = lines(ax)
    assert [ln.get_label() for ln in got] == list(results)
    for ln, frame in zip(got, results.values()):
        np.testing.assert_array_equal(ln.get_xdata(), frame["step"].to_numpy())
        np.testing.assert_array_equal(ln.get_ydata(), frame["participation_ratio"].to_numpy())
    assert ax.get_title() == "Participation Ratio Across Layers"
    assert ax.get_xlabel() == "Training Step"
    assert tuple(fig.get_size_inches()) == (15, 8)  # ndt's default figsize


def test_phases_title_and_figsize(results):
    fig = plot_phases(results, "stable_rank", (6, 4), title="MNIST MLP, every 5 steps")
    assert fig.axes[0].get_title() == "MNIST MLP, every 5 steps"
    assert tuple(fig.get_size_inches()) == (6, 4)


def test_phases_sorts_by_step(rng):
    frame = make_frame(rng, n=10).sample(frac=1.0, random_state=0)
    (ln,) = lines(plot_phases({"a": frame}).axes[0])
    assert np.all(np.diff(ln.get_xdata()) > 0)
    order = np.argsort(frame["step"].to_numpy())
    np.testing.assert_array_equal(ln.get_ydata(), frame["stable_rank"].to_numpy()[order])


def test_phases_bad_input(results, rng):
    with pytest.raises(ValueError, match="non-empty"):
        plot_phases({})
    with pytest.raises(ValueError, match="non-empty"):
        plot_phases([make_frame(rng)])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"layer 'fc2'.*no column 'rank'"):
        plot_phases({"fc2": results["fc2"]}, metric="rank")
    bad = dict(results, fc3=results["fc3"].drop(columns="stable_rank"))
    with pytest.raises(ValueError, match=r"layer 'fc3'.*no column 'stable_rank'"):
        plot_phases(bad)
    with pytest.raises(ValueError, match=r"layer 'fc1'.*empty"):
        plot_phases(dict(results, fc1=results["fc1"].iloc[:0]))
    with pytest.raises(ValueError, match="no 'step' column"):
        plot_phases({"x": results["fc1"].drop(columns="step")})
    with pytest.raises(ValueError, match="expected a pandas DataFrame"):
        plot_phases({"x": {"step": [1], "stable_rank": [2.0]}})  # type: ignore[dict-item]


# ---- NaN / inf ---------------------------------------------------------------------------------


def test_nan_and_inf_are_gaps_and_input_untouched(df):
    df.loc[3, "stable_rank"] = np.nan
    df.loc[7, "stable_rank"] = np.inf
    before = df.copy()
    (ln,) = lines(plot_phases({"a": df}).axes[0])
    y = np.asarray(ln.get_ydata())
    assert np.isnan(y[3]) and np.isnan(y[7]) and np.isfinite(np.delete(y, [3, 7])).all()
    pd.testing.assert_frame_equal(df, before)  # the caller's frame is not modified


def test_all_nan_metric_is_an_error(df):
    df["stable_rank"] = np.nan
    for call in (lambda: plot_phases({"fc1": df}), lambda: plot_jumps(df, []),
                 lambda: plot_metrics_comparison(df, ["stable_rank"])):
        with pytest.raises(ValueError, match="every value of 'stable_rank' is NaN"):
            call()


def test_nan_step_is_an_error(df):
    df["step"] = df["step"].astype(float)
    df.loc[2, "step"] = np.nan
    with pytest.raises(ValueError, match="'step' column has NaN"):
        plot_jumps(df, [])


def test_non_numeric_metric_is_an_error(df):
    df["stable_rank"] = "high"
    with pytest.raises(ValueError, match="must be numeric"):
        plot_phases({"a": df})


# ---- plot_metrics_comparison -------------------------------------------------------------------


def test_comparison_default_metrics_with_loss(df):
    fig = plot_metrics_comparison(df, layer_name="fc1")
    # four metric rows + the loss twin of the last row
    assert len(fig.axes) == 5
    rows, twin = fig.axes[:4], fig.axes[4]
    assert [ax.get_ylabel() for ax in rows] == ["Stable Rank", "Participation Ratio", "Cumulative 90",
                                                "Nuclear Norm Ratio"]
    for ax, metric in zip(rows, plots.DEFAULT_METRICS):
        (ln,) = lines(ax)
        np.testing.assert_array_equal(ln.get_ydata(), df[metric].to_numpy())
    (loss,) = lines(twin)
    np.testing.assert_array_equal(loss.get_ydata(), df["loss"].to_numpy())
    assert fig.get_suptitle() == "Dimensionality Metrics - fc1"
    assert rows[0].get_shared_x_axes().joined(rows[0], rows[3])
    assert tuple(fig.get_size_inches()) == (15, 10)


def test_comparison_explicit_metrics_without_loss(df):
    fig = plot_metrics_comparison(df.drop(columns="loss"), ["effective_rank", "grad_norm"], title="custom")
    assert len(fig.axes) == 2
    assert fig.get_suptitle() == "custom"
    fig = plot_metrics_comparison(df.drop(columns="loss"), "effective_rank")  # a lone name
    assert len(fig.axes) == 1


def test_comparison_defaults_keep_available_ones(df):
    fig = plot_metrics_comparison(df.drop(columns=["cumulative_90", "nuclear_norm_ratio", "loss"]))
    assert [ax.get_ylabel() for ax in fig.axes] == ["Stable Rank", "Participation Ratio"]


def test_comparison_all_nan_loss_is_left_out(df):
    df["loss"] = np.nan
    assert len(plot_metrics_comparison(df).axes) == 4


def test_comparison_bad_input(df):
    with pytest.raises(ValueError, match=r"no column\(s\) \['nope'\]"):
        plot_metrics_comparison(df, ["stable_rank", "nope"])
    with pytest.raises(ValueError, match="metrics is empty"):
        plot_metrics_comparison(df, [])
    with pytest.raises(ValueError, match="none of the default metrics"):
        plot_metrics_comparison(df[["step", "loss"]])
    with pytest.raises(ValueError, match="empty"):
        plot_metrics_comparison(df.iloc[:0])
    with pytest.raises(ValueError, match="expected a pandas DataFrame"):
        plot_metrics_comparison(df.to_dict())  # type: ignore[arg-type]


# ---- plot_jumps --------------------------------------------------------------------------------


def test_jump_markers_at_training_steps(rng):
    # Sampled every 5 steps from step 100: rows 4 and 13 are training steps 120 and 165.
    df = make_frame(rng, n=30, every=5, start=100)
    jumps = [Jump(120, 4.2, 1.0, 2.0, "fc1_stable_rank"), Jump(165, 3.5, 2.0, 1.0, "fc1_stable_rank")]
    fig = plot_jumps(df, jumps, metric="stable_rank", layer_name="fc1")
    (ax,) = fig.axes
    curve, *vlines = lines(ax)
    np.testing.assert_array_equal(curve.get_xdata(), df["step"].to_numpy())
    assert [ln.get_xdata()[0] for ln in vlines] == [120, 165]
    assert all(ln.get_xdata()[0] == ln.get_xdata()[1] for ln in vlines)  # vertical
    (markers,) = [c for c in ax.collections if isinstance(c, PathCollection)]
    offsets = markers.get_offsets()
    np.testing.assert_array_equal(offsets[:, 0], [120, 165])
    np.testing.assert_array_equal(offsets[:, 1], df["stable_rank"].to_numpy()[[4, 13]])
    assert ax.get_title() == "Dimensionality Jumps - fc1"
    assert "Jumps (n=2)" in [t.get_text() for t in ax.get_legend().get_texts()]
    assert tuple(fig.get_size_inches()) == (14, 6)


def test_jumps_from_the_detector_land_on_their_rows(rng):
    # The tracker's recipe: detector indices → the step column (as FastTracker.detect_jumps does).
    from ndt_fast.jumps import JumpDetector

    df = make_frame(rng, n=80, every=5)
    df.loc[50:, "stable_rank"] += 40.0
    values = df["stable_rank"].to_numpy()
    steps = df["step"].to_numpy()
    found = JumpDetector().detect_indices(values)
    assert found
    jumps = [Jump(int(steps[i]), z, float(values[i - 1]), float(values[i]), "stable_rank") for i, z in found]
    ax = plot_jumps(df, jumps, title="t").axes[0]
    (markers,) = [c for c in ax.collections if isinstance(c, PathCollection)]
    np.testing.assert_array_equal(markers.get_offsets()[:, 0], [steps[i] for i, _ in found])
    np.testing.assert_array_equal(markers.get_offsets()[:, 1], [values[i] for i, _ in found])
    assert ax.get_title() == "t"


def test_no_jumps(df):
    ax = plot_jumps(df, []).axes[0]
    assert len(lines(ax)) == 1
    assert not [c for c in ax.collections if isinstance(c, PathCollection)]


def test_jump_at_nan_value_uses_value_after(df):
    df.loc[6, "stable_rank"] = np.nan
    ax = plot_jumps(df, [Jump(30, 5.0, 1.0, 7.5, "stable_rank")]).axes[0]
    (markers,) = [c for c in ax.collections if isinstance(c, PathCollection)]
    np.testing.assert_array_equal(markers.get_offsets()[0], [30, 7.5])


def test_jump_not_at_a_step_is_an_error(df):
    # An index-based (ndt-style) jump: 7 is a sample index, not one of the steps 0, 5, 10, ...
    with pytest.raises(ValueError, match=r"jump at step 7 is not a step .*training step"):
        plot_jumps(df, [Jump(7, 5.0, 1.0, 2.0, "stable_rank")])


def test_jumps_bad_frame(df):
    with pytest.raises(ValueError, match="no column 'rank'"):
        plot_jumps(df, [], metric="rank")
    with pytest.raises(ValueError, match="empty"):
        plot_jumps(df.iloc[:0], [])


# ---- saving, pyplot state, signatures ----------------------------------------------------------


@pytest.mark.parametrize("suffix, magic", [(".png", b"\x89PNG"), (".pdf", b"%PDF"), (".svg", b"<?xml")])
def test_save(tmp_path, results, df, suffix, magic):
    jumps = [Jump(20, 4.0, 1.0, 2.0, "stable_rank")]
    for i, call in enumerate((lambda p: plot_phases(results, save=p),
                              lambda p: plot_metrics_comparison(df, save=p),
                              lambda p: plot_jumps(df, jumps, save=str(p)))):
        path = tmp_path / f"fig{i}{suffix}"
        assert isinstance(call(path), Figure)
        assert path.read_bytes().startswith(magic)


def test_save_to_unwritable_path(tmp_path, df):
    with pytest.raises(FileNotFoundError, match="could not save the figure to .*no_such_dir"):
        plot_phases({"a": df}, save=tmp_path / "no_such_dir" / "f.png")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(OSError, match="could not save the figure to .*a_file"):
        plot_jumps(df, [], save=blocker / "f.png")


def test_unknown_format_is_an_error(tmp_path, df):
    with pytest.raises(ValueError, match="not supported"):
        plot_phases({"a": df}, save=tmp_path / "f.notaformat")


def test_no_pyplot_figures_leak(results, df):
    plt = pytest.importorskip("matplotlib.pyplot")
    before = plt.get_fignums()
    plot_phases(results)
    plot_metrics_comparison(df)
    plot_jumps(df, [])
    assert plt.get_fignums() == before


def _ndt_plot_signatures() -> dict[str, list[tuple[str, str | None]]]:
    """ndt's parameters (name, default source) read from its source, without importing it
    (importing ndt.visualization changes matplotlib's global style via seaborn)."""
    spec = importlib.util.find_spec("ndt")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("ndtracker is not installed")
    source = Path(next(iter(spec.submodule_search_locations))) / "visualization" / "plots.py"
    out = {}
    for node in ast.parse(source.read_text()).body:
        if isinstance(node, ast.FunctionDef) and node.name in ("plot_phases", "plot_metrics_comparison", "plot_jumps"):
            args = node.args.args
            defaults = [None] * (len(args) - len(node.args.defaults)) + [ast.unparse(d) for d in node.args.defaults]
            out[node.name] = [(a.arg, d) for a, d in zip(args, defaults)]
    return out


def test_signatures_match_ndt():
    signatures = _ndt_plot_signatures()
    assert len(signatures) == 3
    for name, params in signatures.items():
        ours = inspect.signature(getattr(plots, name)).parameters
        positional = [p for p in ours.values() if p.kind is p.POSITIONAL_OR_KEYWORD]
        assert [p.name for p in positional] == [n for n, _ in params], name
        for p, (_, default) in zip(positional, params):
            if default is not None:
                assert p.default == ast.literal_eval(default), (name, p.name)
        assert ours["title"].kind is ours["title"].KEYWORD_ONLY and ours["save"].default is None
