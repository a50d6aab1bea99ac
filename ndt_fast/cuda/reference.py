"""Pure-torch references of the CUDA path: the GPU tests' float64 reference, and the device
kernels' metric rules on one Gram (also the math of the tests' emulated device backend). Run on
any device and synchronize freely: test references, not training-loop paths."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ndt_fast._native import core
from ndt_fast._schema import METRIC_COLUMNS, METRIC_WIDTH, gram_side
from ndt_fast.metrics import FLAG_NON_FINITE, FLAG_ZERO, metric_mask


def reference_metrics(
    xs: Sequence[Any], *, eps: float = 1e-10, energy_threshold: float = 0.9, gram_dtype: Any = None
) -> Any:
    """Records (len(xs), 9) float64 (CPU tensor) by plain torch: the smaller Gram by
    ``torch.matmul``, eigenvalues by ``torch.linalg.eigvalsh``, then the metrics as defined.

    The Gram is formed in float64 from the exact input values unless ``gram_dtype`` is given
    (e.g. torch.bfloat16 or torch.float32: the "plain low-precision torch computation" that the
    tests use as the error baseline). Runs on the tensors' own device (CPU or CUDA), syncs freely:
    this is a test reference, not a training-loop path.
    """
    import torch

    out = torch.empty((len(xs), METRIC_WIDTH), dtype=torch.float64)
    for k, x in enumerate(xs):
        a = x.detach()
        a = a.reshape(-1, a.shape[-1])
        a = a.to(torch.float64 if gram_dtype is None else gram_dtype)
        g = a.T @ a if gram_side(*a.shape)[0] == "feature" else a @ a.T
        out[k] = reference_gram_metrics(g.to(torch.float64), eps=eps, energy_threshold=energy_threshold)
    return out


def reference_gram_metrics(gram: Any, *, eps: float = 1e-10, energy_threshold: float = 0.9,
                           metrics: int | Iterable[str] | None = None) -> Any:
    """The record (9 float64, CPU tensor) of one symmetric Gram by the device kernels' rules.

    ``gram``: float64 torch tensor (n, n), full and symmetric, any device. ``metrics``: names or a
    ``metric_mask`` bit mask (None: all six). As on the device (``csrc/cuda/metrics_cuda.cu``):
    a non-finite Gram → NaN everywhere + FLAG_NON_FINITE; trace ≤ 0 or the zero matrix → 0 + FLAG_ZERO;
    otherwise the spectrum is always solved, so ``trace`` and ``lambda_max`` are always filled,
    and metrics not asked for are NaN. (The CPU core leaves λmax NaN where no asked-for metric
    needs it.) Used by :func:`reference_metrics` and by FastTracker's emulated device backend.
    """
    import torch

    want = metrics if isinstance(metrics, int) else metric_mask(metrics)
    bits = [int(core.METRIC_BITS[name]) for name in METRIC_COLUMNS[:6]]
    out = torch.full((METRIC_WIDTH,), float("nan"), dtype=torch.float64)

    def filled(value: float, flags: int) -> Any:
        for i, bit in enumerate(bits):
            if want & bit:
                out[i] = value
        out[6] = out[7] = value
        out[8] = flags
        return out

    g = gram.detach().to(torch.float64)
    if not bool(torch.isfinite(g).all()):
        return filled(float("nan"), FLAG_NON_FINITE)
    trace = float(g.diagonal().sum())
    if trace <= 0.0 or not bool((g != 0).any()):
        return filled(0.0, FLAG_ZERO)
    lam = torch.linalg.eigvalsh(g).flip(0).clamp_min(0.0).cpu()  # descending, PSD
    lmax = float(lam[0])
    if lmax == 0.0:
        return filled(0.0, FLAG_ZERO)
    sigma = lam.sqrt()
    sigma_sum = float(sigma.sum())
    lam_sum = float(lam.sum())
    ratios = torch.cumsum(lam, 0) / lam_sum
    hits = torch.nonzero(ratios >= energy_threshold)
    k90 = int(hits[0, 0]) + 1 if hits.numel() else lam.numel()
    p = sigma / sigma_sum
    p = p[p > 0]
    g_scaled = g / g.abs().max()
    values = (
        trace / (lmax + eps),
        1.0 / (float(((sigma / (sigma_sum + eps)) ** 2).sum()) + eps),
        float(k90),
        sigma_sum / (lmax**0.5 + eps),
        # tr(G)² / ‖G‖F² from the Gram (as the library does), scaled against overflow
        float(g_scaled.diagonal().sum()) ** 2 / float((g_scaled**2).sum()),
        float(torch.exp(-(p * p.log()).sum())),
    )
    for i, (bit, value) in enumerate(zip(bits, values)):
        if want & bit:
            out[i] = value
    out[6] = trace
    out[7] = lmax
    out[8] = 0.0
    return out
