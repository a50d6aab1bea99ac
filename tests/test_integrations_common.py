"""What both callbacks share (``ndt_fast.integrations._common``): calling ``FastTracker.log`` only
at the steps the callbacks log (``TrackingCallback._log_if_needed``: the first step, then where
``log_needed``) records exactly what logging every step records, and measures no forward outside
a sample's window."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ndt_fast import FastTracker
from ndt_fast.integrations._common import TrackingCallback
from ndt_fast.tracker.capture import Capture

pytestmark = pytest.mark.usefixtures("torch_env")


def run(frequency: int, window: int, gated: bool, steps: int = 40) -> tuple[dict, list[int]]:
    """A plain loop labelled as the callbacks label steps (the first optimizer step is 1):
    (results, steps logged)."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 12), nn.Tanh(), nn.Linear(12, 6))
    gate = TrackingCallback("test", None, frequency, None, False, (), None, None, {"window": window})
    gate._start(model, None, None, False, ())
    logged = []
    for step in range(1, steps + 1):
        model(torch.randn(16, 8, generator=g))
        if not gated:
            gate.tracker.log(step, float(step))
            logged.append(step)
        elif gate._log_if_needed(step):
            logged.append(step)
    results = gate.tracker.get_results()
    gate.tracker.close()
    return results, logged


@pytest.mark.parametrize(("frequency", "window"), [(1, 1), (5, 1), (5, 2), (7, 7), (10, 3)])
def test_logging_only_the_needed_steps_records_what_logging_every_step_does(frequency, window):
    full, _ = run(frequency, window, gated=False)
    gated, logged = run(frequency, window, gated=True)
    if frequency > window + 1:  # (otherwise every step is needed)
        assert len(logged) < 40
    for layer, frame in full.items():
        assert frame["step"].tolist() == list(range(frequency, 41, frequency))
        # (the loss: the callbacks pass their step's, NaN here; the loop above passes the step)
        np.testing.assert_array_equal(gated[layer].drop(columns="loss").to_numpy(),
                                      frame.drop(columns="loss").to_numpy())


def test_no_forward_outside_a_window_is_measured(monkeypatch):
    measured = []
    take = Capture.take

    def counting_take(self, slot, output, mode_checked=False):
        measured.append(slot.name)
        take(self, slot, output, mode_checked)

    monkeypatch.setattr(Capture, "take", counting_take)
    # 40 steps, sampled at 10, 20, 30, 40 (window 1): those forwards, plus step 1's (a new
    # tracker is armed until its first log()), per tracked layer (2 Linear layers).
    _, logged = run(10, 1, gated=True)
    assert logged == [1, 9, 10, 19, 20, 29, 30, 39, 40]
    assert len(measured) == 5 * 2
    measured.clear()
    _, logged = run(1000, 1, gated=True)  # never sampled in 40 steps: only step 1's forward
    assert logged == [1] and len(measured) == 2


@pytest.mark.parametrize(("threads", "cores", "options", "expected"), [
    (1, 2, {}, True),  # a free core
    (2, 2, {}, False),  # torch holds every core
    (2, 2, {"background_finish": True}, True),  # the user's choice wins
    (1, 2, {"background_finish": False}, False),
])
def test_the_callbacks_compute_samples_in_the_background_where_a_core_is_free(monkeypatch, threads, cores,
                                                                              options, expected):
    import os

    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    gate = TrackingCallback("test", None, 5, None, False, (), None, None, options)
    gate._start(nn.Linear(4, 3), None, None, False, ())
    assert gate.tracker.background_finish is expected
    gate.tracker.close()


def test_the_logger_relay_hands_over_samples_and_alerts_in_the_order_written():
    """Written from another thread (the sinks'), drained on this one: a sample's metrics and an
    alert's ``ndt/<layer>/alert/<rule>`` entry at their steps, in order; nothing twice."""
    import threading

    from ndt_fast.integrations._common import LoggerRelay
    from ndt_fast.monitor.alert import Alert
    from ndt_fast.sinks.base import Sample

    relay = LoggerRelay(metrics=("stable_rank",))
    sample = Sample(step=10, loss=0.5, grad_norm=1.0, values={"fc": {"stable_rank": 3.0}})
    alert = Alert(rule="bottleneck", layers=("fc",), step=10, message="collapsed")
    writer = threading.Thread(target=lambda: (relay.write([sample]), relay.write_alerts([alert])))
    writer.start()
    writer.join()
    assert relay.drain() == [(10, {"ndt/fc/stable_rank": 3.0}), (10, {"ndt/fc/alert/bottleneck": 10.0})]
    assert relay.drain() == []


def test_a_model_off_the_cpu_leaves_the_cores_free(monkeypatch):
    """(A GPU model's host cores mostly wait on the device; a meta-device model stands in for it.)"""
    import os

    from ndt_fast.integrations._common import core_is_free

    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    assert core_is_free(nn.Linear(4, 3, device="meta"))
    assert not core_is_free(nn.Linear(4, 3))
