"""Training-loop overhead of tracking: untracked, ndtracker and FastTracker in one group.

Each timed call runs ``STEPS`` full training steps (forward, loss, backward, Adam step, and for the
tracked variants ``tracker.log(step, loss)``) on data prepared in advance, so the ratio
``tracked median / untracked median`` is the overhead a user sees. Models:

* ``tds-mlp``: the TDS article's MLP 784-256-128-10, batch 64, Adam 1e-3, its three Linear layers
  tracked — at ``sampling_frequency`` 5 (the article) and 1 (every step);
* ``resnet18``: torchvision resnet18 (10 classes) on 8 × 3 × 64 × 64 images, the 8 residual blocks
  + fc (``ndt_fast.layers.auto_select_layers``), sampling 5;
* ``transformer``: ``nn.TransformerEncoder`` (4 layers, d=128, 4 heads, batch-first) on 16 × 32
  tokens with a linear head, the 4 blocks + head, sampling 5.

Both trackers get the same explicit layer list. (Left to itself, ndt's auto-selection picks every
Linear and Conv2d; on the transformer that includes ``self_attn.out_proj``, whose forward hook
never fires because ``nn.MultiheadAttention`` uses its weight directly — ndt records no row for it.)

ndtracker receives ``loss.item()`` as its documentation shows; FastTracker the loss tensor (it
reads it only on sampled steps). Default threads only: that is how a training run runs.

``ndt_fast_batch`` is FastTracker with ``spectra_batch=SPECTRA_BATCH`` (issue 14): the spectra of
that many consecutive samples solved in one native call (same numbers, records up to
SPECTRA_BATCH − 1 samples later). 4 because the in-loop A/B (benchmarks/profiling/
spectra_batch_loop.py) measured 2 → 4 paying and 4 → 8 not. Only Grams of at most 96 × 96 wait
(the TDS MLP's, resnet18's 8 × 8 sample-side ones; not the transformer's 128 × 128).

``ndt_fast_background`` is FastTracker with ``background_finish=True``: each sample's native
finish runs on a background thread while the next step trains (same numbers; records one
``log()`` later at most). It pays where a core is free for it — on this 2-core VM with
PyTorch's default two threads it competes with them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest
import torch
from ndt.core.tracker import HighFrequencyTracker
from torch import nn

from ndt_fast import FastTracker
from ndt_fast.layers import auto_select_layers

STEPS = 20  # a multiple of every sampling frequency used, so each call samples the same number of steps
SPECTRA_BATCH = 4
VARIANTS = {
    "untracked": ("untracked loop", "reference"),
    "ndtracker": ("ndt HighFrequencyTracker", "baseline"),
    "ndt_fast": ("ndt_fast FastTracker", "subject"),
}
# This file's groups also time FastTracker with options (not the importers' groups).
OPTION_VARIANTS = {"ndt_fast_batch": (f"ndt_fast FastTracker spectra_batch={SPECTRA_BATCH}", "variant"),
                   "ndt_fast_background": ("ndt_fast FastTracker background_finish=True", "variant")}
# FastTracker keywords of each FastTracker variant.
FAST_VARIANTS: dict[str, dict[str, Any]] = {"ndt_fast": {}, "ndt_fast_batch": {"spectra_batch": SPECTRA_BATCH},
                                            "ndt_fast_background": {"background_finish": True}}


def _tds_mlp() -> tuple[nn.Module, list[nn.Module] | None, torch.Tensor, torch.Tensor]:
    """The model, its tracked layers (None: auto-selected), inputs and labels for STEPS steps."""
    model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
    return model, [model[0], model[2], model[4]], torch.randn(STEPS, 64, 784), torch.randint(0, 10, (STEPS, 64))


def _resnet18() -> tuple[nn.Module, list[nn.Module] | None, torch.Tensor, torch.Tensor]:
    from torchvision.models import resnet18

    return resnet18(num_classes=10), None, torch.randn(STEPS, 8, 3, 64, 64), torch.randint(0, 10, (STEPS, 8))


class _SmallTransformer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(d_model=128, nhead=4, dim_feedforward=256, batch_first=True, dropout=0.0)
        self.encoder = nn.TransformerEncoder(layer, num_layers=4, enable_nested_tensor=False)
        self.head = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x).mean(dim=1))


def _transformer() -> tuple[nn.Module, list[nn.Module] | None, torch.Tensor, torch.Tensor]:
    return _SmallTransformer(), None, torch.randn(STEPS, 16, 32, 128), torch.randint(0, 10, (STEPS, 16))


MODELS: dict[str, Callable[[], tuple[nn.Module, list[nn.Module] | None, torch.Tensor, torch.Tensor]]] = {
    "tds-mlp": _tds_mlp,
    "resnet18": _resnet18,
    "transformer": _transformer,
}
# (model, sampling frequency, rounds): the cheap MLP gets many rounds, since a few percent is what
# is being read off it; resnet18 (≈ 4 s per call here) the default minimum.
CASES = [("tds-mlp", 5, 40), ("tds-mlp", 1, 40), ("resnet18", 5, 5), ("transformer", 5, 10)]


def _make_loop(model: nn.Module, tracker: Any, inputs: torch.Tensor, labels: torch.Tensor, item: bool, *,
               autocast: torch.dtype | None = None) -> Callable[[], None]:
    """``len(inputs)`` training steps per call. ``autocast``: run forward and loss under
    ``torch.autocast`` of the inputs' device with that dtype; on a CUDA device the call ends with
    ``torch.cuda.synchronize()``, so its time includes the GPU's work."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    state = {"step": 0}
    device = inputs.device
    mixed = (lambda: torch.autocast(device.type, dtype=autocast)) if autocast is not None else contextlib.nullcontext

    def run_steps() -> None:
        for i in range(len(inputs)):
            with mixed():
                logits = model(inputs[i])
                loss = nn.functional.cross_entropy(logits.flatten(0, -2), labels[i].flatten())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if tracker is not None:
                tracker.log(state["step"], loss.item() if item else loss)
            state["step"] += 1
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return run_steps


def run_variant(benchmark: Any, measure: Callable[..., Any], model: nn.Module, layers: list[nn.Module],
                inputs: torch.Tensor, labels: torch.Tensor, *, frequency: int, variant: str, group: str,
                check: Callable[[Any], None] | None = None, fast_options: dict[str, Any] | None = None,
                **loop_options: Any) -> None:
    """Times one variant (``VARIANTS``) of the training loop in ``group``; afterwards guards that a
    tracker recorded rows (a tracker that recorded nothing would time as free) and FastTracker
    caught no error. ``check(tracker)``, if given, runs on FastTracker before it is closed;
    ``fast_options`` are extra FastTracker keywords (e.g. ``device_path``)."""
    model.train()
    label, role = {**VARIANTS, **OPTION_VARIANTS}[variant]
    benchmark.group = group
    benchmark.extra_info.update(label=label, role=role, steps=len(inputs), sampling_frequency=frequency)
    tracker: Any = None
    if variant == "ndtracker":
        tracker = HighFrequencyTracker(model, layers=layers, sampling_frequency=frequency)
    elif variant in FAST_VARIANTS:
        tracker = FastTracker(model, layers=layers, sampling_frequency=frequency, **FAST_VARIANTS[variant],
                              **(fast_options or {}))
    try:
        measure(_make_loop(model, tracker, inputs, labels, item=variant == "ndtracker", **loop_options))
    finally:
        if tracker is not None:
            results = tracker.get_results()
            if check is not None and variant in FAST_VARIANTS:
                check(tracker)
            tracker.close()
    if tracker is not None:
        assert all(len(df) > 0 for df in results.values()), f"{variant} recorded nothing"
        if variant in FAST_VARIANTS:
            assert sum(tracker.errors.values()) == 0, tracker.errors


@pytest.mark.parametrize("variant", [*VARIANTS, *OPTION_VARIANTS])
@pytest.mark.parametrize(
    ("model_name", "frequency"),
    [pytest.param(m, f, id=f"{m}-freq{f}", marks=pytest.mark.benchmark(min_rounds=r)) for m, f, r in CASES],
)
def test_tracker_overhead(benchmark, measure, model_name, frequency, variant):
    torch.manual_seed(0)
    model, layers, inputs, labels = MODELS[model_name]()
    if layers is None:
        layers = auto_select_layers(model)
    run_variant(benchmark, measure, model, layers, inputs, labels, frequency=frequency, variant=variant,
                group=f"training overhead {model_name} sampling={frequency} ({STEPS} steps per call)")
