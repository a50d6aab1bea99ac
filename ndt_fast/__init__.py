"""ndt_fast: fast, exact tracking of neural-network representational dimensionality."""

from ndt_fast.jumps import Jump, JumpDetector
from ndt_fast.metrics import (
    ALL_METRICS,
    FLAG_NON_FINITE,
    FLAG_NOT_CONVERGED,
    FLAG_ZERO,
    RECORD_COLUMNS,
    compute_all_metrics,
    compute_metrics,
    compute_metrics_batch,
    cumulative_energy_90,
    effective_rank,
    gram_eigenvalues,
    nuclear_norm_ratio,
    participation_ratio,
    participation_ratio_eig,
    stable_rank,
)

__version__ = "0.1.0"


def __getattr__(name: str):
    # FastTracker needs torch and pandas; import them only when the tracker is asked for, so the
    # functional API works with numpy alone.
    if name == "FastTracker":
        from ndt_fast.tracker import FastTracker

        return FastTracker
    raise AttributeError(f"module 'ndt_fast' has no attribute {name!r}")


__all__ = [
    "ALL_METRICS",
    "FLAG_NON_FINITE",
    "FLAG_NOT_CONVERGED",
    "FLAG_ZERO",
    "FastTracker",
    "Jump",
    "JumpDetector",
    "RECORD_COLUMNS",
    "compute_all_metrics",
    "compute_metrics",
    "compute_metrics_batch",
    "cumulative_energy_90",
    "effective_rank",
    "gram_eigenvalues",
    "nuclear_norm_ratio",
    "participation_ratio",
    "participation_ratio_eig",
    "stable_rank",
]
