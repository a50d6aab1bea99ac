"""ndt_fast.dashboard without a browser: downsampling, a 10⁶-sample run, the writer's state
(live, killed, closed), the HTTP routes (bad input, path traversal), the self-contained report
and the command line. The browser test is tests/test_dashboard_browser.py."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("h5py")
pytest.importorskip("plotly")
pytest.importorskip("pandas")

import h5py  # noqa: E402

from dashboard_runs import start_training, wait_for, wait_ready, write_synthetic_run  # noqa: E402
import ndt_fast  # noqa: E402
from ndt_fast import cli  # noqa: E402
from ndt_fast.dashboard.downsample import downsample, minmax_indices  # noqa: E402
from ndt_fast.dashboard.report import write_report  # noqa: E402
from ndt_fast.dashboard.runs import RunFileError, RunReader  # noqa: E402
from ndt_fast.dashboard.server import MAX_BUCKETS, DashboardError, start  # noqa: E402


def get(server, path: str) -> tuple[int, bytes]:
    """GET ``path`` verbatim (no client-side normalisation of ``..``) from the running server."""
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=30)
    try:
        connection.putrequest("GET", path, skip_host=False, skip_accept_encoding=True)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def get_json(server, path: str):
    status, body = get(server, path)
    assert status == 200, (path, status, body[:300])
    return json.loads(body)


@pytest.fixture
def serving():
    """``serving(*paths)`` → a dashboard server on a free port; stopped after the test."""
    servers = []

    def _start(*paths):
        server, _ = start([str(p) for p in paths], port=0)
        servers.append(server)
        return server

    yield _start
    for server in servers:
        server.shutdown()
        server.server_close()


# ---- downsampling ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n, buckets", [(10, 5), (1000, 7), (100_003, 1000), (999, 1000)])
def test_minmax_keeps_every_buckets_extremes_and_stays_bounded(rng, n, buckets):
    values = rng.standard_normal(n).cumsum()
    keep = minmax_indices(values, buckets)
    assert np.all(np.diff(keep) > 0)  # sorted, no repeats: the line is drawn in order
    if n <= 2 * buckets:
        np.testing.assert_array_equal(keep, np.arange(n))
        return
    assert len(keep) <= 2 * buckets + 2  # no NaN here: min and max only, and both ends
    assert keep[0] == 0 and keep[-1] == n - 1
    size = -(-n // buckets)
    for start in range(0, n, size):
        inside = keep[(keep >= start) & (keep < start + size)]
        assert values[inside].min() == values[start:start + size].min()
        assert values[inside].max() == values[start:start + size].max()


def test_minmax_keeps_spikes_and_gaps(rng):
    values = rng.standard_normal(1_000_000)
    spike, dip, gap = rng.choice(len(values), 3, replace=False)
    values[spike], values[dip], values[gap] = 1e3, -1e3, np.nan
    values[rng.choice(len(values), 5)] = np.inf  # drawn as gaps, never as the maximum
    x, y = downsample(np.arange(len(values)), values, 500)
    assert len(x) <= 3 * 500 + 2
    assert np.nanmax(y) == 1e3 and np.nanmin(y) == -1e3
    assert x[np.nanargmax(y)] == spike and x[np.nanargmin(y)] == dip
    assert np.isnan(y).sum() >= 1 and not np.isinf(y).any()
    all_missing = np.full(10_000, np.nan)
    assert np.isnan(downsample(np.arange(10_000), all_missing, 100)[1]).all()


def test_downsampling_rejects_bad_arguments():
    with pytest.raises(ValueError, match="1-D"):
        minmax_indices(np.zeros((3, 3)), 10)
    with pytest.raises(ValueError, match="buckets"):
        minmax_indices(np.zeros(3), 0)
    with pytest.raises(ValueError, match="differ in shape"):
        downsample(np.zeros(3), np.zeros(4), 10)


# ---- a 10⁶-sample run --------------------------------------------------------------------------------------


def test_a_million_sample_run_is_served_bounded_with_its_extremes(tmp_path, rng, serving):
    path = tmp_path / "big.h5"
    stable_rank = write_synthetic_run(path, rng, 1_000_000, jumps=5000)
    server = serving(path)
    for buckets in (1000, 10**9):  # a huge request is clamped to MAX_BUCKETS
        status, body = get(server, f"/api/runs/0/view?layer=a&metric=stable_rank&buckets={buckets}")
        assert status == 200
        view = json.loads(body)
        limit = 3 * min(buckets, MAX_BUCKETS) + 2
        assert view["rows"] == 1_000_000
        for name in ("metric_trace", "loss", "grad_norm", "weight"):
            assert 0 < len(view[name]["x"]) <= limit, name
        assert max(view["metric_trace"]["y"]) == stable_rank.max()
        assert min(view["metric_trace"]["y"]) == stable_rank.min()
        jumps = view["jumps"]["ndt"]
        assert jumps["total"] == 5000 and len(jumps["x"]) == 2000  # the largest |z| shown, the total said
        assert view["jumps"]["default"]["total"] == 0
        # Bounded whatever the run's length: ≤ 4 traces × 3 · MAX_BUCKETS points and 2000 markers a rule
        # (all 10⁶ samples of these 4 columns would be ~80 MB of JSON).
        assert len(body) < 3_000_000
    zoomed = get_json(server, "/api/runs/0/view?layer=a&metric=stable_rank&buckets=200&x0=1000&x1=2000")
    assert zoomed["rows"] == 201 + 2  # steps 1000..2000 every 5, plus one neighbour either side
    assert zoomed["metric_trace"]["y"] == stable_rank[199:402].tolist()  # few enough: every sample, exact


def test_alerts_are_marked_on_their_layers_curve_within_the_view(tmp_path, rng):
    path = tmp_path / "alerts.h5"
    stable_rank = write_synthetic_run(path, rng, 2000, alerts=6)
    reader = RunReader(path)
    try:
        expected = ndt_fast.load(path).alerts
        assert len(expected) == 6 and set(expected["layer"]) == {"a"}
        view = reader.view("a", "stable_rank")
        marks = view["alerts"]
        assert marks["total"] == 6 and marks["x"] == expected["step"].astype(float).tolist()
        assert marks["text"] == [f"instability: {m}" for m in expected["message"]]
        assert marks["y"] == [float(stable_rank[int(step) // 5]) for step in expected["step"]]  # on the curve
        assert reader.view("b", "stable_rank")["alerts"]["total"] == 0  # an alert shows on the layer it is for
        x0, x1 = float(expected["step"].iloc[1]), float(expected["step"].iloc[3])
        assert reader.view("a", "stable_rank", x0=x0, x1=x1)["alerts"]["x"] == expected["step"].iloc[1:4].astype(
            float).tolist()
    finally:
        reader.close()


# ---- the writer's state, live and after kill -9 ------------------------------------------------------------


def test_a_live_run_grows_on_screen_and_stays_readable_after_kill_9(tmp_path, serving):
    killed, finished = tmp_path / "killed.h5", tmp_path / "finished.h5"
    child = start_training(killed)
    short = start_training(finished, steps=60, step_sleep=0.0)  # both start up (import torch) at once
    try:
        wait_ready(child)
        wait_ready(short)
        server = serving(killed, finished)
        status = wait_for(lambda: (s := get_json(server, "/api/runs/0/status"))["last_step"] is not None and s,
                          what="a first flushed sample")
        assert status["writer"]["state"] == "writing" and status["writer"]["pid"] == child.pid
        first = get_json(server, "/api/runs/0/view?layer=switch&metric=stable_rank")["rows"]
        grown = wait_for(lambda: (n := get_json(server, "/api/runs/0/view?layer=switch&metric=stable_rank")["rows"])
                         > first and n, what="the run to grow")
        assert grown > first
        status = wait_for(lambda: (s := get_json(server, "/api/runs/0/status"))["samples_per_s"] and
                          s["rate_basis"].startswith("last") and s, what="a measured rate")
        assert status["samples_per_s"] > 0
    finally:
        child.send_signal(signal.SIGKILL)
        child.communicate()
    assert child.returncode == -signal.SIGKILL
    status = get_json(server, "/api/runs/0/status")
    assert status["writer"]["state"] == "stopped", status
    view = get_json(server, "/api/runs/0/view?layer=switch&metric=stable_rank")
    assert view["rows"] >= grown and view["weight"] is None  # the Switch has no weight
    assert get_json(server, "/api/runs/0/view?layer=fc1&metric=stable_rank")["weight"] is not None
    # The short run closes cleanly: its file is rewritten (a new inode) and the reader follows.
    assert short.communicate(timeout=120)[0].split()[-1] == "closed"
    status = get_json(server, "/api/runs/1/status")
    assert status["writer"]["state"] == "closed" and status["samples"]["fc1"] == 60
    assert get_json(server, "/api/runs/1/view?layer=fc1&metric=stable_rank")["rows"] == 60


def test_lock_table_parsing_counts_holders_not_waiters(tmp_path):
    from ndt_fast.dashboard.writer_state import flock_holders, open_for_writing_flag

    path = tmp_path / "f.h5"
    path.write_bytes(b"not hdf5")
    st = path.stat()
    dev = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}"
    locks = tmp_path / "locks"
    locks.write_text(f"1: FLOCK  ADVISORY  READ 123 {dev}:{st.st_ino} 0 EOF\n"
                     f"1: -> FLOCK  ADVISORY  WRITE 456 {dev}:{st.st_ino} 0 EOF\n"  # blocked, not holding
                     f"2: POSIX  ADVISORY  WRITE 789 {dev}:{st.st_ino} 0 EOF\n"  # not the writer's kind of lock
                     f"3: FLOCK  ADVISORY  READ 321 {dev}:{st.st_ino + 1} 0 EOF\n")  # another file
    assert flock_holders(str(path), str(locks)) == [123]
    assert flock_holders(str(path), str(tmp_path / "absent")) is None
    assert open_for_writing_flag(str(path)) is None  # no HDF5 superblock


# ---- bad input and what the server refuses -----------------------------------------------------------------


def test_files_that_are_not_runs_get_one_line_errors(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = np.arange(3)
    cases = {tmp_path / "missing.h5": "no such file", tmp_path: "is a directory", text: "not an HDF5 file",
             other: "not an ndt_fast run"}
    for path, message in cases.items():
        with pytest.raises(RunFileError, match=message) as error:
            RunReader(path)
        assert "\n" not in str(error.value)
        with pytest.raises(DashboardError, match=message):
            start([str(path)], port=0)


def test_a_port_in_use_is_a_clear_error(tmp_path, rng, serving):
    path = tmp_path / "run.h5"
    write_synthetic_run(path, rng, 100)
    first = serving(path)
    assert first.server_address[0] == "127.0.0.1"  # localhost unless told otherwise
    with pytest.raises(DashboardError, match=f"port {first.server_address[1]} on 127.0.0.1 is in use"):
        start([str(path)], port=first.server_address[1])


def test_only_the_named_files_are_served(tmp_path, rng, serving):
    named, neighbour = tmp_path / "named.h5", tmp_path / "neighbour.h5"
    write_synthetic_run(named, rng, 100)
    write_synthetic_run(neighbour, rng, 100)
    (tmp_path / "secret.txt").write_text("root:x:0:0\n")
    server = serving(named)
    assert [r["name"] for r in get_json(server, "/api/runs")] == ["named.h5"]
    for path in ["/../../../../etc/passwd", "/..%2f..%2f..%2fetc%2fpasswd", "/%2e%2e/%2e%2e/etc/passwd",
                 "/api/runs/0/../../../secret.txt", "/secret.txt", "/neighbour.h5", "/named.h5",
                 "/api/runs/1/status", "/api/runs/-1/status", "/api/runs/0/view/../../1/status",
                 "/assets/page.js", "/page.js/..", "//etc/passwd", "/api/runs/00000000000000000000001/status"]:
        status, body = get(server, path)
        assert status == 404, (path, status)
        assert json.loads(body)["error"].startswith("not found")  # nothing of any file: no "root:", no HDF5
    status, body = get(server, "/api/runs/0/view?layer=../../etc&metric=stable_rank")
    assert status == 400 and b"no layer" in body
    status, body = get(server, "/api/runs/0/view?layer=a&metric=stable_rank&x0=nan")
    assert status == 400


# ---- the report --------------------------------------------------------------------------------------------


def test_the_report_is_self_contained_and_holds_every_view(tmp_path, rng):
    path = tmp_path / "run.h5"
    hostile = "</script><script>document.title='owned'</script><!--"
    write_synthetic_run(path, rng, 3000, jumps=10, metadata={"model": {"summary": hostile}, "host": {"pid": -1}})
    out = write_report([str(path)], tmp_path / "report.html", buckets=100)
    html = Path(out).read_text(encoding="utf-8")
    assert html.count("<script") == html.count("</script>") == 3  # plotly.js, the snapshot, the page's script
    markup = re.sub(r"<script>.*?</script>", "", html, flags=re.S)  # the page around its inline scripts
    assert "src=" not in markup and not re.search(r"href=\"(?!data:)", markup)  # loads nothing (the browser test
    # opens it with the network off)
    embedded = json.loads(re.search(r"window\.NDT_EMBEDDED = (.*?);</script>", html, re.S).group(1))
    assert embedded["runs"][0]["metadata"]["model"]["summary"] == hostile  # intact, yet escaped in the page
    reader = RunReader(path)
    try:
        for layer in ("a", "b"):
            for metric in reader.metric_names:
                assert embedded["views"][0][layer][metric] == json.loads(json.dumps(
                    reader.view(layer, metric, buckets=100)))
    finally:
        reader.close()


def test_the_command_line(tmp_path, rng, capsys):
    path = tmp_path / "run.h5"
    write_synthetic_run(path, rng, 200)
    assert cli.main(["report", str(path), "-o", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.html").stat().st_size > 1_000_000  # plotly.js is inside
    assert cli.main(["report", str(tmp_path / "nope.h5"), "-o", str(tmp_path / "x.html")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"ndt-fast report: error: {tmp_path / 'nope.h5'}: no such file"
    assert cli.main(["dashboard", str(tmp_path / "r.html")]) == 1
    assert "not an HDF5 file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        cli.main(["dashboard", str(path), "--port", "70000"])
    assert exit_.value.code == 2


def test_import_ndt_fast_imports_no_dashboard_dependency():
    code = ("import sys, ndt_fast, ndt_fast.cli\n"
            "ndt_fast.cli.build_parser()\n"
            "heavy = [m for m in ('plotly', 'playwright', 'h5py', 'ndt_fast.dashboard.server') if m in sys.modules]\n"
            "print(heavy)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_dashboard_command_prints_its_address(tmp_path, rng):
    """`ndt-fast dashboard` as a user starts it: the address on stderr, the page served there."""
    path = tmp_path / "run.h5"
    write_synthetic_run(path, rng, 50)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "ndt_fast.cli", "dashboard", str(path), "--port", str(port)],
                               stderr=subprocess.PIPE, text=True)
    try:
        line = process.stderr.readline()
        assert f"at http://127.0.0.1:{port}/" in line, line
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("GET", "/")
        assert b"ndt_fast dashboard" in connection.getresponse().read()
        connection.close()
    finally:
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
    assert process.returncode == 0
