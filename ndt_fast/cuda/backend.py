"""FastTracker's CUDA device backend (``device_path="auto"``).

.. warning::
   NEVER RUN on a GPU: written without one (see ``docs/CUDA.md``). Its Python glue runs in
   ``tests/test_device_path.py`` against a host fake of ``_core.cuda``; :class:`PinnedScalarStage`
   not at all. The seam it implements (``ndt_fast.tracker.backends``) is exercised on the CPU
   through the tests' emulated backend.

A layer whose activations are CUDA tensors on a device this module can run on keeps a float32
Gram there (``runtime.gram_update`` on the current stream, no copy, no sync); ``submit`` queues
the spectra and metrics (``SpectraPlan``) and a copy of the records into a pinned host ring;
``poll`` hands over completed ring slots and never waits; ``wait`` synchronizes the device.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ndt_fast._buffer import torch_matrix_view
from ndt_fast._schema import METRIC_WIDTH, gram_side
from ndt_fast.cuda import runtime
from ndt_fast.tracker.backends import MAX_PENDING_SAMPLES, DeviceBackend, MetricSettings, Staged

#: Widest Gram the device path takes (SpectraPlan's int32 limit: n² elements must fit an int).
MAX_DEVICE_GRAM = 46340


class NativeCudaKind:
    """CUDA activations on a device that ``ndt_fast.cuda`` can run on. NEVER RUN (no GPU so far)."""

    def __init__(self) -> None:
        self._available: bool | None = None  # decided at the first CUDA activation (imports, dlopen)
        self._reason = ""
        self._cusolver = False
        self._own_solver_max = 0
        self._scalars = PinnedScalarStage(2 * MAX_PENDING_SAMPLES)

    def _check(self) -> bool:
        if self._available is None:
            info = runtime.availability()
            self._available, self._reason = bool(info["available"]), str(info["reason"])
            self._cusolver = bool(info["cusolver"])
            self._own_solver_max = int(runtime._native.JACOBI_MAX_DIM) if self._available else 0
        return self._available

    def takes(self, x: torch.Tensor, dim: int) -> bool:
        # Without cuSOLVER only the own Jacobi kernel solves (dim ≤ 64): wider Grams stay on the
        # host, as do Grams beyond SpectraPlan's limit (whose hook would allocate gigabytes).
        return (x.is_cuda and dim <= MAX_DEVICE_GRAM and self._check()
                and (dim <= self._own_solver_max or self._cusolver))

    def refusal(self, x: torch.Tensor, dim: int) -> str:
        if not x.is_cuda:
            return "not a CUDA tensor"
        if dim > MAX_DEVICE_GRAM:
            return f"a {dim}-wide Gram is beyond the device path's {MAX_DEVICE_GRAM}"
        if not self._check():
            return f"ndt_fast.cuda is unavailable: {self._reason}"
        return f"a {dim}-wide Gram needs cuSOLVER, which is not loaded: {self._reason}"

    def backend(self, device: torch.device, *, records_per_sample: int, slots: int,
                settings: MetricSettings) -> NativeCudaBackend:
        return NativeCudaBackend(device, records_per_sample=records_per_sample, slots=slots, settings=settings)

    def stage(self, value: Any) -> Staged | None:
        if isinstance(value, torch.Tensor) and value.is_cuda and value.numel() == 1:
            return self._scalars.stage(value)
        return None


class NativeCudaBackend(DeviceBackend):
    """One CUDA device: float32 Grams, metrics by ``SpectraPlan``, records copied into a
    ``PinnedRecordRing``, all on the current stream.

    Per submit: one plan run for the activations' Grams (and one for the weights'), one ring push
    of all their records. Grams and workspaces are torch tensors: the caching allocator is
    stream-ordered, so a temporary freed here is reused only by work queued after ours.
    Streams: an update and a compute on different streams are ordered by a device-side
    ``wait_stream`` (no host sync); in an ordinary loop both run on the default stream.
    """

    def __init__(self, device: torch.device, *, records_per_sample: int, slots: int, settings: MetricSettings) -> None:
        self.device = device if device.index is not None else torch.device(device.type, torch.cuda.current_device())
        self._settings = settings
        self._ctx = runtime._context(self.device.index)
        self._ring = runtime.record_ring(self.device, slots, records_per_sample)
        self._update_streams: dict[int, torch.cuda.Stream] = {}  # streams of updates since the last compute
        self._compute_stream: torch.cuda.Stream | None = None

    def new_gram(self, side: str, dim: int) -> torch.Tensor:
        return runtime.new_gram(self.device, dim)  # written by the first update (beta = 0)

    def _stream(self) -> torch.cuda.Stream:
        return torch.cuda.current_stream(self.device)

    def update(self, gram: torch.Tensor, x: torch.Tensor, side: str, fresh: bool) -> None:
        stream = self._stream()
        if self._compute_stream is not None and self._compute_stream != stream:
            stream.wait_stream(self._compute_stream)  # the last compute still reads this Gram
        self._update_streams[stream.cuda_stream] = stream
        self._gram_update(gram, x, side, fresh, stream)

    def _gram_update(self, gram: torch.Tensor, x: torch.Tensor, side: str, fresh: bool, stream: Any) -> None:
        view = torch_matrix_view(x)
        if view is None or x.dtype == torch.float64:
            # float8 / integer outputs: measured in float32 (as on the host). float64: cuBLAS
            # takes no float64 here and the own kernel is slow; float32 is the Gram's precision anyway.
            x = x.float()
            view = torch_matrix_view(x)
        runtime.gram_update(gram, view, side, beta=0.0 if fresh else 1.0, device=self.device,
                            stream=stream.cuda_stream)

    def compute(self, tag: int, grams: Sequence[torch.Tensor], weights: Sequence[torch.Tensor]) -> None:
        stream = self._stream()
        for other in self._update_streams.values():
            if other != stream:
                stream.wait_stream(other)
                for g in grams:  # a Gram freed later must not be reused on its own stream before we read it
                    g.record_stream(stream)
        self._update_streams.clear()
        self._compute_stream = stream
        k = len(grams)
        records = torch.empty((k + len(weights), METRIC_WIDTH), dtype=torch.float64, device=self.device)
        self._run(grams, self._settings.mask, records[:k], stream)
        if weights:
            weight_grams = []
            for w in weights:
                side, dim = gram_side(*w.shape)
                g = self.new_gram(side, dim)
                self._gram_update(g, w, side, True, stream)
                weight_grams.append(g)
            self._run(weight_grams, self._settings.weight_mask, records[k:], stream)
        if not self._ring.push(records.data_ptr(), len(records), tag=tag, stream=stream.cuda_stream):
            # The sample queue keeps at most `slots` samples pending, so this is a broken invariant.
            raise RuntimeError("the device record ring is full")

    def _run(self, grams: Sequence[torch.Tensor], mask: int, out: torch.Tensor, stream: Any) -> None:
        s = self._settings
        plan = runtime._plan(self._ctx, tuple(int(g.shape[0]) for g in grams), s.eps, s.energy_threshold, mask,
                             "auto")
        workspace = torch.empty(max(int(plan.workspace_bytes), 1), dtype=torch.uint8, device=self.device)
        plan.run(self._ctx, [g.data_ptr() for g in grams], workspace=workspace.data_ptr(), records=out.data_ptr(),
                 stream=stream.cuda_stream)

    def poll(self) -> list[tuple[int, np.ndarray]]:
        pending = int(self._ring.pending)
        if pending == 0:
            return []
        records, tags = self._ring.pop(pending * int(self._ring.slot_records))
        return split_by_tag(records, tags)

    def wait(self) -> None:
        torch.cuda.synchronize(self.device)


def split_by_tag(records: np.ndarray, tags: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """Ring output (one tag per record, blocks contiguous) → [(tag, block)]."""
    if len(tags) == 0:
        return []
    starts = np.flatnonzero(np.diff(tags)) + 1
    return [(int(block_tags[0]), block) for block, block_tags in
            zip(np.split(records, starts), np.split(tags, starts))]


class _PinnedScalar:
    __slots__ = ("cell", "event")

    def __init__(self, cell: torch.Tensor, event: Any) -> None:
        self.cell = cell
        self.event = event

    def ready(self) -> bool:
        return bool(self.event.query())

    def wait(self) -> None:
        self.event.synchronize()

    def value(self) -> float:
        return float(self.cell)  # a pinned host tensor: no device access


class PinnedScalarStage:
    """CUDA scalars copied with ``non_blocking=True`` into cells of one pinned float64 buffer, each
    followed by an event on the scalar's current stream. Cells are used round-robin: with at
    most ``MAX_PENDING_SAMPLES`` samples (two scalars each) waiting, the cell reused is always one
    whose sample has been emitted. The buffer is allocated on first use."""

    def __init__(self, cells: int) -> None:
        self._cells = cells
        self._buffer: torch.Tensor | None = None
        self._next = 0

    def stage(self, value: torch.Tensor) -> _PinnedScalar:
        if self._buffer is None:
            self._buffer = torch.empty(self._cells, dtype=torch.float64, pin_memory=True)
        cell = self._buffer[self._next]
        self._next = (self._next + 1) % self._cells
        cell.copy_(value.detach().reshape(()), non_blocking=True)  # dtype cast on the device, then an async copy
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(value.device))
        return _PinnedScalar(cell, event)
