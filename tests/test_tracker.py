"""FastTracker: drop-in equivalence with ndtracker's HighFrequencyTracker, exact per-sample
metrics against the float64 reference, and the robustness promises of ``ndt_fast.tracker``.

Per-sample checks compare a recorded row with ``reference_metrics`` of the activation a plain
forward hook (``Probe``) saw at that step, reshaped by the documented rule written out here
independently of ``ndt_fast.layers``.
"""

from __future__ import annotations

import copy
import logging
import math
import weakref

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import ndt_fast
from checks import assert_metrics_match, metric_mismatches
from models import mlp
from ndt_fast import FastTracker
from reference import METRIC_NAMES, reference_metrics

ndt_tracker = pytest.importorskip("ndt.core.tracker")

NDT_COLUMNS = ["step", "stable_rank", "participation_ratio", "cumulative_90", "nuclear_norm_ratio", "loss",
               "grad_norm"]
NDT_METRICS = ("stable_rank", "participation_ratio", "cumulative_90", "nuclear_norm_ratio")
TRACKER_LOGGER = "ndt_fast.tracker"
#: ndt computes a float32 SVD: agreement with it is to its own round-off (see test_ndt_compat).
NDT_RTOL = 1e-4
NDT_KNIFE_EDGE = 1e-5


pytestmark = pytest.mark.usefixtures("torch_env")


# ---------------------------------------------------------------------------------------------
# helpers


class Probe:
    """A plain forward hook keeping a copy of ``pick(output)`` per step (the last forward wins).

    Forwards while ``probe.step is None`` are not recorded (used for eval / validation passes).
    """

    def __init__(self, module: nn.Module, pick=lambda output: output) -> None:
        self.pick = pick
        self.step: int | None = None
        self.seen: dict[int, torch.Tensor] = {}
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output) -> None:
        if self.step is not None:
            self.seen[self.step] = self.pick(output).detach().clone()

    def remove(self) -> None:
        self.handle.remove()


def check_against_probe(model: nn.Module, layer: nn.Module, name: str, pick, input_shape: tuple[int, ...],
                        steps: int, seed: int, frequency: int = 1, **tracker_kwargs) -> FastTracker:
    """Train-free loop: ``steps`` forwards of random ``input_shape`` inputs with FastTracker on
    ``layer`` and a Probe keeping ``pick(output)``; every recorded row must match the reference
    metrics of what the probe saw, with no hook error. Returns the (closed) tracker."""
    tracker = FastTracker(model, layers=[layer], layer_names=[name], sampling_frequency=frequency, **tracker_kwargs)
    probe = Probe(layer, pick=pick)
    gen = torch.Generator().manual_seed(seed)
    for step in range(steps):
        probe.step = step
        model(torch.randn(*input_shape, generator=gen))
        tracker.log(step, 0.0)
    tracker.close()
    probe.remove()
    assert tracker.errors == {name: 0}
    rows = by_step(tracker.get_results(name))
    assert sorted(rows) == list(range(0, steps, frequency))
    for step, row in rows.items():
        assert_row_matches(row, probe.seen[step], f"{name} step {step}")
    return tracker


def by_step(df: pd.DataFrame) -> dict[int, pd.Series]:
    return {int(row["step"]): row for _, row in df.iterrows()}


def assert_row_matches(row: pd.Series, matrix: torch.Tensor, context: str, **kwargs) -> None:
    """A recorded row equals the float64 reference of ``matrix`` (all six metrics, trace, λmax,
    and the row count)."""
    ref = reference_metrics(matrix, **kwargs)
    assert_metrics_match({name: row[name] for name in METRIC_NAMES}, ref, context)
    assert int(row["rows"]) == matrix.shape[0], f"{context}: rows {row['rows']} != {matrix.shape[0]}"
    assert int(row["flags"]) == 0, f"{context}: flags {row['flags']}"
    for name in ("trace", "lambda_max"):
        want = ref.extras[name]
        assert math.isclose(row[name], want, rel_tol=1e-5), f"{context}: {name} {row[name]} != {want}"


def hook_snapshot(model: nn.Module) -> dict[int, tuple]:
    """Every hook dict and attribute name of every module, to compare before/after."""
    snap = {}
    for module in model.modules():
        snap[id(module)] = (
            list(module._forward_hooks.keys()),
            list(module._forward_pre_hooks.keys()),
            list(module._backward_hooks.keys()),
            list(getattr(module, "_forward_hooks_with_kwargs", {}).keys()),
            list(getattr(module, "_forward_hooks_always_called", {}).keys()),
            sorted(vars(module).keys()),
        )
    return snap


def error_records(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == TRACKER_LOGGER and r.levelno >= logging.ERROR]


# ---------------------------------------------------------------------------------------------
# 1. drop-in equivalence with ndt's HighFrequencyTracker


def test_drop_in_equivalence_with_ndt_mlp_training(rng, seed):
    """ndt's tracker and FastTracker on the same model in the same run record the same samples."""
    model = mlp(784, 256, 128, 10)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    freq, steps, threshold = 5, 200, 2.0
    # A lower z threshold than the default and a change of input rank at step 150 make sure the
    # jump detector has something to find in 40 samples.
    ndt = ndt_tracker.HighFrequencyTracker(model, sampling_frequency=freq, jump_z_threshold=threshold)
    fast = FastTracker(model, sampling_frequency=freq, jump_z_threshold=threshold)
    linears = [m for m in model if isinstance(m, nn.Linear)]
    probes = [Probe(layer) for layer in linears]
    gen = torch.Generator().manual_seed(seed)
    basis = torch.randn(4, 784, generator=gen)
    try:
        for step in range(steps):
            if step >= 150:
                x = torch.randn(64, 4, generator=gen) @ basis
            else:
                x = torch.randn(64, 784, generator=gen)
            y = torch.randint(0, 10, (64,), generator=gen)
            for probe in probes:
                probe.step = step if step % freq == 0 else None
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            ndt.log(step, loss.item())
            fast.log(step, loss)
    finally:
        ndt.close()
        fast.close()
        for probe in probes:
            probe.remove()

    want_names = ["Linear_0", "Linear_1", "Linear_2"]
    assert ndt.layer_names == want_names
    assert fast.layer_names == want_names
    ours, theirs = fast.get_results(), ndt.get_results()
    assert list(ours) == list(theirs) == want_names
    for layer, (name, probe) in enumerate(zip(want_names, probes)):
        a, b = theirs[name], ours[name]
        assert len(a) == len(b) == steps // freq, name
        assert list(b.columns[:7]) == NDT_COLUMNS
        np.testing.assert_array_equal(b["step"].to_numpy(), a["step"].to_numpy())
        np.testing.assert_array_equal(b["loss"].to_numpy(), a["loss"].to_numpy())
        for i in range(len(a)):
            step = int(a["step"].iloc[i])
            ref = reference_metrics(probe.seen[step])
            ref.values = dict(ref.values, **{m: float(a[m].iloc[i]) for m in NDT_METRICS})
            bad = metric_mismatches({m: b[m].iloc[i] for m in NDT_METRICS}, ref, names=NDT_METRICS,
                                    rtol=NDT_RTOL, knife_edge=NDT_KNIFE_EDGE)
            assert not bad, f"{name} step {step}: {bad}"
        assert b["cumulative_90"].dtype == np.int64

    # jumps: ndt reports the sample index, FastTracker the training step (index * freq)
    found = 0
    margin = 1e-3 * threshold
    for metric in NDT_METRICS:
        jt, jo = ndt.detect_jumps(metric=metric), fast.detect_jumps(metric=metric)
        assert set(jt) == set(jo) == set(want_names)
        for name in want_names:
            theirs_by_step = {j.step * freq: j for j in jt[name]}
            ours_by_step = {j.step: j for j in jo[name]}
            found += len(ours_by_step)
            # detections clear of the threshold must be in both (a z within round-off of the
            # threshold may legitimately fall on either side)
            for step, j in theirs_by_step.items():
                if abs(j.z_score - threshold) > margin:
                    assert step in ours_by_step, f"{metric} {name}: ndt jump at step {step} missing: {j}"
            for step, j in ours_by_step.items():
                assert step % freq == 0
                if abs(j.z_score - threshold) > margin:
                    assert step in theirs_by_step, f"{metric} {name}: extra jump at step {step}: {j}"
            for step in set(theirs_by_step) & set(ours_by_step):
                t, o = theirs_by_step[step], ours_by_step[step]
                assert o.metric_name == t.metric_name == f"{name}_{metric}"
                assert math.isclose(o.z_score, float(t.z_score), rel_tol=1e-3)
                assert math.isclose(o.value_before, float(t.value_before), rel_tol=NDT_RTOL, abs_tol=1e-6)
                assert math.isclose(o.value_after, float(t.value_after), rel_tol=NDT_RTOL, abs_tol=1e-6)
    assert found > 0, "the rank change at step 150 should give at least one jump"


# ---------------------------------------------------------------------------------------------
# 2. per-sample metrics against the float64 reference


def test_window_1_rows_match_reference_of_hooked_activation(seed):
    model = mlp(20, 48, 12, 5)
    layers = [model[0], model[2], model[4]]
    tracker = FastTracker(model, sampling_frequency=3)
    probes = [Probe(layer) for layer in layers]
    gen = torch.Generator().manual_seed(seed)
    for step in range(10):
        for probe in probes:
            probe.step = step
        model(torch.randn(16, 20, generator=gen))
        tracker.log(step, 0.0)
    results = tracker.get_results()
    assert list(results) == ["Linear_0", "Linear_1", "Linear_2"]
    for name, probe in zip(results, probes):
        rows = by_step(results[name])
        assert sorted(rows) == [0, 3, 6, 9]
        for step, row in rows.items():
            assert_row_matches(row, probe.seen[step], f"{name} step {step} seed {seed}")


@pytest.mark.parametrize("window,freq", [(2, 2), (3, 5), (4, 4)])
def test_window_k_equals_reference_of_stacked_batches(window, freq, seed):
    lin = nn.Linear(10, 7)
    model = nn.Sequential(lin, nn.Tanh())
    tracker = FastTracker(model, layers=[lin], sampling_frequency=freq, window=window)
    probe = Probe(lin)
    gen = torch.Generator().manual_seed(seed)
    steps = 3 * freq + 1
    # varying batch sizes: the window stacks rows of different counts
    inputs = [torch.randn(3 + (s % 4), 10, generator=gen) for s in range(steps)]
    for step, x in enumerate(inputs):
        probe.step = step
        model(x)
        tracker.log(step, 0.0)
    rows = by_step(tracker.get_results("Linear_0"))
    assert sorted(rows) == list(range(0, steps, freq))
    for step, row in rows.items():
        first = max(0, step - window + 1)
        stacked = torch.cat([probe.seen[s] for s in range(first, step + 1)])
        assert_row_matches(row, stacked, f"window={window} freq={freq} step={step} seed={seed}")


def test_window_k_loop_starting_at_step_1(seed):
    """A loop numbered from 1 (``for step in range(1, n + 1)``): each sample still covers exactly the
    ``window`` steps ending at it."""
    lin = nn.Linear(8, 6)
    model = nn.Sequential(lin)
    tracker = FastTracker(model, sampling_frequency=5, window=2)
    probe = Probe(lin)
    gen = torch.Generator().manual_seed(seed)
    for step in range(1, 11):
        probe.step = step
        model(torch.randn(4, 8, generator=gen))
        tracker.log(step, 0.0)
    rows = by_step(tracker.get_results("Linear_0"))
    assert sorted(rows) == [5, 10]
    for step, row in rows.items():
        stacked = torch.cat([probe.seen[step - 1], probe.seen[step]])
        assert int(row["rows"]) == 8, f"step {step}: {row['rows']} rows, want 8 (steps {step - 1} and {step})"
        assert_row_matches(row, stacked, f"step={step} seed={seed}")


def test_center_true_matches_centered_reference(seed):
    lin = nn.Linear(12, 9)
    model = nn.Sequential(lin)
    tracker = FastTracker(model, sampling_frequency=1, center=True)
    probe = Probe(lin)
    gen = torch.Generator().manual_seed(seed)
    for step in range(3):
        probe.step = step
        model(torch.randn(6, 12, generator=gen) + 5.0)
        tracker.log(step, 0.0)
    for step, row in by_step(tracker.get_results("Linear_0")).items():
        assert_row_matches(row, probe.seen[step], f"center step {step}", center=True)


# ---------------------------------------------------------------------------------------------
# 3. loss / grad_norm, column order


@pytest.mark.parametrize(
    "loss,grad_norm,want_loss,want_grad",
    [
        (0.25, 1.5, 0.25, 1.5),
        (torch.tensor(0.25), torch.tensor(1.5, dtype=torch.float64), 0.25, 1.5),
        (torch.tensor(0.25, requires_grad=True) * 2, None, 0.5, math.nan),
        (3, None, 3.0, math.nan),
    ],
    ids=["floats", "0d-tensors", "grad-tensor-and-None", "int-and-None"],
)
def test_loss_and_grad_norm_values(loss, grad_norm, want_loss, want_grad):
    model = mlp(4, 3)
    tracker = FastTracker(model, sampling_frequency=1)
    model(torch.randn(5, 4))
    tracker.log(0, loss, grad_norm)
    df = tracker.get_results("Linear_0")
    assert list(df.columns[:7]) == NDT_COLUMNS
    assert len(df) == 1
    assert df["loss"].dtype == np.float64 and df["grad_norm"].dtype == np.float64
    assert df["loss"].iloc[0] == want_loss
    if math.isnan(want_grad):
        assert math.isnan(df["grad_norm"].iloc[0])
    else:
        assert df["grad_norm"].iloc[0] == want_grad


def test_column_order_and_dtypes():
    model = mlp(6, 5, 3)
    tracker = FastTracker(model, sampling_frequency=1, track_weights=True)
    model(torch.randn(4, 6))
    tracker.log(0, 1.0)
    df = tracker.get_results("Linear_1")
    assert list(df.columns) == NDT_COLUMNS + [
        "participation_ratio_eig", "effective_rank", "trace", "lambda_max", "flags", "rows",
        "weight_stable_rank", "weight_participation_ratio", "weight_cumulative_90", "weight_nuclear_norm_ratio",
        "weight_participation_ratio_eig", "weight_effective_rank",
    ]
    for name in ("step", "cumulative_90", "flags", "rows"):
        assert df[name].dtype == np.int64, name
    # no sample yet: an empty frame, like ndt
    assert FastTracker(mlp(3, 2)).get_results("Linear_0").empty


# ---------------------------------------------------------------------------------------------
# 4. steps that are not sampled keep nothing


@pytest.mark.parametrize("keep_last_output", [False, True])
def test_not_sampled_steps_keep_nothing(keep_last_output):
    """Unscheduled forwards reach no capture path; with keep_last_output (for force=True) the
    hook keeps only a reference, dropped by that step's log()."""
    lin = nn.Linear(16, 8)
    model = nn.Sequential(lin, nn.ReLU())
    calls: list[int] = []
    step_now = {"step": -1}

    def select(output):
        calls.append(step_now["step"])
        return output

    tracker = FastTracker(model, layers=[lin], sampling_frequency=5, select=select,
                          keep_last_output=keep_last_output)
    slot = tracker._capture.slots[0]
    refs: list[weakref.ref] = []
    lin.register_forward_hook(lambda m, i, o: refs.append(weakref.ref(o)))
    for step in range(12):
        step_now["step"] = step
        refs.clear()
        out = model(torch.randn(4, 16))
        if step % 5 != 0:
            # the hook of a step that is not sampled does nothing at all
            assert not slot.captured
            assert slot.accumulator is None or slot.accumulator.rows_seen == 0
        del out  # no gc.collect(): nothing may keep it, not even through a reference cycle
        assert len(refs) == 1
        if keep_last_output and step % 5 != 0:
            assert refs[0]() is not None, f"step {step}: the output for force=True was not kept"
        else:
            assert refs[0]() is None, f"step {step}: the tracked output is still referenced after the forward"
        tracker.log(step, 0.0)
        assert refs[0]() is None, f"step {step}: the tracked output is still referenced after log()"
        assert not slot.captured
        assert slot.accumulator is None or slot.accumulator.rows_seen == 0
    assert calls == [0, 5, 10], "only the forwards of sampled steps reach the capture path"
    assert list(tracker.get_results("Linear_0")["step"]) == [0, 5, 10]


# ---------------------------------------------------------------------------------------------
# 5. module outputs, shapes, dtypes, layouts


class AttentionModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.out = nn.Linear(16, 4)

    def forward(self, x):
        a, _ = self.attn(x, x, x)
        return self.out(a)


def test_multihead_attention_tuple_output(seed):
    model = AttentionModel()
    check_against_probe(model, model.attn, "MultiheadAttention_0", lambda o: o[0].reshape(-1, 16), (3, 7, 16),
                        steps=5, seed=seed, frequency=2)


def test_lstm_output_and_state_tuple(seed):
    lstm = nn.LSTM(8, 12, batch_first=True)
    check_against_probe(lstm, lstm, "LSTM_0", lambda o: o[0].reshape(-1, 12), (4, 5, 8), steps=3, seed=seed)


class DictOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 6)

    def forward(self, x):
        h = self.lin(x)
        return {"loss": None, "last_hidden_state": h, "pooled": h.mean(dim=0)}


class ModelOutputLike:
    """Neither tuple nor dict: like transformers' ModelOutput, it offers ``to_tuple()``."""

    def __init__(self, hidden, pooled) -> None:
        self.hidden, self.pooled = hidden, pooled

    def to_tuple(self):
        return (self.hidden, self.pooled)


class ToTupleOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(8, 6)

    def forward(self, x):
        h = self.lin(x)
        return ModelOutputLike(h, h.sum())


@pytest.mark.parametrize(
    "make,pick",
    [(DictOutput, lambda o: o["last_hidden_state"]), (ToTupleOutput, lambda o: o.hidden)],
    ids=["dict", "to_tuple"],
)
def test_hugging_face_style_outputs(make, pick, seed):
    module = make()
    check_against_probe(module, module, "block", pick, (5, 8), steps=2, seed=seed)


def test_select_callable_picks_the_tracked_tensor(seed):
    lstm = nn.LSTM(8, 12, num_layers=2, batch_first=True)

    def last_hidden(output):  # h_n of the last layer, (batch, hidden)
        assert output[1][0][-1].shape == (6, 12)
        return output[1][0][-1]

    check_against_probe(lstm, lstm, "LSTM_0", last_hidden, (6, 5, 8), steps=2, seed=seed, select=last_hidden)


@pytest.mark.parametrize(
    "make_module,shape,as_matrix",
    [
        (lambda: nn.Linear(10, 7), (9, 10), lambda a: a),
        (lambda: nn.Linear(10, 7), (3, 5, 10), lambda a: a.reshape(-1, a.shape[-1])),
        (lambda: nn.Conv2d(3, 4, 3, padding=1), (2, 3, 6, 5), lambda a: a.reshape(a.shape[0], -1)),
        (lambda: nn.Conv1d(3, 5, 3), (4, 3, 11), lambda a: a.reshape(-1, a.shape[-1])),
        (lambda: nn.Conv3d(2, 3, 2), (2, 2, 3, 4, 4), lambda a: a.reshape(a.shape[0], -1)),
    ],
    ids=["2d", "3d-batch-seq-hidden", "4d-conv2d", "conv1d", "5d-conv3d"],
)
def test_output_rank_reshape_rules(make_module, shape, as_matrix, seed):
    module = make_module()
    check_against_probe(module, module, "m", as_matrix, shape, steps=2, seed=seed)


@pytest.mark.parametrize(
    "make_module,shape,as_matrix",
    [
        (lambda: nn.Conv1d(3, 5, 3), (4, 3, 11), lambda a: a.permute(0, 2, 1).reshape(-1, a.shape[1])),
        (lambda: nn.Conv2d(3, 6, 3), (2, 3, 7, 6), lambda a: a.permute(0, 2, 3, 1).reshape(-1, a.shape[1])),
    ],
    ids=["conv1d", "conv2d"],
)
def test_conv_rows_spatial(make_module, shape, as_matrix, seed):
    module = make_module()
    check_against_probe(module, module, "m", as_matrix, shape, steps=1, seed=seed, conv_rows="spatial")


@pytest.mark.parametrize("conv_rows", ["flatten", "spatial"])
def test_channels_last_same_numbers_as_contiguous(conv_rows, seed):
    """The same values in NCHW and channels_last memory give the same recorded numbers."""
    gen = torch.Generator().manual_seed(seed)
    xs = [torch.randn(3, 4, 5, 6, generator=gen) for _ in range(3)]
    frames = []
    for layout in (torch.contiguous_format, torch.channels_last):
        conv = nn.Conv2d(4, 4, 1)  # a conv module so that conv_rows applies; outputs replaced below
        conv.register_forward_hook(lambda m, i, o: i[0] * 1.0)  # the output is the input, same layout
        tracker = FastTracker(conv, layers=[conv], sampling_frequency=1, conv_rows=conv_rows)
        # the tracker's hook runs after ours, so it sees the replaced output
        for step, x in enumerate(xs):
            x = x.contiguous(memory_format=layout)
            out = conv(x)
            assert torch.equal(out, x)
            assert out.is_contiguous(memory_format=layout)
            tracker.log(step, 0.0)
        frames.append(tracker.get_results("Conv2d_0"))
    a, b = frames
    assert len(a) == len(b) == 3
    metric_cols = [c for c in a.columns if c not in ("loss", "grad_norm")]
    np.testing.assert_allclose(b[metric_cols].to_numpy(float), a[metric_cols].to_numpy(float), rtol=1e-12, atol=0)
    for step, x in enumerate(xs):
        m = x.reshape(3, -1) if conv_rows == "flatten" else x.permute(0, 2, 3, 1).reshape(-1, 4)
        assert_row_matches(a.iloc[step], m, f"{conv_rows} step {step}")


class SeqFirstToBatchFirst(nn.Module):
    """Returns a (batch, seq, hidden) transpose of a seq-first tensor: a non-contiguous 3-D output."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(6, 5)

    def forward(self, x):
        return self.lin(x).transpose(0, 1)


def test_non_contiguous_3d_output(seed):
    module = SeqFirstToBatchFirst()
    tracker = FastTracker(module, layers=[module], layer_names=["m"], sampling_frequency=1)
    probe = Probe(module, pick=lambda a: a.reshape(-1, a.shape[-1]))
    gen = torch.Generator().manual_seed(seed)
    probe.step = 0
    out = module(torch.randn(7, 3, 6, generator=gen))
    assert out.shape == (3, 7, 5) and not out.is_contiguous()
    tracker.log(0, 0.0)
    assert_row_matches(by_step(tracker.get_results("m"))[0], probe.seen[0], "transposed 3-D output")


def test_channels_last_conv_forward_matches_reference(seed):
    conv = nn.Conv2d(3, 5, 3, padding=1).to(memory_format=torch.channels_last)
    model = nn.Sequential(conv, nn.ReLU())
    tracker = FastTracker(model, layers=[conv], sampling_frequency=1)
    probe = Probe(conv, pick=lambda a: a.reshape(a.shape[0], -1))
    gen = torch.Generator().manual_seed(seed)
    for step in range(2):
        probe.step = step
        x = torch.randn(4, 3, 6, 6, generator=gen).contiguous(memory_format=torch.channels_last)
        out = conv(x)
        assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
        model(x)
        tracker.log(step, 0.0)
    for step, row in by_step(tracker.get_results("Conv2d_0")).items():
        assert_row_matches(row, probe.seen[step], f"channels_last step {step}")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_activations(dtype, seed):
    model = mlp(16, 24, 12).to(dtype)
    tracker = FastTracker(model, sampling_frequency=1)
    probes = [Probe(model[0]), Probe(model[2])]
    gen = torch.Generator().manual_seed(seed)
    for step in range(2):
        for probe in probes:
            probe.step = step
        model(torch.randn(10, 16, generator=gen).to(dtype))
        tracker.log(step, 0.0)
    for name, probe in zip(["Linear_0", "Linear_1"], probes):
        rows = by_step(tracker.get_results(name))
        assert sorted(rows) == [0, 1]
        for step, row in rows.items():
            assert probe.seen[step].dtype == dtype
            # reference of the same rounded values, upcast exactly
            assert_row_matches(row, probe.seen[step], f"{dtype} {name} step {step}")


def test_autocast_bfloat16_forward(seed):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 10))
    tracker = FastTracker(model, sampling_frequency=1)
    assert tracker.layer_names == ["Conv2d_0", "Linear_1"]
    probes = [Probe(model[0], pick=lambda a: a.reshape(a.shape[0], -1)), Probe(model[3])]
    gen = torch.Generator().manual_seed(seed)
    for step in range(2):
        for probe in probes:
            probe.step = step
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(torch.randn(5, 3, 8, 8, generator=gen))
        out.float().square().mean().backward()
        tracker.log(step, 0.0)
    for name, probe in zip(tracker.layer_names, probes):
        rows = by_step(tracker.get_results(name))
        assert sorted(rows) == [0, 1]
        for step, row in rows.items():
            assert probe.seen[step].dtype == torch.bfloat16
            assert_row_matches(row, probe.seen[step], f"autocast {name} step {step}")


def test_variable_batch_sizes_and_batch_of_one(seed):
    model = mlp(10, 8, 3)
    tracker = FastTracker(model, sampling_frequency=1)
    probe = Probe(model[0])
    gen = torch.Generator().manual_seed(seed)
    sizes = [7, 1, 16, 3, 1, 30]
    for step, n in enumerate(sizes):
        probe.step = step
        model(torch.randn(n, 10, generator=gen))
        tracker.log(step, 0.0)
    rows = by_step(tracker.get_results("Linear_0"))
    assert sorted(rows) == list(range(len(sizes)))
    for step, row in rows.items():
        assert int(row["rows"]) == sizes[step]
        assert_row_matches(row, probe.seen[step], f"batch {sizes[step]} step {step}")
    # a single row has one direction: every rank-like metric is 1
    for step in (1, 4):
        row = rows[step]
        for name in ("stable_rank", "participation_ratio", "cumulative_90", "nuclear_norm_ratio",
                     "participation_ratio_eig", "effective_rank"):
            assert row[name] == pytest.approx(1.0, rel=1e-6), name


def test_eval_and_no_grad_forwards_do_not_replace_the_sample(seed):
    base = mlp(12, 10, 4)
    gen = torch.Generator().manual_seed(seed)
    train = [torch.randn(6, 12, generator=gen) for _ in range(6)]
    val = [torch.randn(9, 12, generator=gen) for _ in range(6)]

    def run(extra_forwards: bool, **kwargs) -> dict[str, pd.DataFrame]:
        model = copy.deepcopy(base)
        tracker = FastTracker(model, sampling_frequency=2, **kwargs)
        for step in range(6):
            if extra_forwards:
                with torch.no_grad():
                    model(val[step])
            model(train[step])
            if extra_forwards:
                model.eval()
                model(val[step])
                model.train()
                with torch.no_grad():
                    model(val[step])
            tracker.log(step, 0.0)
        return tracker.get_results()

    plain, with_validation = run(False), run(True)
    for name in plain:
        assert len(plain[name]) == 3
        pd.testing.assert_frame_equal(with_validation[name], plain[name], check_exact=True)
    # the check can tell: when the validation forwards are not skipped, they become the sample
    not_skipped = run(True, skip_eval_forwards=False)
    assert not np.allclose(not_skipped["Linear_0"]["trace"], plain["Linear_0"]["trace"])
    assert list(not_skipped["Linear_0"]["rows"]) == [9, 9, 9]


def test_exception_in_select_is_caught_counted_and_logged_once(caplog, seed):
    base = mlp(8, 6, 3)
    model = copy.deepcopy(base)
    failing_steps = {2, 4, 6}
    current = {"step": 0}

    def select(output):
        if current["step"] in failing_steps:
            raise RuntimeError("select failed")
        return output

    tracker = FastTracker(model, layers=[model[0]], sampling_frequency=2, select=select)
    gen = torch.Generator().manual_seed(seed)
    with caplog.at_level(logging.ERROR, logger=TRACKER_LOGGER):
        for step in range(9):
            current["step"] = step
            x = torch.randn(5, 8, generator=gen)
            out = model(x)
            torch.testing.assert_close(out, base(x), rtol=0, atol=0)  # forward output unchanged
            out.square().mean().backward()  # training goes on
            tracker.log(step, 0.0)
    assert tracker.errors == {"Linear_0": 3}
    df = tracker.get_results("Linear_0")
    assert list(df["step"]) == [0, 2, 4, 6, 8]  # the failed samples are rows that say so
    failed = df["step"].isin(failing_steps)
    assert (df["flags"][failed] == ndt_fast.FLAG_TRACKER_ERROR).all() and (df["flags"][~failed] == 0).all()
    assert df[failed]["stable_rank"].isna().all() and df[~failed]["stable_rank"].notna().all()
    assert list(df["rows"]) == [5, 0, 0, 0, 5] and tracker.missed == {}
    records = error_records(caplog)
    assert len(records) == 1, [r.getMessage() for r in records]
    assert "Linear_0" in records[0].getMessage()


class ScalarOut(nn.Module):
    def forward(self, x):
        return x.sum()


def test_zero_dim_output_is_an_error_not_a_crash(caplog):
    head = ScalarOut()
    model = nn.Sequential(nn.Linear(4, 3), head)
    tracker = FastTracker(model, layers=[head], sampling_frequency=1)
    with caplog.at_level(logging.ERROR, logger=TRACKER_LOGGER):
        for step in range(3):
            x = torch.randn(2, 4)
            out = model(x)
            assert out.dim() == 0
            torch.testing.assert_close(out, model[0](x).sum(), rtol=0, atol=0)
            out.backward()
            tracker.log(step, 0.0)
    assert tracker.errors == {"ScalarOut_0": 3}
    df = tracker.get_results("ScalarOut_0")
    assert list(df["step"]) == [0, 1, 2] and (df["flags"] == ndt_fast.FLAG_TRACKER_ERROR).all()
    assert len(error_records(caplog)) == 1


def test_nan_activations_give_nan_metrics_and_flag():
    lin = nn.Linear(5, 4)
    tracker = FastTracker(lin, layers=[lin], sampling_frequency=1)
    x = torch.randn(6, 5)
    x[2, 3] = math.nan
    lin(x)
    tracker.log(0, 0.0)
    x[2, 3] = math.inf
    lin(x)
    tracker.log(1, 0.0)
    lin(torch.randn(6, 5))  # finite again: finite metrics again
    tracker.log(2, 0.0)
    df = tracker.get_results("Linear_0")
    assert list(df["step"]) == [0, 1, 2]
    assert tracker.errors == {"Linear_0": 0}
    for i in (0, 1):
        for name in METRIC_NAMES:
            assert math.isnan(df[name].iloc[i]), (i, name)
        assert int(df["flags"].iloc[i]) & ndt_fast.FLAG_NON_FINITE
    assert not int(df["flags"].iloc[2]) & ndt_fast.FLAG_NON_FINITE
    assert all(math.isfinite(df[name].iloc[2]) for name in METRIC_NAMES)


def test_dead_layer_gives_zeros_and_flag():
    lin = nn.Linear(5, 7)
    relu = nn.ReLU()
    model = nn.Sequential(lin, relu)
    with torch.no_grad():
        lin.bias.fill_(-1e3)  # every unit dead
    tracker = FastTracker(model, layers=[relu], sampling_frequency=1)
    out = model(torch.randn(8, 5))
    assert not out.any()
    tracker.log(0, 0.0)
    df = tracker.get_results("ReLU_0")
    assert len(df) == 1
    for name in METRIC_NAMES:
        assert df[name].iloc[0] == 0.0, name
    assert int(df["flags"].iloc[0]) & ndt_fast.FLAG_ZERO
    assert tracker.errors == {"ReLU_0": 0}


def _lin_model():
    return mlp(4, 3, 2)


@pytest.mark.parametrize(
    "kwargs,error",
    [
        (dict(model="not a module"), ValueError),
        (dict(model=[nn.Linear(2, 2)]), ValueError),
        (dict(sampling_frequency=0), ValueError),
        (dict(sampling_frequency=-5), ValueError),
        (dict(sampling_frequency=2.5), ValueError),
        (dict(window=0), ValueError),
        (dict(window=3, sampling_frequency=2), ValueError),
        (dict(layer_names=["only_one"]), ValueError),
        (dict(layer_names=["a", "b", "c"]), ValueError),
        (dict(layer_names=["same", "same"]), ValueError),
        (dict(metrics=["stable_rank", "nope"]), ValueError),
        (dict(metrics=[]), ValueError),
        (dict(conv_rows="rows"), ValueError),
        (dict(conv_rows=None), ValueError),
        (dict(select="first"), TypeError),
        (dict(layers=[]), ValueError),
        (dict(layers=["Linear"]), TypeError),
        (dict(energy_threshold=0.0), ValueError),
        (dict(energy_threshold=1.5), ValueError),
        (dict(eps=-1.0), ValueError),
        (dict(eps=math.nan), ValueError),
        (dict(max_rows=0), ValueError),
        (dict(max_rows=2.5), ValueError),
        (dict(threads=-1), ValueError),
        (dict(threads=1.5), ValueError),
        (dict(threads=True), ValueError),
        (dict(track_weights=["stable_rank", "nope"]), ValueError),
        (dict(track_weights=3), TypeError),
    ],
    ids=lambda v: repr(v) if isinstance(v, dict) else v.__name__,
)
def test_constructor_rejects_bad_arguments(kwargs, error):
    model = _lin_model()
    before = hook_snapshot(model)
    kwargs = dict(kwargs)
    target = kwargs.pop("model", model)
    with pytest.raises(error):
        FastTracker(target, **kwargs)
    assert hook_snapshot(model) == before, "a rejected constructor must leave no hook behind"


def test_get_results_unknown_layer_raises():
    model = _lin_model()
    tracker = FastTracker(model)
    with pytest.raises(ValueError, match="nope"):
        tracker.get_results("nope")
    with pytest.raises(ValueError):
        tracker.detect_jumps(layer_name="nope")
    with pytest.raises(ValueError):
        tracker.detect_jumps(metric="loss")


def test_detect_jumps_disabled_raises():
    model = _lin_model()
    tracker = FastTracker(model, enable_jump_detection=False)
    model(torch.randn(3, 4))
    tracker.log(0, 0.0)
    with pytest.raises(ValueError, match="disabled"):
        tracker.detect_jumps()
    assert len(tracker.get_results("Linear_0")) == 1


# ---------------------------------------------------------------------------------------------
# 6. close() leaves the model as it was


def _model_with_user_hook():
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 5), nn.ReLU(),
                          nn.Linear(5, 2))
    fired: list[int] = []
    model[3].register_forward_hook(lambda m, i, o: fired.append(1))
    return model, fired


def test_close_restores_hooks_and_keeps_results():
    model, fired = _model_with_user_hook()
    before = hook_snapshot(model)
    tracker = FastTracker(model, sampling_frequency=1)
    assert tracker.layer_names == ["Conv2d_0", "Linear_1", "Linear_2"]
    assert hook_snapshot(model) != before  # the tracker did hook in
    for step in range(3):
        model(torch.randn(2, 2, 6, 6))
        tracker.log(step, 0.0)
    tracker.close()
    assert hook_snapshot(model) == before
    results = tracker.get_results()
    assert {name: len(df) for name, df in results.items()} == {"Conv2d_0": 3, "Linear_1": 3, "Linear_2": 3}
    # after close: forwards are not tracked, the user's hook still fires, close() is idempotent
    fired.clear()
    model(torch.randn(2, 2, 6, 6))
    tracker.log(3, 0.0)
    assert fired == [1]
    assert len(tracker.get_results("Linear_1")) == 3
    tracker.close()
    assert hook_snapshot(model) == before


def test_context_manager_closes():
    model, _ = _model_with_user_hook()
    before = hook_snapshot(model)
    with FastTracker(model, sampling_frequency=1) as tracker:
        assert isinstance(tracker, FastTracker)
        model(torch.randn(2, 2, 6, 6))
        tracker.log(0, 0.0)
    assert hook_snapshot(model) == before
    assert len(tracker.get_results("Linear_2")) == 1


def test_context_manager_closes_after_exception():
    model, _ = _model_with_user_hook()
    before = hook_snapshot(model)
    with pytest.raises(RuntimeError, match="boom"):
        with FastTracker(model, sampling_frequency=1) as tracker:
            model(torch.randn(2, 2, 6, 6))
            tracker.log(0, 0.0)
            model(torch.randn(2, 2, 6, 6))
            raise RuntimeError("boom")
    assert hook_snapshot(model) == before
    assert list(tracker.get_results("Conv2d_0")["step"]) == [0]


# ---------------------------------------------------------------------------------------------
# 7. track_weights


def test_track_weights_matches_reference_of_weight_matrix(seed):
    model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 4 * 4, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    tracker = FastTracker(model, sampling_frequency=3, track_weights=True)
    weights = {"Conv2d_0": model[0].weight, "Linear_1": model[3].weight}
    seen: dict[str, dict[int, torch.Tensor]] = {name: {} for name in weights}
    gen = torch.Generator().manual_seed(seed)
    for step in range(7):
        optimizer.zero_grad()
        model(torch.randn(4, 3, 6, 6, generator=gen)).square().mean().backward()
        optimizer.step()
        for name, w in weights.items():
            seen[name][step] = w.detach().reshape(w.shape[0], -1).clone()
        tracker.log(step, 0.0)
    for name in weights:
        rows = by_step(tracker.get_results(name))
        assert sorted(rows) == [0, 3, 6]
        for step, row in rows.items():
            ref = reference_metrics(seen[name][step])
            assert_metrics_match({m: row[f"weight_{m}"] for m in METRIC_NAMES}, ref, f"{name} step {step}")
        # the weights moved, and the recorded numbers with them
        assert rows[0]["weight_stable_rank"] != rows[6]["weight_stable_rank"]



def test_track_weights_named_metrics_computes_only_those(seed, tmp_path):
    """track_weights=("stable_rank",): the cheap path (λmax by Lanczos), same number as the full
    solve; the other weight columns are NaN; the metadata names what was computed."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(40, 64), nn.ReLU(), nn.Linear(64, 8))
    full = FastTracker(model, sampling_frequency=2, track_weights=True)
    cheap = FastTracker(model, sampling_frequency=2, track_weights=("stable_rank",), output=tmp_path / "run.h5")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(6):
        optimizer.zero_grad()
        model(torch.randn(16, 40)).square().mean().backward()
        optimizer.step()
        full.log(step, 0.0)
        cheap.log(step, 0.0)
    for name in full.layer_names:
        a, b = full.get_results(name), cheap.get_results(name)
        assert np.allclose(b["weight_stable_rank"], a["weight_stable_rank"], rtol=1e-8, atol=0)
        assert b["weight_participation_ratio"].isna().all() and a["weight_participation_ratio"].notna().all()
        assert np.array_equal(a["stable_rank"], b["stable_rank"])  # activations untouched
    full.close()
    cheap.close()
    assert ndt_fast.load(tmp_path / "run.h5").metadata["tracker"]["track_weights"] == ["stable_rank"]
    with pytest.raises(ValueError, match="unknown metric"):
        FastTracker(model, track_weights=("stable_rnk",))
    with pytest.raises(TypeError, match="track_weights"):
        FastTracker(model, track_weights=1)


def test_thread_budget_does_not_change_the_numbers(seed):
    """threads=1 (default: no helper or BLAS threads inside training) and threads=0 (automatic,
    BLAS threaded for the 256 × 784 weight's Gram and eigensolve) record the same metrics."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))
    one = FastTracker(model, track_weights=True)
    auto = FastTracker(model, track_weights=True, threads=0)
    for step in range(3):
        model(torch.randn(64, 784))
        one.log(step, 0.0)
        auto.log(step, 0.0)
    for name in one.layer_names:
        a, b = one.get_results(name), auto.get_results(name)
        columns = [c for c in a.columns if c.startswith("weight_") or c in METRIC_NAMES]
        assert np.allclose(a[columns], b[columns], rtol=1e-10, atol=0)
    one.close()
    auto.close()

# ---------------------------------------------------------------------------------------------
# 8. force=True and missed samples


def test_force_records_a_captured_forward_on_a_non_due_step(seed):
    lin = nn.Linear(6, 5)
    tracker = FastTracker(lin, layers=[lin], sampling_frequency=5)
    probe = Probe(lin)
    gen = torch.Generator().manual_seed(seed)
    for step in range(5):
        lin(torch.randn(4, 6, generator=gen))
        tracker.log(step, 0.0)
    # the step counter jumps from 4 to 6: the forward in between was captured (step 5 was expected)
    probe.step = 6
    lin(torch.randn(4, 6, generator=gen))
    tracker.log(6, 0.5, force=True)
    df = tracker.get_results("Linear_0")
    assert list(df["step"]) == [0, 6]
    assert df["loss"].iloc[1] == 0.5
    assert_row_matches(df.iloc[1], probe.seen[6], "forced step 6")
    assert tracker.missed == {}


@pytest.mark.parametrize(("armed", "keep_last_output"), [(True, False), (False, False), (False, True)])
def test_force_on_non_due_step(armed, keep_last_output, seed, caplog):
    """ndt records the forward of a forced step (sampling_frequency=5, ``log(7, loss, force=True)``
    after step 7's forward). FastTracker records that row from the output its hook kept
    (keep_last_output, the default) or, with that off, when ``arm()`` was called before the
    forward; with neither the step is counted as missed and a warning names the remedy, instead
    of a silently wrong row."""
    model = mlp(6, 5, 3)
    ndt = ndt_tracker.HighFrequencyTracker(model, sampling_frequency=5)
    fast = FastTracker(model, sampling_frequency=5, keep_last_output=keep_last_output)
    probe = Probe(model[0])
    gen = torch.Generator().manual_seed(seed)
    with caplog.at_level(logging.WARNING, logger=TRACKER_LOGGER):
        for step in range(8):
            probe.step = step
            if step == 7 and armed:
                fast.arm()
            model(torch.randn(4, 6, generator=gen))
            ndt.log(step, 0.0, force=(step == 7))
            fast.log(step, 0.0, force=(step == 7))
    ndt.close()
    fast.close()
    assert list(ndt.get_results("Linear_0")["step"]) == [0, 5, 7]
    df = fast.get_results("Linear_0")
    if armed or keep_last_output:
        assert list(df["step"]) == [0, 5, 7], f"missed: {fast.missed}"
        assert_row_matches(df.iloc[2], probe.seen[7], "forced step 7")
        assert fast.missed == {}
    else:
        assert list(df["step"]) == [0, 5]
        assert fast.missed == {"Linear_0": 1, "Linear_1": 1}
        assert any("tracker.arm()" in r.getMessage() for r in caplog.records)


def test_sampled_step_without_forward_records_no_row_and_counts_missed(caplog):
    model = mlp(6, 5, 3)
    ndt = ndt_tracker.HighFrequencyTracker(model, sampling_frequency=5)
    fast = FastTracker(model, sampling_frequency=5)
    with caplog.at_level(logging.WARNING, logger=TRACKER_LOGGER):
        for step in range(16):
            if step in (0, 10, 15):  # no forward at all between step 0 and step 10
                model(torch.randn(4, 6))
            ndt.log(step, 0.0)
            fast.log(step, 0.0)
    assert fast.missed == {"Linear_0": 1, "Linear_1": 1}
    for name in ("Linear_0", "Linear_1"):
        assert list(fast.get_results(name)["step"]) == [0, 10, 15]
        assert list(ndt.get_results(name)["step"]) == [0, 10, 15]
    warnings = [r for r in caplog.records if r.name == TRACKER_LOGGER and r.levelno == logging.WARNING]
    assert len(warnings) == 2 and all("step 5" in r.getMessage() for r in warnings)
    ndt.close()
    fast.close()


@pytest.mark.parametrize("bad_loss", ["not a number", torch.ones(3), object()])
def test_loss_that_is_not_a_scalar_is_recorded_as_nan_and_reported_once(bad_loss, caplog):
    """A loss the tracker cannot read must not end the training run: NaN in the row, one log line."""
    model = mlp(6, 5, 3)
    fast = FastTracker(model, sampling_frequency=1)
    with caplog.at_level(logging.ERROR, logger=TRACKER_LOGGER):
        for step in range(3):
            model(torch.randn(4, 6))
            fast.log(step, bad_loss, grad_norm=torch.tensor(2.0))
    fast.close()
    df = fast.get_results("Linear_0")
    assert list(df["step"]) == [0, 1, 2]
    assert df["loss"].isna().all()
    assert (df["grad_norm"] == 2.0).all()
    assert sum("loss=" in r.getMessage() for r in caplog.records) == 1


def test_failed_capture_after_a_good_one_keeps_other_layers_rows(seed):
    """window=1: each forward replaces the sample, so a forward whose capture fails leaves that
    layer's sample for the step a flagged row (NaN metrics, FLAG_TRACKER_ERROR) rather than a
    stale or empty one; the other layers' rows are recorded as usual."""
    model = mlp(6, 5, 3)
    fail = {"now": False}

    def select(output):
        if fail["now"] and output.shape[-1] == 5:  # only layer "a" (5 features) fails
            raise RuntimeError("boom")
        return output

    tracker = FastTracker(model, layers=[model[0], model[2]], layer_names=["a", "b"], sampling_frequency=1,
                          select=select)
    gen = torch.Generator().manual_seed(seed)
    model(torch.randn(4, 6, generator=gen))  # a good capture for step 0 ...
    fail["now"] = True
    model(torch.randn(4, 6, generator=gen))  # ... then a second forward whose capture fails
    tracker.log(0, 0.0)
    tracker.close()
    assert tracker.errors == {"a": 1, "b": 0}
    assert tracker.missed == {}
    results = tracker.get_results()
    assert list(results["a"]["flags"]) == [ndt_fast.FLAG_TRACKER_ERROR] and results["a"]["stable_rank"].isna().all()
    assert list(results["b"]["step"]) == [0] and results["b"]["flags"].iloc[0] == 0


def test_failed_sample_does_not_leak_rows_into_the_next_window(seed, monkeypatch):
    """window > 1: if computing a sample fails, its Grams are discarded, so the next sample covers
    exactly its own window."""
    model = mlp(6, 5, 3)
    tracker = FastTracker(model, layers=[model[0]], layer_names=["a"], sampling_frequency=2, window=2)

    class FailingOnce:
        """The record sink's native finisher, whose first per-sample finish raises."""

        def __init__(self, real):
            self.real, self.calls = real, 0

        def finish(self, *args):
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("injected")
            return self.real.finish(*args)

        def __getattr__(self, name):
            return getattr(self.real, name)

    monkeypatch.setattr(tracker._sink, "_finisher", FailingOnce(tracker._sink._finisher))
    gen = torch.Generator().manual_seed(seed)
    for step in range(5):  # samples at 0 (fails), 2 and 4; windows {1, 2} and {3, 4} follow at once
        model(torch.randn(3, 6, generator=gen))
        tracker.log(step, 0.0)
    tracker.close()
    df = tracker.get_results("a")
    assert list(df["step"]) == [0, 2, 4]  # step 0's failed computation is a flagged row
    assert list(df["flags"]) == [ndt_fast.FLAG_TRACKER_ERROR, 0, 0] and np.isnan(df["stable_rank"][0])
    assert list(df["rows"]) == [3, 6, 6]  # two forwards of 3 rows each, nothing from step 0's failed sample
    assert tracker.errors == {"a": 1}


@pytest.mark.parametrize("records", [True, False], ids=["recorded", "nothing-recorded"])
def test_a_tracker_never_closed_leaves_no_noise_at_interpreter_exit(records):
    """A script that never calls close() (memory mode) exits cleanly: no "Exception ignored"
    from the finalizer, whose drain would need imports that no longer work at shutdown (seen
    with a tracker that had recorded nothing)."""
    import subprocess
    import sys

    frequency = 1 if records else 1000
    script = (
        "import torch\nfrom torch import nn\nfrom ndt_fast import FastTracker\n"
        "model = nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 4))\n"
        f"tracker = FastTracker(model, sampling_frequency={frequency})\n"
        "for step in range(1, 4):\n    model(torch.randn(8, 20))\n    tracker.log(step, 1.0)\n"
        "print('done')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "done"
    assert "Exception ignored" not in done.stderr and "Error" not in done.stderr, done.stderr


def test_max_rows_measures_a_fixed_random_subset_of_token_rows(seed):
    """max_rows: a (batch, seq, hidden) output gives batch·seq rows; the tracker measures the
    same max_rows of them at every sample (a subset fixed per layer), exactly as
    compute_metrics of those rows would; with max_rows ≥ rows nothing changes."""
    torch.manual_seed(seed)
    lin = nn.Linear(12, 24)
    model = nn.Sequential(lin)
    sub = FastTracker(model, layers=[lin], layer_names=["lin"], max_rows=40)
    full = FastTracker(model, layers=[lin], layer_names=["lin"])
    roomy = FastTracker(model, layers=[lin], layer_names=["lin"], max_rows=10_000)
    seen = []
    for step in range(3):
        x = torch.randn(6, 20, 12)  # 120 token rows
        with torch.no_grad():
            seen.append(lin(x).reshape(-1, 24).double())
        model.train()
        model(x)
        for tracker in (sub, full, roomy):
            tracker.log(step, 0.0)
    chosen = torch.randperm(120, generator=torch.Generator().manual_seed(0))[:40].sort().values
    rows = by_step(sub.get_results("lin"))
    for step, row in rows.items():
        assert row["rows"] == 40
        ref = reference_metrics(seen[step][chosen])
        assert_metrics_match({m: row[m] for m in METRIC_NAMES}, ref, f"step {step}")
    a, b = full.get_results("lin"), roomy.get_results("lin")
    assert np.array_equal(a[list(METRIC_NAMES)], b[list(METRIC_NAMES)]) and (a["rows"] == 120).all()
    for tracker in (sub, full, roomy):
        tracker.close()
