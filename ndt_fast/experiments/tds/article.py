"""The article's set-up: its constants, the MLP, the shuffled batches, Adam, the gradient norm and
the training data (MNIST as one normalized tensor), and the file names one seed's run writes.

Every experiment of :mod:`ndt_fast.experiments` trains with these (the architecture comparison
and the intervention windows change the model or the batches, nothing else)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from torch import nn

ARTICLE_STEPS = 8000  #: training steps; claims are measured on steps < ARTICLE_STEPS
ARTICLE_EVERY = 5  #: the article's sampling interval (steps)
LOW_EVERY = 50  #: Fig. 4's low-frequency sampling interval (steps)
BATCH_SIZE = 64
LEARNING_RATE = 1e-3
BETAS = (0.9, 0.999)
LAYER_NAMES = ("Layer1_784-256", "Layer2_256-128", "Layer3_128-10")  # ndtracker's script's names
LAYER_WIDTHS = (256, 128, 10)
DIM_LAYER = LAYER_NAMES[1]  #: the layer whose activation stable rank is "dimensionality"
WEIGHT_LAYER = DIM_LAYER  #: the layer of the weight-space claim: the same layer as "dimensionality"
#: Jump spaces: the series ndt's rule runs on (activation stable rank, weight stable rank).
SPACES = {"activation": "stable_rank", "weight": "weight_stable_rank"}
SMOOTH_SAMPLES = 50  #: rolling-mean width (samples) of the smoothed correlation shown beside ρ
NDT_METRICS = ("stable_rank", "participation_ratio", "cumulative_90", "nuclear_norm_ratio")

FIGURES = {
    "fig2": "fig2_activation_stable_rank.png",
    "fig3": "fig3_dimensionality_vs_loss.png",
    "fig4": "fig4_jumps_sampling.png",
    "fig5": "fig5_activation_vs_weight.png",
}
RUN_FILE, RESULTS_CSV, JUMPS_CSV, CLAIMS_MD, CLAIMS_JSON = (
    "run.h5", "results.csv", "jumps.csv", "claims.md", "claims.json")
#: Every file one seed's run writes into its folder.
SEED_FILES = (RUN_FILE, RESULTS_CSV, JUMPS_CSV, *FIGURES.values(), CLAIMS_MD, CLAIMS_JSON)

FLUSH_SECONDS = 5.0  #: the run file's flush interval (the most a record waits before it is on disk)
#: Weight-space metrics: the ones the claims read, both without an eigensolver (λmax by Lanczos) —
#: all six would make weight tracking the largest cost of the run (a 256 × 256 eigensolve per sample).
WEIGHT_METRICS = ("stable_rank", "participation_ratio_eig")




class TDSMLP(nn.Module):
    """The article's MLP: ``(batch, 784)`` float → Linear 256 → ReLU → Linear 128 → ReLU → Linear 10
    → logits ``(batch, 10)``. PyTorch's default initialization. The three Linear layers are the
    tracked modules (their outputs, before the ReLU, as in ndtracker's reproduction script)."""

    def __init__(self) -> None:
        super().__init__()
        self.layer1 = nn.Linear(784, 256)
        self.relu1 = nn.ReLU()
        self.layer2 = nn.Linear(256, 128)
        self.relu2 = nn.ReLU()
        self.layer3 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer3(self.relu2(self.layer2(self.relu1(self.layer1(x.flatten(1))))))

    def tracked_layers(self) -> list[nn.Module]:
        return [self.layer1, self.layer2, self.layer3]



class ShuffledBatches:
    """Index batches of ``range(n)`` like ``DataLoader(shuffle=True, drop_last=False)``: a fresh
    permutation per epoch from ``generator`` (CPU), batches of ``batch_size`` int64 indices on
    ``device`` (the last batch of an epoch holds ``n % batch_size`` when that is not zero)."""

    def __init__(self, n: int, batch_size: int, generator: torch.Generator, device: torch.device) -> None:
        if n < 1:
            raise ValueError("no training samples")
        self.n, self.batch_size, self.generator, self.device = n, batch_size, generator, device
        self._perm = torch.empty(0, dtype=torch.int64)
        self._pos = 0

    def __iter__(self) -> ShuffledBatches:
        return self

    def __next__(self) -> torch.Tensor:
        if self._pos >= len(self._perm):
            self._perm = torch.randperm(self.n, generator=self.generator).to(self.device)
            self._pos = 0
        batch = self._perm[self._pos : self._pos + self.batch_size]
        self._pos += self.batch_size
        return batch


def _adam(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """Adam(lr 1e-3, betas 0.9/0.999); torch's fused kernel when this build has it (the same
    update, one kernel for all parameters instead of a Python loop over them)."""
    params = list(params)
    try:
        return torch.optim.Adam(params, lr=LEARNING_RATE, betas=BETAS, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=LEARNING_RATE, betas=BETAS)


def _grad_norm(params: Sequence[nn.Parameter]) -> torch.Tensor:
    """L2 norm of all parameters' gradients together (0-d tensor) — what
    ``clip_grad_norm_(params, inf)`` returns in ndtracker's script, without rescaling anything."""
    norms = [torch.linalg.vector_norm(p.grad) for p in params if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms))



def load_training_data(data_root: Path | None, device: str, train: bool = True) -> tuple[torch.Tensor, torch.Tensor, str]:
    """MNIST's training split (or, ``train=False``, its test split) as ``(images, labels, what)``:
    ``(N, 784)`` float32 normalized and ``(N,)`` int64 on ``device``, and a one-line description
    of the data for the reports. Raises ``MnistError``/``OSError``/``ValueError`` when the files
    cannot be found, fetched or read (see :func:`ndt_fast.data.load_mnist`)."""
    from ndt_fast.data import load_mnist

    images, labels = load_mnist(data_root, train=train)
    n = len(labels)
    canonical = 60000 if train else 10000
    split = "train" if train else "test"
    what = (f"MNIST {split} split ({canonical} images, md5-verified)" if n == canonical else
            f"IDX files with {n} {'training' if train else 'test'} images (not the canonical MNIST, not md5-checked)")
    return images.to(torch.device(device)), labels.to(torch.device(device)), what
