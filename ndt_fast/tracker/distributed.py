"""Distributed training: the exact metrics of the global batch, or one run per rank.

``FastTracker(..., distributed=)`` (resolved by ``config.resolve_distributed``):

- ``"global"`` — on a sampled step every rank's hooks hold the feature-side Gram XᵢᵀXᵢ of its
  shard; the Gram of the global batch is their sum, so one all-reduce per sample gives the exact
  metrics of the global batch (:class:`RankReduce`, between the hooks' accumulation and the
  per-sample finish). Rank 0 then finishes the sample as a single process would — spectra,
  metrics, records, run file, jump detection, sinks — and the other ranks record nothing.
- ``"local"`` — every rank tracks its own shard as an independent run, ``run.rank<k>.h5``
  (:func:`rank_output`): per-rank diagnostics.

Why the feature side in ``"global"`` mode: sample-side Grams (XXᵀ, n × n, the smaller one when a
batch has fewer rows than features) of different row sets do not add up to anything; the global
batch's would need every rank's rows (an all-gather of n_global × d values, then an
n_global × n_global Gram). The feature side costs d × d per layer in memory, n·d² in the hook and
d(d+1)/2 float64 values on the wire, independent of the batch size; it is what a window of
several batches uses already. For the layers people track (d ≤ a few thousand, and rows = batch ×
tokens for sequence models, usually ≥ d) that is the cheaper choice; the all-gather alternative,
which wins only when n_global ≪ d, is not built (README, "Distributed training").

The collectives run on a process group of the tracker's own (``gloo``, made at construction, with
``distributed_timeout``), so they never queue behind the model's NCCL traffic and a dead rank
surfaces as an error within the timeout. Per sampled step: one all-reduce of [per-layer header |
the lower triangles of every layer's Gram] in one float64 bucket — two when a layer's feature
count is not known yet (its first sample: the header round tells every rank the dimensions).
Nothing runs on unsampled steps. Every rank must call ``log()`` with the same steps (a forced
``log()`` too): a rank that skips a sampled step leaves the others waiting until the timeout.

Failures never reach training: a collective that raises (a rank died, the timeout ran out, a
step mismatch) is reported once; rank 0 records that sample and every later one as flagged rows
(``FLAG_TRACKER_ERROR``), so its run file keeps every sample completed before, and the tracker
stops calling collectives.
"""

from __future__ import annotations

import datetime
import logging
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ndt_fast.tracker.capture import Capture, LayerSlot, report_error

logger = logging.getLogger("ndt_fast.tracker")

# Header per layer (float64, summed over ranks; integers stay exact below 2**53):
_CAPTURED, _FAILED, _ROWS, _DIM, _DIM_SQUARED = range(5)
_HEADER_WIDTH = 5
# Then, once per sample: the step (to check every rank logs the same one), loss, grad_norm, ranks.
_STEP, _LOSS, _GRAD_NORM, _RANKS = range(4)
_SAMPLE_WIDTH = 4


def ranks_share_tracking() -> bool:
    """Whether ``torch.distributed`` runs more than one process: then every rank must make its
    tracker (a FastTracker's default there, ``"global"``, is a collective from construction on) —
    what the Lightning and Hugging Face callbacks check before attaching on rank 0 only."""
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def agreement_settings(config: Any) -> dict[str, Any]:
    """The settings every rank of a ``"global"`` run must share (they decide which rows and steps
    are measured and how)."""
    return {name: getattr(config, name) for name in (
        "sampling_frequency", "window", "metric_mask", "track_weights", "weight_mask", "max_rows", "conv_rows",
        "skip_eval_forwards", "eps", "energy_threshold", "center", "enable_jump_detection")}


def rank_output(output: str | os.PathLike[str], rank: int) -> str:
    """The run file of ``rank`` in ``"local"`` mode: ``run.h5`` → ``run.rank<rank>.h5``."""
    root, extension = os.path.splitext(os.fspath(output))
    return f"{root}.rank{rank}{extension or '.h5'}"


class RankReduce:
    """Sums the sampled layers' Grams over the ranks of a process group (``"global"`` mode).

    Construction is a collective (every rank must make its tracker): it makes the tracker's gloo
    group, or takes ``process_group``, and checks that every rank tracks the same layers with the
    same settings — ValueError on every rank otherwise, naming the difference.
    """

    def __init__(self, slots: Sequence[LayerSlot], capture: Capture, settings: dict[str, Any],
                 process_group: Any = None, timeout: float = 300.0) -> None:
        dist = torch.distributed
        self._slots = list(slots)
        self._capture = capture
        if process_group is None:
            process_group = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=timeout))
        elif dist.get_backend(process_group) != "gloo":
            raise ValueError(f"process_group must be a gloo group (the Grams are summed in host memory), got a "
                             f"{dist.get_backend(process_group)!r} group")
        self.group = process_group
        self.rank = dist.get_rank(process_group)
        self.world_size = dist.get_world_size(process_group)
        self._check_agreement([slot.name for slot in self._slots], settings)
        self._dims: list[int | None] = [None] * len(self._slots)  # agreed feature counts, per layer
        self.collectives = 0  # collectives called by log() (construction's not counted)
        self.seconds = 0.0  # time spent in them, packing included
        self.error: BaseException | None = None

    @property
    def writes(self) -> bool:
        """Whether this rank records (rank 0 of the group)."""
        return self.rank == 0

    def _check_agreement(self, names: list[str], settings: dict[str, Any]) -> None:
        mine = (names, sorted(settings.items()))
        everyone: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(everyone, mine, group=self.group)
        for rank, theirs in enumerate(everyone):
            if theirs[0] != names:
                raise ValueError(f"distributed='global': every rank must track the same layers; rank {self.rank} "
                                 f"tracks {names}, rank {rank} tracks {theirs[0]}")
            if theirs[1] != mine[1]:
                differ = sorted(k for (k, v), (_, w) in zip(mine[1], theirs[1]) if v != w)
                raise ValueError(f"distributed='global': every rank must use the same tracker settings; rank "
                                 f"{self.rank} and rank {rank} differ in {differ}")

    # ---- one sampled step -----------------------------------------------------------------------

    def reduce(self, step: int, ready: list[LayerSlot], failed: list[LayerSlot], loss: float,
               grad_norm: float) -> tuple[list[LayerSlot], list[LayerSlot], float, float]:
        """Sum this sample over the ranks. Returns, on rank 0, the layers to finish (their
        accumulators now hold the global Gram and row count), the layers to flag (a capture failed
        on some rank, or the collective failed), and the ranks' mean loss and grad_norm; on the
        other ranks nothing to finish (their accumulators are reset). Never raises."""
        if self.error is not None:  # the group broke earlier: no more collectives
            return self._give_up(ready, failed, loss, grad_norm)
        started = time.perf_counter()
        try:
            outcome = self._reduce(step, ready, failed, loss, grad_norm)
        except Exception as error:  # a dead rank, the timeout, a mismatch: flagged rows, training goes on
            self.error = error
            logger.error("ndt_fast: distributed='global': the collective of step %d failed (%s: %s); this and "
                         "every later sample are recorded as flagged rows, no more collectives are called",
                         step, type(error).__name__, error)
            return self._give_up(ready, failed, loss, grad_norm)
        finally:
            self.seconds += time.perf_counter() - started
        return outcome

    def _give_up(self, ready: list[LayerSlot], failed: list[LayerSlot], loss: float,
                 grad_norm: float) -> tuple[list[LayerSlot], list[LayerSlot], float, float]:
        for slot in ready:
            slot.accumulator.reset()
        flagged = sorted(ready + failed, key=lambda s: s.index) if self.writes else []
        return [], flagged, loss, grad_norm

    def _reduce(self, step: int, ready: list[LayerSlot], failed: list[LayerSlot], loss: float,
                grad_norm: float) -> tuple[list[LayerSlot], list[LayerSlot], float, float]:
        count = len(self._slots)
        local = {slot.index: slot for slot in ready}
        header = np.zeros(count * _HEADER_WIDTH + _SAMPLE_WIDTH)
        layers = header[: count * _HEADER_WIDTH].reshape(count, _HEADER_WIDTH)
        for slot in ready:
            dim = slot.accumulator.dim
            layers[slot.index] = (1, 0, slot.accumulator.rows_seen, dim, dim * dim)
        for slot in failed:
            layers[slot.index, _FAILED] = 1
        header[count * _HEADER_WIDTH:] = (step, loss, grad_norm, 1)
        if any(self._dims[s.index] is None or self._dims[s.index] != s.accumulator.dim for s in ready) \
                or any(d is None for d in self._dims):
            # A feature count not agreed yet: a header round first, so every rank knows every layout.
            header = self._all_reduce(header)
            self._learn_dims(header[: count * _HEADER_WIDTH].reshape(count, _HEADER_WIDTH))
            bucket = self._all_reduce(self._pack(local, None))
        else:
            bucket = self._all_reduce(self._pack(local, header))
            header = bucket[: header.size]
            bucket = bucket[header.size:]
        layers = header[: count * _HEADER_WIDTH].reshape(count, _HEADER_WIDTH)
        sample = header[count * _HEADER_WIDTH:]
        if sample[_STEP] != step * self.world_size:
            raise RuntimeError(f"the ranks logged different steps at once (this rank: {step}); every rank must "
                               "call log() with the same steps")
        ranks = sample[_RANKS]
        mean_loss, mean_grad_norm = sample[_LOSS] / ranks, sample[_GRAD_NORM] / ranks
        if not self.writes:
            for slot in ready:
                slot.accumulator.reset()
            return [], [], mean_loss, mean_grad_norm
        return (*self._unpack(layers, bucket, local), mean_loss, mean_grad_norm)

    def _all_reduce(self, values: np.ndarray) -> np.ndarray:
        tensor = torch.from_numpy(values)
        torch.distributed.all_reduce(tensor, group=self.group)
        self.collectives += 1
        return values  # (the tensor shares its memory)

    def _learn_dims(self, layers: np.ndarray) -> None:
        """Every rank's feature count per layer, from a summed header (identical on every rank)."""
        for i, (captured, _, _, dims, dims_squared) in enumerate(layers):
            if captured == 0:
                continue  # not known yet: the next sample asks again
            dim = dims / captured
            # All ranks agree iff Σd² · n = (Σd)² (Cauchy–Schwarz with equality); else the layer
            # is flagged below and its feature count asked for again.
            self._dims[i] = int(dim) if dims_squared * captured == dims * dims and dim == int(dim) else None

    def _pack(self, local: dict[int, LayerSlot], header: np.ndarray | None) -> np.ndarray:
        """[header |] the lower triangle of each layer with an agreed feature count, in layer order
        (zeros where this rank captured nothing or a count that differs)."""
        sizes = [d * (d + 1) // 2 if d is not None else 0 for d in self._dims]
        head = header.size if header is not None else 0
        bucket = np.zeros(head + sum(sizes))
        if header is not None:
            bucket[:head] = header
        at = head
        for i, size in enumerate(sizes):
            slot = local.get(i)
            if size and slot is not None and slot.accumulator.dim == self._dims[i]:
                bucket[at:at + size] = slot.accumulator.lower_triangle()
            at += size
        return bucket

    def _unpack(self, layers: np.ndarray, bucket: np.ndarray,
                local: dict[int, LayerSlot]) -> tuple[list[LayerSlot], list[LayerSlot]]:
        """Rank 0: the summed Grams into the layers' accumulators; which layers to finish, which to flag."""
        ready, flagged, at = [], [], 0
        for slot in self._slots:
            dim = self._dims[slot.index]
            size = dim * (dim + 1) // 2 if dim is not None else 0
            chunk = bucket[at:at + size]
            at += size
            captured, failures, rows, dims, dims_squared = layers[slot.index]
            if failures > 0:
                flagged.append(slot)
            elif captured == 0:
                continue  # no rank captured it: a missed layer, as on one process
            elif dim is None or dims != dim * captured or dims_squared != dim * dim * captured:
                self._dims[slot.index] = None  # asked again at the next sample
                report_error(slot, ValueError(f"layer {slot.name!r} has different feature counts on different "
                                              "ranks (or its count changed): this sample's row is flagged"))
                flagged.append(slot)
            else:
                if slot.index not in local:  # captured elsewhere only: this rank's accumulator is empty
                    self._capture.host_feature_accumulator(slot, dim)
                slot.accumulator.load_lower_triangle(chunk, int(rows))
                ready.append(slot)
        for slot in local.values():
            if slot not in ready:
                slot.accumulator.reset()
        return ready, flagged

