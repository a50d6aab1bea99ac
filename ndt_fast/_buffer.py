"""Describe numpy arrays and torch tensors as the native core's view tuples, without copying.

A view tuple is ``(data_pointer, dtype_code, rows, cols, row_stride, col_stride)`` with strides in
elements (see ``csrc/python/bindings.cpp``). The caller must keep the returned owner alive while
the core reads the buffer.
"""

from __future__ import annotations

from typing import Any

import numpy as np

DTYPE_CODES = {"float32": 0, "float64": 1, "float16": 2, "bfloat16": 3}
# Keyed by dtype objects: on the tracker's hook path a dict hit costs ~0.1 µs where building the
# dtype's name costs several µs.
_NUMPY_CODES = {np.dtype(name): code for name, code in DTYPE_CODES.items() if name != "bfloat16"}
_TORCH_CODES: dict[Any, int] = {}

ViewTuple = tuple[int, int, int, int, int, int]


def _is_torch_tensor(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "data_ptr")


def _torch_code(dtype: Any) -> int | None:
    if not _TORCH_CODES:
        import torch

        _TORCH_CODES.update({getattr(torch, name): code for name, code in DTYPE_CODES.items()})
    return _TORCH_CODES.get(dtype)


def torch_dtype_readable(dtype: Any) -> bool:
    """Whether the core reads tensors of this torch dtype (the four floats) through a view."""
    return _torch_code(dtype) is not None


def torch_matrix_view(x: Any) -> ViewTuple | None:
    """View tuple of a 2-D CPU torch tensor, or None if its dtype is not one of the four floats.

    No other checks (the caller guarantees 2-D, CPU, non-empty): this is the tracker's hook path.
    """
    code = _torch_code(x.dtype)
    if code is None:
        return None
    rows, cols = x.shape
    row_stride, col_stride = x.stride()
    return (x.data_ptr(), code, rows, cols, row_stride, col_stride)


def _torch_view(x: Any, what: str) -> tuple[Any, ViewTuple]:
    x = x.detach()
    if x.device.type != "cpu":
        # The CPU core reads host memory; this copy (a device sync) is the only device support so far.
        x = x.to("cpu")
    if x.dim() != 2:
        raise ValueError(f"{what}: expected a 2-D matrix, got shape {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{what}: expected a non-empty matrix, got shape {tuple(x.shape)}")
    view = torch_matrix_view(x)
    if view is None:
        raise TypeError(f"{what}: unsupported dtype {x.dtype}; expected float32, float64, float16 or bfloat16")
    return x, view


def _numpy_view(x: Any, what: str) -> tuple[Any, ViewTuple]:
    a = np.asarray(x)
    code = _NUMPY_CODES.get(a.dtype)
    if code is None and not a.dtype.isnative:  # e.g. big-endian '>f4': converted below
        code = _NUMPY_CODES.get(a.dtype.newbyteorder("="))
    if code is None and a.dtype.kind == "V":  # e.g. ml_dtypes.bfloat16
        code = DTYPE_CODES.get(a.dtype.name)
    if code is None:
        raise TypeError(
            f"{what}: unsupported dtype {a.dtype}; expected float32, float64, float16 or bfloat16 "
            f"(convert with .astype(np.float32))"
        )
    if a.ndim != 2:
        raise ValueError(f"{what}: expected a 2-D matrix, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{what}: expected a non-empty matrix, got shape {a.shape}")
    item = a.dtype.itemsize
    if not a.dtype.isnative or any(s % item for s in a.strides):
        a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("="))
    rows, cols = a.shape
    return a, (a.__array_interface__["data"][0], code, rows, cols, a.strides[0] // item, a.strides[1] // item)


def describe(x: Any, what: str = "input") -> tuple[Any, ViewTuple]:
    """Return ``(owner, view)`` for a 2-D float matrix (torch tensor, numpy array or array-like).

    Raises ValueError for a shape that is not 2-D or is empty, TypeError for an unsupported dtype.
    Torch tensors on another device are copied to the CPU; everything else is read in place.
    """
    if _is_torch_tensor(x):
        return _torch_view(x, what)
    return _numpy_view(x, what)
