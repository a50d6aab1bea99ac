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
* :class:`DeviceGramTracker` — per-layer feature-side Grams accumulated over steps, metrics on
  demand, records copied into a pinned host ring that a writer thread drains with :meth:`drain`.
* :func:`reference_metrics` — the same records from a pure-torch float64 computation
  (``torch.matmul`` + ``torch.linalg.eigvalsh``), the GPU tests' reference; runs on any device.
* :func:`reference_gram_metrics` — the record of one Gram by the device kernels' rules in plain
  torch (metric subsets included); also the math of FastTracker's emulated device backend.

FastTracker reaches this module through ``ndt_fast._device_path`` (see ``docs/CUDA.md``).

Definitions are those of ``ndt_fast.metrics`` (ndt-compatible, ``eps`` included). Not supported
on the device: ``center=True`` (use the CPU path), float64 through cuBLAS (float64 inputs take the
slower own Gram kernel).
"""

from __future__ import annotations

import importlib.util
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ndt_fast._native import core
from ndt_fast.metrics import FLAG_NON_FINITE, FLAG_ZERO, RECORD_COLUMNS, metric_mask

__all__ = [
    "CudaUnavailableError",
    "DeviceGramTracker",
    "RECORD_COLUMNS",
    "SOLVERS",
    "availability",
    "device_metrics",
    "is_available",
    "reference_gram_metrics",
    "reference_metrics",
]

#: Eigensolver choices: "auto" (own Jacobi up to 64 wide, cuSOLVER syevd above), "jacobi" (own
#: kernel only, ≤ 64 wide), "cusolver" (syevjBatched for equal widths ≤ 32, syevd otherwise).
SOLVERS: tuple[str, ...] = ("auto", "jacobi", "cusolver")
RECORD_WIDTH = len(RECORD_COLUMNS)
_DTYPE_CODES = {"float32": 0, "float64": 1, "float16": 2, "bfloat16": 3}

_native = getattr(core, "cuda", None)  # the _core.cuda submodule, absent in CPU-only builds
_lock = threading.Lock()
_libraries_loaded = False
_contexts: dict[int, Any] = {}
_plans: OrderedDict[tuple, Any] = OrderedDict()
_MAX_PLANS = 64


class CudaUnavailableError(RuntimeError):
    """The CUDA path cannot run here; the message says why (build, torch, driver or device)."""


# ---- availability ------------------------------------------------------------------------------


def _math_library_dirs() -> list[str]:
    """Folders of the pip CUDA libraries (nvidia/cu13/lib; CUDA 12: nvidia/{cublas,cusolver}/lib)."""
    spec = importlib.util.find_spec("nvidia")
    if spec is None or spec.submodule_search_locations is None:
        return []
    import os

    dirs = []
    for base in spec.submodule_search_locations:
        for sub in ("cu13/lib", "cublas/lib", "cusolver/lib"):
            path = os.path.join(base, sub)
            if os.path.isdir(path):
                dirs.append(path)
    return dirs


def _load_libraries() -> None:
    global _libraries_loaded
    if _native is None or _libraries_loaded:
        return
    with _lock:
        if not _libraries_loaded:
            import torch  # noqa: F401  (loads torch's cuBLAS/cuSOLVER first: dlopen then reuses them)

            _native.load_math_libraries(_math_library_dirs())
            _libraries_loaded = True


def availability() -> dict[str, Any]:
    """What the CUDA path can do in this process (never raises).

    Keys: ``compiled`` (the extension was built with CUDA), ``torch_cuda`` (torch is installed
    and ``torch.cuda.is_available()``), ``device_count``, ``cublas``, ``cusolver`` (libraries
    loaded), ``available`` (device_metrics can run), ``reason`` (why not, or what is degraded;
    empty when everything is there).
    """
    info: dict[str, Any] = {
        "compiled": _native is not None,
        "torch_cuda": False,
        "device_count": 0,
        "cublas": False,
        "cusolver": False,
        "available": False,
        "reason": "",
    }
    if _native is None:
        info["reason"] = (
            "ndt_fast was built without CUDA (no nvcc at build time, or NDT_ENABLE_CUDA=OFF); "
            "rebuild with nvcc on PATH and NDT_ENABLE_CUDA=ON"
        )
        return info
    try:
        import torch
    except ImportError:
        info["reason"] = "torch is not installed (the CUDA path takes torch CUDA tensors)"
        return info
    info["torch_cuda"] = bool(torch.cuda.is_available())
    if not info["torch_cuda"]:
        info["reason"] = "torch.cuda.is_available() is False (no GPU, no driver, or a CPU-only torch)"
        return info
    _load_libraries()
    native = _native.availability()
    info.update({k: native[k] for k in ("device_count", "cublas", "cusolver")})
    info["reason"] = native["reason"]
    info["available"] = native["device_count"] > 0
    return info


def is_available() -> bool:
    """True when :func:`device_metrics` can run here (CUDA build, torch with a GPU, a device)."""
    return bool(availability()["available"])


def _require() -> None:
    info = availability()
    if not info["available"]:
        raise CudaUnavailableError(f"ndt_fast CUDA path unavailable: {info['reason']}")


# ---- inputs ------------------------------------------------------------------------------------


def _device_matrix(x: Any, what: str) -> tuple[Any, tuple[int, int, int, int, int, int]]:
    """(tensor kept alive, view tuple) of a CUDA activation, flattened to (rows, last dim).

    3-D token activations (batch, seq, hidden) become (batch·seq, hidden): every token is a row.
    """
    import torch

    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{what}: expected a torch CUDA tensor, got {type(x).__name__}")
    if x.device.type != "cuda":
        raise ValueError(f"{what}: expected a CUDA tensor, got device {x.device} (use ndt_fast.metrics on the CPU)")
    code = _DTYPE_CODES.get(str(x.dtype).removeprefix("torch."))
    if code is None:
        raise TypeError(f"{what}: unsupported dtype {x.dtype}; expected float32, float16, bfloat16 or float64")
    if x.dim() < 2:
        raise ValueError(f"{what}: expected at least 2 dimensions (rows, features), got shape {tuple(x.shape)}")
    x = x.detach()
    if x.dim() > 2:
        x = x.reshape(-1, x.shape[-1])  # a view when possible; otherwise a device copy (no sync)
    rows, cols = x.shape
    if rows == 0 or cols == 0:
        raise ValueError(f"{what}: expected a non-empty matrix, got shape {tuple(x.shape)}")
    row_stride, col_stride = x.stride()
    return x, (x.data_ptr(), code, rows, cols, row_stride, col_stride)


def _context(device_index: int) -> Any:
    ctx = _contexts.get(device_index)
    if ctx is None:
        with _lock:
            ctx = _contexts.get(device_index)
            if ctx is None:
                ctx = _native.Context(device_index)
                _contexts[device_index] = ctx
    return ctx


def _plan(ctx: Any, dims: tuple[int, ...], eps: float, energy_threshold: float, mask: int, solver: str) -> Any:
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    key = (ctx.device, dims, float(eps), float(energy_threshold), mask, solver)
    with _lock:
        plan = _plans.get(key)
        if plan is not None:
            _plans.move_to_end(key)
            return plan
    plan = _native.SpectraPlan(ctx, list(dims), eps=float(eps), energy_threshold=float(energy_threshold),
                               metrics=mask, solver=solver)
    with _lock:
        _plans[key] = plan
        while len(_plans) > _MAX_PLANS:
            _plans.popitem(last=False)
    return plan


def _stream(device: Any) -> int:
    import torch

    return int(torch.cuda.current_stream(device).cuda_stream)


# ---- one-shot metrics --------------------------------------------------------------------------


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
    grams, dims = [], []
    for t, view in owners:
        rows, cols = t.shape
        side = "sample" if rows < cols else "feature"
        n = min(rows, cols)
        gram = torch.empty((n, n), dtype=torch.float32, device=device)
        _native.gram_update(ctx, view, side=side, gram=gram.data_ptr(), beta=0.0, stream=stream)
        grams.append(gram)
        dims.append(n)
    plan = _plan(ctx, tuple(dims), eps, energy_threshold, mask, solver)
    workspace = torch.empty(plan.workspace_bytes, dtype=torch.uint8, device=device)
    records = torch.empty((len(dims), RECORD_WIDTH), dtype=torch.float64, device=device)
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
    rows, cols = t.shape
    n = min(rows, cols)
    ctx = _context(t.device.index)
    stream = _stream(t.device)
    gram = torch.empty((n, n), dtype=torch.float32, device=t.device)
    _native.gram_update(ctx, view, side="sample" if rows < cols else "feature", gram=gram.data_ptr(), beta=0.0,
                        stream=stream)
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
    n = t.shape[1] if side == "feature" else t.shape[0]
    gram = torch.empty((n, n), dtype=torch.float32, device=t.device)
    _native.gram_update(_context(t.device.index), view, side=side, gram=gram.data_ptr(), beta=0.0,
                        stream=_stream(t.device), use_cublas=use_cublas)
    # The buffer is column-major with its lower triangle defined: as a row-major tensor that is
    # the upper triangle.
    upper = torch.triu(gram)
    return upper + torch.triu(gram, diagonal=1).T


# ---- accumulating tracker with a pinned ring ---------------------------------------------------


class DeviceGramTracker:
    """Feature-side Grams G_l = Σ XᵀX of several layers on one CUDA device, metrics on demand.

    ``dims[l]`` is layer l's feature width d (the Gram is d × d, float32, ``d² · 4`` bytes).
    :meth:`add` accumulates a batch of activations (n, d) or (..., d); :meth:`compute` queues
    spectra and metrics of all layers in one batched call and, with ``step`` given, a copy of the
    records into a pinned host ring; :meth:`drain` (e.g. from a writer thread) returns the
    records whose copy has completed, without waiting for the others. Nothing synchronizes the
    host with the device; a full ring drops the records (counted in :attr:`dropped`).
    Not thread-safe except :meth:`drain`, which may run concurrently with the others.
    """

    def __init__(
        self,
        dims: Sequence[int],
        *,
        device: Any = None,
        metrics: Iterable[str] | None = None,
        eps: float = 1e-10,
        energy_threshold: float = 0.9,
        solver: str = "auto",
        ring_slots: int = 1024,
    ) -> None:
        _require()
        import torch

        self.dims = tuple(int(d) for d in dims)
        if not self.dims or min(self.dims) < 1:
            raise ValueError(f"dims must be a non-empty sequence of positive widths, got {dims!r}")
        self.device = torch.device("cuda", torch.cuda.current_device()) if device is None else torch.device(device)
        if self.device.type != "cuda":
            raise ValueError(f"device must be a CUDA device, got {self.device}")
        if self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self._ctx = _context(self.device.index)
        self._plan = _plan(self._ctx, self.dims, eps, energy_threshold, metric_mask(metrics), solver)
        self._grams = [torch.zeros((d, d), dtype=torch.float32, device=self.device) for d in self.dims]
        self._workspace = torch.empty(self._plan.workspace_bytes, dtype=torch.uint8, device=self.device)
        self._rows = [0] * len(self.dims)  # host-side row counts: known without reading the device
        self._ring = _record_ring(self.device, ring_slots, len(self.dims))

    def add(self, layer: int, x: Any) -> None:
        """G_layer += XᵀX on the current stream. x: CUDA tensor (n, d) or (..., d), d = dims[layer]."""
        t, view = _device_matrix(x, f"DeviceGramTracker.add(layer={layer})")
        if t.device != self.device:
            raise ValueError(f"layer {layer}: tensor on {t.device}, tracker on {self.device}")
        if t.shape[1] != self.dims[layer]:
            raise ValueError(f"layer {layer}: expected {self.dims[layer]} features, got {t.shape[1]}")
        _native.gram_update(self._ctx, view, side="feature", gram=self._grams[layer].data_ptr(), beta=1.0,
                            stream=_stream(self.device))
        self._rows[layer] += int(t.shape[0])

    def compute(self, step: int | None = None) -> Any:
        """Records (len(dims), 9) float64 CUDA tensor of every layer's accumulated Gram.

        With ``step``, also queues their copy into the pinned ring (tag = step). A layer that saw
        no rows → ValueError (as the CPU accumulators), decided on the host without a sync.
        """
        import torch

        empty = [i for i, r in enumerate(self._rows) if r == 0]
        if empty:
            raise ValueError(f"layers {empty} have no rows (add() was not called since the last reset)")
        stream = _stream(self.device)
        records = torch.empty((len(self.dims), RECORD_WIDTH), dtype=torch.float64, device=self.device)
        self._plan.run(self._ctx, [g.data_ptr() for g in self._grams], workspace=self._workspace.data_ptr(),
                       records=records.data_ptr(), stream=stream)
        if step is not None:
            self._ring.push(records.data_ptr(), len(self.dims), tag=int(step), stream=stream)
        return records

    def reset(self) -> None:
        """Zero every Gram (queued on the current stream)."""
        for g in self._grams:
            g.zero_()
        self._rows = [0] * len(self.dims)

    def drain(self, max_records: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Completed records from the ring, oldest first: (records (k, 9) float64, steps (k,) int64).

        Row i of a step's block is layer i. Never waits for the device; safe from another thread.
        """
        limit = self._ring.slots * len(self.dims) if max_records is None else int(max_records)
        return self._ring.pop(limit)

    @property
    def pending(self) -> int:
        """Ring slots pushed and not yet drained."""
        return int(self._ring.pending)

    @property
    def dropped(self) -> int:
        """compute(step) calls whose records the full ring rejected."""
        return int(self._ring.dropped)


def _record_ring(device: Any, slots: int, records_per_slot: int) -> Any:
    """A native PinnedRecordRing (slots × records_per_slot records) for streams of ``device``: its
    events must belong to that device (cudaEventRecord rejects a stream of another device), and
    the native constructor creates them on the current one."""
    import torch

    with torch.cuda.device(device):
        return _native.PinnedRecordRing(slots, records_per_slot, RECORD_WIDTH)


# ---- the pure-torch reference ------------------------------------------------------------------


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

    out = torch.empty((len(xs), RECORD_WIDTH), dtype=torch.float64)
    for k, x in enumerate(xs):
        a = x.detach()
        a = a.reshape(-1, a.shape[-1])
        a = a.to(torch.float64 if gram_dtype is None else gram_dtype)
        g = a.T @ a if a.shape[0] >= a.shape[1] else a @ a.T
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
    bits = [int(core.METRIC_BITS[name]) for name in RECORD_COLUMNS[:6]]
    out = torch.full((RECORD_WIDTH,), float("nan"), dtype=torch.float64)

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
