"""ndt's analysis tools (``ndt.analysis``) for the moments a tracker flags: ``ActivationAnalyzer``
(scikit-learn: PCA, clustering, embeddings; spectra) and ``FeatureVisualizer`` (Captum:
Grad-CAM, saliency, integrated gradients). An optional extra: ``pip install "ndt-fast[analysis]"``;
``import ndt_fast`` never imports this package. Each class is imported when first asked for, so
``ActivationAnalyzer`` works with scikit-learn alone (without Captum).
"""

from typing import Any

_MODULES = {"ActivationAnalyzer": "ndt_fast.analysis.activations", "FeatureVisualizer": "ndt_fast.analysis.features"}


def __getattr__(name: str) -> Any:
    if name in _MODULES:
        import importlib

        return getattr(importlib.import_module(_MODULES[name]), name)
    raise AttributeError(f"module 'ndt_fast.analysis' has no attribute {name!r}")


__all__ = ["ActivationAnalyzer", "FeatureVisualizer"]
