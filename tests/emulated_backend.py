"""Test doubles of the device backend: a pure-torch stand-in for the native CUDA backend on any
device (the tests run it on CPU tensors), so the routing, the sample queue, staged scalars,
draining and error handling of FastTracker's device path run without a GPU.

Math: float64 Grams, then ``ndt_fast.cuda.reference_gram_metrics`` (the device kernels' rules).
Completion: a compute's records are delivered ``delay`` polls after it was queued (0: at the
first poll), so the not-yet-complete branches run; ``wait`` completes everything. Scalars
given as tensors are cloned at staging (the value at log() time, like the device copy) and
ready after ``scalar_delay`` readiness checks.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ndt_fast._schema import gram_side
from ndt_fast.cuda import reference_gram_metrics
from ndt_fast.tracker.backends import DeviceBackend, MetricSettings, Staged


class EmulatedKind:
    """A ``DeviceKind`` whose backends are :class:`EmulatedBackend` (it takes every activation)."""

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


class EmulatedBackend(DeviceBackend):
    """A device backend in plain torch on ``device``; records land in a host-side ring (a deque)
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
        if len(self._ring) >= self._slots:
            raise RuntimeError("the device record ring is full")
        if len(grams) + len(weights) > self._records_per_sample:
            raise ValueError("more records than a ring slot holds")
        s = self._settings
        rows = [reference_gram_metrics(g, eps=s.eps, energy_threshold=s.energy_threshold, metrics=s.mask)
                for g in grams]
        for w in weights:
            rows.append(reference_gram_metrics(_gram64(w, gram_side(*w.shape)[0]), eps=s.eps,
                                               energy_threshold=s.energy_threshold, metrics=s.weight_mask))
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
