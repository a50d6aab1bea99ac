"""FastTracker's arguments, checked once: a frozen configuration and the layers it tracks.

Every argument check of the tracker lives here, so the façade holds no validation and a new
option (``sinks=``, ``distributed=``, …) is one field and one check. Bad input raises at
construction, naming the argument: ValueError for a bad value, TypeError for a bad type.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from ndt_fast._schema import JUMP_RULES
from ndt_fast.layers import auto_select_layers, default_layer_names
from ndt_fast.metrics import metric_mask
from ndt_fast.sinks.base import check_sinks

DEVICE_PATHS = ("auto", "host")
DISTRIBUTED_MODES = ("global", "local")


def _is_int(value: Any, minimum: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value >= minimum


def _is_seconds(value: Any) -> bool:
    """A positive, finite number of seconds (not a bool)."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and 0 < value < math.inf


@dataclass(frozen=True)
class TrackerConfig:
    """What a FastTracker was asked to do (see ``FastTracker`` for each option's meaning)."""

    sampling_frequency: int
    window: int
    metric_mask: int  # activation metrics (ndt_fast.metrics.metric_mask bits)
    center: bool
    track_weights: bool
    weight_mask: int  # weight metrics: the activation set (track_weights=True) or the named ones
    select: Callable[[Any], Any] | None
    conv_rows: str
    skip_eval_forwards: bool
    eps: float
    energy_threshold: float
    output: str | os.PathLike[str] | None
    resume: bool
    capacity: int
    flush_interval: float
    enable_jump_detection: bool
    jump_window_size: int
    jump_z_threshold: float
    jump_rule: str
    threads: int
    max_rows: int | None
    device_path: str
    device: Any
    keep_last_output: bool = True  # unscheduled steps: hooks keep a reference for log(force=True)
    sinks: tuple[Any, ...] = ()
    on_sample: Callable[[Any], Any] | None = None
    on_jump: Callable[[str, Any], Any] | None = None
    distributed: str | None = None  # resolved: "global", "local", or None (one process)
    distributed_timeout: float = 300.0
    alerts: tuple[Any, ...] = ()  # ndt_fast.monitor.AlertRule objects (empty: no monitoring)
    on_alert: Callable[[Any], Any] | None = None
    spectra_batch: int = 1  # host samples whose spectra are solved in one native call
    background_finish: bool = False  # host samples finished on a background thread

    @classmethod
    def check(cls, *, sampling_frequency: Any, window: Any, metrics: Iterable[str] | None, center: Any,
              track_weights: Any, select: Any, conv_rows: Any, skip_eval_forwards: Any, eps: Any,
              energy_threshold: Any, output: Any, resume: Any, capacity: Any, flush_interval: Any,
              enable_jump_detection: Any, jump_window_size: Any, jump_z_threshold: Any, jump_rule: Any,
              threads: Any, max_rows: Any, device_path: Any, device: Any,
              keep_last_output: Any = True, sinks: Any = (), on_sample: Any = None,
              on_jump: Any = None, distributed: Any = None, distributed_timeout: Any = 300.0,
              alerts: Any = False, on_alert: Any = None, spectra_batch: Any = 1,
              background_finish: Any = False) -> TrackerConfig:
        """The configuration of these arguments, or ValueError/TypeError naming the bad one."""
        if not _is_int(sampling_frequency, 1):
            raise ValueError(f"sampling_frequency must be an integer >= 1, got {sampling_frequency!r}")
        if not _is_int(window, 1):
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
        if not _is_int(capacity, 1):
            raise ValueError(f"capacity must be an integer >= 1, got {capacity!r}")
        if not _is_seconds(flush_interval):
            raise ValueError(f"flush_interval must be a positive number of seconds, got {flush_interval!r}")
        if output is not None and not isinstance(output, (str, os.PathLike)):
            raise TypeError(f"output must be a file path (str or os.PathLike), got {type(output).__name__}")
        if resume and output is None:
            raise ValueError("resume=True needs output= (the run file to append to)")
        if max_rows is not None and not _is_int(max_rows, 1):
            raise ValueError(f"max_rows must be None or an integer >= 1, got {max_rows!r}")
        if not _is_int(threads, 0):
            raise ValueError(f"threads must be an integer >= 0, got {threads!r}")
        if jump_rule not in JUMP_RULES:
            raise ValueError(f"jump_rule must be one of {list(JUMP_RULES)}, got {jump_rule!r}")
        if device_path not in DEVICE_PATHS:
            raise ValueError(f"device_path must be one of {list(DEVICE_PATHS)}, got {device_path!r}")
        if not isinstance(keep_last_output, (bool, np.bool_)):
            raise TypeError(f"keep_last_output must be True or False, got {keep_last_output!r}")
        if isinstance(spectra_batch, (bool, np.bool_)) or not isinstance(spectra_batch, (int, np.integer)):
            raise TypeError(f"spectra_batch must be an integer >= 1, got {type(spectra_batch).__name__} "
                            f"{spectra_batch!r}")
        if spectra_batch < 1:
            raise ValueError(f"spectra_batch must be an integer >= 1, got {spectra_batch!r}")
        if not isinstance(background_finish, (bool, np.bool_)):
            raise TypeError(f"background_finish must be True or False, got {background_finish!r}")
        sinks = tuple(check_sinks(sinks, on_sample))  # (ndt_fast.sinks.base imports no logger package)
        if on_jump is not None and not callable(on_jump):
            raise TypeError(f"on_jump must be callable, got {type(on_jump).__name__}")
        mode = resolve_distributed(distributed)
        if not _is_seconds(distributed_timeout):
            raise ValueError(f"distributed_timeout must be a positive number of seconds, got {distributed_timeout!r}")
        if mode == "global" and center:
            raise ValueError("center=True is not supported with distributed='global' (each rank would centre by "
                             "its own column means); use center=False or distributed='local'")
        if mode == "global" and device_path == "auto":
            raise ValueError("device_path='auto' is not supported with distributed='global' yet (the device Grams "
                             "are not reduced across ranks); use device_path='host' or distributed='local'")
        mask = metric_mask(metrics)
        rules = _alert_rules(alerts, on_alert, mask)
        if isinstance(track_weights, np.bool_):
            track_weights = bool(track_weights)
        if not (isinstance(track_weights, (bool, str)) or track_weights is None
                or isinstance(track_weights, Iterable)):
            raise TypeError(f"track_weights must be True/False or metric names, got {track_weights!r}")
        tracked = track_weights is not False and track_weights is not None
        weight_mask = metric_mask(track_weights) if tracked and track_weights is not True else mask
        return cls(sampling_frequency=sampling_frequency, window=window, metric_mask=mask, center=bool(center),
                   track_weights=tracked, weight_mask=weight_mask, select=select, conv_rows=conv_rows,
                   skip_eval_forwards=bool(skip_eval_forwards), eps=float(eps),
                   energy_threshold=float(energy_threshold), output=output, resume=bool(resume), capacity=capacity,
                   flush_interval=flush_interval, enable_jump_detection=bool(enable_jump_detection),
                   jump_window_size=jump_window_size, jump_z_threshold=jump_z_threshold, jump_rule=jump_rule,
                   threads=threads, max_rows=max_rows, device_path=device_path, device=device,
                   keep_last_output=bool(keep_last_output), sinks=sinks, on_sample=on_sample, on_jump=on_jump,
                   distributed=mode, distributed_timeout=float(distributed_timeout), alerts=rules,
                   on_alert=on_alert, spectra_batch=int(spectra_batch), background_finish=bool(background_finish))


def resolve_distributed(distributed: Any) -> str | None:
    """The mode of ``distributed=``: None (auto) → ``"global"`` when ``torch.distributed`` is
    initialized with more than one process, else None (one process: nothing distributed).
    ValueError for anything but None, "global" or "local", and for "global"/"local" without an
    initialized process group (there is no rank to speak of)."""
    if distributed is not None and distributed not in DISTRIBUTED_MODES:
        raise ValueError(f"distributed must be None (auto), 'global' or 'local', got {distributed!r}")
    import torch.distributed as dist

    initialized = dist.is_available() and dist.is_initialized()
    if distributed is None:
        return "global" if initialized and dist.get_world_size() > 1 else None
    if not initialized:
        raise ValueError(f"distributed={distributed!r} needs an initialized torch.distributed process group "
                         "(torch.distributed.init_process_group) before the tracker is made")
    return distributed


def _alert_rules(alerts: Any, on_alert: Any, mask: int) -> tuple[Any, ...]:
    """``alerts=`` as a tuple of rules (True: ``default_rules()``; False/None: none), checked."""
    from ndt_fast.metrics import ALL_METRICS
    from ndt_fast.monitor.rules import AlertRule, default_rules

    if alerts is True or isinstance(alerts, np.bool_) and bool(alerts):
        rules: tuple[Any, ...] = tuple(default_rules())
    elif alerts is False or alerts is None or isinstance(alerts, np.bool_):
        rules = ()
    elif isinstance(alerts, AlertRule):
        rules = (alerts,)
    elif isinstance(alerts, (str, bytes)) or not isinstance(alerts, Iterable):
        raise TypeError(f"alerts must be True/False or a list of ndt_fast.monitor.AlertRule objects, got {alerts!r}")
    else:
        rules = tuple(alerts)
        for rule in rules:
            if not isinstance(rule, AlertRule):
                raise TypeError(f"alerts must hold ndt_fast.monitor.AlertRule objects, got {type(rule).__name__}")
    for rule in rules:
        if rule.metric not in ALL_METRICS or not mask & metric_mask([rule.metric]):
            raise ValueError(f"alerts: {type(rule).__name__} watches metric {rule.metric!r}, which this tracker "
                             "does not compute (add it to metrics=)")
    if on_alert is not None and not callable(on_alert):
        raise TypeError(f"on_alert must be callable, got {type(on_alert).__name__}")
    if on_alert is not None and not rules:
        raise ValueError("on_alert needs alerts=True (or a list of rules): without rules no alert is raised")
    return rules


def tracked_layers(model: Any, layers: Sequence[nn.Module] | None,
                   layer_names: Sequence[str] | None) -> tuple[list[nn.Module], list[str]]:
    """The modules to track (given, or auto-selected) and their unique names (given, or ndt's)."""
    if not isinstance(model, nn.Module):
        raise ValueError("model must be a torch.nn.Module")
    modules = list(layers) if layers is not None else auto_select_layers(model)
    if not modules:
        raise ValueError("No layers to track. Provide layers explicitly or use a supported architecture.")
    for layer in modules:
        if not isinstance(layer, nn.Module):
            raise TypeError(f"layers must be nn.Module instances, got {type(layer).__name__}")
    names = list(layer_names) if layer_names is not None else default_layer_names(modules)
    if len(names) != len(modules):
        raise ValueError(f"Number of layer names ({len(names)}) must match number of layers ({len(modules)})")
    if len(set(names)) != len(names):
        raise ValueError(f"layer names must be unique, got {names}")
    return modules, names
