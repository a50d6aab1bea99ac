"""Small torch models shared by the tracker test modules."""

from __future__ import annotations

import torch
from torch import nn


def mlp(*sizes: int) -> nn.Sequential:
    """Linear layers of the given widths with a ReLU between consecutive ones (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class Switch(nn.Module):
    """Projects its input onto the first `rank` coordinates; `rank` changes when told to."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.rank = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        out[:, self.rank:] = 0
        return out
