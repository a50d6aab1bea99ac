"""The CUDA path's runtime: availability, library loading, per-device contexts, cached spectra
plans, pinned record rings, and the one place a device Gram is set up and updated.

UNVERIFIED: NEVER RUN on a GPU (see ``ndt_fast.cuda``).
"""

from __future__ import annotations

import importlib.util
import threading
from collections import OrderedDict
from typing import Any

from ndt_fast._buffer import DTYPE_CODES
from ndt_fast._native import core
from ndt_fast._schema import METRIC_WIDTH

#: Eigensolver choices: "auto" (own Jacobi up to 64 wide, cuSOLVER syevd above), "jacobi" (own
#: kernel only, ≤ 64 wide), "cusolver" (syevjBatched for equal widths ≤ 32, syevd otherwise).
SOLVERS: tuple[str, ...] = ("auto", "jacobi", "cusolver")

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
    code = DTYPE_CODES.get(str(x.dtype).removeprefix("torch."))
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


def new_gram(device: Any, dim: int) -> Any:
    """An uninitialised float32 ``dim × dim`` Gram on ``device`` (column-major, lower triangle
    defined once written: ``csrc/cuda``'s convention)."""
    import torch

    return torch.empty((dim, dim), dtype=torch.float32, device=device)


def gram_update(gram: Any, view: tuple[int, int, int, int, int, int], side: str, *, beta: float, device: Any,
                stream: int | None = None, use_cublas: bool = True) -> None:
    """``gram = beta · gram + (XᵀX if side == "feature" else XXᵀ)`` queued on ``stream`` (default:
    the device's current stream); ``view`` describes X on ``device``. The one device Gram update."""
    _native.gram_update(_context(device.index), view, side=side, gram=gram.data_ptr(), beta=beta,
                        stream=_stream(device) if stream is None else stream, use_cublas=use_cublas)


def record_ring(device: Any, slots: int, records_per_slot: int) -> Any:
    """A native PinnedRecordRing (slots × records_per_slot records) for streams of ``device``: its
    events must belong to that device (cudaEventRecord rejects a stream of another device), and
    the native constructor creates them on the current one."""
    import torch

    with torch.cuda.device(device):
        return _native.PinnedRecordRing(slots, records_per_slot, METRIC_WIDTH)
