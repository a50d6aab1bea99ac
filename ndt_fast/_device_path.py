"""FastTracker's device path: activations measured where they live, results read back later.

.. warning::
   The native CUDA backend (:class:`NativeCudaBackend`, :class:`PinnedScalarStage`) has NEVER
   RUN on a GPU: it was written without one (see ``docs/CUDA.md``). Everything else here
   (routing, the sample queue, draining, error handling) is exercised on the CPU by
   ``tests/test_device_path.py`` through :class:`EmulatedKind`, a pure-torch stand-in for the
   native backend; ``NativeCudaBackend``'s Python glue runs there against a host fake of
   ``_core.cuda``, ``PinnedScalarStage`` not at all.

Routing (``FastTracker(device_path="auto")``, opt-in; the default is "host"): an armed forward
whose 2-D activation the backend kind takes (the native kind: a CUDA tensor, with
``ndt_fast.cuda.is_available()``, and cuSOLVER loaded if its Gram is wider than the own
solver's 64) gives its layer a :class:`DeviceAccumulator`, a Gram on that device; anything else
stays on the host path (a CUDA activation is then copied to the host, one sync per layer and
sample; the tracker warns once). The Gram's side is the host path's: the smaller one when ``window == 1``
(``rows < cols`` → the sample side, rows × rows), the feature side otherwise; a new (side, size)
builds a new Gram, as on the host.

The life of a sample whose layers are on a device::

    hook       DeviceAccumulator.add → Backend.update: Gram update on the current stream
               (no copy of the activation, no sync, nothing read from the device)
    log(step)  DevicePath.submit: loss / grad_norm staged (a CUDA tensor: a non_blocking copy into
               pinned memory plus an event; anything else is read at once), every device's
               metrics queued into its record ring (Backend.compute), the sample appended to a FIFO
    log(…)     DevicePath.poll: completed ring slots only (never waits); finished samples at the
               FIFO's head → the tracker's ``emit`` (rows of ``storage/records.py`` → records,
               jump banks)
    get_results / get_jumps / detect_jumps / close:  DevicePath.drain: waits for the devices
               (a sync, outside the training step), then the same

Order and threads: samples are emitted strictly in submission order, host-computed rows of the
same sample included, so every layer's rows and its jump bank see steps in order. Everything
runs on the thread that calls the tracker (the training thread); there is no thread here, and the
jump banks are fed only through ``emit``.

Bounded, nothing dropped: at most ``MAX_PENDING_SAMPLES`` samples wait in the FIFO, and each
device's ring has that many slots (a sample takes at most one slot per device), so a ring can
never reject a push. A sample submitted while the FIFO is full first drains *with waiting*
(a sync, counted in ``DevicePath.waits`` and logged once): this happens only if the host runs that
many samples ahead of the GPU.

Errors never reach the training loop: a failing compute gives its layers FLAG_TRACKER_ERROR
rows at once; a failing poll or wait turns every sample still waiting on that device into
FLAG_TRACKER_ERROR rows (records a device could not deliver are flagged, not lost); each is
reported through the tracker's ``report_error`` (counted per layer, logged once).
"""

from __future__ import annotations

import collections
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from ndt_fast._buffer import torch_matrix_view
from ndt_fast.metrics import RECORD_COLUMNS

logger = logging.getLogger("ndt_fast.tracker")  # the tracker's logger: one place to configure

RECORD_WIDTH = len(RECORD_COLUMNS)
#: Samples that may wait for their device results; also the slots of each device's record ring.
MAX_PENDING_SAMPLES = 256
#: Widest Gram the device path takes (SpectraPlan's int32 limit: n² elements must fit an int).
MAX_DEVICE_GRAM = 46340


@dataclass(frozen=True)
class MetricSettings:
    """What every backend computes: ``ndt_fast.metrics`` options, as bit masks."""

    eps: float
    energy_threshold: float
    mask: int  # activation metrics
    weight_mask: int  # weight metrics (track_weights)


# ---- the seam: what a device backend does ----------------------------------------------------------


class Backend(Protocol):
    """One device's Grams, metrics and record ring.

    ``update`` and ``compute`` only queue work (on the device's current stream for CUDA);
    ``poll`` hands over completed results and never waits; ``wait`` blocks until everything
    queued has completed (a sync: called only outside the training step).
    """

    device: torch.device

    def new_gram(self, side: str, dim: int) -> Any:
        """An empty Gram (dim × dim) of the given side ("sample" or "feature")."""

    def update(self, gram: Any, x: torch.Tensor, side: str, fresh: bool) -> None:
        """``gram = (0 if fresh else gram) + XᵀX (feature) or XXᵀ (sample)``; x (rows, cols) on this device."""

    def compute(self, tag: int, grams: Sequence[Any], weights: Sequence[torch.Tensor]) -> None:
        """Queue the records (len(grams) + len(weights)) × 9 float64 of ``grams`` (activation
        mask) then of the 2-D ``weights`` (their smaller Gram, weight mask), tagged ``tag``."""

    def poll(self) -> list[tuple[int, np.ndarray]]:
        """Completed ``(tag, records)`` in compute order, oldest first; never waits."""

    def wait(self) -> None:
        """Block until everything queued has completed."""


class Staged(Protocol):
    """A scalar (loss or grad_norm) on its way to the host."""

    def ready(self) -> bool: ...

    def wait(self) -> None: ...

    def value(self) -> float: ...


class BackendKind(Protocol):
    """Which activations go to a device, and the backend and scalar staging that serve them."""

    def takes(self, x: torch.Tensor, dim: int) -> bool:
        """Whether the 2-D matrix ``x``, measured through a ``dim`` × ``dim`` Gram, goes to a device."""

    def refusal(self, x: torch.Tensor, dim: int) -> str:
        """Why it does not (for the host-copy warning)."""

    def backend(self, device: torch.device, *, records_per_sample: int, slots: int,
                settings: MetricSettings) -> Backend: ...

    def stage(self, value: Any) -> Staged | None:
        """Stage a scalar for reading after its device work; None: read it now (not a device tensor)."""


# ---- what a tracked layer holds -------------------------------------------------------------------------


class DeviceAccumulator:
    """A layer's Gram on a device, with ``core.GramAccumulator``'s interface (add / reset / rows_seen).

    ``rows_seen`` is counted on the host, so nothing is read from the device to know it.
    """

    __slots__ = ("backend", "side", "dim", "gram", "rows_seen")

    def __init__(self, backend: Backend, side: str, dim: int) -> None:
        self.backend = backend
        self.side = side
        self.dim = dim
        self.gram = backend.new_gram(side, dim)
        self.rows_seen = 0

    def add(self, x: torch.Tensor) -> None:
        """Fold the 2-D activation ``x`` (rows, cols) into the Gram; the first add after a reset replaces it."""
        self.backend.update(self.gram, x, self.side, fresh=self.rows_seen == 0)
        self.rows_seen += int(x.shape[0])

    def reset(self) -> None:
        self.rows_seen = 0  # the next add overwrites the Gram (beta = 0): no kernel to zero it


# ---- the router and the sample queue ------------------------------------------------------------------


@dataclass
class _Part:
    """One device's share of a sample: where its records go in the sample's rows."""

    positions: list[int]  # indices into the sample's slots
    weight_positions: list[int]  # those whose weight matrix the device computes too


@dataclass
class _Sample:
    tag: int
    step: int
    slots: list[Any]  # the tracker's _LayerSlot objects, in row order
    records: np.ndarray  # (len(slots), 9): host rows filled, device rows NaN until delivered
    weight_records: np.ndarray | None
    rows_seen: list[int]
    scalars: list[float | Staged]  # loss, grad_norm
    parts: dict[int, _Part] = field(default_factory=dict)  # id(backend) → its part, until delivered

    def done(self) -> bool:
        """Every device part delivered and every staged scalar landed. A scalar whose readiness
        cannot be asked (a device error) is given up as NaN rather than block the queue."""
        if self.parts:
            return False
        for i, s in enumerate(self.scalars):
            if isinstance(s, float):
                continue
            try:
                if not s.ready():
                    return False
            except Exception as error:
                logger.error("ndt_fast: a staged scalar could not be read (%s); recorded as NaN", error)
                self.scalars[i] = math.nan
        return True


class DevicePath:
    """Routes layers to per-device backends and turns their delayed results into the tracker's rows.

    Callbacks into the tracker: ``emit(step, slots, records, weight_records, rows_seen, loss,
    grad_norm)`` writes one sample's rows (records: (k, 9) float64 of ``RECORD_COLUMNS`` per
    slot); ``read_scalar(value, name)`` reads a scalar on the host (NaN and a log line for bad
    input); ``report_error(slot, error)`` counts a caught error, whose rows get ``error_flag``
    (FLAG_TRACKER_ERROR) and NaN metrics. Not thread-safe: one thread
    (the training thread) calls everything.
    """

    def __init__(self, kind: BackendKind, *, settings: MetricSettings, records_per_sample: int,
                 emit: Callable[..., None], read_scalar: Callable[[Any, str], float],
                 report_error: Callable[[Any, BaseException], None], error_flag: int,
                 max_pending: int | None = None) -> None:
        self.kind = kind
        self._error_flag = error_flag
        self._settings = settings
        self._records_per_sample = records_per_sample
        self._emit = emit
        self._read_scalar = read_scalar
        self._report_error = report_error
        self._max_pending = MAX_PENDING_SAMPLES if max_pending is None else max_pending
        self._backends: dict[torch.device, Backend] = {}
        self._queue: collections.deque[_Sample] = collections.deque()
        self._by_tag: dict[int, _Sample] = {}
        self._next_tag = 0
        self.in_use = False  # a layer has been on a device: from then on every sample goes through the queue
        self.waits = 0  # submissions that had to wait for a device (the queue was full)

    # ---- hooks --------------------------------------------------------------------------------------

    def takes(self, x: torch.Tensor, dim: int) -> bool:
        return self.kind.takes(x, dim)

    def accumulator(self, device: torch.device, side: str, dim: int) -> DeviceAccumulator:
        backend = self._backends.get(device)
        if backend is None:
            backend = self.kind.backend(device, records_per_sample=self._records_per_sample,
                                        slots=self._max_pending, settings=self._settings)
            self._backends[device] = backend
        self.in_use = True
        return DeviceAccumulator(backend, side, dim)

    # ---- log() ----------------------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Samples submitted and not yet emitted."""
        return len(self._queue)

    def submit(self, step: int, slots: list[Any], records: np.ndarray, weight_records: np.ndarray | None,
               rows_seen: list[int], device_positions: list[int], weights: list[torch.Tensor | None] | None,
               loss: Any, grad_norm: Any) -> None:
        """Queue one sample. ``records`` / ``weight_records`` hold the host-computed rows; the rows
        at ``device_positions`` (slots whose accumulator is a DeviceAccumulator) are computed on
        their devices, with ``weights[i]`` (a 2-D matrix on that device, or None) for position i."""
        if len(self._queue) >= self._max_pending:
            self.poll()
            if len(self._queue) >= self._max_pending:
                self.waits += 1
                if self.waits == 1:
                    logger.warning("ndt_fast: the device is %d samples behind the host; waiting for it (a sync; "
                                   "reported once)", len(self._queue))
                self.drain()
        tag = self._next_tag
        self._next_tag += 1
        sample = _Sample(tag, step, slots, records, weight_records, rows_seen,
                         [self._stage(loss, "loss"), self._stage(grad_norm, "grad_norm")])
        groups: dict[int, tuple[Backend, list[int]]] = {}
        for i in device_positions:
            backend = slots[i].accumulator.backend
            groups.setdefault(id(backend), (backend, []))[1].append(i)
        for key, (backend, positions) in groups.items():
            with_weight = [i for i in positions if weights is not None and weights[i] is not None]
            try:
                backend.compute(tag, [slots[i].accumulator.gram for i in positions],
                                [weights[i] for i in with_weight])
            except Exception as error:  # a bug of ours or a device error: flagged rows, training goes on
                self._flag(sample, positions, error)
                continue
            sample.parts[key] = _Part(positions, with_weight)
        self._queue.append(sample)
        self._by_tag[tag] = sample
        self.poll()

    def _stage(self, value: Any, name: str) -> float | Staged:
        try:
            staged = self.kind.stage(value)
        except Exception as error:  # e.g. a device error while queuing the copy
            logger.error("ndt_fast: staging %s failed (%s: %s); recorded as NaN", name, type(error).__name__, error)
            return math.nan
        return staged if staged is not None else self._read_scalar(value, name)

    # ---- results ------------------------------------------------------------------------------------

    def poll(self) -> None:
        """Collect what the devices have finished (never waits) and emit the finished samples in order."""
        for backend in list(self._backends.values()):
            try:
                delivered = backend.poll()
            except Exception as error:
                self._fail_backend(backend, error)
                continue
            for tag, block in delivered:
                try:
                    self._deliver(backend, tag, block)
                except Exception as error:  # e.g. a block of the wrong shape: its rows flagged, not lost
                    sample = self._by_tag.get(tag)
                    part = sample.parts.pop(id(backend), None) if sample is not None else None
                    if part is not None:
                        self._flag(sample, part.positions, error)
        self._emit_done()

    def drain(self) -> None:
        """Wait for every device, then emit every queued sample (a sync: never in the training step)."""
        for backend in list(self._backends.values()):
            try:
                backend.wait()
            except Exception as error:
                self._fail_backend(backend, error)
        for sample in self._queue:
            for s in sample.scalars:
                if not isinstance(s, float):
                    try:
                        s.wait()
                    except Exception as error:  # value() reports it as NaN below
                        logger.error("ndt_fast: waiting for a staged scalar failed: %s", error)
        self.poll()
        if self._queue:  # cannot happen unless a backend breaks its contract: flag, never lose
            error = RuntimeError("the device path did not deliver these records after waiting")
            for backend in list(self._backends.values()):
                self._fail_backend(backend, error)
            for sample in self._queue:
                sample.scalars = [s if isinstance(s, float) else math.nan for s in sample.scalars]
            self._emit_done()

    def close(self) -> None:
        """Drain, then let the backends (rings, Grams) go."""
        self.drain()
        self._backends.clear()

    def _deliver(self, backend: Backend, tag: int, block: np.ndarray) -> None:
        sample = self._by_tag.get(tag)
        part = sample.parts.get(id(backend)) if sample is not None else None
        if part is None:  # its sample was flagged already (a failed poll): nothing to deliver
            return
        k = len(part.positions)
        sample.records[part.positions] = block[:k]
        if part.weight_positions and sample.weight_records is not None:
            sample.weight_records[part.weight_positions] = block[k:k + len(part.weight_positions)]
        del sample.parts[id(backend)]  # delivered only once everything is in place

    def _emit_done(self) -> None:
        while self._queue and self._queue[0].done():
            sample = self._queue.popleft()
            del self._by_tag[sample.tag]
            loss, grad = (s if isinstance(s, float) else self._scalar_value(s) for s in sample.scalars)
            try:
                self._emit(sample.step, sample.slots, sample.records, sample.weight_records, sample.rows_seen,
                           loss, grad)
            except Exception as error:  # a bug of ours: this sample's rows are lost, counted, training goes on
                for slot in sample.slots:
                    self._report_error(slot, error)

    @staticmethod
    def _scalar_value(staged: Staged) -> float:
        try:
            return float(staged.value())
        except Exception as error:
            logger.error("ndt_fast: reading a staged scalar failed (%s); recorded as NaN", error)
            return math.nan

    def _flag(self, sample: _Sample, positions: list[int], error: BaseException) -> None:
        """The rows at ``positions`` become FLAG_TRACKER_ERROR rows (NaN metrics); the error is counted."""
        sample.records[positions] = math.nan
        sample.records[positions, RECORD_COLUMNS.index("flags")] = self._error_flag
        if sample.weight_records is not None:
            sample.weight_records[positions] = math.nan
        for i in positions:
            self._report_error(sample.slots[i], error)

    def _fail_backend(self, backend: Backend, error: BaseException) -> None:
        """Every sample still waiting on ``backend`` gets flagged rows for its layers there."""
        for sample in self._queue:
            part = sample.parts.pop(id(backend), None)
            if part is not None:
                self._flag(sample, part.positions, error)


# ---- the native CUDA backend (NEVER RUN) ----------------------------------------------------------------


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
            from ndt_fast import cuda

            info = cuda.availability()
            self._available, self._reason = bool(info["available"]), str(info["reason"])
            self._cusolver = bool(info["cusolver"])
            self._own_solver_max = int(cuda._native.JACOBI_MAX_DIM) if self._available else 0
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
                settings: MetricSettings) -> Backend:
        return NativeCudaBackend(device, records_per_sample=records_per_sample, slots=slots, settings=settings)

    def stage(self, value: Any) -> Staged | None:
        if isinstance(value, torch.Tensor) and value.is_cuda and value.numel() == 1:
            return self._scalars.stage(value)
        return None


class NativeCudaBackend:
    """One CUDA device: float32 Grams updated by cuBLAS/own kernels (``ndt_fast.cuda``), metrics by
    ``SpectraPlan``, records copied into a ``PinnedRecordRing``, all on the current stream.

    Per compute: one plan run for the activations' Grams (and one for the weights'), one ring push
    of all their records. Grams and workspaces are torch tensors: the caching allocator is
    stream-ordered, so a temporary freed here is reused only by work queued after ours.
    Streams: an update and a compute on different streams are ordered by a device-side
    ``wait_stream`` (no host sync); in an ordinary loop both run on the default stream.
    """

    def __init__(self, device: torch.device, *, records_per_sample: int, slots: int, settings: MetricSettings) -> None:
        from ndt_fast import cuda

        self._cuda = cuda
        self.device = device if device.index is not None else torch.device(device.type, torch.cuda.current_device())
        self._settings = settings
        self._ctx = cuda._context(self.device.index)
        self._ring = cuda._record_ring(self.device, slots, records_per_sample)
        self._update_streams: dict[int, torch.cuda.Stream] = {}  # streams of updates since the last compute
        self._compute_stream: torch.cuda.Stream | None = None

    def new_gram(self, side: str, dim: int) -> torch.Tensor:
        # Column-major, lower triangle defined (ndt_fast.cuda's convention); written by the first update.
        return torch.empty((dim, dim), dtype=torch.float32, device=self.device)

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
        self._cuda._native.gram_update(self._ctx, view, side=side, gram=gram.data_ptr(), beta=0.0 if fresh else 1.0,
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
        records = torch.empty((k + len(weights), RECORD_WIDTH), dtype=torch.float64, device=self.device)
        self._run(grams, self._settings.mask, records[:k], stream)
        if weights:
            weight_grams = []
            for w in weights:
                side = "sample" if w.shape[0] < w.shape[1] else "feature"
                g = self.new_gram(side, min(w.shape))
                self._gram_update(g, w, side, True, stream)
                weight_grams.append(g)
            self._run(weight_grams, self._settings.weight_mask, records[k:], stream)
        if not self._ring.push(records.data_ptr(), len(records), tag=tag, stream=stream.cuda_stream):
            # DevicePath keeps at most `slots` samples pending, so this is a broken invariant.
            raise RuntimeError("the device record ring is full")

    def _run(self, grams: Sequence[torch.Tensor], mask: int, out: torch.Tensor, stream: Any) -> None:
        s = self._settings
        plan = self._cuda._plan(self._ctx, tuple(int(g.shape[0]) for g in grams), s.eps, s.energy_threshold, mask,
                                "auto")
        workspace = torch.empty(max(int(plan.workspace_bytes), 1), dtype=torch.uint8, device=self.device)
        plan.run(self._ctx, [g.data_ptr() for g in grams], workspace=workspace.data_ptr(), records=out.data_ptr(),
                 stream=stream.cuda_stream)

    def poll(self) -> list[tuple[int, np.ndarray]]:
        pending = int(self._ring.pending)
        if pending == 0:
            return []
        records, tags = self._ring.pop(pending * int(self._ring.slot_records))
        return _split_by_tag(records, tags)

    def wait(self) -> None:
        torch.cuda.synchronize(self.device)


def _split_by_tag(records: np.ndarray, tags: np.ndarray) -> list[tuple[int, np.ndarray]]:
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


# ---- the emulated backend (tests, any device) -------------------------------------------------------------


class EmulatedKind:
    """A pure-torch stand-in for the native backend on any device (tests run it on CPU tensors).

    Math: float64 Grams, then ``ndt_fast.cuda.reference_gram_metrics`` (the device kernels' rules).
    Completion: a compute's records are delivered ``delay`` polls after it was queued (0: at the
    first poll), so the not-yet-complete branches run; ``wait`` completes everything. Scalars
    given as tensors are cloned at staging (the value at log() time, like the device copy) and
    ready after ``scalar_delay`` readiness checks.
    """

    def __init__(self, delay: int = 0, scalar_delay: int = 0) -> None:
        self.delay = delay
        self.scalar_delay = scalar_delay
        self.backends: list[EmulatedBackend] = []

    def takes(self, x: torch.Tensor, dim: int) -> bool:
        return True

    def refusal(self, x: torch.Tensor, dim: int) -> str:
        return "never (emulated backend)"

    def backend(self, device: torch.device, *, records_per_sample: int, slots: int,
                settings: MetricSettings) -> EmulatedBackend:
        backend = EmulatedBackend(device, settings=settings, delay=self.delay, slots=slots,
                                  records_per_sample=records_per_sample)
        self.backends.append(backend)
        return backend

    def stage(self, value: Any) -> Staged | None:
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            return _ClonedScalar(value.detach().clone(), self.scalar_delay)
        return None


class _ClonedScalar:
    __slots__ = ("tensor", "checks", "delay")

    def __init__(self, tensor: torch.Tensor, delay: int) -> None:
        self.tensor = tensor
        self.checks = 0
        self.delay = delay

    def ready(self) -> bool:
        self.checks += 1
        return self.checks > self.delay

    def wait(self) -> None:
        self.delay = 0
        self.checks = max(self.checks, 1)

    def value(self) -> float:
        # NaN until ready, as a pinned cell read too early would hold a stale value: a queue that
        # emitted a sample before its scalars landed shows up in the tests.
        return float(self.tensor.item()) if self.checks > self.delay else math.nan


class EmulatedBackend:
    """:class:`Backend` in plain torch on ``device``; records land in a host-side ring (a deque)
    whose capacity and per-sample size are the native ring's, so an overflow fails as it would."""

    def __init__(self, device: torch.device, *, settings: MetricSettings, delay: int, slots: int,
                 records_per_sample: int) -> None:
        self.device = device
        self._settings = settings
        self._delay = delay
        self._slots = slots
        self._records_per_sample = records_per_sample
        self._ring: collections.deque[list[Any]] = collections.deque()  # [polls left, tag, records]
        self.computes = 0

    def new_gram(self, side: str, dim: int) -> torch.Tensor:
        return torch.zeros((dim, dim), dtype=torch.float64, device=self.device)

    def update(self, gram: torch.Tensor, x: torch.Tensor, side: str, fresh: bool) -> None:
        g = _gram64(x, side)
        if fresh:
            gram.copy_(g)
        else:
            gram.add_(g)

    def compute(self, tag: int, grams: Sequence[torch.Tensor], weights: Sequence[torch.Tensor]) -> None:
        from ndt_fast.cuda import reference_gram_metrics

        if len(self._ring) >= self._slots:
            raise RuntimeError("the device record ring is full")
        if len(grams) + len(weights) > self._records_per_sample:
            raise ValueError("more records than a ring slot holds")
        s = self._settings
        rows = [reference_gram_metrics(g, eps=s.eps, energy_threshold=s.energy_threshold, metrics=s.mask)
                for g in grams]
        for w in weights:
            side = "sample" if w.shape[0] < w.shape[1] else "feature"
            rows.append(reference_gram_metrics(_gram64(w, side), eps=s.eps, energy_threshold=s.energy_threshold,
                                               metrics=s.weight_mask))
        self._ring.append([self._delay, tag, torch.stack(rows).numpy()])
        self.computes += 1

    def poll(self) -> list[tuple[int, np.ndarray]]:
        out = []
        while self._ring and self._ring[0][0] <= 0:
            _, tag, records = self._ring.popleft()
            out.append((tag, records))
        for entry in self._ring:
            entry[0] -= 1
        return out

    def wait(self) -> None:
        for entry in self._ring:
            entry[0] = 0


def _gram64(x: torch.Tensor, side: str) -> torch.Tensor:
    a = x.detach().to(torch.float64)
    return a.T @ a if side == "feature" else a @ a.T


def backend_kind() -> BackendKind:
    """The backends of ``FastTracker(device_path="auto")``: the native CUDA ones. (Tests replace
    this function to run the device path on CPU tensors through :class:`EmulatedKind`.)"""
    return NativeCudaKind()
