"""What the Lightning and Hugging Face callbacks share (``TrackingCallback``: their common
arguments, which steps reach the tracker, the step's loss and gradient norm, making the
tracker), and the relay of finished samples to a framework's own loggers on the training thread.

Steps: a sample is labelled with the framework's global step *after* the optimizer step it
measures (Lightning's ``trainer.global_step``, Hugging Face's ``state.global_step`` at
``on_step_end``): the first optimizer step is step 1, and ``sampling_frequency=10`` samples steps
10, 20, … — the steps at which the frameworks log by default. With gradient accumulation the
tracker is armed for every forward pass of a sampled step; each replaces the previous one
(``window=1``), so the metrics are those of the step's **last micro-batch**; the loss is the
mean of all its micro-batches' losses. With ``window=k >= 2`` the feature-side Gram sums every
forward of the k steps ending at a sampled step, so every micro-batch of those steps is measured
exactly (tested with Lightning: ``window=2``, two micro-batches per step, the metrics of the four
micro-batches together). Measuring every micro-batch of the sampled step alone is not offered.

Unsampled steps: ``FastTracker.log`` needs to see only the steps that arm or close a sample —
the sampled step and the ``window`` steps before it (whose ``log()`` arms the hooks for the next
forward); ``TrackingCallback.log_needed`` says which. On the other steps the callbacks do one
integer check and nothing else (no ``log()``, no kept outputs: the trackers are made with
``keep_last_output=False``, since the callbacks never force a sample), so an idle forward hook
returns at its first test. Their trackers' record ring defaults to ``CALLBACK_RING_CAPACITY``
records instead of FastTracker's 65536: a callback samples at most once per optimizer step, the
ring is drained at least every ``flush_interval / 2`` seconds (or at each sample without a run
file) and spills rather than drops when full, and allocating (zeroing) 12 MB took 11-13 ms of
each fit's start. ``capacity=`` overrides it. The run file is flushed at FastTracker's default
interval (1 s: a crash loses at most the last second of samples); with the run file's format
version 2 a drain costs ~1 ms (it was 10-20 ms, which is why the callbacks flushed every 10 s
until then; the same A/B in a Lightning fit now shows no difference between 1 s and 10 s,
``benchmarks/NOTES.md``).

Where a core is free for it (``core_is_free``: a GPU model, or PyTorch's CPU threads fewer than
the process's cores) each sample is computed on a background thread (``background_finish=True``;
``background_finish=`` either way overrides the choice): the Grams and spectra of a sampled step
while training goes on. A sample's records, its loggers' values and ``on_jump`` then come at the
callback's next ``log()`` — with ``sampling_frequency=10`` and ``window=1`` the one that arms the
next sample, nine steps later — instead of at the sampled step's own.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ndt_fast.jumps import Jump
from ndt_fast.monitor.alert import Alert
from ndt_fast.sinks.base import DEFAULT_METRICS, Sample, Sink, alert_tag, scalar_items
from ndt_fast.tracker import FastTracker

logger = logging.getLogger(__name__)

CALLBACK_RING_CAPACITY = 8192  # records (see the module docstring); ``capacity=`` overrides it


class LoggerRelay(Sink):
    """A sink that keeps finished samples (and monitoring alerts) until the training thread hands
    them to a framework's loggers (``drain``): loggers such as Lightning's CSVLogger are not safe
    to call from another thread, and their own writers are cheap (TensorBoard queues, CSV appends).
    An alert becomes ``{"ndt/<layer>/alert/<rule>": step}`` at its step, as ``WandbSink`` logs it."""

    def __init__(self, metrics: Sequence[str] = DEFAULT_METRICS) -> None:
        self.metrics = tuple(metrics)
        self._ready: collections.deque[Sample | Alert] = collections.deque()
        self._lock = threading.Lock()

    def write(self, samples: Sequence[Sample]) -> None:
        with self._lock:
            self._ready.extend(samples)

    def write_alerts(self, alerts: Sequence[Alert]) -> None:
        with self._lock:
            self._ready.extend(alerts)

    def drain(self) -> list[tuple[int, dict[str, float]]]:
        """``[(step, {tag: value})]`` of every sample and alert written since the last drain, in
        the order written."""
        if not self._ready:  # the common case, without the lock
            return []
        with self._lock:
            items, self._ready = list(self._ready), collections.deque()
        return [(item.step, dict(scalar_items(item, self.metrics))) if isinstance(item, Sample)
                else (item.step, {alert_tag(item): float(item.step)}) for item in items]


class StepLoss:
    """The loss of the optimizer step being assembled: the sum of its micro-batches' detached
    losses divided by their count, kept as a tensor on its device (no host sync; the tracker reads
    it on the host only when it records the sample, or asynchronously on its device path)."""

    def __init__(self) -> None:
        self._total: torch.Tensor | None = None
        self._count = 0

    def add(self, loss: Any, already_divided: bool = False) -> None:
        """Add one micro-batch's loss (a tensor or float; None is ignored). ``already_divided``:
        the framework already divided it by the micro-batch count (Lightning does)."""
        if loss is None:
            return
        value = loss.detach() if isinstance(loss, torch.Tensor) else torch.tensor(float(loss))
        self._total = value if self._total is None else self._total + value
        self._count += 0 if already_divided else 1

    def take(self) -> torch.Tensor | float:
        """The step's loss (NaN when none was added); resets for the next step."""
        total, count = self._total, self._count
        self._total, self._count = None, 0
        if total is None:
            return math.nan
        return total / count if count > 1 else total


class TrackingCallback:
    """What ``DimensionalityMonitor`` (Lightning) and ``DimensionalityCallback`` (Hugging Face)
    share: their common arguments, which steps reach ``FastTracker.log``, the step's loss and
    gradient norm, and making the tracker. The framework classes add their hooks.

    Raises ValueError for a bad ``sampling_frequency`` or for tracker options the callback sets
    itself (``model``, ``resume``).
    """

    def __init__(self, owner: str, layers: Sequence[nn.Module | str] | None, sampling_frequency: Any,
                 layer_names: Sequence[str] | None, log_grad_norm: bool, sinks: Sequence[Sink],
                 on_sample: Callable[[Sample], Any] | None, on_jump: Callable[[str, Jump], Any] | None,
                 tracker_options: dict[str, Any]) -> None:
        if isinstance(sampling_frequency, bool) or not isinstance(sampling_frequency, int) or sampling_frequency < 1:
            raise ValueError(f"sampling_frequency must be an integer >= 1, got {sampling_frequency!r}")
        clash = [name for name in ("model", "resume") if name in tracker_options]
        if clash:
            raise ValueError(f"{owner} sets {clash} itself (the model it is given; resume from the checkpoint)")
        self.layers = layers
        self.layer_names = layer_names
        self.sampling_frequency = sampling_frequency
        self.log_grad_norm = log_grad_norm
        self.sinks = list(sinks)
        self.on_sample = on_sample
        self.on_jump = on_jump
        self.tracker_options = tracker_options
        self.tracker: FastTracker | None = None  # the last run's (closed after it: results stay readable)
        self._active = False
        # (a window that is not an int is refused by FastTracker at train begin)
        window = tracker_options.get("window", 1)
        self._window = window if isinstance(window, int) and not isinstance(window, bool) else 1
        self._loss = StepLoss()
        self._grad_norm: torch.Tensor | None = None
        self._first_step = True

    def _due(self, step: int) -> bool:
        return step % self.sampling_frequency == 0

    def log_needed(self, step: int) -> bool:
        """Whether ``tracker.log(step)`` must run: ``step`` is sampled, or the forwards of
        ``step + 1`` feed a sample (the tracker arms its hooks for them at this ``log()``)."""
        return step % self.sampling_frequency == 0 or (-step - 1) % self.sampling_frequency < self._window

    def _start(self, model: nn.Module, layers: Sequence[nn.Module] | None, output: str | None, resume: bool,
               sinks: Sequence[Sink]) -> None:
        """Attach a fresh tracker to ``model`` (FastTracker's errors for bad layers/options)."""
        options = {"keep_last_output": False, "capacity": CALLBACK_RING_CAPACITY,  # (see the module doc)
                   "background_finish": core_is_free(model), **self.tracker_options}
        self.tracker = FastTracker(model, layers, self.layer_names, self.sampling_frequency, output=output,
                                   resume=resume, sinks=[*sinks, *self.sinks], on_sample=self.on_sample,
                                   on_jump=self.on_jump, **options)
        self._loss = StepLoss()
        self._grad_norm = None
        # The parameters whose gradients make the sampled steps' norm, listed once per fit: walking
        # the module tree for them on each sampled step was half of the norm's cost (a small model
        # in Lightning: ~60 µs of ~150). Parameters a model gains during the fit are not in it.
        self._parameters = list(model.parameters())
        self._first_step = True
        self._active = True

    def _log_if_needed(self, step: int) -> bool:
        """``tracker.log`` of a completed optimizer step where ``log_needed``, and at the first
        step after the tracker was made (a new tracker is armed, and only a ``log()`` disarms it:
        without that one, every forward up to the first needed step would be measured for
        nothing — all of them with a large ``sampling_frequency``). Returns whether it logged."""
        if not (self._first_step or self.log_needed(step)):
            return False
        self._first_step = False
        self.tracker.log(step, self._loss.take(), self._grad_norm)
        self._grad_norm = None
        return True


def core_is_free(model: nn.Module) -> bool:
    """Whether a CPU core is likely free for the tracker's background thread (the callbacks'
    ``background_finish`` default): the model trains on a GPU (the host's cores mostly wait on
    it: expected, not measured — no GPU was available), or PyTorch's CPU threads leave a core of
    this process unused (measured). Where they hold every core a background thread would compete
    with them (``benchmarks/NOTES.md``, issue 15)."""
    first = next(model.parameters(), None)
    if first is not None and first.device.type != "cpu":
        return True
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # (not on Linux)
        cores = os.cpu_count() or 1
    return torch.get_num_threads() < cores


def grad_norm(parameters: Sequence[torch.Tensor]) -> torch.Tensor | None:
    """The total 2-norm of the ``parameters``' gradients, as a tensor on their device (no host
    sync); None without gradients."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return None
    first = grads[0]
    if all(g.device == first.device and g.dtype == first.dtype for g in grads):
        # One fused norm per tensor, then theirs: a third of get_total_norm's time on a small
        # model (its grouping by device and dtype is most of it).
        return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    return torch.nn.utils.get_total_norm(grads, norm_type=2.0)


def resolve_layers(model: nn.Module, layers: Sequence[nn.Module | str] | None) -> list[nn.Module] | None:
    """``layers`` with names (``"encoder.layers.0"``) looked up in ``model``; None stays None.
    Raises ValueError naming an unknown module."""
    if layers is None:
        return None
    resolved = []
    for layer in layers:
        if isinstance(layer, str):
            try:
                resolved.append(model.get_submodule(layer))
            except AttributeError as error:
                raise ValueError(f"layers: the model has no submodule {layer!r}") from error
        else:
            resolved.append(layer)
    return resolved


def run_file_for(output: str | bool | None, saved: str | None, directory: str) -> tuple[str | None, bool]:
    """The run file of a training run and whether to append to it: ``saved`` (the file a
    checkpoint names) if it still exists; else ``output`` (False: no file; None: a fresh
    ``ndt_fast.h5`` in ``directory``), new."""
    if output is False:
        return None, False
    if saved is not None and os.path.exists(saved):
        return saved, True
    if saved is not None:
        logger.warning("ndt_fast: the checkpoint's run file %s is gone; starting a new one", saved)
    if output is not None:
        return output, False
    return fresh_path(directory), False


def fresh_path(directory: str, stem: str = "ndt_fast") -> str:
    """``<directory>/<stem>.h5``, or ``<stem>-1.h5``, … — the first that does not exist."""
    os.makedirs(directory, exist_ok=True)
    path, n = os.path.join(directory, f"{stem}.h5"), 0
    while os.path.exists(path):
        n += 1
        path = os.path.join(directory, f"{stem}-{n}.h5")
    return path
