"""Which modules to track, and how a module's output becomes a 2-D activation matrix.

Auto-selection (``layers=None``), in this order:

* **Repeated blocks** — Transformers (``nn.TransformerEncoder``/``Decoder``), GPT-style models
  (a ``ModuleList`` of blocks), ViTs (torchvision ``vit_b_16``: ``encoder.layers``) and ResNets
  (torchvision ``resnet18``: ``layer1``…``layer4`` of ``BasicBlock``): wherever a ``ModuleList`` or
  ``Sequential`` holds two or more non-leaf children of one class, each such child's output (the
  residual stream after the block) is tracked, plus the model's last ``nn.Linear`` (the head).
* **Otherwise** (MLPs, plain CNNs): every ``nn.Linear`` and ``nn.Conv1d/2d/3d``.
* More than ``max_layers`` (32) candidates: evenly spaced ones are kept, first and last included.

Output selection: a tensor is used as is; a tuple/list (``nn.MultiheadAttention``, ``nn.LSTM``)
gives its first tensor, searched depth-first; a dict or Hugging Face ``ModelOutput`` its first
tensor value; a user ``select=`` callable overrides all of this.

Reshape rules to (rows, features), matching ndtracker so the numbers agree:

* 2-D ``(batch, features)``: as is.
* 3-D ``(batch, seq, hidden)`` (or ``(seq, batch, hidden)``): all tokens, ``(batch·seq, hidden)``
  (ndt's rule; it applies to ``nn.Conv1d`` outputs ``(batch, C, L)`` too, giving ``(batch·C, L)``).
* 4-D and higher ``(batch, C, H, W, …)``: ``(batch, C·H·W·…)`` (ndt's rule), channels_last
  included (flattened in logical NCHW order, so the numbers do not depend on the memory layout).
* ``conv_rows="spatial"`` changes the rule for convolution modules only: one row per position,
  ``(batch·L, C)`` or ``(batch·H·W, C)`` — the channel dimensionality, usually what is meant.
* 1-D ``(batch,)``: one feature, ``(batch, 1)``; 0-D outputs cannot be tracked (error, reported
  once, training goes on).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
MAX_LAYERS = 32


def _repeated_blocks(model: nn.Module) -> list[nn.Module]:
    blocks: list[nn.Module] = []
    seen: set[int] = set()
    for container in model.modules():
        if not isinstance(container, (nn.ModuleList, nn.Sequential)):
            continue
        children = list(container.children())
        by_class: dict[type, list[nn.Module]] = {}
        for child in children:
            if next(child.children(), None) is not None:  # non-leaf only
                by_class.setdefault(type(child), []).append(child)
        for group in by_class.values():
            if len(group) >= 2:
                for child in group:
                    if id(child) not in seen and not any(id(m) in seen for m in child.modules()):
                        seen.add(id(child))
                        blocks.append(child)
    # Keep only outermost blocks (a block inside another selected block is dropped) and restore
    # the model's module order.
    order = {id(m): i for i, m in enumerate(model.modules())}
    blocks.sort(key=lambda m: order[id(m)])
    outer: list[nn.Module] = []
    for block in blocks:
        if not any(block is not o and any(block is m for m in o.modules()) for o in outer):
            outer.append(block)
    return outer


def _evenly_spaced(modules: list[nn.Module], limit: int) -> list[nn.Module]:
    if len(modules) <= limit:
        return modules
    step = (len(modules) - 1) / (limit - 1)
    return [modules[round(i * step)] for i in range(limit)]


def auto_select_layers(model: nn.Module, max_layers: int = MAX_LAYERS) -> list[nn.Module]:
    """The modules FastTracker tracks when ``layers=None`` (see the module docstring)."""
    blocks = _repeated_blocks(model)
    if blocks:
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        head = linears[-1] if linears else None
        if head is not None and not any(any(head is m for m in b.modules()) for b in blocks):
            return _evenly_spaced(blocks, max_layers - 1) + [head]
        return _evenly_spaced(blocks, max_layers)
    candidates = [m for m in model.modules() if isinstance(m, (nn.Linear, *CONV_TYPES))]
    return _evenly_spaced(candidates, max_layers)


def default_layer_names(layers: Sequence[nn.Module]) -> list[str]:
    """ndtracker's naming: ``f"{ClassName}_{index}"`` (a module sharded by FSDP2's ``fully_shard``
    keeps its own class name: ``Linear_0``, not ``FSDPLinear_0``)."""
    return [f"{_class_name(layer)}_{i}" for i, layer in enumerate(layers)]


def _class_name(module: nn.Module) -> str:
    cls = type(module)
    # fully_shard swaps the module's class for a subclass FSDP<Name> of (FSDPModule, <Name>); the
    # names must not depend on how the model is sharded (nor differ from an unsharded run).
    if cls.__name__.startswith("FSDP") and any(base.__name__ == "FSDPModule" for base in cls.__bases__):
        return next(base.__name__ for base in cls.__bases__ if base.__name__ != "FSDPModule")
    return cls.__name__


def first_tensor(output: Any, _depth: int = 0) -> torch.Tensor | None:
    """The first tensor in a module output (tensor, tuple/list, dict/ModelOutput), depth-first."""
    if isinstance(output, torch.Tensor):
        return output
    if _depth > 4:
        return None
    if isinstance(output, (tuple, list)):
        items: Any = output
    elif isinstance(output, dict):
        items = output.values()
    elif hasattr(output, "to_tuple"):  # transformers.ModelOutput without importing transformers
        items = output.to_tuple()
    else:
        return None
    for item in items:
        found = first_tensor(item, _depth + 1)
        if found is not None:
            return found
    return None


Selector = Callable[[Any], torch.Tensor]


def activation_matrix(output: torch.Tensor, spatial_rows: bool = False) -> torch.Tensor:
    """The 2-D ``(rows, features)`` view of an activation (a copy only when strides demand it).

    ``spatial_rows`` (for convolution outputs, ≥3-D): ``(batch·positions, C)`` instead of ndt's
    rules. Raises ValueError for 0-D outputs.
    """
    x = output.detach()
    if x.dim() == 2:
        return x
    if x.dim() == 0:
        raise ValueError("cannot track a 0-d (scalar) output")
    if x.dim() == 1:
        return x.reshape(-1, 1)
    if spatial_rows:
        # (batch, C, *spatial) → (batch·spatial, C)
        return x.movedim(1, -1).reshape(-1, x.shape[1])
    if x.dim() == 3:
        return x.reshape(-1, x.shape[-1])
    return x.reshape(x.shape[0], -1)
