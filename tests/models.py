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


def sgd_steps(model: nn.Module, tracker, steps: range, grad_norm: bool = False) -> None:
    """Train ``model`` (12 inputs) on random batches of 8 with SGD (lr 0.05) on the mean squared
    output, calling ``tracker.log(step, loss)`` after each step of ``steps``
    (with ``grad_norm=True`` a grad_norm of 1 + step)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    for step in steps:
        loss = model(torch.randn(8, 12)).pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        tracker.log(step, loss, grad_norm=torch.tensor(1.0 + step) if grad_norm else None)


class Switch(nn.Module):
    """Projects its input onto the first `rank` coordinates; `rank` changes when told to."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.rank = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x.clone()
        out[:, self.rank:] = 0
        return out


# ---- a tiny causal language model and its data (Hugging Face tests and their subprocess children)

VOCAB, SEQ = 64, 16


class Tokens(torch.utils.data.Dataset):
    """Random token sequences; the labels are the inputs (causal LM)."""

    def __init__(self, n: int) -> None:
        self.ids = torch.randint(0, VOCAB, (n, SEQ), generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


def tiny_gpt2() -> nn.Module:
    """A 2-layer GPT-2 (d = 32) built from a config: nothing is downloaded."""
    import transformers

    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=VOCAB, n_positions=SEQ,
                                     bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(config)
