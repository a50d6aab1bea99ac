"""Storage: the native ring, the record stream, HDF5 run files (live, crashed, resumed, failing),
loaders and exports. The crash and live-reader tests run a tracked training in a subprocess."""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import ndt_fast
from models import run_python, sgd_steps, steps_of
from ndt_fast import FastTracker
from ndt_fast._native import core
from ndt_fast._schema import SAMPLE_COLUMNS
from ndt_fast.storage import export_to_csv, export_to_hdf5, export_to_json, load
from ndt_fast.storage.hdf5 import RunFile
from ndt_fast.storage.records import RecordLayout
from ndt_fast.storage.stream import RecordStream

h5py = pytest.importorskip("h5py")
CHILD = Path(__file__).with_name("tracked_run_child.py")
NDT_COLUMNS = ["step", "stable_rank", "participation_ratio", "cumulative_90", "nuclear_norm_ratio", "loss",
               "grad_norm"]


pytestmark = pytest.mark.usefixtures("torch_env")


def mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(12, 10), nn.ReLU(), nn.Linear(10, 6), nn.ReLU(), nn.Linear(6, 3))


train = sgd_steps  # (the loop of tests/models.py)


def tracker_for(model: nn.Sequential, **kwargs) -> FastTracker:
    return FastTracker(model, layers=[model[0], model[2], model[4]], layer_names=["l0", "l1", "l2"], **kwargs)


def assert_same_results(a: dict[str, pd.DataFrame], b: dict[str, pd.DataFrame]) -> None:
    assert list(a) == list(b)
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name], check_exact=True)


# ---- the native ring ----------------------------------------------------------------------------


def test_ring_keeps_order_across_wraps_and_refuses_what_does_not_fit(rng):
    ring = core.RecordRing(5, 3)
    expected = []
    next_value = 0.0
    for _ in range(200):
        n = int(rng.integers(0, 4))
        rows = np.arange(next_value, next_value + 3 * n).reshape(n, 3)
        if ring.push(rows):
            expected.extend(rows.tolist())
            next_value += 3 * n
        else:
            assert len(ring) + n > 5  # refused only when it does not fit; nothing appended
        if rng.random() < 0.5:
            k = int(rng.integers(0, 6))
            got = ring.pop(k).tolist()
            assert got == expected[: len(got)] and len(got) == min(k, len(expected))
            del expected[: len(got)]
        assert ring.peek().tolist() == expected and len(ring) == len(expected)
    assert ring.total_pushed == next_value / 3


def test_ring_rejects_bad_arguments():
    with pytest.raises(ValueError, match="capacity"):
        core.RecordRing(0, 3)
    with pytest.raises(ValueError, match="width"):
        core.RecordRing(3, 0)
    ring = core.RecordRing(3, 2)
    with pytest.raises(ValueError, match="2 columns"):
        ring.push(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="2 columns"):
        ring.push(np.zeros(2))
    with pytest.raises(ValueError, match="max_count"):
        ring.pop(-1)


def test_user_errors_of_the_core_name_the_problem_without_the_build_machines_paths():
    """ValueErrors from the native checks (NDT_CHECK_ARG) carry the message only: no source file,
    no line, no path of the machine that built the wheel."""
    for bad in (lambda: core.RecordRing(0, 3), lambda: core.RecordRing(3, 2).push(np.zeros((1, 3))),
                lambda: core.SampleFinisher(0, eps=1e-10, energy_threshold=0.9, center=False, metrics=63,
                                            weight_metrics=63, track_weights=False, detect_jumps=True)):
        with pytest.raises(ValueError) as caught:
            bad()
        message = str(caught.value)
        assert message and not any(mark in message for mark in ("csrc", ".cpp", ".h:", "/")), message


# ---- the record stream ---------------------------------------------------------------------------

LAYOUT = RecordLayout(("a", "b"), ("step", "value"), ("value",), ("ndt", "default"))


def sample_rows(steps: np.ndarray, layer: int) -> np.ndarray:
    return LAYOUT.sample_rows(np.full(len(steps), layer), np.stack([steps, steps * 0.5], axis=1))


def test_memory_stream_keeps_every_record_in_order_with_a_tiny_ring():
    stream = RecordStream(LAYOUT, capacity=3, output=None, flush_interval=1.0)
    for start in range(0, 100, 2):
        stream.append(sample_rows(np.array([start, start + 1.0]), layer=start % 4 // 2))
    stream.append(sample_rows(np.arange(100.0, 110.0), layer=0))  # more rows than the ring holds
    samples, jumps = stream.results()
    expected_a = [s for s in range(100) if s % 4 < 2] + list(range(100, 110))
    assert samples[0][:, 0].tolist() == expected_a
    assert samples[1][:, 0].tolist() == [s for s in range(100) if s % 4 >= 2]
    np.testing.assert_array_equal(samples[0][:, 1], samples[0][:, 0] * 0.5)
    assert jumps.shape == (0, 7)


def test_stream_listeners_see_every_record_once_in_order_and_cannot_break_storage(caplog):
    stream = RecordStream(LAYOUT, capacity=3, output=None, flush_interval=1.0)
    got: list[np.ndarray] = []
    stream.listeners.append(lambda rows: 1 / 0)  # a failing consumer is logged, nothing more
    stream.listeners.append(got.append)
    for start in range(0, 40, 2):
        stream.append(sample_rows(np.array([start, start + 1.0]), layer=0))
    samples, _ = stream.results()
    seen = np.concatenate(got)
    assert seen[:, 2].tolist() == list(range(40)) == samples[0][:, 0].tolist()
    assert any("record listener failed" in r.getMessage() for r in caplog.records)


def test_a_lagging_writer_spills_rows_and_writes_them_in_order(tmp_path):
    run = RunFile(tmp_path / "r.h5", LAYOUT, {})
    stream = RecordStream(LAYOUT, capacity=2, output=run, flush_interval=60.0)  # the writer waits 30 s
    for step in range(50):
        stream.append(sample_rows(np.array([float(step)]), layer=0))
    assert stream.spilled == 48
    samples, _ = stream.results()
    assert samples[0][:, 0].tolist() == list(range(50))
    stream.close()
    assert load(tmp_path / "r.h5")["a"]["step"].tolist() == list(range(50))


# ---- the tracker with a run file ----------------------------------------------------------------------


def test_output_file_holds_exactly_what_memory_mode_records(tmp_path):
    model = mlp()
    path = tmp_path / "run.h5"
    in_memory = tracker_for(model, sampling_frequency=3)
    on_disk = tracker_for(model, sampling_frequency=3, output=path, flush_interval=0.05, track_weights=True)
    train(model, on_disk, range(60))
    train(model, in_memory, range(0))  # both hooked the same forwards: in_memory logged nothing yet
    in_memory.close()
    results = on_disk.get_results()
    assert [len(df) for df in results.values()] == [20, 20, 20]
    assert list(results["l0"].columns[:7]) == NDT_COLUMNS
    assert results["l0"]["grad_norm"].isna().all()
    on_disk.close()
    loaded = load(path)
    assert_same_results(dict(loaded), results)
    assert loaded.jumps.empty
    meta = loaded.metadata
    assert meta["tracker"]["layers"] == ["l0", "l1", "l2"] and meta["tracker"]["sampling_frequency"] == 3
    assert meta["model"]["class"] == "Sequential" and meta["model"]["parameters"] == sum(
        p.numel() for p in model.parameters())
    assert meta["versions"]["ndt_fast"] == ndt_fast.__version__ and "T" in meta["start_time"]
    assert on_disk.get_results()["l2"].equals(results["l2"])  # still readable after close


def test_file_and_memory_modes_give_identical_rows(tmp_path, seed):
    results = []
    for output in (None, tmp_path / "run.h5"):
        torch.manual_seed(seed)
        model = mlp()
        tracker = tracker_for(model, sampling_frequency=2, output=output, capacity=4, flush_interval=0.02)
        train(model, tracker, range(40), grad_norm=True)
        results.append(tracker.get_results())
        tracker.close()
    assert_same_results(results[0], results[1])
    assert results[0]["l1"]["grad_norm"].tolist() == [1.0 + s for s in range(0, 40, 2)]


def test_resume_appends_without_duplicating_steps(tmp_path):
    path = tmp_path / "run.h5"
    model = mlp()
    first = tracker_for(model, sampling_frequency=5, output=path)
    train(model, first, range(100))
    first.close()
    second = tracker_for(model, sampling_frequency=5, output=path, resume=True)
    train(model, second, range(50, 200))  # restarted from an older checkpoint: 50..95 again
    steps = second.get_results()["l0"]["step"].tolist()
    second.close()
    assert steps == list(range(0, 200, 5))
    loaded = load(path)
    assert loaded["l1"]["step"].tolist() == list(range(0, 200, 5))
    assert len(loaded.metadata["resumes"]) == 1


def test_resume_refuses_a_run_with_other_layers(tmp_path):
    path = tmp_path / "run.h5"
    model = mlp()
    tracker_for(model, output=path).close()
    with pytest.raises(ValueError, match=r"another layout.*\(layers: \['l0', 'l1', 'l2'\] only in the file, \['Linear_0'\] only in this tracker\)"):
        FastTracker(model, layers=[model[0]], output=path, resume=True)
    with pytest.raises(ValueError, match=r"columns: \['weight_stable_rank', .*\] only in this tracker"):
        tracker_for(model, output=path, resume=True, track_weights=True)
    assert model._forward_hooks == {} and model[0]._forward_hooks == {}


@pytest.mark.parametrize("case", ["exists", "directory", "no-folder", "read-only-folder", "type", "resume-no-output"])
def test_bad_output_paths_fail_at_construction(tmp_path, case):
    model = mlp()
    kwargs: dict = {"output": tmp_path / "run.h5"}
    expected: type[Exception] = ValueError
    if case == "exists":
        (tmp_path / "run.h5").write_bytes(b"not mine")
        match = "exists; pass resume=True"
    elif case == "directory":
        kwargs["output"], match = tmp_path, "is a directory"
    elif case == "no-folder":
        kwargs["output"], match = tmp_path / "missing" / "run.h5", "does not exist"
    elif case == "read-only-folder":
        if os.geteuid() == 0:
            pytest.skip("root can write into a read-only folder")
        os.chmod(tmp_path, 0o500)
        match = "not writable"
    elif case == "type":
        kwargs["output"], expected, match = 3, TypeError, "file path"
    else:
        kwargs = {"resume": True}
        match = "needs output"
    with pytest.raises(expected, match=match):
        tracker_for(model, **kwargs)
    assert all(m._forward_hooks == {} for m in model)
    if case == "exists":
        assert (tmp_path / "run.h5").read_bytes() == b"not mine"


def test_a_root_owned_unwritable_location_fails_at_construction():
    model = mlp()
    with pytest.raises(ValueError, match="output="):
        tracker_for(model, output="/proc/ndt_fast_run.h5")


@pytest.mark.parametrize("kwargs,match", [({"capacity": 0}, "capacity"), ({"capacity": 2.5}, "capacity"),
                                          ({"flush_interval": 0}, "flush_interval"),
                                          ({"flush_interval": float("nan")}, "flush_interval")])
def test_bad_storage_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        tracker_for(mlp(), **kwargs)


@pytest.mark.parametrize("failure", ["disk-full", "file-removed"])
def test_a_write_failure_is_reported_once_and_loses_nothing(tmp_path, caplog, monkeypatch, failure):
    path = tmp_path / "run.h5"
    model = mlp()
    tracker = tracker_for(model, sampling_frequency=1, output=path, flush_interval=0.02)
    train(model, tracker, range(30))
    tracker.get_results()  # a committed part in the file
    if failure == "disk-full":
        def full(self, *args):
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(RunFile, "append", full)
    else:
        os.unlink(path)
    with caplog.at_level(logging.ERROR, logger="ndt_fast.storage.stream"):
        train(model, tracker, range(30, 60))
        time.sleep(0.1)  # the writer thread meets the failure
        train(model, tracker, range(60, 90))
        results = tracker.get_results()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "kept in memory" in errors[0].getMessage()
    assert tracker.write_error is not None
    for df in results.values():
        assert df["step"].tolist() == list(range(90))
    tracker.close()
    assert tracker.get_results()["l2"]["step"].tolist() == list(range(90))


# ---- crash safety and live reading (subprocesses) ---------------------------------------------------


def start_child(path: Path, flush_interval: float, steps: int) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, str(CHILD), str(path), str(flush_interval), str(steps)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready", child.stderr.read()
    return child


def test_sigkill_loses_at_most_the_last_flush_interval(tmp_path, seed):
    """Kill a tracked run at random moments; every record logged more than one flush interval
    before the kill is in the file, and the file opens."""
    flush_interval = 0.3
    chooser = random.Random(seed)
    for attempt in range(3):
        path = tmp_path / f"run{attempt}.h5"
        child = start_child(path, flush_interval, steps=100000)
        logged: list[tuple[int, float]] = []
        deadline = time.monotonic() + chooser.uniform(0.5, 2.0)
        while time.monotonic() < deadline:
            line = child.stdout.readline().split()
            logged.append((int(line[1]), float(line[2])))
        child.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        out, _ = child.communicate()
        logged.extend((int(w[1]), float(w[2])) for w in (ln.split() for ln in out.splitlines()) if w[0] == "logged")
        assert child.returncode == -signal.SIGKILL
        run = load(path)  # opens although the writer died mid-run
        must_have = [step for step, t in logged if t < killed_at - flush_interval]
        assert len(must_have) > 20, "the run was killed too early to test anything"
        for name in ("Linear_0", "Linear_1", "Linear_2"):
            steps = run[name]["step"].tolist()
            assert steps[: len(must_have)] == must_have, (attempt, name, len(steps), len(must_have))
            assert steps == list(range(len(steps)))  # nothing partial or out of order
        # and the run can go on in the same file
        model = nn.Sequential(nn.Linear(32, 24), nn.ReLU(), nn.Linear(24, 16), nn.ReLU(), nn.Linear(16, 4))
        resumed = FastTracker(model, layers=[model[0], model[2], model[4]], output=path, resume=True)
        resumed.close()


def test_a_run_killed_before_its_first_flush_loads_as_empty_tables_with_columns(tmp_path):
    """Killed right after set-up (a flush interval of an hour: nothing flushed yet): load() gives
    every layer an empty DataFrame that still has the table's columns, so ``df["step"]`` works;
    plain h5py opens the file as a SWMR reader, as the README says."""
    path = tmp_path / "run.h5"
    child = start_child(path, flush_interval=3600.0, steps=100000)
    assert child.stdout.readline().split()[0] == "logged"  # a few records exist, none is on disk
    child.send_signal(signal.SIGKILL)
    child.communicate()
    run = load(path)
    assert list(run) == ["Linear_0", "Linear_1", "Linear_2"]
    for df in run.values():
        assert len(df) == 0 and list(df.columns) == list(SAMPLE_COLUMNS)
        assert df["step"].tolist() == [] and df["step"].dtype == np.int64
    assert len(run.jumps) == 0 and "step" in run.jumps.columns
    with pytest.raises(OSError, match="already open for write"):  # the killed writer's flag is still set
        h5py.File(path, "r")
    with h5py.File(path, "r", swmr=True) as f:
        assert f["layers/0"].attrs["name"] == "Linear_0" and len(f["layers/0"]) == 0


def test_a_second_process_reads_the_file_while_it_grows(tmp_path):
    path = tmp_path / "live.h5"
    child = start_child(path, flush_interval=0.1, steps=100000)
    reader = ("import sys, time, ndt_fast.storage as s\n"
              "sizes = []\n"
              "for _ in range(6):\n"
              "    sizes.append(len(s.load(sys.argv[1])['Linear_0']))\n"
              "    time.sleep(0.3)\n"
              "print(*sizes)\n")
    try:
        time.sleep(0.3)
        done = subprocess.run([sys.executable, "-c", reader, str(path)], capture_output=True, text=True, timeout=120)
    finally:
        child.kill()
        child.communicate()
    assert done.returncode == 0, done.stderr
    sizes = [int(v) for v in done.stdout.split()]
    assert len(sizes) == 6 and sizes[-1] > sizes[0] > 0
    assert sizes == sorted(sizes)


def test_a_second_writer_is_refused_while_the_run_is_live(tmp_path):
    path = tmp_path / "live.h5"
    child = start_child(path, flush_interval=0.1, steps=100000)
    try:
        model = nn.Sequential(nn.Linear(32, 24), nn.ReLU(), nn.Linear(24, 16), nn.ReLU(), nn.Linear(16, 4))
        with pytest.raises(ValueError, match="another process"):
            FastTracker(model, layers=[model[0], model[2], model[4]], output=path, resume=True)
    finally:
        child.kill()
        child.communicate()


# ---- exports ----------------------------------------------------------------------------------------------


@pytest.fixture
def finished_results(tmp_path) -> dict[str, pd.DataFrame]:
    model = mlp()
    tracker = tracker_for(model, sampling_frequency=1)
    train(model, tracker, range(400))  # grad_norm left at None, as ndt's default
    tracker.close()
    return tracker.get_results()


def test_csv_export_round_trips(tmp_path, finished_results):
    export_to_csv(finished_results, str(tmp_path / "all.csv"))
    back = pd.read_csv(tmp_path / "all.csv")
    assert list(back.columns[:8]) == ["layer", *NDT_COLUMNS]
    for name, df in finished_results.items():
        part = back[back["layer"] == name].drop(columns="layer").reset_index(drop=True)
        pd.testing.assert_frame_equal(part, df, check_dtype=False, rtol=1e-15)
    export_to_csv(finished_results, str(tmp_path / "per_layer"), separate_files=True)
    assert sorted(os.listdir(tmp_path / "per_layer")) == ["l0.csv", "l1.csv", "l2.csv"]


def test_json_export_writes_null_for_missing_grad_norm(tmp_path, finished_results):
    export_to_json(finished_results, str(tmp_path / "r.json"))
    data = json.loads((tmp_path / "r.json").read_text())
    assert list(data) == ["l0", "l1", "l2"] and len(data["l0"]) == 400
    assert data["l0"][3]["grad_norm"] is None and data["l0"][3]["step"] == 3
    assert data["l1"][7]["stable_rank"] == finished_results["l1"]["stable_rank"][7]


def test_hdf5_export_loads_back(tmp_path, finished_results):
    export_to_hdf5(finished_results, str(tmp_path / "r.h5"), metadata={"dataset": "noise"})
    back = load(tmp_path / "r.h5")
    assert_same_results(dict(back), finished_results)
    assert back.metadata["dataset"] == "noise"


def test_hdf5_export_of_missing_integer_values_loads_back(tmp_path):
    """Results with a missing value in an integer column (``rows``, ``flags``: e.g. frames
    joined from runs with other columns) export, and the file loads back with NaN there; the
    run file keeps integer columns in float64 (format version 2), so load must not cast NaN."""
    results = {"a": pd.DataFrame({"step": [0, 1, 2], "stable_rank": [1.5, 2.0, 3.0], "flags": [0.0, np.nan, 0.0],
                                  "rows": [8.0, np.nan, 8.0]})}
    export_to_hdf5(results, str(tmp_path / "r.h5"))
    back = load(tmp_path / "r.h5")
    pd.testing.assert_frame_equal(back["a"], results["a"], check_dtype=False)
    assert back["a"]["step"].dtype == np.int64 and np.isnan(back["a"]["rows"][1])


def test_a_streamed_run_file_is_several_times_smaller_than_its_csv(tmp_path):
    """3000 samples × 3 layers (a file's fixed overhead — metadata, chunk index — is amortised
    from a few thousand rows; a 400-row run is ~1.9× smaller)."""
    model = mlp()
    tracker = tracker_for(model, sampling_frequency=1, output=tmp_path / "run.h5")
    train(model, tracker, range(3000), grad_norm=True)
    tracker.close()
    export_to_csv(tracker.get_results(), str(tmp_path / "run.csv"))
    ratio = os.path.getsize(tmp_path / "run.csv") / os.path.getsize(tmp_path / "run.h5")
    assert ratio >= 2.5, ratio  # measured 3.0-3.3 (it depends on the data)


@pytest.mark.parametrize("export", [export_to_csv, export_to_json, export_to_hdf5])
def test_exports_reject_bad_paths_and_leave_nothing_behind(tmp_path, finished_results, export):
    with pytest.raises(ValueError, match="does not exist"):
        export(finished_results, str(tmp_path / "missing" / "x"))
    with pytest.raises(ValueError, match="directory"):
        export(finished_results, str(tmp_path))
    with pytest.raises(ValueError, match="dict"):
        export(finished_results["l0"], str(tmp_path / "x"))
    assert os.listdir(tmp_path) == []


def test_load_rejects_what_is_not_a_run(tmp_path):
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "absent.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(ValueError, match="not an ndt_fast run"):
        load(tmp_path / "other.h5")


def test_a_script_that_never_closes_the_tracker_still_gets_every_record(tmp_path):
    path = tmp_path / "run.h5"
    script = ("import sys, torch\n"
              "from torch import nn\n"
              "from ndt_fast import FastTracker\n"
              "model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2))\n"
              "tracker = FastTracker(model, sampling_frequency=1, output=sys.argv[1], flush_interval=60)\n"
              "for step in range(50):\n"
              "    model(torch.randn(4, 6))\n"
              "    tracker.log(step, 0.0)\n")  # exits with the writer asleep and the file open
    done = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    run = load(path)
    assert [run[name]["step"].tolist() for name in run] == [list(range(50))] * 2
    with h5py.File(path, "r") as f:  # closed cleanly (no SWMR reader needed) and compressed
        assert f["layers/0"].compression == "gzip" and f["jumps"].compression == "gzip"


def test_files_get_the_umask_permissions_not_the_temp_files(tmp_path, finished_results):
    old = os.umask(0o022)
    try:
        export_to_csv(finished_results, str(tmp_path / "r.csv"))
        model = mlp()
        tracker = tracker_for(model, output=tmp_path / "run.h5")
        train(model, tracker, range(5))
        tracker.close()  # the compressed rewrite goes through a temporary file too
    finally:
        os.umask(old)
    assert (tmp_path / "r.csv").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "run.h5").stat().st_mode & 0o777 == 0o644


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX")
@pytest.mark.parametrize("background_finish", [False, True])
def test_a_forked_child_that_exits_normally_leaves_the_parents_run_file_alone(tmp_path, background_finish):
    """A child fork()ed in the middle of a run (step 5's finish possibly still on the background
    thread) goes on tracking its copy and leaves through the interpreter's normal exit, atexit
    hooks and all. The parent's file must hold the parent's steps, once each: before, the child's
    exit drained its copy of the ring into the file and replaced it with a compressed copy of its
    own, so the parent's later records went to a file no longer there."""
    import subprocess
    import sys

    path = tmp_path / "run.h5"
    script = (
        "import os, sys, torch\nfrom torch import nn\nfrom ndt_fast import FastTracker\n"
        "torch.set_num_threads(1)  # (torch's OpenMP pool does not survive fork())\n"
        "model = nn.Sequential(nn.Linear(20, 1000), nn.ReLU(), nn.Linear(1000, 4))\n"
        f"tracker = FastTracker(model, output={str(path)!r}, background_finish={background_finish})\n"
        "for step in range(6):\n    model(torch.randn(900 if step == 5 else 8, 20))\n    tracker.log(step, 1.0)\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    for step in range(6, 8):\n        model(torch.randn(8, 20))\n        tracker.log(step, 1.0)\n"
        "    mine = tracker.get_results('Linear_0').iloc[-2:]  # (measured, not flagged)\n"
        "    sys.exit(0 if mine['step'].tolist() == [6, 7] and (mine['flags'] == 0).all() else 3)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "print(os.waitstatus_to_exitcode(status))\n"
        "for step in range(6, 10):\n    model(torch.randn(8, 20))\n    tracker.log(step, 1.0)\n"
        "tracker.close()\n"
    )
    done = run_python(script)
    assert done.stdout.strip() == "0", (done.stdout, done.stderr)  # the child: tracked on, exited cleanly
    assert "failed" not in done.stderr, done.stderr
    assert steps_of(path) == [list(range(10))] * 2
