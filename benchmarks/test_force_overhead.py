"""What ``keep_last_output`` (``log(force=True)`` on any step without ``arm()``) costs.

On a step that is not sampled, each tracked layer's hook then keeps a reference to its output
(one attribute store and a mode check) and ``log()`` drops the references. A/B in one group each,
the switch off (``keep-off``) and on (``keep-on``, the default), with the untracked loop:

* ``unsampled forwards``: the TDS MLP (784-256-128-10, batch 64), forward + ``log()`` only, at
  steps that are never sampled — the hook's cost with nothing else around it;
* ``hook cost``: 32 tracked ``nn.Identity`` layers, so the forward costs little but the hooks;
* ``training``: full training steps (forward, backward, Adam, ``log``) of the TDS MLP and of
  resnet18 (8 blocks + fc, 8 × 3 × 64 × 64), sampling 5, as in test_tracker_overhead.py.

``extra_info["kept_bytes"]``: the memory the kept outputs hold after one forward (the outputs of
the tracked layers), which the switch keeps alive from that forward to the step's ``log()``.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from benchmarks.test_tracker_overhead import MODELS, STEPS, _make_loop
from ndt_fast import FastTracker
from ndt_fast.layers import auto_select_layers

VARIANTS = {"untracked": None, "keep-off": False, "keep-on": True}


def _kept_bytes(tracker: FastTracker) -> int:
    return sum(t.numel() * t.element_size() for t in tracker.activation_capture.activations.values())


@pytest.mark.benchmark(min_rounds=200)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_unsampled_forward_cost(benchmark, measure, variant):
    torch.manual_seed(0)
    model, layers, inputs, _ = MODELS["tds-mlp"]()
    model.train()
    keep = VARIANTS[variant]
    # sampling far beyond the steps run: no step after 0 is ever sampled
    tracker = None if keep is None else FastTracker(model, layers=layers, sampling_frequency=10**9,
                                                    keep_last_output=keep)
    state = {"step": 1}

    def forwards() -> None:
        for i in range(len(inputs)):
            model(inputs[i])
            if tracker is not None:
                tracker.log(state["step"], 0.0)
            state["step"] += 1

    benchmark.group = f"force: unsampled forwards, TDS MLP batch 64 ({STEPS} forward + log per call)"
    benchmark.extra_info.update(label=variant, role="reference" if keep is None else "subject")
    try:
        measure(forwards)
        if tracker is not None:
            model(inputs[0])
            benchmark.extra_info["kept_bytes"] = _kept_bytes(tracker)
            assert (benchmark.extra_info["kept_bytes"] > 0) == keep
            assert tracker.get_results("Linear_0").empty  # nothing was sampled
    finally:
        if tracker is not None:
            tracker.close()


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize(("model_name", "rounds"), [pytest.param("tds-mlp", 40, marks=pytest.mark.benchmark(
    min_rounds=40)), pytest.param("resnet18", 5, marks=pytest.mark.benchmark(min_rounds=5))])
def test_training_cost(benchmark, measure, model_name, rounds, variant):
    torch.manual_seed(0)
    model, layers, inputs, labels = MODELS[model_name]()
    layers = auto_select_layers(model) if layers is None else layers
    model.train()
    keep = VARIANTS[variant]
    tracker: Any = None if keep is None else FastTracker(model, layers=layers, sampling_frequency=5,
                                                         keep_last_output=keep)
    benchmark.group = f"force: training {model_name} sampling=5 ({STEPS} steps per call)"
    benchmark.extra_info.update(label=variant, role="reference" if keep is None else "subject")
    try:
        measure(_make_loop(model, tracker, inputs, labels, item=False))
        if tracker is not None:
            assert all(len(df) > 0 for df in tracker.get_results().values())
            tracker.log(10**6 + 1, 0.0)  # the next step (10**6 + 2) is not sampled: its forward is kept
            model(inputs[0])
            benchmark.extra_info["kept_bytes"] = _kept_bytes(tracker)
            assert (benchmark.extra_info["kept_bytes"] > 0) == keep
            assert sum(tracker.errors.values()) == 0
    finally:
        if tracker is not None:
            tracker.close()


@pytest.mark.benchmark(min_rounds=2000)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_hook_cost(benchmark, measure, variant):
    """The hook alone: 32 tracked ``nn.Identity`` layers (a forward costs little but their
    hooks), one forward + ``log()`` of an unsampled step per call. (keep-on − keep-off) / 32 is
    the cost of keeping one output; the ``log()`` that drops the references is in it too."""
    model = nn.Sequential(*[nn.Identity() for _ in range(32)]).train()
    keep = VARIANTS[variant]
    tracker = None if keep is None else FastTracker(model, layers=list(model), sampling_frequency=10**9,
                                                    keep_last_output=keep, enable_jump_detection=False)
    x = torch.randn(64, 16, requires_grad=True)
    state = {"step": 1}

    def forward_and_log() -> None:
        model(x)
        if tracker is not None:
            tracker.log(state["step"], 0.0)
        state["step"] += 1

    benchmark.group = "force: hook cost, 32 tracked nn.Identity layers (1 forward + log per call)"
    benchmark.extra_info.update(label=variant, role="reference" if keep is None else "subject")
    try:
        measure(forward_and_log)
    finally:
        if tracker is not None:
            tracker.close()
