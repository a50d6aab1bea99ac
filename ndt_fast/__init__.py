"""ndt_fast: fast, exact tracking of neural-network representational dimensionality."""

from ndt_fast import validity
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
    symmetric_eigenvalues,
)

__version__ = "0.1.0"


# Names whose modules need torch, pandas, h5py or matplotlib: imported only when asked for, so
# the functional API works with numpy alone.
_LAZY = {
    "FastTracker": "ndt_fast.tracker",
    "FLAG_TRACKER_ERROR": "ndt_fast.tracker",
    "load": "ndt_fast.storage",
    "export_to_csv": "ndt_fast.storage",
    "export_to_json": "ndt_fast.storage",
    "export_to_hdf5": "ndt_fast.storage",
    "load_mnist": "ndt_fast.data",
    "plot_phases": "ndt_fast.plots",
    "plot_metrics_comparison": "ndt_fast.plots",
    "plot_jumps": "ndt_fast.plots",
    # ndt's other figure functions: plot_single_metric (matplotlib) and the Plotly ones.
    "plot_single_metric": "ndt_fast.plots",
    "create_interactive_plot": "ndt_fast.interactive",
    "create_multi_layer_plot": "ndt_fast.interactive",
    "create_dashboard": "ndt_fast.interactive",
    # ndt 2.0.0's other public names (the README's compatibility table), for drop-in use.
    "ActivationCapture": "ndt_fast.compat.capture",
    "DimensionalityMetrics": "ndt_fast.compat.capture",
    "ArchitectureHandler": "ndt_fast.architectures",
    "MLPHandler": "ndt_fast.architectures",
    "CNNHandler": "ndt_fast.architectures",
    "TransformerHandler": "ndt_fast.architectures",
    "ViTHandler": "ndt_fast.architectures",
    "detect_architecture": "ndt_fast.architectures",
    "get_handler": "ndt_fast.architectures",
    "validate_detector": "ndt_fast.compat.validity",
    "jump_detector_as_callable": "ndt_fast.compat.validity",
    "ValidityReport": "ndt_fast.compat.validity",
    "standard_battery": "ndt_fast.compat.validity",
    "load_config": "ndt_fast.compat.utils",
    "save_config": "ndt_fast.compat.utils",
    "setup_logger": "ndt_fast.compat.utils",
}
#: ndt's names for ndt_fast objects with another name: alias → (module, name).
_ALIASES = {"HighFrequencyTracker": ("ndt_fast.tracker", "FastTracker")}


def __getattr__(name: str):
    if name in _LAZY or name in _ALIASES:
        import importlib

        module, attribute = _ALIASES.get(name, (_LAZY.get(name), name))
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'ndt_fast' has no attribute {name!r}")


__all__ = [
    "ALL_METRICS",
    "ActivationCapture",
    "ArchitectureHandler",
    "CNNHandler",
    "DimensionalityMetrics",
    "HighFrequencyTracker",
    "MLPHandler",
    "TransformerHandler",
    "ValidityReport",
    "ViTHandler",
    "detect_architecture",
    "get_handler",
    "jump_detector_as_callable",
    "load_config",
    "save_config",
    "setup_logger",
    "standard_battery",
    "validate_detector",
    "FLAG_NON_FINITE",
    "FLAG_NOT_CONVERGED",
    "FLAG_TRACKER_ERROR",
    "FLAG_ZERO",
    "FastTracker",
    "Jump",
    "JumpDetector",
    "RECORD_COLUMNS",
    "compute_all_metrics",
    "create_dashboard",
    "create_interactive_plot",
    "create_multi_layer_plot",
    "export_to_csv",
    "export_to_hdf5",
    "export_to_json",
    "compute_metrics",
    "compute_metrics_batch",
    "cumulative_energy_90",
    "effective_rank",
    "gram_eigenvalues",
    "load",
    "load_mnist",
    "nuclear_norm_ratio",
    "participation_ratio",
    "participation_ratio_eig",
    "plot_jumps",
    "plot_metrics_comparison",
    "plot_phases",
    "plot_single_metric",
    "stable_rank",
    "symmetric_eigenvalues",
    "validity",
]
