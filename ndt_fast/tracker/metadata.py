"""What a run file records about its run (JSON-serialisable): model summary, tracker
configuration, library versions, start time, host."""

from __future__ import annotations

import datetime
import os
import platform
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ndt_fast._native import core
from ndt_fast.tracker.config import TrackerConfig


def _metric_names(mask: int) -> list[str]:
    return [m for m, bit in core.METRIC_BITS.items() if mask & bit]


def run_metadata(model: nn.Module, config: TrackerConfig, layer_names: Sequence[str],
                 distributed: dict[str, Any] | None = None) -> dict[str, Any]:
    """``distributed``: the ranks' part (mode, world size, this rank in "local" mode), or None."""
    import h5py

    import ndt_fast

    parameters = list(model.parameters())
    c = config
    return {
        "start_time": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "model": {
            "class": type(model).__qualname__,
            "parameters": sum(p.numel() for p in parameters),
            "trainable_parameters": sum(p.numel() for p in parameters if p.requires_grad),
            "summary": repr(model)[:20000],
        },
        "tracker": {
            "layers": list(layer_names), "sampling_frequency": c.sampling_frequency, "window": c.window,
            "metrics": _metric_names(c.metric_mask), "center": c.center,
            "track_weights": _metric_names(c.weight_mask) if c.track_weights else False,
            "skip_eval_forwards": c.skip_eval_forwards, "eps": c.eps, "energy_threshold": c.energy_threshold,
            "enable_jump_detection": c.enable_jump_detection, "jump_window_size": c.jump_window_size,
            "jump_z_threshold": c.jump_z_threshold, "jump_rule": c.jump_rule, "threads": c.threads,
            "max_rows": c.max_rows, "capacity": c.capacity, "device_path": c.device_path,
            "flush_interval": c.flush_interval, "distributed": distributed, "spectra_batch": c.spectra_batch,
        },
        "versions": {"ndt_fast": ndt_fast.__version__, "torch": torch.__version__, "numpy": np.__version__,
                     "pandas": pd.__version__, "h5py": h5py.__version__, "python": platform.python_version()},
        "host": {"platform": platform.platform(), "pid": os.getpid()},
    }
