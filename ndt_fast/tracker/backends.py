"""The compute-backend seam: where a layer's Gram lives and where its sample is computed.

Every backend — the host's, a CUDA device's (``ndt_fast.cuda.backend``), the emulated one of the
tests — satisfies :class:`ComputeBackend`:

    accumulator(side, dim)   a Gram for one layer; ``add(x)`` folds an activation in (hook)
    submit(tag, accumulators, weights)
                             queue one sample's metric records (activations, then the weights
                             given); the accumulators are reset for the next sample
    poll()                   completed ``(tag, records)``, oldest first; never waits
    wait()                   block until everything submitted has completed (a sync)

and a device kind (:class:`DeviceKind`) says which activations go to its devices and stages a
sample's loss/grad_norm tensors on their way to the host (the host reads them at once).

The host backend completes at submit (its ``poll`` returns the sample at once); a device backend
later. Routing happens once per layer, when its accumulator is made (``ndt_fast.tracker.capture``):
a CUDA activation that a device kind takes gets that device's backend, anything else the host's.
The sample queue (``ndt_fast.tracker.queue``) only talks to this interface.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from ndt_fast._buffer import describe
from ndt_fast._native import core
from ndt_fast._schema import METRIC_WIDTH

logger = logging.getLogger("ndt_fast.tracker")  # the tracker's logger: one place to configure

#: Samples that may wait for their device results; also the slots of each device's record ring.
MAX_PENDING_SAMPLES = 256


@dataclass(frozen=True)
class MetricSettings:
    """What every backend computes: ``ndt_fast.metrics`` options, the metric sets as bit masks."""

    eps: float
    energy_threshold: float
    mask: int  # activation metrics
    weight_mask: int  # weight metrics (track_weights)
    center: bool = False
    threads: int = 1


class Staged(Protocol):
    """A scalar (loss or grad_norm) on its way to the host."""

    def ready(self) -> bool: ...

    def wait(self) -> None: ...

    def value(self) -> float: ...


class ComputeBackend(Protocol):
    """One place where Grams live and samples are computed (see the module docstring)."""

    device: torch.device | None  # None: the host

    def accumulator(self, side: str, dim: int) -> Any:
        """An empty ``dim × dim`` Gram of ``side`` ("sample": XXᵀ, "feature": XᵀX) on this backend."""

    def submit(self, tag: int, accumulators: Sequence[Any], weights: Sequence[Any]) -> BaseException | None:
        """Queue the records ((len(accumulators) + len(weights)) × 9 float64 of ``RECORD_COLUMNS``)
        of the accumulators (activation metrics; reset afterwards) and of the 2-D weight matrices
        (their smaller Gram, weight metrics), tagged ``tag``. Raises if nothing could be queued;
        returns an error that spoiled only the weight records (left NaN), or None."""

    def poll(self) -> list[tuple[int, np.ndarray]]:
        """Completed ``(tag, records)`` in submission order; never waits."""

    def wait(self) -> None:
        """Block until everything submitted has completed."""


class HostBackend:
    """Float64 Grams in host memory (``core.GramAccumulator``); a sample completes at submit.

    The usual sample does not come through :meth:`submit` at all: with nothing in flight the
    queue hands it to the record sink's native finish, which computes and records in one call.
    ``submit`` serves a host layer's share of a sample that waits behind device work.
    """

    device = None

    def __init__(self, settings: MetricSettings) -> None:
        self._settings = settings
        self._done: list[tuple[int, np.ndarray]] = []

    def accumulator(self, side: str, dim: int) -> Any:
        return core.GramAccumulator(dim, side, center=self._settings.center)

    def submit(self, tag: int, accumulators: Sequence[Any], weights: Sequence[Any]) -> BaseException | None:
        s = self._settings
        records = core.metrics_of_accumulators(list(accumulators), eps=s.eps, energy_threshold=s.energy_threshold,
                                               center=s.center, metrics=s.mask, solver="auto", threads=s.threads)
        for accumulator in accumulators:
            accumulator.reset()
        error = None
        if weights:
            try:
                weight_records = host_weight_records(weights, s)
            except Exception as caught:  # the activation records stand; the weight ones stay NaN
                weight_records, error = np.full((len(weights), METRIC_WIDTH), np.nan), caught
            records = np.concatenate([records, weight_records])
        self._done.append((tag, records))
        return error

    def poll(self) -> list[tuple[int, np.ndarray]]:
        done, self._done = self._done, []
        return done

    def wait(self) -> None:
        pass


def weight_view(w: torch.Tensor) -> tuple[Any, tuple[int, int, int, int, int, int]]:
    """``(owner, view tuple)`` of a 2-D weight matrix for the host core (a device weight is copied:
    a sync). The one place a weight becomes native input: the record sink and the host backend
    both call it. A sharded weight (a DTensor: FSDP's ``fully_shard``) raises ValueError: its
    metrics need the whole matrix, which only a collective of every rank could assemble."""
    if hasattr(w, "full_tensor"):
        raise ValueError("the weight is sharded (a DTensor, e.g. under FSDP's fully_shard): weight metrics need "
                         "the whole matrix; track_weights is not supported for sharded weights (activation rows "
                         "are recorded as usual)")
    return describe(w, "weight")


def host_weight_records(weights: Sequence[torch.Tensor], settings: MetricSettings) -> np.ndarray:
    """Records (len(weights), 9) of 2-D weight matrices computed on the host."""
    owners_and_views = [weight_view(w) for w in weights]
    return core.metrics([view for _, view in owners_and_views], eps=settings.eps,
                        energy_threshold=settings.energy_threshold, center=settings.center,
                        metrics=settings.weight_mask, solver="auto", threads=settings.threads)


# ---- device backends: the part of the seam they share ----------------------------------------------


class DeviceAccumulator:
    """A layer's Gram on a device backend, with ``core.GramAccumulator``'s interface (add / reset /
    rows_seen). ``rows_seen`` is counted on the host, so nothing is read from the device to know it."""

    __slots__ = ("backend", "side", "dim", "gram", "rows_seen")

    def __init__(self, backend: DeviceBackend, side: str, dim: int) -> None:
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


class DeviceBackend:
    """Base of the device backends: the seam's ``accumulator`` and ``submit`` in terms of what a
    device does — ``new_gram``, ``update`` (Gram update queued on the current stream) and
    ``compute`` (records queued into the device's ring) — which subclasses provide, with
    ``poll``, ``wait`` and ``stage``."""

    device: torch.device

    def accumulator(self, side: str, dim: int) -> DeviceAccumulator:
        return DeviceAccumulator(self, side, dim)

    def submit(self, tag: int, accumulators: Sequence[Any], weights: Sequence[Any]) -> BaseException | None:
        self.compute(tag, [a.gram for a in accumulators], list(weights))
        for accumulator in accumulators:
            accumulator.reset()
        return None

    def new_gram(self, side: str, dim: int) -> Any:
        raise NotImplementedError

    def update(self, gram: Any, x: torch.Tensor, side: str, fresh: bool) -> None:
        raise NotImplementedError

    def compute(self, tag: int, grams: Sequence[Any], weights: Sequence[torch.Tensor]) -> None:
        raise NotImplementedError


class DeviceKind(Protocol):
    """Which activations go to a device, and the backends that serve them."""

    def takes(self, x: torch.Tensor, dim: int) -> bool:
        """Whether the 2-D matrix ``x``, measured through a ``dim`` × ``dim`` Gram, goes to a device."""

    def refusal(self, x: torch.Tensor, dim: int) -> str:
        """Why it does not (for the host-copy warning)."""

    def backend(self, device: torch.device, *, records_per_sample: int, slots: int,
                settings: MetricSettings) -> DeviceBackend: ...

    def stage(self, value: Any) -> Staged | None:
        """Stage a scalar for reading after its device work; None: read it now (not a device tensor)."""


def device_kind() -> DeviceKind:
    """The device backends of ``FastTracker(device_path="auto")``: the native CUDA ones (NEVER
    RUN on a GPU). Tests replace this function with an emulated kind on CPU tensors."""
    from ndt_fast.cuda.backend import NativeCudaKind

    return NativeCudaKind()


class DeviceRouter:
    """The device kind of a tracker and one backend per device, made on first use."""

    def __init__(self, kind: DeviceKind, *, settings: MetricSettings, records_per_sample: int,
                 slots: int = MAX_PENDING_SAMPLES) -> None:
        self.kind = kind
        self._settings = settings
        self._records_per_sample = records_per_sample
        self._slots = slots
        self.backends: dict[torch.device, DeviceBackend] = {}

    def takes(self, x: torch.Tensor, dim: int) -> bool:
        return self.kind.takes(x, dim)

    def stage(self, value: Any) -> Staged | None:
        return self.kind.stage(value)

    def backend(self, device: torch.device) -> DeviceBackend:
        backend = self.backends.get(device)
        if backend is None:
            backend = self.kind.backend(device, records_per_sample=self._records_per_sample, slots=self._slots,
                                        settings=self._settings)
            self.backends[device] = backend
        return backend
