"""Small torch models shared by the tracker test modules."""

from __future__ import annotations

import math
import subprocess
import sys
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ndt_fast import FastTracker


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


# ---- a small MLP run whose layers' records are compared across tracker options ------------------

class Poison(nn.Module):
    """Identity, except that its output holds a NaN while ``on`` (set by the loop)."""

    def __init__(self) -> None:
        super().__init__()
        self.on = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.on:
            x = x.clone()
            x[0, 0] = math.nan
        return x


def train(seed: int, steps: int, *, nan_at: int | None = None, stop: object = None, **options) -> FastTracker:
    """A small MLP (20-16-12-4, a Poison after the last layer) trained ``steps`` steps on data drawn
    from ``seed``, tracked with ``options``; the tracker is returned open."""
    torch.manual_seed(seed)
    net, poison = mlp(20, 16, 12, 4), Poison()
    model = nn.Sequential(net, poison)
    data = torch.randn(steps, 24, 20)
    tracker = FastTracker(model, layers=[net[0], net[2], poison], layer_names=["l0", "l1", "out"], **options)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for step in range(steps):
        poison.on = step == nan_at
        loss = model(data[step]).nan_to_num().pow(2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        tracker.log(step, loss, grad_norm=float(step))
    return tracker


def assert_same(batched: dict[str, pd.DataFrame], reference: dict[str, pd.DataFrame]) -> None:
    """Same layers, steps and columns; every value within 1e-12 relative (NaN where NaN)."""
    assert list(batched) == list(reference)
    for name, df in reference.items():
        got = batched[name]
        assert list(got.columns) == list(df.columns)
        assert got["step"].tolist() == df["step"].tolist(), name
        np.testing.assert_allclose(got.to_numpy(float), df.to_numpy(float), rtol=1e-12, atol=0, equal_nan=True,
                                   err_msg=name)


def fail_finish_at(tracker: FastTracker, monkeypatch, call: int) -> None:
    """Make the ``call``-th native finish of ``tracker`` (from now on) fail; every other call, and
    everything else of the finisher, is the real one. On the training thread a stand-in finisher
    raises RuntimeError("injected"); a finish handed to the background thread (which takes only
    the real finisher) is handed empty accumulators instead, so the native finish raises there
    (ValueError "... accumulator is empty ...")."""
    sink = tracker._sink
    real, calls = sink._finisher, [0]

    def failing_now() -> bool:
        calls[0] += 1
        return calls[0] == call

    class FailingFinisher:
        def finish(self, *args):
            if failing_now():
                raise RuntimeError("injected")
            return real.finish(*args)

        def __getattr__(self, name):
            return getattr(real, name)

    monkeypatch.setattr(sink, "_finisher", FailingFinisher())
    if sink._background is not None:
        submit = sink._background.submit

        def failing_submit(finisher, ring, args, refills, keep):
            if failing_now():
                step, loss, grad_norm, layers, accumulators, *rest = args
                empty = [sink._new_accumulator(a.side, a.dim) for a in accumulators]
                args, refills, keep = (step, loss, grad_norm, layers, empty, *rest), [], (keep, empty)
            return submit(real, ring, args, refills, keep)

        monkeypatch.setattr(sink._background, "submit", failing_submit)


def run_python(script: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``script`` in a fresh interpreter (``python -c``); asserts it exited 0 and returns its output."""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return done


def steps_of(path: Any, layers: tuple[str, ...] = ("Linear_0", "Linear_1")) -> list[list[int]]:
    """The steps each of ``layers`` has in the run file at ``path``."""
    from ndt_fast.storage import load

    loaded = load(path)
    return [loaded[name]["step"].tolist() for name in layers]


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
