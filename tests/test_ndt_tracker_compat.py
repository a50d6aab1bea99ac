"""FastTracker's ndt surface against ndt's HighFrequencyTracker: the attributes ndt code reads,
``activation_capture.hooks``, ``force=True`` on any step without ``arm()``, and
``detect_jumps(threshold_z=…)``. Only the public API is used."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from torch import nn

import ndt_fast as nf

ndt = pytest.importorskip("ndt")

NDT_COLUMNS = ["step", "stable_rank", "participation_ratio", "cumulative_90", "nuclear_norm_ratio", "loss"]


def _mlp():
    return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))


@pytest.mark.parametrize("kwargs", [{}, {"sampling_frequency": 5, "enable_jump_detection": False},
                                    {"jump_window_size": 30, "jump_z_threshold": 2.5, "device": "cpu"}])
def test_attributes_are_ndts(kwargs):
    model = _mlp()
    layers = [model[0], model[4]]
    ours = nf.HighFrequencyTracker(model, layers=layers, layer_names=["a", "b"], **kwargs)
    theirs = ndt.HighFrequencyTracker(model, layers=layers, layer_names=["a", "b"], **kwargs)
    try:
        for name in ("model", "layer_names", "sampling_frequency", "device", "step_counter", "enable_jump_detection"):
            assert getattr(ours, name) == getattr(theirs, name), name
        if theirs.jump_detector is None:
            assert ours.jump_detector is None
        else:
            assert (ours.jump_detector.window_size, ours.jump_detector.z_threshold, ours.jump_detector.min_samples) == (
                theirs.jump_detector.window_size, theirs.jump_detector.z_threshold, theirs.jump_detector.min_samples)
        assert len(ours.activation_capture.hooks) == len(theirs.activation_capture.hooks) == 2
        for step in range(7):
            model(torch.randn(4, 12))
            ours.log(step, 1.0)
            theirs.log(step, 1.0)
        assert ours.step_counter == theirs.step_counter
    finally:
        ours.close()
        theirs.close()
    assert ours.activation_capture.hooks == [] and len(theirs.activation_capture.hooks) == 0


def test_context_manager_removes_hooks_like_ndt():
    model = _mlp()
    with nf.HighFrequencyTracker(model, layers=[model[0]]) as tracker:
        model(torch.randn(4, 12))
        tracker.log(step=0, loss=1.0)
        assert len(tracker.get_results()) > 0
    assert len(tracker.activation_capture.hooks) == 0
    assert tracker.device == torch.device("cpu")  # ndt's default: the model's device


def _run(tracker_cls, model, forced_steps, steps=23, seed=0, **kwargs):
    tracker = tracker_cls(model, sampling_frequency=5, **kwargs)
    gen = torch.Generator().manual_seed(seed)
    for step in range(steps):
        model(torch.randn(6, 12, generator=gen))
        tracker.log(step, float(step), force=step in forced_steps)
    results = tracker.get_results()
    tracker.close()
    return results


@pytest.mark.parametrize("forced", [{3}, {1, 2, 3, 4, 6, 13, 22}, set(range(23))])
def test_force_on_any_step_gives_ndts_rows(forced, seed):
    torch.manual_seed(seed % 2**31)
    model = _mlp()
    ours, theirs = _run(nf.HighFrequencyTracker, model, forced, seed=seed), _run(
        ndt.HighFrequencyTracker, model, forced, seed=seed)
    assert list(ours) == list(theirs)
    for name in theirs:
        assert list(ours[name]["step"]) == list(theirs[name]["step"]) == sorted(forced | set(range(0, 23, 5)))
        np.testing.assert_allclose(ours[name][NDT_COLUMNS].to_numpy(float), theirs[name][NDT_COLUMNS].to_numpy(float),
                                   rtol=1e-4, err_msg=f"{name}, seed={seed}")


def test_force_after_a_tuple_output_module_and_kept_activations_are_visible():
    attention = nn.MultiheadAttention(8, 2, batch_first=True)
    tracker = nf.FastTracker(attention, layers=[attention], layer_names=["attn"], sampling_frequency=10)
    tracker.log(0, 0.0)  # step 0: no forward → missed
    x = torch.randn(3, 4, 8)
    out, _ = attention(x, x, x)
    assert torch.equal(tracker.activation_capture.get_activation("attn"), out.detach())
    tracker.log(3, 0.5, force=True)
    assert tracker.activation_capture.activations == {}  # dropped by log()
    df = tracker.get_results("attn")
    assert list(df["step"]) == [3]
    assert df["stable_rank"].iloc[0] == pytest.approx(nf.stable_rank(out.detach().reshape(-1, 8)), rel=1e-9)
    tracker.close()


def test_what_still_cannot_be_forced_is_missed_and_warned(caplog):
    model = _mlp()
    tracker = nf.FastTracker(model, layers=[model[0]], layer_names=["fc"], sampling_frequency=5)
    with caplog.at_level(logging.WARNING, logger="ndt_fast"):
        model(torch.randn(4, 12))
        tracker.log(0, 0.0)
        model(torch.randn(4, 12))
        tracker.log(1, 0.0)
        tracker.log(2, 0.0, force=True)  # no forward since the last log(): nothing to measure
        model.eval()
        model(torch.randn(4, 12))  # an eval forward (validation) is not a training sample
        tracker.log(3, 0.0, force=True)
        model.train()
        with torch.no_grad():
            model(torch.randn(4, 12))
        tracker.log(4, 0.0, force=True)
    assert list(tracker.get_results("fc")["step"]) == [0]
    assert tracker.missed == {"fc": 3}
    assert sum("no activation captured for layer 'fc'" in r.getMessage() for r in caplog.records) == 1
    tracker.close()


def test_force_without_keeping_needs_arm():
    model = _mlp()
    tracker = nf.FastTracker(model, layers=[model[0]], sampling_frequency=5, keep_last_output=False)
    tracker.log(0, 0.0)
    model(torch.randn(4, 12))
    assert tracker.activation_capture.activations == {}
    tracker.log(1, 0.0, force=True)
    tracker.arm()
    model(torch.randn(4, 12))
    tracker.log(2, 0.0, force=True)
    assert list(tracker.get_results("Linear_0")["step"]) == [2]
    assert tracker.missed == {"Linear_0": 2}
    tracker.close()


def test_detect_jumps_takes_example_03s_threshold_z(seed):
    torch.manual_seed(seed % 2**31)
    model = _mlp()
    tracker = nf.FastTracker(model, sampling_frequency=1)
    gen = torch.Generator().manual_seed(seed)
    for step in range(80):
        scale = 1.0 if step < 50 else 4.0  # a change in the inputs: something to detect
        model(torch.randn(6, 12, generator=gen) * torch.linspace(0.1, scale, 12))
        tracker.log(step, 0.0)
    default, loose = tracker.detect_jumps(metric="stable_rank"), tracker.detect_jumps(metric="stable_rank",
                                                                                      threshold_z=2.0)
    for name in default:
        values = tracker.get_results(name)["stable_rank"].to_numpy()
        want = nf.JumpDetector(z_threshold=2.0).detect_jumps(values)
        assert [j.step for j in loose[name]] == [j.step for j in want]  # sampling 1: index = step
        assert {j.step for j in default[name]} <= {j.step for j in loose[name]}
    tracker.close()


@pytest.mark.parametrize("bad", ["yes", 1, None])
def test_keep_last_output_must_be_a_bool(bad):
    with pytest.raises(TypeError, match="keep_last_output must be True or False"):
        nf.FastTracker(_mlp(), keep_last_output=bad)
