"""Distributed training: the exact metrics of the global batch, or one run per rank.

``FastTracker(..., distributed=)`` (resolved by ``config.resolve_distributed``):

- ``"global"`` — on a sampled step every rank's hooks hold the feature-side Gram XᵢᵀXᵢ of its
  shard; the Gram of the global batch is their sum, so one all-reduce per sample gives the exact
  metrics of the global batch (:class:`RankReduce`, between the hooks' accumulation and the
  per-sample finish). Rank 0 then finishes the sample as a single process would — spectra,
  metrics, records, run file, jump detection, sinks — and the other ranks record nothing.
- ``"local"`` — every rank tracks its own shard as an independent run, ``run.rank<k>.h5``
  (:func:`rank_output`): per-rank diagnostics.

The side rule, per layer and sample. Feature-side Grams (XᵢᵀXᵢ, d × d) add up across ranks;
sample-side ones (XᵢXᵢᵀ) of different row sets do not. So a layer is either
- *summed* (feature side: d(d+1)/2 float64 values per rank on the wire, a d × d eigenproblem), or
- *gathered*: its hooks keep a copy of their rows instead of a Gram, one gather brings
  every rank's rows (padded to the largest rank's count) to rank 0, which measures the stacked
  global batch on the sample side (n_global × d values on the wire, an n_global × n_global
  eigenproblem) — exactly what one process holding every row computes.
A layer is gathered when its global batch had fewer rows than features at the previous sample
(one process's side rule, applied to the global batch, decided from the summed header so every
rank decides alike), and only with ``window == 1``; its first sample is always summed (nobody
knows the feature counts yet).

The collectives run on a process group of the tracker's own (``gloo``, made at construction, with
``distributed_timeout``), so they never queue behind the model's NCCL traffic and a dead rank
surfaces as an error within the timeout. Per sampled step: one all-reduce of [per-layer header |
the lower triangles of every summed layer's Gram | a zero-padded slot per rank with the rows of
the gathered layers] in one float64 bucket, laid out from state every rank shares; a second
all-reduce only for layers seen for the first time (the header tells every rank their feature
counts), and a gather of rows to rank 0 only while a rank's rows outgrow their slot (float32,
exact for float32/16/bfloat16 activations; float64 when some rank's are float64).
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
# (_WIDE: ranks holding float64 rows of a gathered layer; then the rows travel as float64, else as
# float32, which holds float32/float16/bfloat16 activations exactly at half the bytes.)
_STEP, _STEP_SQUARED, _LOSS, _GRAD_NORM, _RANKS, _WIDE = range(6)
_SAMPLE_WIDTH = 6


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
        "skip_eval_forwards", "eps", "energy_threshold", "center", "enable_jump_detection", "keep_last_output")}


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
                 process_group: Any = None, timeout: float = 300.0, window: int = 1) -> None:
        dist = torch.distributed
        self._slots = list(slots)
        self._capture = capture
        own_group = process_group is None
        if own_group:
            process_group = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=timeout))
        elif dist.get_backend(process_group) != "gloo":
            raise ValueError(f"process_group must be a gloo group (the Grams are summed in host memory), got a "
                             f"{dist.get_backend(process_group)!r} group")
        self.group = process_group
        self.rank = dist.get_rank(process_group)
        self.world_size = dist.get_world_size(process_group)
        try:
            self._check_agreement([slot.name for slot in self._slots], settings)
        except ValueError:
            if own_group:
                dist.destroy_process_group(process_group)
            raise
        self._dims: list[int | None] = [None] * len(self._slots)  # agreed feature counts, per layer
        # Layers whose rows are gathered (global batch on the sample side): the hooks keep rows for
        # them instead of a Gram (capture reads this set); decided per sample, see _choose_sides.
        self.gathered: set[int] = capture.gathered
        self._capacity: dict[int, int] = {}  # gathered layer → rows per rank slot in the all-reduce
        self.partial: dict[str, int] = {}  # rank 0: samples of a layer captured on some ranks only
        self._gather_allowed = window == 1
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
            logger.error("ndt_fast: distributed='global': the ranks' reduction of step %d failed (%s: %s); this and "
                         "every later sample are recorded as flagged rows, no more collectives are called",
                         step, type(error).__name__, error)
            return self._give_up(ready, failed, loss, grad_norm)
        finally:
            self.seconds += time.perf_counter() - started
        return outcome

    def _give_up(self, ready: list[LayerSlot], failed: list[LayerSlot], loss: float,
                 grad_norm: float) -> tuple[list[LayerSlot], list[LayerSlot], float, float]:
        self.gathered.clear()  # (no more collectives: hooks go back to Grams)
        for slot in ready:
            _forget(slot)
        flagged = sorted(ready + failed, key=lambda s: s.index) if self.writes else []
        return [], flagged, loss, grad_norm

    def _reduce(self, step: int, ready: list[LayerSlot], failed: list[LayerSlot], loss: float,
                grad_norm: float) -> tuple[list[LayerSlot], list[LayerSlot], float, float]:
        count, width = len(self._slots), _HEADER_WIDTH + self.world_size
        local = {slot.index: slot for slot in ready}
        triangles = self._local_triangles(ready)
        header = np.zeros(count * width + _SAMPLE_WIDTH)
        layers = header[: count * width].reshape(count, width)
        for slot in ready:
            if slot.index in triangles or slot.rows is not None:
                rows, dim = _local_shape(slot)
                layers[slot.index, :_HEADER_WIDTH] = (1, 0, rows, dim, dim * dim)
                layers[slot.index, _HEADER_WIDTH + self.rank] = rows  # (the row counts a gather pads to)
            else:  # its Gram could not be read here: flagged on every rank
                layers[slot.index, _FAILED] = 1
        for slot in failed:
            layers[slot.index, _FAILED] = 1
        wide = any(s.rows is not None and s.rows.dtype == torch.float64 for s in ready)
        header[count * width:] = (step, float(step) * step, loss, grad_norm, 1, wide)
        # Every decision below depends only on state all ranks share (the agreed feature counts,
        # the gathered set, the slot sizes) or on the summed header: the buckets always match.
        # One all-reduce: the header, the summed triangles of the layers whose feature count is
        # agreed, and a slot per rank with the rows of the gathered layers (a sum of zero-padded
        # slots is a gather).
        layout = list(self._dims)
        inline = {i: self._capacity[i] for i in sorted(self.gathered) if self._capacity.get(i)}
        bucket = self._all_reduce(self._pack(layout, header, triangles, local, inline))
        header, rest = bucket[: header.size], bucket[header.size:]
        layers = header[: count * width].reshape(count, width)
        sample = header[count * width:]
        if sample[_STEP] != step * self.world_size or sample[_STEP_SQUARED] != float(step) * step * self.world_size:
            raise RuntimeError(f"the ranks logged different steps at once (this rank: {step}); every rank must "
                               "call log() with the same steps")
        summed, at = {}, 0
        for i, dim in enumerate(layout):
            if dim is not None and i not in self.gathered:
                summed[i] = rest[at:at + dim * (dim + 1) // 2]
                at += dim * (dim + 1) // 2
        slots_of_rows = rest[at:]  # (the inline region follows the triangles)
        mismatched, learned = self._check_dims(layout, layers)
        if learned:  # layers seen for the first time: their triangles in a second round
            sizes = {i: self._dims[i] * (self._dims[i] + 1) // 2 for i in learned}
            second = np.zeros(sum(sizes.values()))
            at = 0
            for i in learned:
                if i in triangles and triangles[i].size == sizes[i]:
                    second[at:at + sizes[i]] = triangles[i]
                at += sizes[i]
            second = self._all_reduce(second)
            at = 0
            for i in learned:
                summed[i] = second[at:at + sizes[i]]
                at += sizes[i]
        gathered = self._inline_rows(layout, layers, slots_of_rows, inline)
        if any(i not in gathered for i in self.gathered):  # a first gathered sample, or a rank outgrew its slot
            gathered.update(self._gather_rows(layers, local, sample[_WIDE] > 0, skip=gathered))
        for i in self.gathered:  # slot sizes for the next samples: the most rows a rank has had
            self._capacity[i] = max(self._capacity.get(i, 0), int(layers[i, _HEADER_WIDTH:].max()))
        ranks = sample[_RANKS]
        mean_loss, mean_grad_norm = sample[_LOSS] / ranks, sample[_GRAD_NORM] / ranks
        if self.writes:
            outcome = self._unpack(step, layers, summed, gathered, local, mismatched)
        else:
            outcome = [], []
            for slot in ready:
                _forget(slot)
        for i in mismatched:  # (every rank alike: the layouts of later buckets must agree)
            self._dims[i] = None  # learned again at its next sample
            self.gathered.discard(i)
            self._capacity.pop(i, None)
        self._choose_sides(layers)
        return (*outcome, mean_loss, mean_grad_norm)

    def _local_triangles(self, ready: list[LayerSlot]) -> dict[int, np.ndarray]:
        """This rank's lower triangles of its summed (feature-side) layers; a layer whose Gram cannot
        be read is left out (reported; the header flags it on every rank)."""
        out = {}
        for slot in ready:
            if slot.rows is not None:
                continue
            try:
                out[slot.index] = slot.accumulator.lower_triangle()
            except Exception as error:  # never let one rank skip the collective
                report_error(slot, error)
        return out

    def _check_dims(self, layout: list[int | None], layers: np.ndarray) -> tuple[set[int], list[int]]:
        """From the summed header (identical everywhere): the layers captured with a feature count
        other than the agreed one on some rank (flagged), and the layers seen for the first time
        with one count on every rank (learned now, in layer order)."""
        mismatched, learned = set(), []
        for i, dim in enumerate(layout):
            captured, _, _, dims, dims_squared = layers[i, :_HEADER_WIDTH]
            if not captured:
                continue
            if dim is not None:
                if dims != dim * captured or dims_squared != dim * dim * captured:
                    mismatched.add(i)
                continue
            # All ranks agree iff Σd² · n = (Σd)² (Cauchy–Schwarz with equality).
            mean = dims / captured
            if dims_squared * captured == dims * dims and mean == int(mean):
                self._dims[i] = int(mean)
                learned.append(i)
            else:
                mismatched.add(i)
        return mismatched, learned

    def _all_reduce(self, values: np.ndarray) -> np.ndarray:
        tensor = torch.from_numpy(values)
        torch.distributed.all_reduce(tensor, group=self.group)
        self.collectives += 1
        return values  # (the tensor shares its memory)

    def _inline_rows(self, layout: list[int | None], layers: np.ndarray, region: np.ndarray,
                     inline: dict[int, int]) -> dict[int, torch.Tensor]:
        """The gathered layers whose rows came in the all-reduce's per-rank slots (``region``: for
        each layer of ``inline``, world_size slots of ``inline[i]`` rows) and fit them:
        ``{layer: (n_global, d) float64}`` on rank 0 — on the other ranks the same keys (so nobody
        gathers them again) with empty tensors."""
        out: dict[int, torch.Tensor] = {}
        at = 0
        for i, capacity in inline.items():
            dim, per_rank = layout[i], layers[i, _HEADER_WIDTH:].astype(np.int64)
            size = self.world_size * capacity * dim
            slots = region[at:at + size].reshape(self.world_size, capacity, dim)
            at += size
            if per_rank.max() > capacity or layers[i, _FAILED] > 0:
                continue  # (a failed layer is flagged anyway; an outgrown slot goes through a gather)
            out[i] = (torch.from_numpy(np.concatenate([slots[r, :per_rank[r]] for r in range(self.world_size)]))
                      if self.writes else torch.empty(0))
        return out

    def _gather_rows(self, layers: np.ndarray, local: dict[int, LayerSlot], wide: bool,
                     skip: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
        """The rows of the row-gathered layers from every rank, in rank order — in one gather to
        rank 0 of a float32 buffer (float64 when some rank's rows are float64), each rank's rows
        padded to the largest rank's (the header says how many each has). Rank 0 gets
        ``{layer: (n_global, d) float64 tensor}``; the others an empty dict."""
        plan = []  # (layer, padded rows, dim, per-rank rows)
        for i in sorted(self.gathered):
            if i in skip:
                continue
            dim, per_rank = self._dims[i], layers[i, _HEADER_WIDTH:].astype(np.int64)
            if dim is not None and layers[i, _FAILED] == 0 and per_rank.sum() > 0:
                plan.append((i, int(per_rank.max()), dim, per_rank))
        if not plan:
            return {}
        mine = torch.zeros(sum(padded * dim for _, padded, dim, _ in plan),
                           dtype=torch.float64 if wide else torch.float32)
        at = 0
        for i, padded, dim, _ in plan:
            slot = local.get(i)
            if slot is not None and slot.rows is not None and slot.rows.shape[1] == dim:
                mine[at:at + slot.rows.numel()] = slot.rows.reshape(-1)
            at += padded * dim
        everyone = [torch.empty_like(mine) for _ in range(self.world_size)] if self.writes else None
        torch.distributed.gather(mine, everyone, dst=torch.distributed.get_global_rank(self.group, 0),
                                 group=self.group)  # (only rank 0 measures: no all-gather)
        self.collectives += 1
        if not self.writes:
            return {}
        out, at = {}, 0
        for i, padded, dim, per_rank in plan:
            out[i] = torch.cat([everyone[r][at:at + int(per_rank[r]) * dim].view(-1, dim)
                                for r in range(self.world_size)]).double()
            at += padded * dim
        return out

    def _choose_sides(self, layers: np.ndarray) -> None:
        """From the next sample on, gather a layer's rows (and measure its global batch on the
        sample side, n_global × n_global) when the global batch has fewer rows than features —
        one process's side rule, applied to the global batch; otherwise sum feature-side Grams.
        Decided from the summed header, so every rank decides the same. Only with ``window == 1``
        (a window's batches are summed on the feature side)."""
        if not self._gather_allowed:
            return
        for i, dim in enumerate(self._dims):
            captured, rows = layers[i, _CAPTURED], layers[i, _ROWS]
            if captured == 0 or dim is None:
                continue
            if rows < dim:
                self.gathered.add(i)
            else:
                self.gathered.discard(i)

    def _pack(self, layout: list[int | None], header: np.ndarray, triangles: dict[int, np.ndarray],
              local: dict[int, LayerSlot], inline: dict[int, int]) -> np.ndarray:
        """header | the lower triangle of each summed layer with an agreed feature count (``layout``),
        in layer order (zeros where this rank has none, or one of another size) | for each layer of
        ``inline`` (gathered layer → rows per slot), world_size slots of that many rows × d, this
        rank's rows in its own slot (if they fit), zeros elsewhere."""
        sizes = [d * (d + 1) // 2 if d is not None and i not in self.gathered else 0 for i, d in enumerate(layout)]
        slots = [self.world_size * capacity * layout[i] for i, capacity in inline.items()]
        bucket = np.zeros(header.size + sum(sizes) + sum(slots))
        bucket[:header.size] = header
        at = header.size
        for i, size in enumerate(sizes):
            triangle = triangles.get(i)
            if size and triangle is not None and triangle.size == size:
                bucket[at:at + size] = triangle
            at += size
        for (i, capacity), size in zip(inline.items(), slots):
            slot = local.get(i)
            if slot is not None and slot.rows is not None and slot.rows.shape[0] <= capacity \
                    and slot.rows.shape[1] == layout[i]:
                region = bucket[at:at + size].reshape(self.world_size, capacity, layout[i])
                region[self.rank, :slot.rows.shape[0]] = slot.rows.numpy()
            at += size
        return bucket

    def _unpack(self, step: int, layers: np.ndarray, summed: dict[int, np.ndarray],
                gathered: dict[int, torch.Tensor], local: dict[int, LayerSlot],
                mismatched: set[int]) -> tuple[list[LayerSlot], list[LayerSlot]]:
        """Rank 0: the global Grams into the layers' accumulators — summed triangles loaded, or the
        gathered rows' sample-side Gram; which layers to finish, which to flag. A layer that fails
        here is flagged alone (no other rank is waiting on it any more)."""
        ready, flagged = [], []
        for slot in self._slots:
            i = slot.index
            captured, failures, rows = layers[i, :_ROWS + 1]
            if failures > 0:
                flagged.append(slot)
                continue
            if captured == 0:
                continue  # no rank captured it: a missed layer, as on one process
            if i in mismatched:
                report_error(slot, ValueError(f"layer {slot.name!r} has different feature counts on different "
                                              "ranks (or its count changed): this sample's row is flagged"))
                flagged.append(slot)
                continue
            try:
                if i in gathered:
                    self._capture.host_sample_gram(slot, gathered[i])
                else:
                    self._capture.host_feature_accumulator(slot, self._dims[i])
                    slot.accumulator.load_lower_triangle(summed[i], int(rows))
            except Exception as error:  # e.g. memory for a large global Gram: this row only
                report_error(slot, error)
                flagged.append(slot)
                continue
            ready.append(slot)
            if captured < self.world_size:
                self._partial(slot, step, int(captured))
        for slot in local.values():
            slot.rows = None
            if slot not in ready and slot.accumulator is not None:
                slot.accumulator.reset()
        return ready, flagged

    def _partial(self, slot: LayerSlot, step: int, captured: int) -> None:
        """A layer captured on some ranks only (a no_grad/eval forward, a branch not taken there):
        its row measures those ranks' rows; counted in ``partial``, warned once per layer."""
        self.partial[slot.name] = self.partial.get(slot.name, 0) + 1
        if self.partial[slot.name] == 1:
            logger.warning("ndt_fast: distributed='global': layer %r was captured on %d of %d ranks at step %d; "
                           "its row measures those ranks' rows only (counted in tracker.partial_samples)",
                           slot.name, captured, self.world_size, step)


def _local_shape(slot: LayerSlot) -> tuple[int, int]:
    """(rows, features) this rank captured for the layer: its kept rows', or its feature Gram's."""
    if slot.rows is not None:
        return int(slot.rows.shape[0]), int(slot.rows.shape[1])
    return int(slot.accumulator.rows_seen), int(slot.accumulator.dim)


def _forget(slot: LayerSlot) -> None:
    """Drop what this rank captured for the layer (its sample was reduced, or given up)."""
    slot.rows = None
    if slot.accumulator is not None:
        slot.accumulator.reset()
