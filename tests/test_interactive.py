"""ndt's four remaining figure functions, called as ndt's own docstring examples call them, on a
real tracked run (``get_results()`` frames and the same run loaded from its file): the figures
equal ndt 2.0.0's on the same frames, trace for trace."""

from __future__ import annotations

import json

import numpy as np
import pytest

pd = pytest.importorskip("pandas")
pytest.importorskip("plotly")
pytest.importorskip("h5py")
torch = pytest.importorskip("torch")
ndt_interactive = pytest.importorskip("ndt.visualization.interactive")
ndt_plots = pytest.importorskip("ndt.visualization.plots")

import ndt_fast  # noqa: E402
from ndt_fast import FastTracker  # noqa: E402
from dashboard_runs import train  # noqa: E402
from models import mlp  # noqa: E402


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """(get_results(), the run file's path) of a 60-step MLP run with the gradient norm."""
    path = tmp_path_factory.mktemp("run") / "run.h5"
    torch.manual_seed(0)
    model = mlp(12, 10, 8, 3)
    with FastTracker(model, sampling_frequency=2, output=path, flush_interval=0.2) as tracker:
        train(model, tracker, 60, 12)
        results = tracker.get_results()
    return results, path


@pytest.fixture(params=["get_results", "loaded"])
def results(request, tracked):
    live, path = tracked
    return live if request.param == "get_results" else ndt_fast.load(path)


def as_json(fig) -> dict:
    """The whole figure (traces, layout, subplot titles) as plain JSON values."""
    return json.loads(fig.to_json())


def test_create_interactive_plot_equals_ndts(results):
    df = results["Linear_0"]
    ours = ndt_fast.create_interactive_plot(df, layer_name="Linear_0")
    theirs = ndt_interactive.create_interactive_plot(df, layer_name="Linear_0")
    assert [t.name for t in ours.data] == ["Stable Rank", "Participation Ratio", "Cumulative 90", "Nuclear Norm Ratio",
                                           "Loss"]
    np.testing.assert_array_equal(ours.data[0].y, df["stable_rank"].to_numpy())
    assert as_json(ours) == as_json(theirs)
    narrow = ndt_fast.create_interactive_plot(df, metrics=["stable_rank", "no_such"], show_loss=False)
    assert as_json(narrow) == as_json(ndt_interactive.create_interactive_plot(df, metrics=["stable_rank", "no_such"],
                                                                              show_loss=False))


def test_create_multi_layer_plot_equals_ndts(results):
    ours = ndt_fast.create_multi_layer_plot(results, metric="stable_rank")
    assert [t.name for t in ours.data] == list(results)
    assert as_json(ours) == as_json(ndt_interactive.create_multi_layer_plot(dict(results), metric="stable_rank"))


@pytest.mark.parametrize("layer_name", ["Linear_0", None])
def test_create_dashboard_equals_ndts(results, layer_name):
    ours = ndt_fast.create_dashboard(results, layer_name=layer_name)
    expected_traces = 6 if layer_name else 4 * len(results)
    assert len(ours.data) == expected_traces
    assert as_json(ours) == as_json(ndt_interactive.create_dashboard(dict(results), layer_name=layer_name))


def test_plot_single_metric_draws_ndts_lines(results):
    """ndt's plot_single_metric is a matplotlib figure: the same metric line and loss line."""
    df = results["Linear_1"]
    ours = ndt_fast.plot_single_metric(df, metric="stable_rank", layer_name="Linear_1")
    theirs = ndt_plots.plot_single_metric(df, metric="stable_rank", layer_name="Linear_1")
    try:
        assert len(ours.axes) == len(theirs.axes) == 2  # the metric and the loss twin
        for mine, ndts in zip(ours.axes, theirs.axes):
            assert mine.get_title() == ndts.get_title()
            assert mine.get_ylabel() == ndts.get_ylabel()
            (a,), (b,) = mine.get_lines(), ndts.get_lines()
            np.testing.assert_array_equal(a.get_xdata(), b.get_xdata())
            np.testing.assert_array_equal(a.get_ydata(), b.get_ydata())
            assert a.get_color() == b.get_color()
    finally:
        import matplotlib.pyplot as plt

        plt.close(theirs)  # ndt's figure is registered with pyplot; ours is not


def test_plot_single_metric_draws_into_a_given_axes(results):
    from matplotlib.figure import Figure

    figure = Figure()
    left, right = figure.subplots(1, 2)
    assert ndt_fast.plot_single_metric(results["Linear_0"], ax=right, show_loss=False) is figure
    assert len(right.get_lines()) == 1 and len(left.get_lines()) == 0 and len(figure.axes) == 2  # no loss twin


def test_a_run_file_path_works_where_a_mapping_does(tracked):
    _, path = tracked
    assert as_json(ndt_fast.create_multi_layer_plot(str(path))) == as_json(
        ndt_fast.create_multi_layer_plot(ndt_fast.load(path)))


@pytest.mark.parametrize("call, match", [
    (lambda: ndt_fast.create_interactive_plot([1, 2]), "expected a pandas DataFrame"),
    (lambda: ndt_fast.create_interactive_plot(pd.DataFrame({"x": [1.0]})), "no 'step' column"),
    (lambda: ndt_fast.create_interactive_plot(pd.DataFrame({"step": [1]}), show_loss=False), "none of"),
    (lambda: ndt_fast.create_multi_layer_plot({}), "non-empty"),
    (lambda: ndt_fast.create_multi_layer_plot({"a": pd.DataFrame({"x": [1.0]})}), "layer 'a'"),
    (lambda: ndt_fast.create_dashboard({"a": pd.DataFrame({"step": [1]})}, layer_name="b"), "no layer 'b'"),
    (lambda: ndt_fast.plot_single_metric(pd.DataFrame({"step": [1]})), "no column 'stable_rank'"),
])
def test_bad_input_is_a_value_error_naming_it(call, match):
    with pytest.raises(ValueError, match=match):
        call()
