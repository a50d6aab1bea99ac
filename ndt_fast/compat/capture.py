"""ndt's ``ActivationCapture`` and ``DimensionalityMetrics``, for code written against ndt.

FastTracker does not use these (its hooks measure in place; with `keep_last_output` they keep at most
a reference to the last output until the next `log()`); they exist so that code which builds on
ndt's capture object or record type runs unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from ndt_fast.layers import default_layer_names, first_tensor

__all__ = ["ActivationCapture", "DimensionalityMetrics", "TrackerHooks"]


@dataclass
class DimensionalityMetrics:
    """ndt's record of one layer at one sampled step (its fields, in its order)."""

    step: int
    stable_rank: float
    participation_ratio: float
    cumulative_90: int
    nuclear_norm_ratio: float
    loss: float
    grad_norm: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict (one DataFrame row)."""
        return asdict(self)


class ActivationCapture:
    """Forward hooks that keep each named layer's latest output, detached.

    ``activations``: name → the last output tensor (detached, sharing storage; no copy).
    ``hooks``: the registered hook handles (empty after ``remove_hooks``).
    Unlike ndt, a module whose output is a tuple, list, dict or ``ModelOutput``
    (``nn.MultiheadAttention``, ``nn.LSTM``, Hugging Face blocks) gives its first tensor instead of
    raising inside the forward pass; an output without a tensor is not stored.
    """

    def __init__(self) -> None:
        self.activations: dict[str, torch.Tensor] = {}
        self.hooks: list[RemovableHandle] = []
        self._layer_names: dict[nn.Module, str] = {}

    def _create_hook(self, name: str) -> Callable[[nn.Module, Any, Any], None]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            tensor = first_tensor(output)
            if tensor is not None:
                self.activations[name] = tensor.detach()

        return hook

    def register_hooks(self, model: nn.Module, layers: Sequence[nn.Module],
                       layer_names: Sequence[str] | None = None) -> None:
        """Hook every module of ``layers`` (names default to ndt's ``f"{ClassName}_{i}"``).

        ValueError when ``layer_names`` and ``layers`` differ in length (nothing is hooked then).
        """
        layers = list(layers)
        if layer_names is not None and len(layer_names) != len(layers):
            raise ValueError(f"Number of layer names ({len(layer_names)}) must match "
                             f"number of layers ({len(layers)})")
        names = list(layer_names) if layer_names is not None else default_layer_names(layers)
        for layer, name in zip(layers, names):
            self.hooks.append(layer.register_forward_hook(self._create_hook(name)))
            self._layer_names[layer] = name

    def remove_hooks(self) -> None:
        """Remove every hook and drop the stored activations."""
        for handle in self.hooks:
            handle.remove()
        self.hooks.clear()
        self.activations.clear()
        self._layer_names.clear()

    def clear_activations(self) -> None:
        """Drop the stored activations; the hooks stay."""
        self.activations.clear()

    def get_activation(self, layer_name: str) -> torch.Tensor | None:
        """The last output of ``layer_name``, or None if none was captured."""
        return self.activations.get(layer_name)

    def get_all_activations(self) -> dict[str, torch.Tensor]:
        """A shallow copy of ``activations``."""
        return dict(self.activations)

    def __enter__(self) -> ActivationCapture:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove_hooks()

    def __del__(self) -> None:
        if hasattr(self, "hooks"):
            self.remove_hooks()


@dataclass(frozen=True)
class TrackerHooks:
    """What ``FastTracker.activation_capture`` returns: a snapshot with ndt's attribute names.

    ``hooks``: the tracker's live forward-hook handles (empty after ``close()``); ``activations``:
    layer name → the output kept for ``log(force=True)`` since the last ``log()``, detached.
    """

    hooks: list[RemovableHandle]
    activations: dict[str, torch.Tensor]

    def get_activation(self, layer_name: str) -> torch.Tensor | None:
        """The kept output of ``layer_name``, or None."""
        return self.activations.get(layer_name)

    def get_all_activations(self) -> dict[str, torch.Tensor]:
        """A shallow copy of ``activations``."""
        return dict(self.activations)
