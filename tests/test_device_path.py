"""FastTracker's device path (``ndt_fast.tracker`` with a device backend), exercised on the CPU.

The native CUDA backend cannot run here; these tests put :class:`EmulatedKind` (tests/emulated_backend.py) in its place (a
pure-torch backend with float64 Grams and the device kernels' metric rules, whose results arrive
``delay`` polls after they were queued) on CPU tensors, so the routing, the sample queue, the
staged scalars, draining and error handling all run. The reference is the host path
(``device_path="host"``) hooked on the same model, seeing the same forwards: both compute float64
Grams, so rows agree to round-off — rtol 1e-6, not tighter: the two eigensolvers round a zero
eigenvalue of a rank-deficient Gram differently (~1e-16 λmax); the metrics built on singular
values (σ = √λ) turn that into ~1e-8 relative (participation ratio, nuclear-norm ratio) and, with
the entropy's p·log p, ~1e-7 per such eigenvalue (effective rank). A 4-row batch after a ReLU
showed both, for one seed in ~15, at rtol 1e-10. The last test runs ``NativeCudaBackend`` itself
(the code a GPU runs) against a host fake of ``_core.cuda``: its Python glue, not CUDA. What runs
only on a GPU is in ``test_cuda.py``.
"""

from __future__ import annotations

import contextlib
import logging
import types

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import ndt_fast
from models import Switch, mlp
from emulated_backend import EmulatedBackend, EmulatedKind
from ndt_fast import FastTracker
from ndt_fast.cuda.backend import MAX_DEVICE_GRAM, NativeCudaBackend, NativeCudaKind, split_by_tag
from ndt_fast.tracker import backends
from ndt_fast.tracker.backends import DeviceAccumulator
from ndt_fast.tracker.capture import Capture

pytestmark = pytest.mark.usefixtures("torch_env")

METRICS = ("stable_rank", "participation_ratio", "cumulative_90", "nuclear_norm_ratio", "participation_ratio_eig",
           "effective_rank")


@pytest.fixture
def emulate(monkeypatch):
    """``emulate(delay=0, scalar_delay=0, takes=None)`` → the EmulatedKind every FastTracker
    created afterwards with ``device_path="auto"`` uses; ``takes(x, dim)`` limits which
    activations (measured through a dim × dim Gram) go to it (default: all)."""

    def install(delay: int = 0, scalar_delay: int = 0, takes=None) -> EmulatedKind:
        kind = EmulatedKind(delay=delay, scalar_delay=scalar_delay)
        if takes is not None:
            kind.takes = takes
        monkeypatch.setattr(backends, "device_kind", lambda: kind)
        return kind

    return install


def pair(model: nn.Module, **kwargs) -> tuple[FastTracker, FastTracker]:
    """(host-path tracker, device-path tracker) on the same model and layers: they see the same forwards."""
    host = FastTracker(model, device_path="host", **kwargs)
    device = FastTracker(model, device_path="auto", **kwargs)
    return host, device


def assert_same_rows(got: pd.DataFrame, want: pd.DataFrame, context: str, rtol: float = 1e-6,
                     check_dtypes: bool = True) -> None:
    assert list(got.columns) == list(want.columns), context
    if check_dtypes:
        assert list(got.dtypes) == list(want.dtypes), context
    assert len(got) == len(want), f"{context}: {len(got)} rows, want {len(want)}"
    for column in want.columns:
        np.testing.assert_allclose(got[column].to_numpy(np.float64), want[column].to_numpy(np.float64), rtol=rtol,
                                   atol=0, equal_nan=True, err_msg=f"{context}: column {column}")


def assert_same_results(device: FastTracker, host: FastTracker, rtol: float = 1e-6) -> None:
    got, want = device.get_results(), host.get_results()
    assert list(got) == list(want)
    for name in want:
        assert_same_rows(got[name], want[name], name, rtol)


def on_device(tracker: FastTracker) -> list[bool]:
    return [isinstance(slot.accumulator, DeviceAccumulator) for slot in tracker._slots]


# ---------------------------------------------------------------------------------------------
# rows equal the host path's


class Tokens(nn.Module):
    """(batch, seq, 24) → (batch, seq, 16) token activations."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(24, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.lin(x))


# Narrowing layers only: a widening Linear (in < out) has rank ≤ in + 1 < out, and the zero
# eigenvalues of a rank-deficient Gram come out of any two float64 eigensolvers as different
# round-off (σ ≈ 1e-8·σmax), which moves the σ-based metrics by ~1e-9: beyond the 1e-10 here.
CASES = {
    # layer 0: 16 rows < 32 features → sample side; layer 2: 16 × 8 → feature side
    "mlp-both-sides": dict(model=lambda: mlp(48, 32, 8), shapes=[(16, 48)] * 9, kwargs={}),
    # (64 rows: the first window holds one batch, on the feature side: full rank needs rows ≥ 32)
    "window-3-of-4": dict(model=lambda: mlp(48, 32, 8), shapes=[(64, 48)] * 13,
                          kwargs=dict(sampling_frequency=4, window=3)),
    "varying-batch": dict(model=lambda: mlp(24, 20, 6), shapes=[(n, 24) for n in (7, 1, 30, 3, 25, 5)], kwargs={}),
    "tokens-all": dict(model=Tokens, shapes=[(4, 30, 24)] * 4, kwargs={}),
    "tokens-max-rows": dict(model=Tokens, shapes=[(4, 30, 24), (4, 30, 24), (5, 30, 24), (4, 30, 24)],
                            kwargs=dict(max_rows=50)),
    "weights-and-metric-subset": dict(model=lambda: mlp(48, 32, 8), shapes=[(16, 48)] * 4,
                                      kwargs=dict(track_weights=True,
                                                  metrics=("stable_rank", "cumulative_90", "participation_ratio_eig"))),
}


@pytest.mark.parametrize("delay", [0, 3], ids=["at-once", "delayed"])
@pytest.mark.parametrize("case", list(CASES))
def test_device_rows_equal_host_rows(case, delay, emulate, seed):
    kind = emulate(delay=delay)
    spec = CASES[case]
    torch.manual_seed(seed)
    model = spec["model"]()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    host, device = pair(model, **spec["kwargs"])
    gen = torch.Generator().manual_seed(seed)
    for step, shape in enumerate(spec["shapes"]):
        optimizer.zero_grad()
        loss = model(torch.randn(*shape, generator=gen)).square().mean()
        loss.backward()
        optimizer.step()
        host.log(step, loss)
        device.log(step, loss)
    if delay:
        assert device._queue.pending > 0, "the delayed branch did not run"
    assert all(on_device(device)) and not any(on_device(host))
    if case == "mlp-both-sides":  # the cheaper side on the device too: 16 × 16, not 32 × 32
        assert [tuple(slot.accumulator.gram.shape) for slot in device._slots] == [(16, 16), (8, 8)]
    assert sum(b.computes for b in kind.backends) > 0
    assert_same_results(device, host)
    assert device.errors == host.errors and sum(device.errors.values()) == 0
    host.close()
    device.close()


class Slice(nn.Module):
    """Keeps the first ``width`` features: the tracked width changes when told to."""

    def __init__(self) -> None:
        super().__init__()
        self.width = 10

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, : self.width] * 1.0


@pytest.mark.parametrize("window", [1, 2])
def test_a_layer_whose_width_changes_and_moves_between_paths(window, emulate, seed):
    """Widths 10 → 6 → 14 → …: the Gram's side and size change; a kind that takes only widths
    ≥ 10 moves the layer between the device and the host path, with results delayed on the
    device, so host rows of later samples must wait behind earlier device rows. With window=2 a
    width change inside a window is an error on both paths (a flagged row)."""
    emulate(delay=2, takes=lambda x, dim: x.shape[1] >= 10)
    lin, cut = nn.Linear(16, 16), Slice()
    model = nn.Sequential(lin, cut)
    host, device = pair(model, layers=[lin, cut], layer_names=["lin", "cut"], sampling_frequency=window,
                        window=window)
    # window=2 samples steps 0, 2, 4, …, each covering steps {s-1, s}: the width changes between
    # windows, except 12 → 16 inside the window of step 6 (on the device path)
    widths = [10, 6, 6, 14, 14, 12, 16, 3, 3, 12, 12, 5] if window == 2 else [10, 6, 14, 3, 12, 5, 16, 8]
    # window=1, 12 rows: widths 14 and 16 take the sample side; window=2: 16 rows keep the first
    # window's feature-side Grams full rank (see CASES)
    batch = 12 if window == 1 else 16
    gen = torch.Generator().manual_seed(seed)
    paths = []
    for step, width in enumerate(widths):
        cut.width = width
        model(torch.randn(batch, 16, generator=gen))
        paths.append(on_device(device)[1])
        host.log(step, float(step))
        device.log(step, float(step))
    assert True in paths and False in paths, "the layer never moved between paths"
    assert_same_results(device, host)
    want_errors = {"lin": 0, "cut": 1 if window == 2 else 0}
    assert device.errors == host.errors == want_errors
    host.close()
    device.close()


# ---------------------------------------------------------------------------------------------
# jumps, scalars, draining


def test_jump_detection_through_the_drain_equals_the_host_path(emulate, seed):
    emulate(delay=4)
    lin, switch = nn.Linear(16, 16), Switch(16)
    model = nn.Sequential(lin, switch)
    host, device = pair(model, layers=[lin, switch], layer_names=["lin", "switch"], jump_z_threshold=3.0)
    gen = torch.Generator().manual_seed(seed)
    for step in range(260):
        if step == 180:
            switch.rank = 1  # an unmistakable collapse (see test_tracker_jumps)
        model(torch.randn(32, 16, generator=gen))
        host.log(step, 0.0)
        device.log(step, 0.0)
    assert len(device.jumps) <= len(host.jumps)  # device results lag: confirmed later, never earlier
    got, want = device.get_jumps(), host.get_jumps()
    assert len(want) > 0 and (want["step"] == 180).any()
    pd.testing.assert_frame_equal(got.drop(columns=["z_score", "value_before", "value_after"]),
                                  want.drop(columns=["z_score", "value_before", "value_after"]))
    for column in ("z_score", "value_before", "value_after"):
        np.testing.assert_allclose(got[column], want[column], rtol=1e-8)
    assert sorted((j.step, j.metric_name) for j in device.jumps) == sorted((j.step, j.metric_name) for j in host.jumps)
    for metric in METRICS:
        a, b = device.detect_jumps(metric=metric), host.detect_jumps(metric=metric)
        assert {k: [j.step for j in v] for k, v in a.items()} == {k: [j.step for j in v] for k, v in b.items()}
    host.close()
    device.close()


def test_loss_and_grad_norm_tensors_land_in_their_rows(emulate, caplog):
    """Tensors are staged at log() (a later in-place change does not leak in) and read when their
    sample is emitted, results arriving late; floats stay floats; a tensor that is not a scalar is
    NaN and reported once, as on the host path."""
    emulate(delay=3, scalar_delay=2)
    model = mlp(6, 5)
    tracker = FastTracker(model, sampling_frequency=2, device_path="auto")
    loss = torch.zeros(())
    for step in range(12):
        model(torch.randn(4, 6))
        loss.fill_(step + 0.5)
        grad = torch.tensor(10.0 * step, dtype=torch.float64) if step % 4 == 0 else 2.0 * step
        tracker.log(step, loss if step != 6 else torch.ones(3), grad)
        loss.fill_(-1.0)  # reused buffer: the recorded value is the one at log() time
    assert tracker._queue.pending > 0, "the delayed branch did not run"
    df = tracker.get_results("Linear_0")
    assert df["step"].tolist() == list(range(0, 12, 2))
    want_loss = [s + 0.5 if s != 6 else np.nan for s in range(0, 12, 2)]
    np.testing.assert_array_equal(df["loss"].to_numpy(), want_loss)
    assert df["grad_norm"].tolist() == [10.0 * s if s % 4 == 0 else 2.0 * s for s in range(0, 12, 2)]
    errors = [r for r in caplog.records if r.name == "ndt_fast.tracker" and r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "loss" in errors[0].getMessage()
    tracker.close()


def test_get_results_before_and_after_close_lose_nothing(emulate, tmp_path, seed):
    """Results that never complete by themselves (delay far beyond the run) are all there when
    asked for: mid-run, after close(), in the run file, and after a resume."""
    emulate(delay=10_000)
    torch.manual_seed(seed)
    model = mlp(12, 20, 4)
    path = tmp_path / "run.h5"
    host = FastTracker(model, device_path="host")
    device = FastTracker(model, output=path, flush_interval=0.05, device_path="auto")
    gen = torch.Generator().manual_seed(seed)

    def train(tracker_list, steps, host_from=0):
        for step in steps:
            model(torch.randn(6, 12, generator=gen))
            for t in tracker_list:
                if t is not host or step >= host_from:
                    t.log(step, float(step))

    train([host, device], range(5))
    assert device._queue.pending == 5
    assert [len(df) for df in device.get_results().values()] == [5, 5]
    assert device._queue.pending == 0
    train([host, device], range(5, 10))
    assert device._queue.pending == 5
    device.close()
    assert_same_results(device, host)
    assert_same_results_frames(dict(ndt_fast.load(path)), host.get_results())
    # resume from an older checkpoint: steps 7..9 again are skipped, 10..14 appended
    resumed = FastTracker(model, output=path, resume=True, device_path="auto")
    train([host, resumed], range(7, 15), host_from=10)  # the host tracker measures what it has not yet
    resumed.close()
    assert_same_results_frames(dict(ndt_fast.load(path)), host.get_results())
    host.close()


def assert_same_results_frames(got: dict[str, pd.DataFrame], want: dict[str, pd.DataFrame]) -> None:
    assert list(got) == list(want)
    for name in want:
        assert_same_rows(got[name].reset_index(drop=True), want[name], name)


def test_a_full_queue_waits_for_the_device_instead_of_dropping(emulate, monkeypatch, caplog):
    """With the host MAX_PENDING_SAMPLES samples ahead of a device that does not finish, the next
    sample drains with waiting (counted, logged once); every row is recorded, in order."""
    monkeypatch.setattr(backends, "MAX_PENDING_SAMPLES", 3)
    emulate(delay=10_000)
    model = mlp(6, 5, 3)
    host, device = pair(model)
    for step in range(11):
        model(torch.randn(4, 6))
        host.log(step, 0.0)
        device.log(step, 0.0)
        assert device._queue.pending <= 3
    assert device._queue.waits == 3  # at steps 3, 6 and 9
    assert sum("samples behind" in r.getMessage() for r in caplog.records) == 1
    assert_same_results(device, host)
    assert device.get_results("Linear_0")["step"].tolist() == list(range(11))
    host.close()
    device.close()


@pytest.mark.parametrize("where", ["update", "compute", "poll", "wait"])
def test_an_error_in_the_device_path_is_caught_counted_and_flagged(where, emulate, monkeypatch, caplog):
    """The injected error fails once (at step 3, or in the final drain for ``wait``): training
    goes on, the error is counted per layer and logged once, the affected rows say
    FLAG_TRACKER_ERROR with NaN metrics, every other row equals the host path's."""
    emulate(delay=0 if where != "wait" else 10_000)
    real = getattr(EmulatedBackend, where)
    state = {"step": -1, "failed": False}

    def failing(self, *args, **kwargs):
        if not state["failed"] and (where == "wait" or state["step"] == 3):
            state["failed"] = True
            raise RuntimeError(f"injected {where} error")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(EmulatedBackend, where, failing)
    model = mlp(6, 5, 3)
    host, device = pair(model)
    for step in range(6):
        state["step"] = step
        model(torch.randn(4, 6))
        host.log(step, float(step))
        device.log(step, float(step))
    results, reference = device.get_results(), host.get_results()
    assert state["failed"]
    flagged_steps = list(range(6)) if where == "wait" else [3]
    for name in reference:
        df = results[name]
        assert df["step"].tolist() == list(range(6)) and df["loss"].tolist() == [float(s) for s in range(6)]
        # (update fails in the first layer's hook only)
        bad = df["step"].isin(flagged_steps if where != "update" or name == "Linear_0" else [])
        assert (df.loc[bad, "flags"] == ndt_fast.FLAG_TRACKER_ERROR).all()
        assert df.loc[bad, list(METRICS)].isna().all().all()
        # (cumulative_90 is float64 where a flagged row holds NaN)
        assert_same_rows(df[~bad].reset_index(drop=True), reference[name][~bad].reset_index(drop=True), name,
                         check_dtypes=False)
    # compute, poll and wait fail for every device layer of the samples concerned
    # (wait: every sample was still waiting for the device, so each is an error of its layers)
    n = 6 if where == "wait" else 1
    want_errors = {"Linear_0": 1, "Linear_1": 0} if where == "update" else {"Linear_0": n, "Linear_1": n}
    assert device.errors == want_errors
    logged = [r for r in caplog.records if r.name == "ndt_fast.tracker" and r.levelno >= logging.ERROR]
    assert logged and all("injected" in r.getMessage() for r in logged)
    host.close()
    device.close()


def test_close_leaves_no_hooks_and_keeps_every_result(emulate):
    emulate(delay=5)
    model = mlp(6, 5, 3)
    before = [(id(m), list(m._forward_hooks)) for m in model.modules()]
    tracker = FastTracker(model, device_path="auto")
    for step in range(4):
        model(torch.randn(4, 6))
        tracker.log(step, 0.0)
    assert tracker._queue.pending == 4
    tracker.close()
    assert [(id(m), list(m._forward_hooks)) for m in model.modules()] == before
    assert [len(df) for df in tracker.get_results().values()] == [4, 4]
    tracker.close()  # idempotent


# ---------------------------------------------------------------------------------------------
# routing


def test_device_path_choices(emulate):
    emulate()
    model = mlp(6, 5)
    with pytest.raises(ValueError, match="device_path"):
        FastTracker(model, device_path="gpu")
    # The default stays "host" until the native backend has run on a GPU (docs/CUDA.md).
    for kwargs in ({}, {"device_path": "host"}, {"center": True, "device_path": "auto"}):
        tracker = FastTracker(model, **kwargs)
        model(torch.randn(4, 6))
        tracker.log(0, 0.0)
        assert tracker._capture.router is None and not any(on_device(tracker)), kwargs
        assert len(tracker.get_results("Linear_0")) == 1
        tracker.close()


def test_the_native_kind_leaves_cpu_tensors_on_the_host():
    """Without the emulation (the default kind): CPU activations never reach the device path."""
    kind = NativeCudaKind()
    assert not kind.takes(torch.randn(3, 4), 3) and kind.stage(torch.tensor(1.0)) is None
    model = mlp(6, 5)
    tracker = FastTracker(model, device_path="auto")
    model(torch.randn(4, 6))
    tracker.log(0, torch.tensor(0.5))
    assert isinstance(tracker._capture.router.kind, NativeCudaKind)
    assert not tracker._capture.device_in_use and not any(on_device(tracker))
    assert tracker.get_results("Linear_0")["loss"].tolist() == [0.5]
    tracker.close()


def test_the_native_kind_refuses_grams_beyond_the_device_limit():
    """A Gram wider than SpectraPlan's limit stays on the host, with the reason in the warning;
    decided before anything about CUDA is asked (no device needed to check it)."""
    kind = NativeCudaKind()
    wide = types.SimpleNamespace(is_cuda=True)  # stands in for a CUDA activation
    assert not kind.takes(wide, MAX_DEVICE_GRAM + 1)
    assert kind._available is None  # refused before the availability check
    assert f"beyond the device path's {MAX_DEVICE_GRAM}" in kind.refusal(wide, MAX_DEVICE_GRAM + 1)


def test_ring_output_splits_into_blocks_by_tag():
    records = np.arange(12.0).reshape(6, 2)
    blocks = split_by_tag(records, np.array([4, 4, 5, 7, 7, 7]))
    assert [tag for tag, _ in blocks] == [4, 5, 7]
    assert [b.tolist() for _, b in blocks] == [records[:2].tolist(), records[2:3].tolist(), records[3:].tolist()]
    assert split_by_tag(np.empty((0, 2)), np.empty(0, dtype=np.int64)) == []


# ---------------------------------------------------------------------------------------------
# the native backend's Python glue, against a CPU fake of ndt_fast._core.cuda


class _FakeCudaCore:
    """The parts of ``_core.cuda`` that NativeCudaBackend calls, on host memory, by their documented
    semantics (csrc/include/ndt/cuda/device.h): pointers in, results written through pointers,
    ring slots completing ``delay`` pops after their push. It checks the glue — pointers, offsets,
    sides, beta, tags, plan dims, masks — not CUDA: the Grams here are full float64-exact float32."""

    _DTYPES = {0: np.float32, 1: np.float64, 2: np.float16}

    def __init__(self, delay: int) -> None:
        self.delay = delay
        self.rings: list = []
        fake = self

        class PinnedRecordRing:
            def __init__(self, slots: int, slot_records: int, width: int) -> None:
                self.slots, self.slot_records, self.width = slots, slot_records, width
                self.queue: list[list] = []  # [pops left, tag, records]
                fake.rings.append(self)

            def push(self, records: int, count: int, *, tag: int, stream: int) -> bool:
                assert 1 <= count <= self.slot_records and isinstance(stream, int)
                if len(self.queue) == self.slots:
                    return False
                self.queue.append([fake.delay, tag, fake.read(records, np.float64, (count, self.width)).copy()])
                return True

            @property
            def pending(self) -> int:
                return len(self.queue)

            def pop(self, max_records: int):
                out, tags = [], []
                while (self.queue and self.queue[0][0] <= 0
                       and sum(map(len, out)) + len(self.queue[0][2]) <= max_records):
                    _, tag, block = self.queue.pop(0)
                    out.append(block)
                    tags.append(np.full(len(block), tag, dtype=np.int64))
                for entry in self.queue:
                    entry[0] -= 1
                if not out:
                    return np.empty((0, self.width)), np.empty(0, dtype=np.int64)
                return np.concatenate(out), np.concatenate(tags)

        class SpectraPlan:
            def __init__(self, dims, mask) -> None:
                self.dims, self.mask, self.workspace_bytes = dims, mask, 64

            def run(self, ctx, grams, *, workspace, records, stream) -> None:
                from ndt_fast.cuda import reference_gram_metrics

                assert len(grams) == len(self.dims) and workspace != 0
                out = fake.read(records, np.float64, (len(grams), 9))
                for k, (pointer, n) in enumerate(zip(grams, self.dims)):
                    g = torch.from_numpy(fake.read(pointer, np.float32, (n, n)).astype(np.float64))
                    out[k] = reference_gram_metrics(g, metrics=self.mask).numpy()

        self.PinnedRecordRing = PinnedRecordRing
        self._SpectraPlan = SpectraPlan

    @staticmethod
    def read(pointer: int, dtype, shape, strides=None) -> np.ndarray:
        """A numpy view of host memory at ``pointer`` (strides in elements; C order by default)."""
        import ctypes

        itemsize = np.dtype(dtype).itemsize
        strides = strides or (shape[1], 1)
        extent = ((shape[0] - 1) * strides[0] + (shape[1] - 1) * strides[1] + 1) * itemsize
        base = np.frombuffer((ctypes.c_char * extent).from_address(pointer), dtype=dtype)
        return np.lib.stride_tricks.as_strided(base, shape, (strides[0] * itemsize, strides[1] * itemsize))

    def gram_update(self, ctx, view, *, side: str, gram: int, beta: float, stream: int, use_cublas: bool = True) -> None:
        pointer, code, rows, cols, row_stride, col_stride = view
        x = self.read(pointer, self._DTYPES[code], (rows, cols), (row_stride, col_stride)).astype(np.float64)
        g = x.T @ x if side == "feature" else x @ x.T
        out = self.read(gram, np.float32, g.shape)
        assert beta in (0.0, 1.0)
        out[...] = (out if beta else 0.0) + g

    def synchronize(self, device=None) -> None:
        """torch.cuda.synchronize: every copy queued so far has completed."""
        for ring in self.rings:
            for entry in ring.queue:
                entry[0] = 0

    def plan(self, ctx, dims, eps, energy_threshold, mask, solver):
        assert solver == "auto" and eps == 1e-10 and energy_threshold == 0.9
        return self._SpectraPlan(dims, mask)


class _FakeStream:
    cuda_stream = 7

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _FakeStream)


@pytest.mark.parametrize("delay", [0, 2])
def test_native_backend_glue_against_a_fake_core(delay, emulate, monkeypatch, seed):
    """NativeCudaBackend (the code a GPU runs) with ``_core.cuda`` replaced by a host fake: rows
    equal the host path's to float32 round-off, with sample and feature sides, a window, weights
    (records at an offset of one ring push) and results arriving late."""
    from ndt_fast.cuda import runtime

    fake = _FakeCudaCore(delay)
    monkeypatch.setattr(runtime, "_native", fake)
    monkeypatch.setattr(runtime, "_context", lambda index: object())
    monkeypatch.setattr(runtime, "_plan", fake.plan)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: _FakeStream())
    monkeypatch.setattr(torch.cuda, "synchronize", fake.synchronize)
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())  # no CUDA device here
    kind = emulate()
    backends: list[NativeCudaBackend] = []

    def native_backend(device, **kwargs):
        backend = NativeCudaBackend(torch.device("cpu", 0), **kwargs)
        backend.device = device  # (an index is needed to build it; the tracker compares weights' devices with this)
        backends.append(backend)
        return backend

    kind.backend = native_backend
    torch.manual_seed(seed)
    model = mlp(48, 32, 8)
    for kwargs, batch in (({"track_weights": True}, 16), ({"sampling_frequency": 3, "window": 2}, 40)):
        host, device = pair(model, **kwargs)
        gen = torch.Generator().manual_seed(seed)
        for step in range(7):
            model(torch.randn(batch, 48, generator=gen))
            host.log(step, float(step))
            device.log(step, float(step))
        assert all(isinstance(slot.accumulator.backend, NativeCudaBackend) for slot in device._slots)
        if delay:
            assert device._queue.pending > 0
        assert_same_results(device, host, rtol=1e-5)  # float32 Grams
        assert sum(device.errors.values()) == 0
        host.close()
        device.close()
    assert len(backends) == 2


# ---------------------------------------------------------------------------------------------
# review follow-ups: staged scalars of host-only samples, failing weight metrics


def test_a_sample_with_no_device_layer_still_waits_for_its_staged_loss(emulate):
    """Once a layer is on a device every sample goes through the queue, a sample computed wholly
    on the host included; its loss tensor is staged like any other and the sample must not be
    emitted before that scalar has landed (on a GPU: a pinned cell read too early is stale)."""
    emulate(scalar_delay=3, takes=lambda x, dim: x.shape[1] == 5)  # Linear_0 (5 wide) only
    model = mlp(6, 5, 3)
    tracker = FastTracker(model, device_path="auto")
    model(torch.randn(4, 6))
    tracker.log(0, torch.tensor(0.5))
    model[2](torch.randn(4, 5))  # Linear_1 alone: a host-only sample
    tracker.log(1, torch.tensor(1.5))
    assert on_device(tracker) == [True, False]
    assert tracker._queue.pending == 2, "the staged losses were not waited for"
    results = tracker.get_results()
    assert results["Linear_0"]["loss"].tolist() == [0.5]
    assert results["Linear_1"]["loss"].tolist() == [0.5, 1.5]
    tracker.close()


@pytest.mark.parametrize("path", ["host", "auto"])
def test_a_failing_weight_metric_keeps_the_activation_rows(path, emulate, monkeypatch, seed):
    """track_weights: weight metrics that raise (here: injected) leave the sample's activation
    rows as they are, NaN weight columns, the error counted, and log() returning normally. On the
    device path the first layer is on the device with its weight refused (measured on the host),
    the second layer on the host."""
    emulate(takes=lambda x, dim: x.shape[1] == 6 and dim < 8)  # Linear_0's activations, not its 6 × 8 weight
    torch.manual_seed(seed)
    model = mlp(8, 6, 4)
    reference = FastTracker(model, device_path="host")
    tracker = FastTracker(model, track_weights=True, device_path=path)

    def boom(weight):
        raise RuntimeError("injected weight failure")

    # The one place a weight becomes input of the host core (the native finish, the host backend
    # and the host measurement of a weight the device refused all go through it).
    monkeypatch.setattr(backends, "weight_view", boom)
    for step in range(3):
        model(torch.randn(5, 8))
        reference.log(step, 0.0)
        tracker.log(step, 0.0)
    if path == "auto":
        assert on_device(tracker) == [True, False]
    got, want = tracker.get_results(), reference.get_results()
    for name in want:
        assert_same_rows(got[name][list(want[name].columns)], want[name], name)
        weight_columns = [c for c in got[name].columns if c.startswith("weight_")]
        assert weight_columns and got[name][weight_columns].isna().all().all(), name
        assert tracker.errors[name] == 3, tracker.errors
    reference.close()
    tracker.close()


def test_background_finish_with_layers_on_both_paths(emulate, seed):
    """A host layer's Gram deferred to the background thread (``background_finish``) is computed
    before its sample takes the queue's path (another layer is on the device): same rows."""
    emulate(delay=2, takes=lambda x, dim: dim > 10)  # layer 0's 16 × 16 Gram on the device, layer 2's 8 × 8 on the host
    torch.manual_seed(seed)
    model = mlp(48, 32, 8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    host = FastTracker(model, device_path="host")
    device = FastTracker(model, device_path="auto", background_finish=True)
    gen = torch.Generator().manual_seed(seed)
    for step in range(9):
        optimizer.zero_grad()
        loss = model(torch.randn(16, 48, generator=gen)).square().mean()
        loss.backward()
        optimizer.step()
        host.log(step, loss)
        device.log(step, loss)
    assert on_device(device) == [True, False]
    assert_same_results(device, host)
    assert sum(device.errors.values()) == 0
    host.close()
    device.close()


def test_a_deferred_gram_that_fails_on_the_queue_path_flags_its_row(emulate, monkeypatch, seed):
    emulate(takes=lambda x, dim: dim > 10)  # layer 0 on the device, layer 2's deferred Gram on the host
    torch.manual_seed(seed)
    model = mlp(48, 32, 8)
    device = FastTracker(model, device_path="auto", background_finish=True)
    fold = Capture.fold_deferred

    def failing_at_step_2(self, slot):
        if device.step_counter == 2 and slot.deferred is not None:
            raise RuntimeError("injected")
        fold(self, slot)

    monkeypatch.setattr(Capture, "fold_deferred", failing_at_step_2)
    for step in range(4):
        model(torch.randn(16, 48))
        device.log(step, 0.0)
    results = device.get_results()
    assert [len(df) for df in results.values()] == [4, 4]
    flags = results["Linear_1"]["flags"].astype(int).tolist()
    error = ndt_fast.FLAG_TRACKER_ERROR
    assert flags[2] & error and not any(f & error for f in flags[:2] + flags[3:])
    assert not any(int(f) & error for f in results["Linear_0"]["flags"])
    assert device.errors["Linear_1"] == 1
    device.close()
