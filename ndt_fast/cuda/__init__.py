"""GPU path: dimensionality metrics of CUDA activations without synchronizing the host.

.. warning::
   UNVERIFIED. This module and the kernels behind it (``csrc/cuda``) were written and compiled in
   a session without a GPU; none of it has ever run on one. ``tests/test_cuda.py`` holds the
   checks a GPU session must run first (see ``docs/CUDA.md``). Do not rely on it until they pass.

Everything takes torch CUDA tensors and queues work on the tensor's device's *current* stream
(``torch.cuda.current_stream()``): Gram updates by cuBLAS (tensor cores for bf16/fp16), spectra by
the core's own batched Jacobi kernel (Grams up to 64 wide) or cuSOLVER, metrics by a device
kernel. Results stay on the device as float64 records of ``RECORD_COLUMNS`` (the CPU records'
layout); nothing here calls ``.item()``, ``.cpu()`` or reads a solver status on the host. Solver
failures and non-finite input show up in the records' ``flags`` column (``FLAG_*`` of
``ndt_fast.metrics``) with NaN metrics.

Public API:

* :func:`is_available` / :func:`availability` — whether this build and this process can run it.
* :func:`device_metrics` — metrics of several activation tensors at once (one batched call).
* :func:`reference_metrics` — the same records from a pure-torch float64 computation
  (``torch.matmul`` + ``torch.linalg.eigvalsh``), the GPU tests' reference; runs on any device.
* :func:`reference_gram_metrics` — the record of one Gram by the device kernels' rules in plain
  torch (metric subsets included); also the math of FastTracker's emulated device backend.

Modules: ``runtime`` (availability, contexts, plans, rings, the device Gram update), ``reference``
(the pure-torch references), ``backend`` (FastTracker's device backend, ``device_path="auto"``;
see ``docs/CUDA.md``).

Definitions are those of ``ndt_fast.metrics`` (ndt-compatible, ``eps`` included). Not supported
on the device: ``center=True`` (use the CPU path), float64 through cuBLAS (float64 inputs take the
slower own Gram kernel).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ndt_fast._schema import METRIC_COLUMNS as RECORD_COLUMNS
from ndt_fast._schema import METRIC_WIDTH, gram_side
from ndt_fast.cuda.reference import reference_gram_metrics, reference_metrics
from ndt_fast.cuda.runtime import (
    SOLVERS,
    CudaUnavailableError,
    _context,
    _device_matrix,
    _plan,
    _require,
    _stream,
    availability,
    gram_update,
    is_available,
    new_gram,
)
from ndt_fast.metrics import metric_mask

__all__ = [
    "CudaUnavailableError",
    "RECORD_COLUMNS",
    "SOLVERS",
    "availability",
    "device_eigenvalues",
    "device_gram",
    "device_metrics",
    "is_available",
    "reference_gram_metrics",
    "reference_metrics",
]


def _smaller_gram(t: Any, view: tuple[int, int, int, int, int, int], stream: int) -> Any:
    """The smaller Gram (``gram_side``) of the CUDA matrix ``t`` (described by ``view``), queued on ``stream``."""
    side, n = gram_side(*t.shape)
    gram = new_gram(t.device, n)
    gram_update(gram, view, side, beta=0.0, device=t.device, stream=stream)
    return gram


def device_metrics(
    xs: Sequence[Any],
    *,
    metrics: Iterable[str] | None = None,
    eps: float = 1e-10,
    energy_threshold: float = 0.9,
    solver: str = "auto",
) -> Any:
    """Metrics of each CUDA activation tensor, computed on its device without a host sync.

    ``xs``: torch CUDA tensors on one device, each (n, d) or (..., d) (flattened to rows × d),
    float32 / float16 / bfloat16 (float64 accepted, slower). Each Gram is the smaller side
    (XXᵀ when n < d), accumulated in float32; eigenvalues and metrics in float64.

    Returns a float64 CUDA tensor (len(xs), 9) of ``RECORD_COLUMNS``; the ``flags`` column holds
    FLAG_* bits as floats. It is ready when the current stream reaches it: read it with
    ``.cpu()`` (a sync) only when you need the numbers on the host.

    Raises CudaUnavailableError (a RuntimeError) when the CUDA path cannot run, ValueError /
    TypeError for bad input, before anything is queued.
    """
    _require()
    import torch

    xs = list(xs)
    if not xs:
        raise ValueError("device_metrics: no tensors")
    mask = metric_mask(metrics)
    owners = [_device_matrix(x, f"device_metrics[{i}]") for i, x in enumerate(xs)]
    device = owners[0][0].device
    for i, (t, _) in enumerate(owners):
        if t.device != device:
            raise ValueError(f"device_metrics: tensor {i} is on {t.device}, tensor 0 on {device}")
    ctx = _context(device.index)
    stream = _stream(device)
    grams = [_smaller_gram(t, view, stream) for t, view in owners]
    dims = [int(g.shape[0]) for g in grams]
    plan = _plan(ctx, tuple(dims), eps, energy_threshold, mask, solver)
    workspace = torch.empty(plan.workspace_bytes, dtype=torch.uint8, device=device)
    records = torch.empty((len(dims), METRIC_WIDTH), dtype=torch.float64, device=device)
    plan.run(ctx, [g.data_ptr() for g in grams], workspace=workspace.data_ptr(), records=records.data_ptr(),
             stream=stream)
    # grams / workspace return to torch's cache here; the allocator is stream-ordered, so their
    # memory is reused only by work queued after ours on this stream.
    return records


def device_eigenvalues(x: Any, *, solver: str = "auto") -> Any:
    """Eigenvalues (descending, float64 CUDA tensor of min(n, d)) of the smaller Gram of ``x``,
    and the solver's info (int32 CUDA tensor, 0 = converged). For tests and debugging."""
    _require()
    import torch

    t, view = _device_matrix(x, "device_eigenvalues")
    ctx = _context(t.device.index)
    stream = _stream(t.device)
    gram = _smaller_gram(t, view, stream)
    n = int(gram.shape[0])
    plan = _plan(ctx, (n,), 1e-10, 0.9, metric_mask(None), solver)
    workspace = torch.empty(plan.workspace_bytes, dtype=torch.uint8, device=t.device)
    lam = torch.empty(n, dtype=torch.float64, device=t.device)
    info = torch.empty(1, dtype=torch.int32, device=t.device)
    plan.eigenvalues(ctx, [gram.data_ptr()], workspace=workspace.data_ptr(), lambdas=[lam.data_ptr()],
                     infos=[info.data_ptr()], stream=stream)
    return lam.flip(0), info


def device_gram(x: Any, *, side: str = "feature", use_cublas: bool = True) -> Any:
    """The Gram XᵀX (side "feature") or XXᵀ ("sample") of ``x`` as a float32 CUDA tensor, full
    and symmetric (from the lower triangle the kernels define). For tests of both Gram paths."""
    _require()
    import torch

    t, view = _device_matrix(x, "device_gram")
    gram = new_gram(t.device, t.shape[1] if side == "feature" else t.shape[0])
    gram_update(gram, view, side, beta=0.0, device=t.device, use_cublas=use_cublas)
    # The buffer is column-major with its lower triangle defined: as a row-major tensor that is
    # the upper triangle.
    upper = torch.triu(gram)
    return upper + torch.triu(gram, diagonal=1).T
