"""FastTracker: a drop-in for ndtracker's ``HighFrequencyTracker``, computed natively.

    from ndt_fast import FastTracker as HighFrequencyTracker   # the only change to the loop

    tracker = HighFrequencyTracker(model, sampling_frequency=5)
    for step, (x, y) in enumerate(loader):
        loss = train_step(model, x, y)
        tracker.log(step, loss)            # a float or a 0-d tensor; read only on sampled steps
    results = tracker.get_results()        # {layer name: DataFrame}
    tracker.close()

How it stays cheap: forward hooks are *armed* only for the forward passes of steps that will be
sampled (the tracker predicts the next step as the last logged step + 1). An unarmed hook returns
at once — no activation kept alive, no native call. An armed hook folds the activation into a
Gram matrix natively (the smaller side, or the feature side when ``window > 1``), so nothing is
kept past the forward pass; ``log()`` then computes the spectra and metrics of every layer in
one native call with the GIL released.

Where records go: each sample becomes one fixed-width record per layer in a bounded native ring
(``ndt_fast.storage``), drained to memory or, with ``output=``, by a writer thread into a
crash-safe, live-readable HDF5 run file. A native online detector watches every metric of every
layer and adds jump records as they are confirmed (``tracker.jumps``, ``get_jumps()``).

CUDA models: by default (``device_path="host"``) a CUDA activation is copied to the host in the
hook (a sync per layer and sample). ``device_path="auto"`` opts into the device path
(``ndt_fast._device_path``; its native CUDA backend has NEVER RUN, see ``docs/CUDA.md``): a layer
whose activations are CUDA tensors keeps its Gram on that device; hooks and ``log()`` only queue
work on the current stream, nothing is copied to the host or read from the device in the
training step (``loss``/``grad_norm`` given as CUDA tensors are copied asynchronously into pinned
memory), and the results are collected later: without waiting at each ``log()``, with waiting in
``get_results()``, ``get_jumps()``, ``detect_jumps()`` and ``close()``. ``tracker.jumps`` then
lags the device by a few samples.

Robustness: outputs that are tuples/lists/dicts, any rank, float16/bfloat16/autocast, channels_last,
a batch of 1 and varying batch sizes are handled (see ``ndt_fast.layers``). Forwards in eval mode
or under ``torch.no_grad()`` are ignored by default, so a validation pass between training steps
does not replace the sample. An exception inside a hook is caught, counted in ``tracker.errors``
and logged once per layer; the forward pass always completes. NaN/Inf activations give NaN metrics
with ``flags & FLAG_NON_FINITE``; an all-zero (dead) layer gives zeros with ``FLAG_ZERO``.
"""

from __future__ import annotations

import datetime
import logging
import math
import os
import platform
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ndt_fast import _device_path
from ndt_fast._buffer import describe, torch_matrix_view
from ndt_fast._device_path import DeviceAccumulator, DevicePath, MetricSettings
from ndt_fast._native import core
from ndt_fast.compat.capture import TrackerHooks
from ndt_fast.jumps import Jump, JumpDetector
from ndt_fast.layers import CONV_TYPES, activation_matrix, auto_select_layers, default_layer_names, first_tensor
from ndt_fast.metrics import metric_mask
from ndt_fast.storage.records import KIND_SAMPLE, SAMPLE_OFFSET, RecordLayout, jumps_frame, samples_frame
from ndt_fast.storage.stream import RecordStream

logger = logging.getLogger(__name__)

NDT_COLUMNS = ("step", "stable_rank", "participation_ratio", "cumulative_90", "nuclear_norm_ratio", "loss", "grad_norm")
EXTRA_COLUMNS = ("participation_ratio_eig", "effective_rank", "trace", "lambda_max", "flags", "rows")
WEIGHT_COLUMNS = tuple(
    f"weight_{m}"
    for m in ("stable_rank", "participation_ratio", "cumulative_90", "nuclear_norm_ratio",
              "participation_ratio_eig", "effective_rank")
)
_METRIC_NAMES = ("stable_rank", "participation_ratio", "cumulative_90", "nuclear_norm_ratio",
                 "participation_ratio_eig", "effective_rank")
# Where each table column sits in a sample record (ndt_fast.storage.records: two header fields
# first). The native record (core.RECORD_COLUMNS) lists ndt's four metrics, then the extras up to
# `flags`, in table order, so each part is one contiguous slice copy in `_record`.
_AT = {name: SAMPLE_OFFSET + i for i, name in enumerate(NDT_COLUMNS + EXTRA_COLUMNS + WEIGHT_COLUMNS)}
_RECORD_STEP, _RECORD_LOSS, _RECORD_GRAD, _RECORD_ROWS = _AT["step"], _AT["loss"], _AT["grad_norm"], _AT["rows"]
_NDT_METRICS_AT = slice(_AT["stable_rank"], _AT["nuclear_norm_ratio"] + 1)
_EXTRAS_AT = slice(_AT["participation_ratio_eig"], _AT["flags"] + 1)
_WEIGHTS_AT = slice(_AT[WEIGHT_COLUMNS[0]], _AT[WEIGHT_COLUMNS[-1]] + 1)
JUMP_RULES = ("ndt", "default")
# Flag of a row whose sample met a caught error (in a hook or the metric computation): metrics NaN.
# Above the native core's FLAG_* bits.
FLAG_TRACKER_ERROR = 1 << 16
_FLAGS_IN_RECORD = core.RECORD_COLUMNS.index("flags")  # the flags column of a core record (metrics_of_accumulators)
if core.RECORD_COLUMNS[:9] != _METRIC_NAMES[:4] + EXTRA_COLUMNS[:-1] or _METRIC_NAMES != core.RECORD_COLUMNS[:6]:
    raise ImportError(f"ndt_fast: native record columns {core.RECORD_COLUMNS} do not match the tracker's table")


def _scalar(value: Any) -> float:
    """A Python float from a float, int, numpy scalar or one-element tensor (None → NaN).

    Raises TypeError/ValueError for anything else (the caller records NaN and reports it once).
    """
    if value is None:
        return math.nan
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"expected a scalar, got a tensor of shape {tuple(value.shape)}")
        return float(value.item())  # (item() reads any one-element tensor, grad or not: no views needed)
    return float(value)


_ROW_SUBSETS_KEPT = 8  # max_rows: row subsets kept per layer (one per recent row count)
DEVICE_PATHS = ("auto", "host")


class _LayerSlot:
    """Everything the tracker keeps per tracked module."""

    __slots__ = ("name", "index", "module", "handle", "accumulator", "accumulator_key", "captured", "failed",
                 "errors", "spatial_rows", "resumed_from", "row_subset", "kept")

    def __init__(self, name: str, index: int, module: nn.Module, spatial_rows: bool) -> None:
        self.name = name
        self.index = index  # in the tracker's layer list and in its records
        self.module = module
        self.handle: Any = None
        self.accumulator: Any = None  # core.GramAccumulator or DeviceAccumulator, created on first capture
        # Its (side, dim, device: None on the host path), kept here: no native call to ask.
        self.accumulator_key: tuple[str, int, torch.device | None] | None = None
        self.captured = False
        self.failed = False  # a capture for the coming sample raised (the sample gets a flagged row)
        self.errors = 0
        self.spatial_rows = spatial_rows
        self.resumed_from = -1  # with resume=True: the last step already in the file (its rows are skipped)
        self.row_subset: dict[tuple[int, torch.device], torch.Tensor] = {}  # max_rows: (rows, device) → indices
        self.kept: Any = None  # keep_last_output: the output of the last unarmed forward since the last log()


class FastTracker:
    """Tracks the dimensionality of a model's layers during training (ndt-compatible surface).

    Args (ndt's, same defaults):
        model: the ``nn.Module`` being trained.
        layers: modules to track; ``None`` selects them automatically (``ndt_fast.layers``).
        layer_names: names for ``layers`` (default ndt's ``f"{ClassName}_{i}"``).
        sampling_frequency: sample when ``step % sampling_frequency == 0`` (or ``force=True``).
        enable_jump_detection: run the online jump detector on every metric of every layer
            (``tracker.jumps``, jump records in ``output``) and allow ``detect_jumps``.
        jump_window_size, jump_z_threshold: ndt's z-score rule — ``detect_jumps`` (offline,
            exactly ndt's) and the online detector's "ndt" rule.
        device: accepted for compatibility (``tracker.device``; default, as ndt: the device of
            the model's first parameter); metrics are computed where the data is (see
            ``device_path``).

    Keyword-only extras:
        window: accumulate the feature-side Gram over the ``window`` steps ending at each sampled
            step (exact: the Gram of all their rows stacked), 1 ≤ window ≤ sampling_frequency.
            1 (default) = ndt's behaviour, the last forward pass before ``log``.
        metrics: names of the metrics to compute (default all six; asking only for
            ``stable_rank``/``participation_ratio_eig`` skips the eigensolver).
        center: subtract column means first (ndt does not).
        track_weights: also record the metrics of each tracked layer's weight matrix
            (``weight.reshape(out, -1)``) in ``weight_*`` columns: True = the same metrics as
            ``metrics``; or the names of the ones to compute (the others are NaN) —
            ``("stable_rank",)`` skips the eigensolver (λmax by Lanczos): 4.2 instead of 6.6 ms
            for a 256 × 784 weight.
        select: ``output → tensor`` callable to pick the tracked tensor from a module's output.
        conv_rows: ``"flatten"`` (ndt: ``(batch, C·H·W)``) or ``"spatial"`` (``(batch·H·W, C)``).
        skip_eval_forwards: ignore forwards in eval mode or with grad disabled (default True).
        eps, energy_threshold: as in ``ndt_fast.compute_all_metrics``.
        output: path of an HDF5 run file written while training (``ndt_fast.storage.hdf5``):
            live-readable, crash-safe, read back with ``ndt_fast.load``. An existing file is
            refused unless ``resume=True``. None (default): records are kept in memory.
        resume: append to the run in ``output``; rows for steps already in the file are skipped.
        capacity: records the bounded native ring holds between writes (default 65536).
        flush_interval: with ``output``, the most seconds a record waits before it is on disk
            (default 1.0).
        jump_rule: which online rule feeds ``tracker.jumps``: ``"default"`` (the rule of
            ``ndt_fast.validity``, which keeps ≤ 1 false positive per 1000 samples on noise,
            drift, AR(1) and heavy tails) or ``"ndt"``. Both rules run; both are recorded.
        max_rows: measure at most this many rows of each activation matrix (after the reshape
            rules: batch·seq tokens, batch·positions, …): a fixed random subset per layer and
            row count, the same positions at every sample with that row count. An approximation
            when rows exceed it (the ``rows`` column says how many were used); its error on token
            activations is measured in ``benchmarks/row_subsampling_error.py``. None (default):
            every row, exact.
        device_path: where a layer whose activations are CUDA tensors is measured.
            ``"host"`` (default while the device path is unverified): every layer on the CPU
            path; a CUDA activation is copied to the host in the hook (one sync per layer per
            sample, reported once).
            ``"auto"`` (opt-in; NEVER RUN on a GPU so far — tested on the CPU against an
            emulated backend, see ``docs/CUDA.md``): on its device when
            ``ndt_fast.cuda.is_available()`` (and ``center=False``; a Gram wider than 64 also
            needs cuSOLVER): a float32 Gram (the smaller side when ``window == 1``, as on the
            host) updated on the current stream in the hook; ``log()`` queues the spectra,
            metrics and a copy of the records into a pinned host ring, never synchronizing;
            records are collected as they complete (at later ``log()`` calls, without waiting)
            and completely (waiting for the device) in ``get_results()``, ``get_jumps()``,
            ``detect_jumps()`` and ``close()``. At most 256 samples wait for the device
            (``_device_path.MAX_PENDING_SAMPLES``); a sample beyond that waits for it first (a
            sync; only if the host runs that far ahead). Precision: float32 Gram (bf16/fp16
            inputs through tensor cores), float64 spectra. Differences from the host path: the
            device always solves the spectrum (no Lanczos shortcut for stable rank alone), so
            ``lambda_max`` is filled even when no metric needs it; a weight the device cannot
            take (``track_weights``; on another device, or wider than 64 without cuSOLVER) is
            measured on the host, a sync per sample, reported once. Token activations
            ``(batch, seq, hidden)``: every token is a row, or with ``max_rows`` the same fixed
            random subset at every sample.
        keep_last_output: on steps that are not sampled, each tracked layer's hook keeps a
            reference to the output of its last training forward (no copy, no computation), and
            ``log()`` drops it; so ``log(step, loss, force=True)`` on any step measures that
            step's last forward, as ndt does, without ``arm()``. Default True: the hook's cost is
            one reference and a mode check per forward (benchmarks/test_force_overhead.py), and
            the memory held is one output per tracked layer, from its forward to that step's
            ``log()`` (autograd usually holds it that long anyway). False: hooks do nothing on
            unscheduled steps, and forcing such a step needs ``arm()`` before its forward pass.
            A forced output is measured as it is at ``log()`` time (after any in-place op that
            followed the module), as in ndt.
        threads: threads the tracker's native work (ours and BLAS's) may use; default 1: in a
            training loop the framework's threads hold the cores, and helper threads that fight
            them slow both (measured on 2 cores: weight tracking cost 3× more with BLAS threads).
            0 = automatic (threads for problems above ~10 ms of work).

    Raises ValueError/TypeError for invalid arguments; never raises from inside a forward pass.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Sequence[nn.Module] | None = None,
        layer_names: Sequence[str] | None = None,
        sampling_frequency: int = 1,
        enable_jump_detection: bool = True,
        jump_window_size: int = 50,
        jump_z_threshold: float = 3.0,
        device: torch.device | str | None = None,
        *,
        window: int = 1,
        metrics: Iterable[str] | None = None,
        center: bool = False,
        track_weights: bool | Iterable[str] = False,
        select: Callable[[Any], torch.Tensor] | None = None,
        conv_rows: str = "flatten",
        skip_eval_forwards: bool = True,
        eps: float = 1e-10,
        energy_threshold: float = 0.9,
        output: str | os.PathLike[str] | None = None,
        resume: bool = False,
        capacity: int = 65536,
        flush_interval: float = 1.0,
        jump_rule: str = "default",
        threads: int = 1,
        max_rows: int | None = None,
        device_path: str = "host",
        keep_last_output: bool = True,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError("model must be a torch.nn.Module")
        if isinstance(sampling_frequency, bool) or not isinstance(sampling_frequency, int) or sampling_frequency < 1:
            raise ValueError(f"sampling_frequency must be an integer >= 1, got {sampling_frequency!r}")
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be an integer >= 1, got {window!r}")
        if window > sampling_frequency:
            raise ValueError(f"window ({window}) must not exceed sampling_frequency ({sampling_frequency}): "
                             "the windows of consecutive samples would overlap")
        if conv_rows not in ("flatten", "spatial"):
            raise ValueError(f"conv_rows must be 'flatten' or 'spatial', got {conv_rows!r}")
        if select is not None and not callable(select):
            raise TypeError("select must be a callable output -> tensor")
        if not (0.0 < energy_threshold <= 1.0):
            raise ValueError(f"energy_threshold must be in (0, 1], got {energy_threshold}")
        if not (eps >= 0.0 and math.isfinite(eps)):
            raise ValueError(f"eps must be finite and >= 0, got {eps}")
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be an integer >= 1, got {capacity!r}")
        if not (isinstance(flush_interval, (int, float)) and 0 < flush_interval < math.inf):
            raise ValueError(f"flush_interval must be a positive number of seconds, got {flush_interval!r}")
        if output is not None and not isinstance(output, (str, os.PathLike)):
            raise TypeError(f"output must be a file path (str or os.PathLike), got {type(output).__name__}")
        if resume and output is None:
            raise ValueError("resume=True needs output= (the run file to append to)")
        if max_rows is not None and (isinstance(max_rows, bool) or not isinstance(max_rows, int) or max_rows < 1):
            raise ValueError(f"max_rows must be None or an integer >= 1, got {max_rows!r}")
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
            raise ValueError(f"threads must be an integer >= 0, got {threads!r}")
        if jump_rule not in JUMP_RULES:
            raise ValueError(f"jump_rule must be one of {list(JUMP_RULES)}, got {jump_rule!r}")
        if device_path not in DEVICE_PATHS:
            raise ValueError(f"device_path must be one of {list(DEVICE_PATHS)}, got {device_path!r}")

        self.model = model
        self.sampling_frequency = sampling_frequency
        # ndt's default: the model's device (CPU for a model without parameters)
        self.device = device if device is not None else next((p.device for p in model.parameters()),
                                                               torch.device("cpu"))
        self.keep_last_output = bool(keep_last_output)
        self.window = window
        self.center = bool(center)
        self._metric_mask = metric_mask(metrics)
        if isinstance(track_weights, np.bool_):
            track_weights = bool(track_weights)
        if not (isinstance(track_weights, (bool, str)) or track_weights is None
                or isinstance(track_weights, Iterable)):
            raise TypeError(f"track_weights must be True/False or metric names, got {track_weights!r}")
        self.track_weights = track_weights is not False and track_weights is not None
        # Weight metrics: the activation set (True) or the named ones (their own mask).
        self._weight_mask = (metric_mask(track_weights) if self.track_weights and track_weights is not True
                             else self._metric_mask)
        self.select = select
        self.skip_eval_forwards = bool(skip_eval_forwards)
        self.eps = float(eps)
        self.energy_threshold = float(energy_threshold)
        self.threads = threads
        self.max_rows = max_rows
        self.device_path = device_path

        layers = list(layers) if layers is not None else auto_select_layers(model)
        if not layers:
            raise ValueError("No layers to track. Provide layers explicitly or use a supported architecture.")
        for layer in layers:
            if not isinstance(layer, nn.Module):
                raise TypeError(f"layers must be nn.Module instances, got {type(layer).__name__}")
        names = list(layer_names) if layer_names is not None else default_layer_names(layers)
        if len(names) != len(layers):
            raise ValueError(f"Number of layer names ({len(names)}) must match number of layers ({len(layers)})")
        if len(set(names)) != len(names):
            raise ValueError(f"layer names must be unique, got {names}")
        self.layer_names = names

        self._slots = [
            _LayerSlot(name, i, layer, conv_rows == "spatial" and isinstance(layer, CONV_TYPES))
            for i, (name, layer) in enumerate(zip(names, layers))
        ]
        self._by_name = {slot.name: slot for slot in self._slots}
        self._layout = RecordLayout(
            layer_names=tuple(names),
            sample_columns=NDT_COLUMNS + EXTRA_COLUMNS + (WEIGHT_COLUMNS if self.track_weights else ()),
            metric_names=_METRIC_NAMES + (WEIGHT_COLUMNS if self.track_weights else ()),
            rule_names=JUMP_RULES,
        )

        self.enable_jump_detection = enable_jump_detection
        self.jump_detector = (
            JumpDetector(window_size=jump_window_size, z_threshold=jump_z_threshold) if enable_jump_detection else None
        )
        self.jump_rule = jump_rule
        self.jumps: list[Jump] = []  # online detections of `jump_rule`, appended as they are confirmed
        # One native bank per layer (its series: the metrics), fed only with that layer's samples.
        self._jump_metrics = self._layout.metric_names
        self._jump_series_at = np.array([_AT[m] for m in self._jump_metrics])  # their places in a record
        self._jump_banks = [
            core.JumpBank(len(self._jump_metrics), ndt_window=jump_window_size, ndt_z_threshold=jump_z_threshold)
            for _ in self._slots
        ] if enable_jump_detection else None
        self.step_counter = 0
        self._missed: dict[str, int] = {}
        self._bad_scalars: set[str] = set()
        self._next_step = 0
        self._armed = False
        self._arm(self._next_step)
        run_file = None
        if output is not None:
            from ndt_fast.storage.hdf5 import RunFile  # h5py only when a file is asked for

            run_file = RunFile(output, self._layout, self._metadata(model, sampling_frequency, jump_window_size,
                                                                      jump_z_threshold, capacity, flush_interval),
                               resume=resume)
            for slot in self._slots:
                slot.resumed_from = run_file.resumed_from.get(slot.name, -1)
            if resume and self._jump_banks is not None:
                self._replay_into_detectors(run_file)
        self._records = RecordStream(self._layout, capacity=capacity, output=run_file, flush_interval=flush_interval)
        self._device_path: DevicePath | None = None
        self._host_copy_warned: set[str] = set()
        if device_path == "auto" and not self.center:  # the device kernels do not centre
            self._device_path = DevicePath(
                _device_path.backend_kind(),
                settings=MetricSettings(self.eps, self.energy_threshold, self._metric_mask, self._weight_mask),
                records_per_sample=len(self._slots) * (2 if self.track_weights else 1),
                emit=self._emit_sample, read_scalar=self._read_scalar, report_error=self._report_error,
                error_flag=FLAG_TRACKER_ERROR)
        # Hooks last: nothing above may fail after the model has been touched.
        for slot in self._slots:
            slot.handle = slot.module.register_forward_hook(self._make_hook(slot))

    def _replay_into_detectors(self, run_file: Any) -> None:
        """On resume: feed the run's earlier samples to the online detectors (their detections
        are in the file already and are dropped), so detection continues as if never stopped."""
        samples, _ = run_file.committed_frames()
        columns = [self._layout.sample_columns.index(m) for m in self._jump_metrics]
        for bank, values in zip(self._jump_banks, samples):
            if len(values):
                bank.push_many(values[:, 0].astype(np.int64), np.ascontiguousarray(values[:, columns]))

    def _metadata(self, model: nn.Module, sampling_frequency: int, jump_window_size: int, jump_z_threshold: float,
                  capacity: int, flush_interval: float) -> dict[str, Any]:
        """What a run file records about the run (JSON-serialisable)."""
        import h5py

        import ndt_fast

        parameters = list(model.parameters())
        return {
            "start_time": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "model": {
                "class": type(model).__qualname__,
                "parameters": sum(p.numel() for p in parameters),
                "trainable_parameters": sum(p.numel() for p in parameters if p.requires_grad),
                "summary": repr(model)[:20000],
            },
            "tracker": {
                "layers": list(self.layer_names), "sampling_frequency": sampling_frequency, "window": self.window,
                "metrics": [m for m, bit in core.METRIC_BITS.items() if self._metric_mask & bit],
                "center": self.center, "track_weights": (
                    [m for m, bit in core.METRIC_BITS.items() if self._weight_mask & bit] if self.track_weights
                    else False),
                "skip_eval_forwards": self.skip_eval_forwards, "eps": self.eps, "energy_threshold": self.energy_threshold,
                "enable_jump_detection": self.enable_jump_detection, "jump_window_size": jump_window_size,
                "jump_z_threshold": jump_z_threshold, "jump_rule": self.jump_rule, "threads": self.threads,
                "max_rows": self.max_rows, "capacity": capacity, "device_path": self.device_path,
                "flush_interval": flush_interval,
            },
            "versions": {"ndt_fast": ndt_fast.__version__, "torch": torch.__version__, "numpy": np.__version__,
                         "pandas": pd.__version__, "h5py": h5py.__version__, "python": platform.python_version()},
            "host": {"platform": platform.platform(), "pid": os.getpid()},
        }

    # ---- hooks ----------------------------------------------------------------------------------

    def _make_hook(self, slot: _LayerSlot) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if self._armed:
                self._capture(slot, output)
            elif self.keep_last_output and (not self.skip_eval_forwards
                                            or (module.training and torch.is_grad_enabled())):
                slot.kept = output  # the whole cost of a hook on a step that is not sampled

        return hook

    def _capture(self, slot: _LayerSlot, output: Any, mode_checked: bool = False) -> None:
        try:
            if (not mode_checked and self.skip_eval_forwards
                    and (not slot.module.training or not torch.is_grad_enabled())):
                return
            if self.window == 1:
                # This forward replaces the sample; until it is in, there is none (a capture that
                # fails half-way must not leave an empty or stale Gram marked as captured).
                slot.captured = False
            if type(output) is torch.Tensor and output.dim() == 2 and self.select is None:
                tensor = x = output.detach()  # the common case (a Linear's output), without the general rules
            else:
                tensor = self.select(output) if self.select is not None else first_tensor(output)
                if not isinstance(tensor, torch.Tensor):
                    raise TypeError(f"the module output holds no tensor to track (got {type(output).__name__})")
                x = activation_matrix(tensor, slot.spatial_rows)  # detached, 2-D
            if self.max_rows is not None and x.shape[0] > self.max_rows:
                x = x.index_select(0, self._row_subset(slot, x.shape[0], x.device))
            rows, cols = x.shape
            if rows == 0 or cols == 0:
                raise ValueError(f"empty activation of shape {tuple(tensor.shape)}")
            dim = min(rows, cols) if self.window == 1 else cols  # the Gram's side (_accumulator_for)
            if self._device_path is not None and self._device_path.takes(x, dim):
                # Device path: the Gram update is queued on the current stream; nothing is copied.
                device_path = self._device_path
                self._accumulator_for(slot, rows, cols, x.device,
                                      lambda side, n: device_path.accumulator(x.device, side, n)).add(x)
                slot.captured = True
                return
            if x.device.type != "cpu":
                self._warn_host_copy(slot, x, dim)
                x = x.to("cpu")  # a sync with the device (see device_path)
            view = torch_matrix_view(x)
            if view is None:  # float8, integer, … outputs: measured in float32
                x = x.float()
                view = torch_matrix_view(x)
            if self.window == 1 and slot.accumulator_key == (("sample", rows, None) if rows < cols
                                                             else ("feature", cols, None)):
                accumulator = slot.accumulator  # the same Gram as last sample (the usual case)
                accumulator.reset()
            else:
                accumulator = self._accumulator_for(
                    slot, rows, cols, None, lambda side, n: core.GramAccumulator(n, side, center=self.center))
            accumulator.add(view, threads=self.threads)
            slot.captured = True
        except Exception as error:  # never break the user's forward pass
            slot.failed = True
            self._report_error(slot, error)

    def _accumulator_for(self, slot: _LayerSlot, rows: int, cols: int, device: torch.device | None,
                         make: Callable[[str, int], Any]) -> Any:
        """The slot's accumulator for a (rows, cols) activation on ``device`` (None: the host
        path), made anew by ``make(side, dim)`` when its key changes."""
        if self.window == 1:
            # One batch: the smaller Gram; each armed forward replaces the previous one (ndt
            # keeps the last forward's activation too).
            key = ("sample", rows, device) if rows < cols else ("feature", cols, device)
            if slot.accumulator_key != key:
                slot.accumulator = make(key[0], key[1])
                slot.accumulator_key = key
            else:
                slot.accumulator.reset()
        elif slot.accumulator_key != ("feature", cols, device):
            if slot.accumulator is not None and slot.accumulator.rows_seen:
                raise ValueError(f"feature count or device changed inside a window ({slot.accumulator_key[1]} "
                                 f"features on {slot.accumulator_key[2] or 'the host path'} -> {cols} on "
                                 f"{device or 'the host path'})")
            slot.accumulator = make("feature", cols)
            slot.accumulator_key = ("feature", cols, device)
        return slot.accumulator

    def _warn_host_copy(self, slot: _LayerSlot, x: torch.Tensor, dim: int, what: str = "activations") -> None:
        """Report once per kind (activations / weight) that a device tensor is copied to the host."""
        if x.device.type == "cpu" or what in self._host_copy_warned:
            return
        self._host_copy_warned.add(what)
        if self._device_path is None:
            why = 'device_path="host"' if self.device_path == "host" else "center=True is computed on the host only"
        elif what == "weight" and x.device != slot.accumulator.backend.device:
            why = f"the weight is on {x.device}, its layer's activations on {slot.accumulator.backend.device}"
        else:
            why = self._device_path.kind.refusal(x, dim)
        logger.warning("ndt_fast: layer %r: %s on %s are copied to the host (%s); each copy synchronizes "
                       "the host with the device (reported once)", slot.name, what, x.device, why)

    def _row_subset(self, slot: _LayerSlot, rows: int, device: torch.device) -> torch.Tensor:
        """The layer's fixed random ``max_rows`` of ``rows`` (ascending indices): drawn once per
        row count from a generator seeded with the layer's index, so every sample with that row
        count measures the same token positions, and a rerun the same ones again. The subsets of
        the last few row counts are kept (no redraw, no host-to-device copy per sample)."""
        chosen = slot.row_subset.get((rows, device))
        if chosen is None:
            generator = torch.Generator().manual_seed(slot.index)
            chosen = torch.randperm(rows, generator=generator)[: self.max_rows].sort().values
            if device.type == "cuda":  # pinned first: a non_blocking copy from pageable memory may sync
                chosen = chosen.pin_memory()
            chosen = chosen.to(device, non_blocking=True)
            if len(slot.row_subset) >= _ROW_SUBSETS_KEPT:  # varying batch/sequence lengths: bounded
                slot.row_subset.pop(next(iter(slot.row_subset)))
            slot.row_subset[(rows, device)] = chosen
        return chosen

    def _report_error(self, slot: _LayerSlot, error: Exception) -> None:
        slot.errors += 1
        if slot.errors == 1:
            logger.error("ndt_fast: tracking layer %r failed (%s: %s); training continues, further errors "
                         "for this layer are counted in tracker.errors", slot.name, type(error).__name__, error)

    # ---- arming: which forwards to capture --------------------------------------------------------

    def _is_due(self, step: int) -> bool:
        return step % self.sampling_frequency == 0

    def _in_window(self, step: int) -> bool:
        """Whether forwards of ``step`` belong to the window of some sampled step ≥ ``step``."""
        until_due = (-step) % self.sampling_frequency  # steps from `step` to the next due step
        return until_due < self.window

    def _arm(self, next_step: int) -> None:
        self._armed = self._in_window(next_step)

    # ---- the training-loop API ------------------------------------------------------------------

    def log(self, step: int, loss: Any, grad_norm: Any = None, force: bool = False) -> None:
        """Record the sample of ``step`` if it is due (``step % sampling_frequency == 0``) or forced.

        ``loss`` and ``grad_norm`` may be floats or 0-d tensors; they are read only on sampled
        steps (CUDA tensors of a tracker on the device path: copied asynchronously, never read
        with a sync). A layer with no captured forward since the last sample gets no row (as in ndt);
        such misses are counted in ``tracker.missed`` and logged once. ``force=True`` on a step
        that is not scheduled measures each layer's last training forward since the previous
        ``log()`` (``keep_last_output``; with it off, ``arm()`` before that step's forward pass).
        """
        step = int(step)
        due = self._is_due(step)
        if force and not due and self.keep_last_output:
            for slot in self._slots:
                if not (slot.captured or slot.failed) and slot.kept is not None:
                    self._capture(slot, slot.kept, mode_checked=True)  # the hook checked the mode
        if force or due:
            self._record(step, loss, grad_norm)  # (on the device path: submits, then polls)
        else:
            if not self._in_window(step):
                for slot in self._slots:  # captured for a step that turned out not to be sampled
                    if slot.captured or slot.failed:
                        self._discard(slot)
            if self._device_path is not None and self._device_path.pending:
                self._device_path.poll()  # completed device results only: never waits
        if self.keep_last_output:
            for slot in self._slots:  # held from the forward to this log() only
                slot.kept = None
        self._next_step = step + 1
        self._arm(self._next_step)

    def arm(self) -> None:
        """Capture the next forward pass(es) whatever the schedule, until the next ``log()``.

        Hooks capture only the forwards of steps that will be sampled; with
        ``keep_last_output=False`` a ``log(step, …, force=True)`` on an unscheduled step has
        nothing to compute from unless ``arm()`` was called before that step's forward pass.
        Armed forwards are measured as they run (a ``window`` > 1 accumulates them).
        """
        self._armed = True

    def _record(self, step: int, loss: Any, grad_norm: Any) -> None:
        self.step_counter = step
        ready, failed = [], []
        for slot in self._slots:  # one pass: this runs at every sample
            if slot.captured:
                ready.append(slot)
            elif slot.failed:
                failed.append(slot)
            else:
                self._missed[slot.name] = self._missed.get(slot.name, 0) + 1
                if self._missed[slot.name] == 1:
                    logger.warning("ndt_fast: no activation captured for layer %r at step %d: its forward ran "
                                   "in eval mode / no_grad, did not run since the last log(), or ran at an "
                                   "unscheduled step with keep_last_output=False (then call tracker.arm() "
                                   "before the forward pass of a step you will log with force=True)",
                                   slot.name, step)
        if not ready and not failed:
            return
        on_device = [] if self._device_path is None else [
            slot for slot in ready if isinstance(slot.accumulator, DeviceAccumulator)]
        if on_device:
            ready = [slot for slot in ready if not isinstance(slot.accumulator, DeviceAccumulator)]
        records = np.empty((0, len(core.RECORD_COLUMNS)))
        weight_records = np.empty((0, len(core.RECORD_COLUMNS))) if self.track_weights else None
        if ready:
            try:
                records = core.metrics_of_accumulators(
                    [slot.accumulator for slot in ready], eps=self.eps, energy_threshold=self.energy_threshold,
                    center=self.center, metrics=self._metric_mask, solver="auto", threads=self.threads)
            except Exception as error:  # a bug of ours must not end the user's run
                for slot in ready:
                    self._report_error(slot, error)
                failed, ready = ready + failed, []
        if ready and self.track_weights:
            try:
                weight_records = self._weight_records(ready)
            except Exception as error:  # the activation rows stand; their weight columns stay NaN
                for slot in ready:
                    self._report_error(slot, error)
                weight_records = np.full((len(ready), len(core.RECORD_COLUMNS)), np.nan)
        if failed:  # a caught error at this sample: a row that says so (NaN metrics, FLAG_TRACKER_ERROR)
            nan_rows = np.full((len(failed), len(core.RECORD_COLUMNS)), np.nan)
            nan_rows[:, _FLAGS_IN_RECORD] = FLAG_TRACKER_ERROR
            records = np.concatenate([records, nan_rows])
            if weight_records is not None:
                weight_records = np.concatenate([weight_records, np.full_like(nan_rows, np.nan)])
        written = ready + failed
        rows_seen = [slot.accumulator.rows_seen if slot.captured else 0 for slot in written + on_device]
        if self._device_path is not None and self._device_path.in_use:
            self._submit_to_device_path(step, written, on_device, records, weight_records, rows_seen, loss, grad_norm)
        else:
            loss_value, grad_value = self._read_scalar(loss, "loss"), self._read_scalar(grad_norm, "grad_norm")
            self._emit_sample(step, written, records, weight_records, rows_seen, loss_value, grad_value)
        for slot in written + on_device:
            self._discard(slot)

    def _submit_to_device_path(self, step: int, written: list[_LayerSlot], on_device: list[_LayerSlot],
                               records: np.ndarray, weight_records: np.ndarray | None, rows_seen: list[int],
                               loss: Any, grad_norm: Any) -> None:
        """Queue the sample: host rows (``written``) as computed, device layers' rows computed on
        their devices (NaN placeholders until the device path delivers them)."""
        slots = written + on_device
        positions = list(range(len(written), len(slots)))
        placeholder = np.full((len(on_device), len(core.RECORD_COLUMNS)), np.nan)
        records = np.concatenate([records, placeholder])
        try:
            weights: list[torch.Tensor | None] | None = None
            if weight_records is not None:
                weight_records = np.concatenate([weight_records, placeholder])
                weights = [None] * len(slots)
                for i in positions:
                    weights[i] = self._device_weight(slots[i], weight_records, i)
            self._device_path.submit(step, slots, records, weight_records, rows_seen, positions, weights,
                                     loss, grad_norm)
        except Exception as error:  # a bug of ours must not end the user's run (this sample's rows are lost)
            for slot in slots:
                self._report_error(slot, error)

    def _device_weight(self, slot: _LayerSlot, weight_records: np.ndarray, i: int) -> torch.Tensor | None:
        """The weight matrix a device layer's backend measures with its activations, or None: no
        weight, or one its device cannot take (on another device, or too wide without cuSOLVER),
        whose record ``weight_records[i]`` is then computed here on the host — a copy that
        synchronizes with the device, reported once."""
        w = self._weight_matrix(slot)
        if w is None:
            return None
        if w.device == slot.accumulator.backend.device and self._device_path.takes(w, min(w.shape)):
            return w
        self._warn_host_copy(slot, w, min(w.shape), what="weight")
        try:
            weight_records[i] = self._weight_records([slot])[0]
        except Exception as error:  # the activation row stands; its weight columns stay NaN
            self._report_error(slot, error)
        return None

    def _emit_sample(self, step: int, slots: list[_LayerSlot], records: np.ndarray,
                     weight_records: np.ndarray | None, rows_seen: list[int], loss_value: float,
                     grad_value: float) -> None:
        """Write one sample: ``records`` (len(slots), 9) float64 of ``core.RECORD_COLUMNS`` per slot
        (``weight_records`` likewise, or None), ``rows_seen`` per slot; feed the jump banks.
        The only place rows are written and the banks fed, on the host path or from the device path."""
        fresh = [i for i, slot in enumerate(slots) if step > slot.resumed_from]  # resume: no step twice
        if not fresh:
            return
        if len(fresh) < len(slots):
            records = records[fresh]
            weight_records = weight_records[fresh] if weight_records is not None else None
        # One record per layer, written in place (this runs at every sample: few numpy calls).
        rows = np.empty((len(fresh), self._layout.width))
        rows[:, 0] = KIND_SAMPLE
        rows[:, 1] = [slots[i].index for i in fresh]
        rows[:, _RECORD_STEP] = step
        rows[:, _RECORD_LOSS] = loss_value
        rows[:, _RECORD_GRAD] = grad_value
        rows[:, _RECORD_ROWS] = [rows_seen[i] for i in fresh]
        rows[:, _NDT_METRICS_AT] = records[:, :4]
        rows[:, _EXTRAS_AT] = records[:, 4:9]
        if weight_records is not None:
            rows[:, _WEIGHTS_AT] = weight_records[:, :6]
        self._records.append(rows)
        if self._jump_banks is not None:
            self._detect_online(step, rows)

    def _detect_online(self, step: int, rows: np.ndarray) -> None:
        """Feed the new samples (records ``rows``) to their layers' banks; record what they confirm."""
        found = []
        for row in rows:
            layer = int(row[1])
            events = self._jump_banks[layer].push(step, row[self._jump_series_at])
            if len(events):
                found.append((layer, events))
        if not found:
            return
        jump_records = []
        wanted = JUMP_RULES.index(self.jump_rule)
        for layer, events in found:
            for series, rule, _index, at_step, z, before, after in events:
                metric = self._jump_metrics[int(series)]
                jump_records.append((layer, at_step, series, rule, z, before, after))
                if int(rule) == wanted:
                    self.jumps.append(Jump(int(at_step), float(z), float(before), float(after),
                                           f"{self._slots[layer].name}_{metric}"))
        self._records.append(self._layout.jump_rows(np.asarray(jump_records, dtype=np.float64)))

    @staticmethod
    def _discard(slot: _LayerSlot) -> None:
        """Forget what the slot captured (its Gram too: with window > 1 the next add accumulates)."""
        slot.captured = False
        slot.failed = False
        if slot.accumulator is not None:
            slot.accumulator.reset()

    def _read_scalar(self, value: Any, name: str) -> float:
        try:
            return _scalar(value)
        except (TypeError, ValueError, RuntimeError) as error:
            if name not in self._bad_scalars:
                self._bad_scalars.add(name)
                logger.error("ndt_fast: %s=%r is not a scalar (%s); recorded as NaN, training continues",
                             name, value, error)
            return math.nan

    @staticmethod
    def _weight_matrix(slot: _LayerSlot) -> torch.Tensor | None:
        """The layer's weight as a 2-D (out, in·…) float matrix (detached), or None without one."""
        weight = getattr(slot.module, "weight", None)
        if not isinstance(weight, torch.Tensor) or weight.dim() < 2:
            return None
        w = weight.detach()
        w = w.reshape(w.shape[0], -1)
        if w.dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
            w = w.float()
        return w

    def _weight_records(self, slots: list[_LayerSlot]) -> np.ndarray:
        out = np.full((len(slots), len(core.RECORD_COLUMNS)), np.nan)
        owners, views, where = [], [], []
        for i, slot in enumerate(slots):
            w = self._weight_matrix(slot)
            if w is not None:
                owner, view = describe(w, f"{slot.name}.weight")
                owners.append(owner)
                views.append(view)
                where.append(i)
        if views:
            out[where] = core.metrics(views, eps=self.eps, energy_threshold=self.energy_threshold,
                                      center=self.center, metrics=self._weight_mask, solver="auto",
                                      threads=self.threads)
        return out

    # ---- results --------------------------------------------------------------------------------

    def get_results(self, layer_name: str | None = None) -> pd.DataFrame | dict[str, pd.DataFrame]:
        """One DataFrame per layer: ndt's columns ``step, stable_rank, participation_ratio,
        cumulative_90, nuclear_norm_ratio, loss, grad_norm`` first, then ``participation_ratio_eig,
        effective_rank, trace, lambda_max, flags, rows`` (and ``weight_*`` with track_weights).
        ``grad_norm`` is NaN where none was given. Everything recorded is returned: with
        ``output=``, what the file holds (earlier runs too, with ``resume=True``) plus what has not
        been written yet. Unknown ``layer_name`` → ValueError."""
        if layer_name is not None and layer_name not in self._by_name:
            raise ValueError(f"Unknown layer name: {layer_name}")
        self._drain_device_path()
        samples, _ = self._records.results()
        columns = self._layout.sample_columns
        if layer_name is not None:
            return samples_frame(columns, samples[self._by_name[layer_name].index])
        return {slot.name: samples_frame(columns, samples[slot.index]) for slot in self._slots}

    def detect_jumps(self, layer_name: str | None = None, metric: str = "stable_rank",
                     threshold_z: float | None = None) -> dict[str, list[Jump]]:
        """ndt's offline z-score jumps per layer; ``Jump.step`` is the training step.

        ``threshold_z`` overrides ``jump_z_threshold`` for this call (ndt's example 03 passes it;
        ndt's own tracker rejects it with a TypeError)."""
        if self.jump_detector is None:
            raise ValueError("Jump detection is disabled. Enable it during initialization.")
        detector = self.jump_detector if threshold_z is None else JumpDetector(
            self.jump_detector.window_size, threshold_z, self.jump_detector.min_samples)
        valid = _METRIC_NAMES + (WEIGHT_COLUMNS if self.track_weights else ())
        if metric not in valid:
            raise ValueError(f"metric must be one of {list(valid)}, got {metric}")
        if layer_name is not None and layer_name not in self._by_name:
            raise ValueError(f"Unknown layer name: {layer_name}")
        slots = [self._by_name[layer_name]] if layer_name is not None else self._slots
        self._drain_device_path()
        samples, _ = self._records.results()
        column, step_column = self._layout.sample_columns.index(metric), self._layout.sample_columns.index("step")
        out: dict[str, list[Jump]] = {}
        for slot in slots:
            values, steps = samples[slot.index][:, column], samples[slot.index][:, step_column].astype(np.int64)
            out[slot.name] = detector.detect_at_steps(values, steps, f"{slot.name}_{metric}")
        return out

    def get_jumps(self) -> pd.DataFrame:
        """Every online detection so far, both rules: ``layer, step, metric, rule, z_score,
        value_before, value_after`` (ndt rule: |z|; default rule: signed z), ordered by step.
        A detection of the default rule is confirmed 12 samples after its step."""
        self._drain_device_path()
        _, jumps = self._records.results()
        return jumps_frame(self._layout, jumps)

    def _drain_device_path(self) -> None:
        """Everything the devices still owe, waited for and recorded (a sync; outside the training step)."""
        if self._device_path is not None:
            self._device_path.drain()

    @property
    def output(self) -> str | None:
        """The run file being written (None: records are kept in memory)."""
        return self._records.path

    @property
    def write_error(self) -> BaseException | None:
        """The error that stopped writing ``output`` (records are then kept in memory), or None."""
        return self._records.write_error

    @property
    def errors(self) -> dict[str, int]:
        """Exceptions caught inside hooks, per layer name."""
        return {slot.name: slot.errors for slot in self._slots}

    @property
    def activation_capture(self) -> TrackerHooks:
        """ndt's ``tracker.activation_capture``, read-only: ``hooks`` (the live hook handles; empty
        after ``close()``) and ``activations`` (the outputs kept for ``force=True`` since the last
        ``log()``, detached, by layer name)."""
        return TrackerHooks(
            hooks=[slot.handle for slot in self._slots if slot.handle is not None],
            activations={slot.name: tensor.detach() for slot in self._slots
                         if (tensor := first_tensor(slot.kept)) is not None})

    @property
    def missed(self) -> dict[str, int]:
        """Sampled steps at which a layer had no captured forward (no row recorded)."""
        return dict(self._missed)

    # ---- lifetime ----------------------------------------------------------------------------------

    def close(self) -> None:
        """Remove every hook (the model is left exactly as it was), write what is left to
        ``output`` and close it. Results stay readable. Idempotent."""
        try:
            if getattr(self, "_device_path", None) is not None:
                self._device_path.close()  # waits for the devices: every queued sample is recorded
        finally:  # whatever happened there, no hook stays behind and the records are closed
            for slot in self._slots:
                if slot.handle is not None:
                    slot.handle.remove()
                    slot.handle = None
                slot.accumulator = None
                slot.accumulator_key = None
                slot.captured = False
                slot.kept = None
            self._armed = False
            if hasattr(self, "_records"):
                self._records.close()

    def __enter__(self) -> FastTracker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        # At interpreter exit, run files were already closed by the stream's atexit hook; what is
        # left (an in-memory tracker) has no one to hand results to, and draining it would need
        # imports that no longer work ("sys.meta_path is None").
        if hasattr(self, "_slots") and not sys.is_finalizing():
            self.close()
