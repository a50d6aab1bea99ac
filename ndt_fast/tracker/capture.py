"""Capture: the forward hooks, an activation → a 2-D matrix → its layer's Gram.

A hook is *armed* only for forwards of steps that will be sampled (``ndt_fast.tracker.schedule``);
an unarmed hook returns at once. An armed hook turns the module's output into a 2-D
``(rows, features)`` matrix (``ndt_fast.layers``' rules, ``select=``, ``max_rows``) and folds it
into its layer's accumulator; nothing of the activation is kept past the forward pass, except
with ``keep_last_output`` (the default): an unarmed hook then keeps a reference to its layer's
last training-forward output (no copy, no computation), which ``log()`` drops, so a forced
``log()`` on an unscheduled step measures it (``take_kept``) as ndt does, without ``arm()``.

With ``background_finish`` (window 1, not distributed) an armed hook keeps a copy of the 2-D
matrix instead (``LayerSlot.deferred``): its Gram is computed on the background thread, just
before the sample's finish (``ndt_fast.tracker.sink``), or by :meth:`Capture.fold_deferred`
where the sample cannot wait for it.

Routing is decided here, once per accumulator: when a layer's Gram changes shape or device, its
new accumulator comes from the device router (a CUDA activation a device kind takes) or else
from the host backend (``ndt_fast.tracker.backends``). Gram side: ``ndt_fast._schema.gram_side``.

An exception inside a hook is caught, counted on its layer (``LayerSlot.errors``) and logged
once; the forward pass always completes, and the sample gets a flagged row for that layer.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ndt_fast._buffer import torch_dtype_readable, torch_matrix_view
from ndt_fast._schema import gram_side
from ndt_fast.layers import CONV_TYPES, activation_matrix, first_tensor
from ndt_fast.tracker.backends import DeviceRouter, HostBackend
from ndt_fast.tracker.config import TrackerConfig

logger = logging.getLogger("ndt_fast.tracker")

_ROW_SUBSETS_KEPT = 8  # max_rows: row subsets kept per layer (one per recent row count)


class LayerSlot:
    """Everything kept per tracked module."""

    __slots__ = ("name", "index", "module", "handle", "accumulator", "key", "on_host", "captured", "failed",
                 "errors", "spatial_rows", "row_subset", "kept", "rows", "deferred")

    def __init__(self, name: str, index: int, module: nn.Module, spatial_rows: bool) -> None:
        self.name = name
        self.index = index  # in the tracker's layer list and in its records
        self.module = module
        self.handle: Any = None
        # Made on first capture, by the backend routing chose. background_finish: None between a
        # deferred slot's hand-over and its next one (the one accumulator is with the sink then).
        self.accumulator: Any = None
        self.key: tuple[str, int, torch.device | None] | None = None  # (side, dim, device; None: CPU)
        self.on_host = True  # the accumulator is the host backend's (reads host memory views)
        self.captured = False
        self.failed = False  # a capture for the coming sample raised (the sample gets a flagged row)
        self.errors = 0
        self.spatial_rows = spatial_rows
        self.row_subset: dict[tuple[int, torch.device], torch.Tensor] = {}  # max_rows: (rows, device) → indices
        self.kept: Any = None  # keep_last_output: the last unarmed training forward's output since log()
        self.rows: torch.Tensor | None = None  # distributed="global", a row-gathered layer: this rank's rows
        # background_finish: a host copy of the sampled activation (rows, features), whose Gram the
        # background thread computes before the finish (Capture.fold_deferred)
        self.deferred: torch.Tensor | None = None


def report_error(slot: LayerSlot, error: BaseException) -> None:
    """Count a caught error on its layer; the first one per layer is logged."""
    slot.errors += 1
    if slot.errors == 1:
        logger.error("ndt_fast: tracking layer %r failed (%s: %s); training continues, further errors "
                     "for this layer are counted in tracker.errors", slot.name, type(error).__name__, error)


class Capture:
    """The tracker's hooks and per-layer slots."""

    def __init__(self, modules: Sequence[nn.Module], names: Sequence[str], config: TrackerConfig,
                 host: HostBackend, router: DeviceRouter | None) -> None:
        self.slots = [LayerSlot(name, i, module, config.conv_rows == "spatial" and isinstance(module, CONV_TYPES))
                      for i, (name, module) in enumerate(zip(names, modules))]
        self.armed = False
        self.host = host
        self.router = router
        self.device_in_use = False  # a layer has been routed to a device: samples go through the queue
        self._config = config
        self._window = config.window
        # Grams that will be summed — over a window's batches, or over ranks (distributed="global")
        # — must be feature-side ones; otherwise the smaller side is taken.
        self._summed = config.window > 1 or config.distributed == "global"
        # background_finish: a sample's Grams are computed on the background thread too, from a copy
        # of each activation — unless they are summed (over a window's forwards, or across ranks
        # at log(), which needs them on this thread).
        self.defer_grams = config.background_finish and not self._summed
        # distributed="global": layers whose rows are gathered across ranks at log() (the hook keeps
        # a copy of its rows instead of a Gram); ndt_fast.tracker.distributed decides.
        self.gathered: set[int] = set()
        self._select = config.select
        self._max_rows = config.max_rows
        self._skip_eval = config.skip_eval_forwards
        self._threads = config.threads
        self._host_copy_warned: set[str] = set()

    def install(self) -> None:
        for slot in self.slots:
            slot.handle = slot.module.register_forward_hook(self._hook(slot))

    def remove(self) -> None:
        """Remove every hook and forget every Gram (the model is left as it was)."""
        for slot in self.slots:
            if slot.handle is not None:
                slot.handle.remove()
                slot.handle = None
            slot.accumulator = None
            slot.key = None
            slot.captured = False
            slot.kept = None
            slot.rows = None
            slot.deferred = None
        self.armed = False

    def _hook(self, slot: LayerSlot) -> Any:
        capture, take = self, self.take
        if not self._config.keep_last_output:
            def hook(module: nn.Module, inputs: Any, output: Any) -> None:
                if capture.armed:  # the whole cost of a hook on a step that is not sampled
                    take(slot, output)

            return hook
        skip_eval, grad_enabled = self._skip_eval, torch.is_grad_enabled

        def keeping_hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if capture.armed:
                take(slot, output)
            elif not skip_eval or (module.training and grad_enabled()):
                slot.kept = output  # the whole cost on a step that is not sampled: one reference

        return keeping_hook

    def take_kept(self) -> None:
        """Measure each layer's kept output that nothing captured since the last ``log()`` (a
        forced sample of an unscheduled step); the hook already checked its mode."""
        for slot in self.slots:
            if slot.kept is not None and not (slot.captured or slot.failed):
                self.take(slot, slot.kept, mode_checked=True)

    def drop_kept(self) -> None:
        """Forget the kept outputs (every ``log()``: they are held from a forward to its log only)."""
        for slot in self.slots:
            slot.kept = None

    def take(self, slot: LayerSlot, output: Any, mode_checked: bool = False) -> None:
        """Fold ``output`` (a module's output) into ``slot``'s Gram; never raises."""
        try:
            if (not mode_checked and self._skip_eval
                    and (not slot.module.training or not torch.is_grad_enabled())):
                return
            if self._window == 1:
                # This forward replaces the sample; until it is in, there is none (a capture that
                # fails half-way must not leave an empty or stale Gram marked as captured).
                slot.captured = False
            if type(output) is torch.Tensor and output.dim() == 2 and self._select is None:
                tensor = x = output  # the common case (a Linear's output): read through its pointer only
            else:
                tensor = self._select(output) if self._select is not None else first_tensor(output)
                if not isinstance(tensor, torch.Tensor):
                    raise TypeError(f"the module output holds no tensor to track (got {type(output).__name__})")
                x = activation_matrix(tensor, slot.spatial_rows)  # detached, 2-D
            if self._max_rows is not None and x.shape[0] > self._max_rows:
                x = x.detach().index_select(0, self._row_subset(slot, x.shape[0], x.device))
            rows, cols = x.shape
            if rows == 0 or cols == 0:
                raise ValueError(f"empty activation of shape {tuple(tensor.shape)}")
            if self.gathered and slot.index in self.gathered:
                # A copy: the output may be changed in place later in the forward (ReLU(inplace=True)).
                wide = torch.float64 if x.dtype == torch.float64 else torch.float32  # (both exact)
                slot.rows = x.detach().to("cpu", wide, copy=True)
                slot.captured = True
                return
            side, dim = ("feature", cols) if self._summed else gram_side(rows, cols)
            on_cpu = x.is_cpu
            key = (side, dim, None if on_cpu else x.device)  # (no device object built for a CPU tensor)
            fresh = self._window == 1  # one batch: this forward replaces the Gram
            if slot.key != key:
                self._new_accumulator(slot, x, key)
            if slot.on_host:
                # Whether x is a new tensor already (max_rows' index_select, a copy by activation_matrix):
                # asked only where the Gram is deferred.
                copied = self.defer_grams and x is not tensor and (
                    x.untyped_storage().data_ptr() != tensor.untyped_storage().data_ptr())
                if not on_cpu:
                    self.warn_host_copy(slot, x, dim)
                    x, copied = x.detach().to("cpu"), True  # a sync with the device (see device_path)
                if fresh and self.defer_grams:
                    # A copy (the output may still change in place in this forward); its Gram is
                    # computed with the sample's finish, on the background thread (which reads
                    # it through its own view: none is made here).
                    if not torch_dtype_readable(x.dtype):  # float8, integer, … outputs: measured in float32
                        x, copied = x.detach().float(), True
                    slot.deferred = x.detach() if copied else x.detach().clone()
                else:
                    view = torch_matrix_view(x)
                    if view is None:  # float8, integer, … outputs: measured in float32
                        x = x.detach().float()
                        view = torch_matrix_view(x)
                    if fresh:
                        slot.accumulator.refill(view, self._threads)  # reset + add in one native call
                    else:
                        slot.accumulator.add(view, threads=self._threads)
            else:
                if fresh:
                    slot.accumulator.reset()
                # Device path: the Gram update is queued on the current stream; nothing is copied.
                slot.accumulator.add(x.detach())
            slot.captured = True
        except Exception as error:  # never break the user's forward pass
            slot.failed = True
            report_error(slot, error)

    def _new_accumulator(self, slot: LayerSlot, x: torch.Tensor, key: tuple[str, int, torch.device | None]) -> None:
        """Route the layer (once per Gram shape and device) and give it an empty accumulator there."""
        side, dim, device = key[0], key[1], x.device
        if self._window > 1 and slot.accumulator is not None and slot.accumulator.rows_seen:
            old_dim, old_device = slot.key[1], slot.key[2] or "cpu"
            raise ValueError(f"feature count or device changed inside a window ({old_dim} features on "
                             f"{old_device} -> {dim} on {device})")
        if self.router is not None and self.router.takes(x, dim):
            backend, slot.on_host = self.router.backend(device), False
            self.device_in_use = True
        else:
            backend, slot.on_host = self.host, True
        slot.accumulator = backend.accumulator(side, dim)
        slot.key = key

    def host_sample_gram(self, slot: LayerSlot, rows: torch.Tensor) -> None:
        """Rank 0 of a distributed run: ``slot``'s accumulator becomes the sample-side Gram of
        ``rows`` (the global batch's, n_global × d float64), ready for the sample's finish."""
        n = int(rows.shape[0])
        if slot.key != ("sample", n, None):
            slot.accumulator, slot.key, slot.on_host = self.host.accumulator("sample", n), ("sample", n, None), True
        slot.accumulator.refill(torch_matrix_view(rows), self._threads)

    def host_feature_accumulator(self, slot: LayerSlot, dim: int) -> None:
        """Give ``slot`` an empty host feature-side accumulator of ``dim`` features (rank 0 of a
        distributed run, for a layer that only other ranks captured at this sample)."""
        if slot.key != ("feature", dim, None):
            slot.accumulator = self.host.accumulator("feature", dim)
            slot.key, slot.on_host = ("feature", dim, None), True

    def fold_deferred(self, slot: LayerSlot) -> None:
        """Compute ``slot``'s Gram from its deferred activation now, on this thread (a sample that
        takes the queue's path: its backends need the Grams at submit). Raises what the Gram's
        computation raises (the caller flags the layer)."""
        if slot.deferred is not None:
            rows, slot.deferred = slot.deferred, None
            if slot.accumulator is None:  # (handed to the background thread at the last sample)
                slot.accumulator = self.host.accumulator(slot.key[0], slot.key[1])
            slot.accumulator.refill(torch_matrix_view(rows), self._threads)

    def discard(self, slot: LayerSlot) -> None:
        """Forget what the slot captured (its Gram too: with window > 1 the next add accumulates)."""
        slot.captured = False
        slot.failed = False
        slot.rows = None
        slot.deferred = None
        if slot.accumulator is not None:
            slot.accumulator.reset()

    def warn_host_copy(self, slot: LayerSlot, x: torch.Tensor, dim: int, what: str = "activations",
                       why: str | None = None) -> None:
        """Report once per kind (activations / weight) that a device tensor is copied to the host."""
        if x.device.type == "cpu" or what in self._host_copy_warned:
            return
        self._host_copy_warned.add(what)
        if why is None:
            if self.router is None:
                why = ('device_path="host"' if self._config.device_path == "host"
                       else "center=True is computed on the host only")
            else:
                why = self.router.kind.refusal(x, dim)
        logger.warning("ndt_fast: layer %r: %s on %s are copied to the host (%s); each copy synchronizes "
                       "the host with the device (reported once)", slot.name, what, x.device, why)

    def _row_subset(self, slot: LayerSlot, rows: int, device: torch.device) -> torch.Tensor:
        """The layer's fixed random ``max_rows`` of ``rows`` (ascending indices): drawn once per
        row count from a generator seeded with the layer's index, so every sample with that row
        count measures the same token positions, and a rerun the same ones again. The subsets of
        the last few row counts are kept (no redraw, no host-to-device copy per sample)."""
        chosen = slot.row_subset.get((rows, device))
        if chosen is None:
            generator = torch.Generator().manual_seed(slot.index)
            chosen = torch.randperm(rows, generator=generator)[: self._max_rows].sort().values
            if device.type == "cuda":  # pinned first: a non_blocking copy from pageable memory may sync
                chosen = chosen.pin_memory()
            chosen = chosen.to(device, non_blocking=True)
            if len(slot.row_subset) >= _ROW_SUBSETS_KEPT:  # varying batch/sequence lengths: bounded
                slot.row_subset.pop(next(iter(slot.row_subset)))
            slot.row_subset[(rows, device)] = chosen
        return chosen


def weight_matrix(slot: LayerSlot) -> torch.Tensor | None:
    """The layer's weight as a 2-D (out, in·…) float matrix (detached), or None without one."""
    weight = getattr(slot.module, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.dim() < 2:
        return None
    w = weight.detach()
    w = w.reshape(w.shape[0], -1)
    if w.dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        w = w.float()
    return w
