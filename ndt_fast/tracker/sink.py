"""The record sink: finished samples → records → ring → memory or run file; online jumps.

Every sample ends here, one of two ways, both native (``core.SampleFinisher``):

- :meth:`RecordSink.finish` — a host sample with nothing in flight before it: the layers' spectra
  and metrics, their records into the ring and the jump banks fed the metric values, in one
  call with the GIL released;
- :meth:`RecordSink.record` — a sample whose metric records were computed elsewhere (a device,
  the host part of a sample queued behind one, or a caught error's NaN row): the same records,
  the same banks.

With ``spectra_batch=k > 1`` the finisher keeps each host sample (copies of its small Grams, its
scalars, rows and flags) until k samples wait, then solves all their spectra in one call and
records them in step order: records and jumps appear up to k − 1 samples late. :meth:`flush`
records whatever waits (the sample queue's ``drain`` calls it: results, jumps, sinks, close), and
:meth:`record` cannot overtake a waiting sample (the native ``record`` flushes first).

With ``background_finish`` :meth:`RecordSink.finish` hands the sample to a background thread
(``ndt_fast.tracker.background``) with its layers' accumulators, the thread runs the native
finish, and :meth:`RecordSink.collect` takes its result on the training thread (at the next
sample, a ``log()`` that finds it done, or anything that records or flushes, which waits) and
keeps the accumulators for the next hand-over. A deferred layer (its hooks only copy) thus has one
accumulator; a layer whose hooks fill a Gram between samples (``window`` > 1, distributed) gets a
spare to fill meanwhile.

The ring is drained by ``ndt_fast.storage.stream.RecordStream`` (a writer thread with
``output=``); consumers of finished records off the training thread attach there
(``RecordStream.listeners``). What the banks confirm comes back here, becomes ``tracker.jumps``
(the ``jump_rule``'s detections) and is handed to ``jump_listeners`` on the training thread.
With ``resume=True`` the banks are first fed the run's earlier samples (:meth:`replay`) and
samples of steps the file holds already are skipped.
"""

from __future__ import annotations

import atexit
import logging
import math
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from ndt_fast._buffer import torch_matrix_view
from ndt_fast._native import core
from ndt_fast._schema import FLAG_TRACKER_ERROR, FLAGS_AT, JUMP_RULES, METRIC_WIDTH
from ndt_fast.jumps import Jump
from ndt_fast.storage.records import RecordLayout
from ndt_fast.storage.stream import RecordStream
from ndt_fast.tracker import backends
from ndt_fast.tracker.background import BackgroundFinish
from ndt_fast.tracker.capture import LayerSlot, report_error
from ndt_fast.tracker.config import TrackerConfig

logger = logging.getLogger("ndt_fast.tracker")


# Sinks with spectra_batch > 1 or background_finish, whose waiting samples a script that never
# calls close() would otherwise lose at exit. atexit runs its functions in reverse order of
# registration, and ndt_fast.storage.stream (imported above) registered its closing of the run
# files first: so the waiting samples reach the ring before the streams write it out and close.
# (flush() takes the background thread's last sample first, waiting for it.)
_batching_sinks: weakref.WeakSet[RecordSink] = weakref.WeakSet()


@atexit.register
def _flush_waiting_samples() -> None:
    for sink in list(_batching_sinks):
        try:
            sink.flush()
        except Exception as error:  # exiting anyway; say what happened
            logger.error("ndt_fast: recording the samples waiting for their spectra at exit failed: %s", error)


def flagged_records(count: int) -> np.ndarray:
    """Metric records (count, 9) of layers whose sample met a caught error: NaN, FLAG_TRACKER_ERROR."""
    records = np.full((count, METRIC_WIDTH), np.nan)
    records[:, FLAGS_AT] = FLAG_TRACKER_ERROR
    return records


class RecordSink:
    def __init__(self, config: TrackerConfig, layout: RecordLayout, slots: Sequence[LayerSlot],
                 stream_factory: Callable[[RecordSink], RecordStream],
                 new_accumulator: Callable[[str, int], Any]) -> None:
        """``new_accumulator(side, dim)``: an empty host accumulator (the host backend's), for
        ``background_finish``'s hand-overs when none is at hand."""
        self._slots = slots
        self._layout = layout
        self._threads = config.threads
        self._track_weights = config.track_weights
        self._finisher = core.SampleFinisher(
            len(slots), eps=config.eps, energy_threshold=config.energy_threshold, center=config.center,
            metrics=config.metric_mask, weight_metrics=config.weight_mask, track_weights=config.track_weights,
            detect_jumps=config.enable_jump_detection, ndt_window=config.jump_window_size,
            ndt_z_threshold=config.jump_z_threshold, spectra_batch=config.spectra_batch)
        self._wanted_rule = JUMP_RULES.index(config.jump_rule)
        self.jumps: list[Jump] = []  # online detections of `jump_rule`, appended as they are confirmed
        #: Called on the training thread with each new Jump of ``jump_rule`` (e.g. an on_jump callback).
        self.jump_listeners: list[Callable[[Jump], None]] = []
        self.resumed_from: list[int] = [-1] * len(slots)  # per layer: the last step already in the file
        self._resumed_max = -1
        self.stream = stream_factory(self)  # may replay a resumed run into the banks first
        # background_finish: the thread, the sample in its hands (what collect() needs), the
        # accumulators taken back from it, by layer index, for the next hand-over.
        self._background = BackgroundFinish() if config.background_finish else None
        self._handed: tuple[Any, ...] | None = None
        self._spares: dict[int, Any] = {}
        self._new_accumulator = new_accumulator
        if config.spectra_batch > 1 or self._background is not None:
            _batching_sinks.add(self)

    # ---- resume -------------------------------------------------------------------------------

    def replay(self, resumed_from: dict[str, int], samples: list[np.ndarray]) -> None:
        """On resume: remember which steps the file holds, and feed its samples (per layer,
        k × sample columns) to the banks, so detection continues as if never stopped."""
        self.resumed_from = [resumed_from.get(slot.name, -1) for slot in self._slots]
        self._resumed_max = max(self.resumed_from)
        columns = [self._layout.sample_columns.index(m) for m in self._layout.metric_names]
        for layer, values in enumerate(samples):
            if len(values):
                self._finisher.replay(layer, values[:, 0].astype(np.int64), np.ascontiguousarray(values[:, columns]))

    # ---- the two ways a sample ends -------------------------------------------------------------

    def finish(self, step: int, loss: float, grad_norm: float, ready: list[LayerSlot], failed: list[LayerSlot],
               weights: list[Any] | None) -> None:
        """Compute and record a host sample: ``ready`` slots' accumulators (reset afterwards),
        ``failed`` slots as flagged rows, ``weights`` (per ready slot: a 2-D weight or None).
        With ``background_finish`` the computing and recording happen on the background thread
        (``ndt_fast.tracker.background``), which has the accumulators until :meth:`collect`."""
        if step <= self._resumed_max:
            ready, failed, weights = self._fresh(step, ready, failed, weights)
        background = self._background is not None
        if background:
            self.collect(wait=True)  # one in flight: the previous sample is older
        views, owners = [None] * len(ready), None
        if weights is not None:
            try:
                # Handed to the background thread, a weight is copied: the optimizer changes it in place.
                owners = [backends.weight_view(w.clone() if background else w) if w is not None else None
                          for w in weights]
                views = [o[1] if o is not None else None for o in owners]
            except Exception as error:  # the activation rows stand; their weight columns stay NaN
                for slot in ready:
                    report_error(slot, error)
        # A deferred Gram is computed into whatever empty accumulator of its shape is at hand: after
        # the first sample, the one the previous sample gave back (taken just above). So a layer
        # has one accumulator, not one in flight plus a spare (a 4096-feature Gram is 134 MB).
        accumulators = [s.accumulator if s.accumulator is not None else self._spare_for(s) for s in ready]
        args = (step, loss, grad_norm, [s.index for s in ready], accumulators, views, [s.index for s in failed],
                self._threads)
        deferred, refills = None, []
        if background:
            # Activations whose Gram the native finish computes first (capture's deferred copies,
            # referenced until the finish is done).
            deferred = [slot.deferred for slot in ready]
            for slot in ready:
                slot.deferred = None
            if any(d is not None for d in deferred):
                refills = [torch_matrix_view(d) if d is not None else None for d in deferred]
            ring = self.stream.ring_for_push()  # (decided now: nothing else pushes until the result is taken)
            # On the native thread: the Grams, then the finish (the GIL never taken there).
            try:
                submitted = self._background.submit(self._finisher, ring, args, refills, keep=(owners, deferred))
            except Exception as error:  # bad arguments (as finish() would raise them): flagged rows
                self._flag_finish(error, step, loss, grad_norm, ready, failed, accumulators, deferred)
                self._give_back(ready, accumulators)
                return
            if submitted:
                self._handed = (step, loss, grad_norm, ready, failed, accumulators, deferred)
                for slot, rows in zip(ready, deferred):
                    # A deferred slot needs no accumulator until its next hand-over (its hooks only
                    # copy); any other gets a fresh one to fill while the thread reads this one.
                    slot.accumulator = None if rows is not None else self._spare_for(slot)
                return
        try:
            outcome = self._finisher.finish(self.stream.ring_for_push(), *args, refills)
        except Exception as error:  # a bug of ours must not end the user's run: flagged rows
            self._flag_finish(error, step, loss, grad_norm, ready, failed, accumulators, deferred)
            outcome = None
        if background:  # (no thread: finished here)
            self._give_back(ready, accumulators)
        if outcome is not None:
            self._outcome(outcome, ready)

    def _give_back(self, ready: list[LayerSlot], accumulators: list[Any]) -> None:
        """A finished sample's accumulators, for the next hand-over of slots that hold none."""
        for slot, accumulator in zip(ready, accumulators):
            if slot.accumulator is not accumulator:
                self._spares[slot.index] = accumulator

    def _flag_finish(self, error: BaseException, step: int, loss: float, grad_norm: float, ready: list[LayerSlot],
                     failed: list[LayerSlot], accumulators: list[Any], deferred: list[Any] | None) -> None:
        """A finish that raised: its layers' rows are recorded flagged (never lost), the error
        counted; its accumulators are reset (the finish left them as they were)."""
        for slot in ready:
            report_error(slot, error)
        rows_seen = [a.rows_seen if d is None else int(d.shape[0])
                     for a, d in zip(accumulators, deferred or [None] * len(accumulators))]
        for accumulator in accumulators:
            accumulator.reset()
        everyone = ready + failed
        self.record(step, loss, grad_norm, everyone, flagged_records(len(everyone)), None,
                    rows_seen + [0] * len(failed))

    # ---- background_finish ----------------------------------------------------------------------

    @property
    def in_flight(self) -> bool:
        """A sample is being finished on the background thread."""
        return self._background is not None and self._background.in_flight

    def collect(self, wait: bool = False) -> bool:
        """Take the background finish's result if it is done (``wait``: block until it is):
        overflow, detections and errors handled here, on the calling (training) thread; its
        accumulators are kept for the next hand-over. Returns whether a result was taken."""
        taken = self._background.result(wait) if self._background is not None else None
        if taken is None:
            return False
        (value, error), (step, loss, grad_norm, ready, failed, accumulators, deferred) = taken, self._handed
        self._handed = None
        if error is not None:  # as in finish(): flagged rows
            self._flag_finish(error, step, loss, grad_norm, ready, failed, accumulators, deferred)
        elif value is not None:
            self._outcome(value, ready)
        self._give_back(ready, accumulators)
        return True

    def _spare_for(self, slot: LayerSlot) -> Any:
        """An empty host accumulator for ``slot``'s Gram shape: the one its previous background
        finish gave back, or a new one (the first time, or the shape changed)."""
        spare = self._spares.pop(slot.index, None)
        side, dim = slot.key[0], slot.key[1]
        if spare is not None and spare.dim == dim and spare.side == side:
            return spare
        return self._new_accumulator(side, dim)

    def record(self, step: int, loss: float, grad_norm: float, slots: list[LayerSlot], records: np.ndarray,
               weight_records: np.ndarray | None, rows_seen: list[int]) -> None:
        """Record a sample whose metric records ((len(slots), 9) float64; weights likewise or None)
        were computed elsewhere."""
        if step <= self._resumed_max:
            fresh = [i for i, slot in enumerate(slots) if step > self.resumed_from[slot.index]]
            slots, records, rows_seen = [slots[i] for i in fresh], records[fresh], [rows_seen[i] for i in fresh]
            weight_records = weight_records[fresh] if weight_records is not None else None
        if not slots:
            return
        self.collect(wait=True)  # the sample in the background is older (and the finisher is not thread-safe)
        outcome = self._finisher.record(
            self.stream.ring_for_push(), step, loss, grad_norm, np.array([s.index for s in slots], dtype=np.int64),
            records, weight_records if self._track_weights else None, np.asarray(rows_seen, dtype=np.int64),
            threads=self._threads)
        if outcome is not None:
            self._outcome(outcome, slots)

    @property
    def pending(self) -> int:
        """Host samples finished but not recorded yet (``spectra_batch`` > 1; always < it). Takes
        a background finish's result first (waiting for it: the finisher is not thread-safe)."""
        self.collect(wait=True)
        return self._finisher.pending

    def flush(self) -> None:
        """Record every sample still waiting — in the background, for its batched spectra — in
        step order (nothing waiting: nothing to do). Never raises: a failure flags those rows, as
        in :meth:`finish`."""
        self.collect(wait=True)
        if not self._finisher.pending:
            return
        try:
            outcome = self._finisher.flush(self.stream.ring_for_push(), self._threads)
        except Exception as error:  # not expected (the native flush flags its own failures); counted
            for slot in self._slots:
                report_error(slot, error)
            return
        if outcome is not None:
            self._outcome(outcome, [])

    def close(self) -> None:
        """Record what waits (:meth:`flush`) and stop the background thread (none: nothing to stop)."""
        self.flush()
        if self._background is not None:
            self._background.close()

    def _fresh(self, step: int, ready: list[LayerSlot], failed: list[LayerSlot],
               weights: list[Any] | None) -> tuple[list[LayerSlot], list[LayerSlot], list[Any] | None]:
        """Resume: only layers whose file does not hold ``step`` yet (the others' Grams are dropped)."""
        keep = [i for i, slot in enumerate(ready) if step > self.resumed_from[slot.index]]
        for i, slot in enumerate(ready):
            if i not in keep:
                if slot.accumulator is not None:  # (None: a deferred slot's, handed to the background thread)
                    slot.accumulator.reset()
                slot.deferred = None
        return ([ready[i] for i in keep], [s for s in failed if step > self.resumed_from[s.index]],
                [weights[i] for i in keep] if weights is not None else None)

    def _outcome(self, outcome: tuple[Any, Any, Any, Any], slots: list[LayerSlot]) -> None:
        """The slow paths of a finished sample: records the ring could not take, detections, a
        failed weight computation, a failed batched solve (its rows are flagged)."""
        overflow, detections, weight_error, spectra_error = outcome
        if overflow is not None:
            self.stream.append(overflow)
        if weight_error is not None:  # the activation rows stand; their weight columns are NaN
            error = RuntimeError(f"weight metrics failed: {weight_error}")
            for slot in slots:
                report_error(slot, error)
        if spectra_error is not None:
            text, layers = spectra_error
            error = RuntimeError(f"batched spectra failed: {text}")
            for layer in layers:
                report_error(self._slots[int(layer)], error)
        if detections is None:
            return
        for layer, series, rule, _index, at_step, z, before, after in detections:
            if int(rule) != self._wanted_rule:
                continue
            metric = self._layout.metric_names[int(series)]
            jump = Jump(int(at_step), float(z), float(before), float(after), f"{self._slots[int(layer)].name}_{metric}")
            self.jumps.append(jump)
            for listener in self.jump_listeners:
                listener(jump)


def read_scalar(value: Any) -> float:
    """A Python float from a float, int, numpy scalar or one-element tensor (None → NaN).

    Raises TypeError/ValueError for anything else (the caller records NaN and reports it once).
    """
    if value is None:
        return math.nan
    if type(value) is float:
        return value
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"expected a scalar, got a tensor of shape {tuple(value.shape)}")
        return float(value.item())  # (item() reads any one-element tensor, grad or not: no views needed)
    return float(value)
