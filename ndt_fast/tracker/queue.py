"""The sample queue: samples in flight, emitted in step order into the record sink.

``submit`` takes one sampled step: its layers' accumulators (each on the backend routing chose
for it), the layers whose capture failed, the loss and grad_norm.

- Nothing in flight and every Gram on the host (the usual case): the sample goes straight to
  the sink's native finish — computed and recorded in one call, nothing queued.
- Otherwise each backend's share is submitted (``ComputeBackend.submit``: the host completes at
  once, a device later), the scalars are staged (a CUDA tensor: copied asynchronously into
  pinned memory), and the sample waits in a FIFO. ``poll`` (every ``log()``; never waits)
  collects what the backends completed and emits finished samples at the FIFO's head into the
  sink; ``drain`` waits for the devices first (a sync: results, close).

Order: samples are emitted strictly in submission order, so every layer's rows and jump bank see
steps in order. Bounded: at most ``MAX_PENDING_SAMPLES`` samples wait (a device ring has as many
slots); a submit beyond that waits for the devices (a sync, counted in ``waits``, logged once).
Errors never reach the training loop: a failing submit flags its layers' rows at once, a failing
poll or wait flags every sample still waiting on that backend (flagged, never lost).
Not thread-safe: the training thread calls everything.
"""

from __future__ import annotations

import collections
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ndt_fast._schema import FLAG_TRACKER_ERROR, FLAGS_AT, METRIC_WIDTH
from ndt_fast.tracker.backends import (
    MAX_PENDING_SAMPLES,
    ComputeBackend,
    DeviceRouter,
    HostBackend,
    MetricSettings,
    Staged,
    host_weight_records,
)
from ndt_fast.tracker.capture import Capture, LayerSlot, report_error, weight_matrix
from ndt_fast.tracker.sink import RecordSink, read_scalar

logger = logging.getLogger("ndt_fast.tracker")


@dataclass
class _Part:
    """One backend's share of a sample: where its records go in the sample's rows."""

    positions: list[int]  # indices into the sample's slots
    weight_positions: list[int]  # those whose weight matrix the backend computes too


@dataclass
class _Sample:
    tag: int
    step: int
    slots: list[LayerSlot]
    records: np.ndarray  # (len(slots), 9): filled as backends deliver
    weight_records: np.ndarray | None
    rows_seen: list[int]
    scalars: list[float | Staged]  # loss, grad_norm
    parts: dict[int, _Part] = field(default_factory=dict)  # id(backend) → its part, until delivered

    def done(self) -> bool:
        """Every part delivered and every staged scalar landed. A scalar whose readiness cannot be
        asked (a device error) is given up as NaN rather than block the queue."""
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


class SampleQueue:
    def __init__(self, capture: Capture, sink: RecordSink, host: HostBackend, router: DeviceRouter | None, *,
                 settings: MetricSettings, track_weights: bool, max_pending: int = MAX_PENDING_SAMPLES) -> None:
        self._capture = capture
        self._sink = sink
        self._host = host
        self._router = router
        self._settings = settings
        self._track_weights = track_weights
        self._max_pending = max_pending
        self._queue: collections.deque[_Sample] = collections.deque()
        self._by_tag: dict[int, _Sample] = {}
        self._next_tag = 0
        self._bad_scalars: set[str] = set()
        self.waits = 0  # submissions that had to wait for a device (the queue was full)

    @property
    def pending(self) -> int:
        """Samples submitted and not yet emitted."""
        return len(self._queue)

    def submit(self, step: int, ready: list[LayerSlot], failed: list[LayerSlot], loss: Any, grad_norm: Any) -> None:
        if not self._capture.device_in_use:  # every Gram on the host, nothing in flight: the native finish
            weights = [weight_matrix(slot) for slot in ready] if self._track_weights else None
            self._sink.finish(step, self.read(loss, "loss"), self.read(grad_norm, "grad_norm"), ready, failed,
                              weights)
            return
        if self._capture.defer_grams:  # background_finish: the backends' submit needs the Grams now
            self._fold_deferred(ready, failed)
        if len(self._queue) >= self._max_pending:
            self.poll()
            if len(self._queue) >= self._max_pending:
                self.waits += 1
                if self.waits == 1:
                    logger.warning("ndt_fast: the device is %d samples behind the host; waiting for it (a sync; "
                                   "reported once)", len(self._queue))
                self.drain()
        self._enqueue(step, ready, failed, loss, grad_norm)
        self.poll()

    def _fold_deferred(self, ready: list[LayerSlot], failed: list[LayerSlot]) -> None:
        """Compute the ready layers' deferred Grams here; a layer whose Gram fails moves from
        ``ready`` to ``failed`` (a flagged row; the sample goes on)."""
        for slot in list(ready):
            try:
                self._capture.fold_deferred(slot)
            except Exception as error:
                report_error(slot, error)
                ready.remove(slot)
                failed.append(slot)

    def _enqueue(self, step: int, ready: list[LayerSlot], failed: list[LayerSlot], loss: Any, grad_norm: Any) -> None:
        tag = self._next_tag
        self._next_tag += 1
        slots = ready + failed
        sample = _Sample(tag, step, slots, np.full((len(slots), METRIC_WIDTH), np.nan),
                         np.full((len(slots), METRIC_WIDTH), np.nan) if self._track_weights else None,
                         [slot.accumulator.rows_seen for slot in ready] + [0] * len(failed),
                         [self._stage(loss, "loss"), self._stage(grad_norm, "grad_norm")])
        if failed:
            self._flag(sample, list(range(len(ready), len(slots))), None)
        groups: dict[int, tuple[ComputeBackend, list[int]]] = {}
        for i, slot in enumerate(ready):
            backend = self._host if slot.on_host else slot.accumulator.backend
            groups.setdefault(id(backend), (backend, []))[1].append(i)
        for key, (backend, positions) in groups.items():
            weights, with_weight = [], []
            if self._track_weights:
                for i in positions:
                    w = self._weight_for(backend, sample, i)
                    if w is not None:
                        weights.append(w)
                        with_weight.append(i)
            try:
                error = backend.submit(tag, [slots[i].accumulator for i in positions], weights)
            except Exception as caught:  # a bug of ours or a device error: flagged rows, training goes on
                for i in positions:
                    slots[i].accumulator.reset()
                self._flag(sample, positions, caught)
                continue
            if error is not None:
                for i in positions:
                    report_error(slots[i], error)
            sample.parts[key] = _Part(positions, with_weight)
        self._queue.append(sample)
        self._by_tag[tag] = sample

    def _weight_for(self, backend: ComputeBackend, sample: _Sample, i: int) -> torch.Tensor | None:
        """The weight matrix ``backend`` measures with layer i's activations, or None: no weight,
        or one its device cannot take (on another device, or too wide), whose record is then
        computed here on the host — a copy that synchronizes with the device, reported once."""
        slot = sample.slots[i]
        w = weight_matrix(slot)
        if w is None or backend is self._host:
            return w
        if w.device == backend.device and self._router.takes(w, min(w.shape)):
            return w
        why = (f"the weight is on {w.device}, its layer's activations on {backend.device}" if w.device != backend.device
               else None)
        self._capture.warn_host_copy(slot, w, min(w.shape), what="weight", why=why)
        try:
            sample.weight_records[i] = host_weight_records([w], self._settings)[0]
        except Exception as error:  # the activation row stands; its weight columns stay NaN
            report_error(slot, error)
        return None

    def read(self, value: Any, name: str) -> float:
        """``value`` (loss or grad_norm) as a float; NaN (reported once per name) if it is not a scalar."""
        try:
            return read_scalar(value)
        except (TypeError, ValueError, RuntimeError) as error:
            if name not in self._bad_scalars:
                self._bad_scalars.add(name)
                logger.error("ndt_fast: %s=%r is not a scalar (%s); recorded as NaN, training continues",
                             name, value, error)
            return math.nan

    def _stage(self, value: Any, name: str) -> float | Staged:
        try:
            staged = self._router.stage(value) if self._router is not None else None
        except Exception as error:  # e.g. a device error while queuing the copy
            logger.error("ndt_fast: staging %s failed (%s: %s); recorded as NaN", name, type(error).__name__, error)
            return math.nan
        return staged if staged is not None else self.read(value, name)

    # ---- results ------------------------------------------------------------------------------

    def _backends(self) -> list[ComputeBackend]:
        return [self._host, *(self._router.backends.values() if self._router is not None else ())]

    def poll(self) -> None:
        """Collect what the backends have finished (never waits) and emit finished samples in order."""
        if not self._queue:
            return
        for backend in self._backends():
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
        """Wait for every device, emit every queued sample, then record what the sink's batched
        spectra still hold (a sync: never in the training step)."""
        if self._queue:
            self._drain_devices()
        self._sink.flush()  # (after the queue: anything queued already flushed what waited before it)

    def _drain_devices(self) -> None:
        for backend in self._backends():
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
            for backend in self._backends():
                self._fail_backend(backend, error)
            for sample in self._queue:
                sample.scalars = [s if isinstance(s, float) else math.nan for s in sample.scalars]
            self._emit_done()

    def _deliver(self, backend: ComputeBackend, tag: int, block: np.ndarray) -> None:
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
                self._sink.record(sample.step, loss, grad, sample.slots, sample.records, sample.weight_records,
                                  sample.rows_seen)
            except Exception as error:  # a bug of ours: this sample's rows are lost, counted, training goes on
                for slot in sample.slots:
                    report_error(slot, error)

    @staticmethod
    def _scalar_value(staged: Staged) -> float:
        try:
            return float(staged.value())
        except Exception as error:
            logger.error("ndt_fast: reading a staged scalar failed (%s); recorded as NaN", error)
            return math.nan

    def _flag(self, sample: _Sample, positions: list[int], error: BaseException | None) -> None:
        """The rows at ``positions`` become FLAG_TRACKER_ERROR rows (NaN metrics); the error is counted."""
        sample.records[positions] = math.nan
        sample.records[positions, FLAGS_AT] = FLAG_TRACKER_ERROR
        if sample.weight_records is not None:
            sample.weight_records[positions] = math.nan
        if error is not None:
            for i in positions:
                report_error(sample.slots[i], error)

    def _fail_backend(self, backend: ComputeBackend, error: BaseException) -> None:
        """Every sample still waiting on ``backend`` gets flagged rows for its layers there."""
        for sample in self._queue:
            part = sample.parts.pop(id(backend), None)
            if part is not None:
                self._flag(sample, part.positions, error)
