"""The only module that imports the compiled extension.

At import it lends the core SciPy's BLAS/LAPACK (function pointers from
``scipy.linalg.cython_blas`` / ``cython_lapack``), so the wheel ships no BLAS of its own.
Set ``NDT_DISABLE_SCIPY_LINALG=1`` to run the core on its own kernels only (tests use this to
check both paths); without SciPy that happens by itself.
"""

from __future__ import annotations

import os

from ndt_fast import _core

core = _core


def _register_scipy_linalg() -> None:
    if os.environ.get("NDT_DISABLE_SCIPY_LINALG", "") not in ("", "0"):
        _core.register_linalg(None, None)
        return
    try:
        from scipy.linalg import cython_blas, cython_lapack
    except ImportError:  # SciPy absent: the core's own kernels do everything
        _core.register_linalg(None, None)
        return
    _core.register_linalg(cython_blas.__pyx_capi__, cython_lapack.__pyx_capi__)


_register_scipy_linalg()
