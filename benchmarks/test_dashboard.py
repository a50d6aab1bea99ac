"""The dashboard on a 1,000,000-sample layer: the time to answer one view (read the live file's
columns, min/max-downsample four traces, select jump markers, encode JSON) over HTTP, against
``ndt_fast.load`` of the same file — what reading it through the public loader costs — in the
same group. The issue's budget: a 10⁶-sample file renders in under 2 s of server time.

The file is written through the storage writer directly (``RunFile``; FastTracker would take
over a minute to log 10⁶ samples) and left uncompressed, as a live run's file is.
"""

from __future__ import annotations

import http.client

import numpy as np
import pytest

pytest.importorskip("plotly")

import ndt_fast  # noqa: E402
from ndt_fast.dashboard.server import start  # noqa: E402
from ndt_fast.storage.hdf5 import RunFile  # noqa: E402
from ndt_fast.storage.records import RecordLayout  # noqa: E402

SAMPLES = 1_000_000
COLUMNS = ("step", "stable_rank", "participation_ratio", "cumulative_90", "nuclear_norm_ratio", "loss", "grad_norm")


@pytest.fixture(scope="module")
def big_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("dashboard") / "big.h5"
    rng = np.random.default_rng(0)
    layout = RecordLayout(("fc1", "fc2"), COLUMNS, COLUMNS[1:5], ("ndt", "default"))
    writer = RunFile(path, layout, {"model": {"class": "Synthetic"}})
    for layer in range(2):
        values = np.column_stack([np.arange(SAMPLES, dtype=np.float64) * 5, *rng.random((len(COLUMNS) - 1, SAMPLES))])
        writer.append({layer: values}, np.empty((0, 7)))
    jumps = np.column_stack([np.zeros(5000), np.sort(rng.choice(SAMPLES, 5000, replace=False)) * 5.0,
                             np.zeros(5000), np.zeros(5000), rng.normal(0, 5, 5000), np.ones(5000), np.ones(5000)])
    writer.append({}, jumps)
    writer.flush()
    writer.close(compress=False)
    return path


def test_dashboard_view_of_a_million_samples(benchmark, big_run):
    server, _ = start([str(big_run)], port=0)
    host, port = server.server_address[:2]
    sizes = []

    def view() -> None:
        connection = http.client.HTTPConnection(host, port, timeout=60)
        connection.request("GET", "/api/runs/0/view?layer=fc1&metric=stable_rank&buckets=1500")
        response = connection.getresponse()
        sizes.append(len(response.read()))
        assert response.status == 200
        connection.close()

    benchmark.group = f"dashboard: one view of a {SAMPLES:,}-sample layer"
    try:
        benchmark.pedantic(view, rounds=5, iterations=1, warmup_rounds=1)
    finally:
        server.shutdown()
        server.server_close()
    benchmark.extra_info["payload_bytes"] = sizes[-1]


def test_load_of_the_same_file_for_comparison(benchmark, big_run):
    benchmark.group = f"dashboard: one view of a {SAMPLES:,}-sample layer"
    benchmark.pedantic(ndt_fast.load, args=(big_run,), rounds=3, iterations=1)
