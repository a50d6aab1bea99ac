"""The run file's layout (format version 2: one 2-D table per layer, chunked by column) and the
runs written before it (version 1: a dataset per column): they load, display and resume as they
did; a version this release does not know is refused by name."""

from __future__ import annotations

import re

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

h5py = pytest.importorskip("h5py")
import models  # noqa: E402
from run_file_v1 import write_v1_copy  # noqa: E402

from ndt_fast import FastTracker  # noqa: E402
from ndt_fast.monitor.alert import Alert, alert_rows  # noqa: E402
from ndt_fast.storage import load  # noqa: E402
from ndt_fast.storage.hdf5 import RunFile  # noqa: E402
from ndt_fast.storage.run_format import FORMAT_VERSION, RunTables  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_env")


def mlp() -> nn.Sequential:
    return models.mlp(12, 10, 6, 3)


def tracked_run(path: Path, model: nn.Sequential, steps: range, **kwargs) -> FastTracker:
    tracker = FastTracker(model, layers=[model[0], model[2], model[4]], layer_names=["l0", "l1", "l2"],
                          sampling_frequency=2, output=path, **kwargs)
    models.sgd_steps(model, tracker, steps)
    tracker.close()
    return tracker


def with_jumps_and_alerts(path: Path) -> None:
    """Add two jumps and an alert to the closed run at ``path`` (through the real writer, resumed)."""
    with h5py.File(path, "r") as f:
        layout = RunTables(f).layout
    writer = RunFile(path, layout, {"added": "jumps"}, resume=True)
    writer.append({}, np.array([[0, 4, 0, 1, 5.5, 3.0, 1.0], [2, 10, 1, 0, -4.0, 2.0, 3.0]], dtype=np.float64),
                   alert_rows([Alert("bottleneck", ("l1", "l0"), 12, "narrow", {"ratio": 0.2})]))
    writer.flush()
    writer.close()


@pytest.fixture
def runs(tmp_path) -> tuple[Path, Path]:
    """(a version-2 run with samples, jumps and an alert; the same run in version 1)."""
    current, old = tmp_path / "v2.h5", tmp_path / "v1.h5"
    torch.manual_seed(0)
    tracked_run(current, mlp(), range(40))
    with_jumps_and_alerts(current)
    write_v1_copy(current, old)
    return current, old


def assert_same_run(a, b) -> None:
    assert list(a) == list(b)
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], check_exact=True)
    pd.testing.assert_frame_equal(a.jumps, b.jumps, check_exact=True)
    pd.testing.assert_frame_equal(a.alerts, b.alerts, check_exact=True)


def test_each_table_is_one_dataset_chunked_by_rows_while_written_and_by_column_once_closed(tmp_path):
    path = tmp_path / "run.h5"
    model = mlp()
    tracker = FastTracker(model, layers=[model[0], model[2]], output=path)
    model(torch.randn(8, 12))
    tracker.log(0, 1.0)
    tracker.get_results()  # (drains the records into the file and flushes it)
    with h5py.File(path, "r", swmr=True, locking=False) as f:  # (in the writer's process: its flags)
        assert f.attrs["format_version"] == FORMAT_VERSION == 2
        assert sorted(f) == ["alerts", "jumps", "layers"] and sorted(f["layers"]) == ["0", "1"]
        table = f["layers/0"]
        assert table.shape == (1, len(tracker.get_results()["Linear_0"].columns))
        assert table.chunks[1] == table.shape[1] and table.compression is None and f["jumps"].shape[1] == 7
    tracker.close()
    with h5py.File(path, "r") as f:
        assert [f[f"layers/{i}"].attrs["name"] for i in range(2)] == ["Linear_0", "Linear_1"]
        assert f["layers/0"].chunks[1] == 1 and f["layers/0"].compression == "gzip"


def test_a_version_1_run_loads_exactly_as_its_version_2_twin(runs):
    current, old = runs
    loaded = load(current)
    assert len(loaded.jumps) == 2 and len(loaded.alerts) == 1 and len(loaded["l0"]) == 20
    assert_same_run(load(old), loaded)
    assert load(old).metadata == loaded.metadata


def test_a_version_1_run_written_before_alerts_existed_loads_without_alerts(runs, tmp_path):
    current, _ = runs
    older = tmp_path / "no-alerts.h5"
    write_v1_copy(current, older, with_alerts=False)
    run = load(older)
    assert len(run.alerts) == 0 and list(run.alerts.columns) == list(load(current).alerts.columns)
    assert run["l2"]["step"].tolist() == list(range(0, 40, 2))


@pytest.mark.parametrize("with_alerts", [True, False])
def test_resuming_a_version_1_run_continues_it_in_version_2(runs, tmp_path, with_alerts):
    current, _ = runs
    old = tmp_path / "old.h5"
    write_v1_copy(current, old, with_alerts=with_alerts)
    before = load(old)
    torch.manual_seed(1)
    tracked_run(old, mlp(), range(30, 60), resume=True)  # restarted from step 30: 30..38 are not written again
    after = load(old)
    with h5py.File(old, "r") as f:
        assert f.attrs["format_version"] == 2
    for name in before:
        assert after[name]["step"].tolist() == list(range(0, 60, 2))
        pd.testing.assert_frame_equal(after[name].iloc[:20], before[name], check_exact=True)
    pd.testing.assert_frame_equal(after.jumps, before.jumps, check_exact=True)
    assert len(after.alerts) == len(before.alerts) == (1 if with_alerts else 0)
    assert len(after.metadata["resumes"]) == 2  # (the jumps' writer above, then this tracker)


def test_the_dashboard_shows_a_version_1_run_as_its_version_2_twin(runs):
    from ndt_fast.dashboard.runs import RunReader

    current, old = runs
    new_reader, old_reader = RunReader(current), RunReader(old)
    for layer in ("l0", "l2"):
        for metric in ("stable_rank", "effective_rank"):
            assert old_reader.view(layer, metric) == new_reader.view(layer, metric)
    rule = old_reader.rule_names[1]  # the first planted jump: layer 0, step 4, metric 0, rule 1
    assert old_reader.view("l0", "stable_rank")["jumps"][rule]["x"] == [4.0]
    for key in ("samples", "last_step"):
        assert old_reader.status()[key] == new_reader.status()[key]
    assert new_reader.status()["last_step"] == 38


@pytest.mark.parametrize("value", [2.5, "2", "two"])
def test_a_format_version_that_is_not_a_whole_number_is_refused_by_name(runs, value):
    """2.5 is not read as version 2, and text is refused as a run-file error naming the value."""
    current, _ = runs
    with h5py.File(current, "a") as f:
        f.attrs["format_version"] = value
    with pytest.raises(ValueError, match=f"format version {re.escape(repr(value))}; this release"):
        load(current)


def test_a_newer_format_version_is_refused_by_name(runs):
    from ndt_fast.dashboard.runs import RunFileError, RunReader

    current, _ = runs
    with h5py.File(current, "a") as f:
        f.attrs["format_version"] = 3
    with pytest.raises(ValueError, match="format version 3; this release of ndt_fast reads versions 1, 2"):
        load(current)
    with pytest.raises(RunFileError, match="format version 3"):
        RunReader(current)
    model = mlp()
    with pytest.raises(ValueError, match="cannot be resumed: .*format version 3"):
        FastTracker(model, layers=[model[0], model[2], model[4]], layer_names=["l0", "l1", "l2"], output=current,
                    resume=True)
    assert model[0]._forward_hooks == {}


def test_one_process_can_write_display_and_load_the_same_run(tmp_path):
    """A notebook that trains and watches the run in the same process: the dashboard's reader
    opens the file its own process is writing, load() works beside it, and the tracker's
    compressing rewrite at close() goes through with the reader open (which then follows the
    new file). HDF5 refused all three while handles differed in their locking flags."""
    from ndt_fast.dashboard.runs import RunReader

    path = tmp_path / "run.h5"
    model = mlp()
    tracker = FastTracker(model, layers=[model[0], model[2]], output=path)
    for step in range(6):
        model(torch.randn(8, 12))
        tracker.log(step, 1.0)
    tracker.get_results()  # (drains the records into the file and flushes it)
    reader = RunReader(path)
    try:
        assert reader.status()["samples"] == {"Linear_0": 6, "Linear_1": 6}
        assert load(path)["Linear_1"]["step"].tolist() == list(range(6))
        for step in range(6, 9):
            model(torch.randn(8, 12))
            tracker.log(step, 1.0)
        tracker.close()
        assert sum(tracker.errors.values()) == 0 and tracker._sink.stream.write_error is None
        assert reader.status()["last_step"] == 8
        assert reader.view("Linear_0", "stable_rank")["rows"] == 9
    finally:
        reader.close()
    with h5py.File(path, "r") as f:
        assert f["layers/0"].compression == "gzip"


@pytest.mark.parametrize("version", [1, 2])
def test_a_refused_resume_leaves_the_file_as_it_was(runs, version):
    """A resume refused for another layout must not rewrite the run: a version-1 file stays
    version 1 (readable by the release that wrote it), a finished file stays compressed."""
    path = {2: runs[0], 1: runs[1]}[version]
    before = path.read_bytes()
    model = mlp()
    with pytest.raises(ValueError, match="another layout"):
        FastTracker(model, layers=[model[0], model[2]], layer_names=["l0", "l1"], output=path, resume=True)
    assert path.read_bytes() == before
    with h5py.File(path, "r") as f:
        assert f.attrs["format_version"] == version


def test_a_write_that_fails_leaves_no_row_of_zeros_behind(tmp_path, monkeypatch):
    """A drain whose data write fails after its table grew (disk full, say): the writer stops
    writing (``write_error``), and the closed file holds only the samples written before, not a
    row of zeros at step 0 for the failed ones."""
    from ndt_fast.storage import run_format

    path = tmp_path / "run.h5"
    torch.manual_seed(0)
    model = mlp()
    tracker = FastTracker(model, layers=[model[0]], layer_names=["l0"], sampling_frequency=1, output=path)
    models.sgd_steps(model, tracker, range(5))
    assert tracker.flush_sinks()  # (drains the ring into the file and flushes it)
    tracker._sink.stream.sync()
    real_write = run_format.write_rows

    def failing_write(dataset, start, values):
        if dataset.name == "/layers/0":
            raise OSError("injected: no space left on device")
        real_write(dataset, start, values)

    monkeypatch.setattr(run_format, "write_rows", failing_write)
    models.sgd_steps(model, tracker, range(5, 8))
    tracker._sink.stream.sync()
    monkeypatch.undo()
    tracker.close()
    assert isinstance(tracker.write_error, OSError)
    assert tracker.get_results("l0")["step"].tolist() == list(range(8))  # all kept in memory
    on_disk = load(path)["l0"]["step"].tolist()
    assert on_disk == list(range(len(on_disk))) and 0 < len(on_disk) < 8
