"""ndt's analysis tools (``ndt.analysis``) for the moments a tracker flags: ``ActivationAnalyzer``
(scikit-learn: PCA, clustering, embeddings; spectra) and ``FeatureVisualizer`` (Captum:
Grad-CAM, saliency, integrated gradients). An optional extra: ``pip install "ndt-fast[analysis]"``;
``import ndt_fast`` never imports this package.
"""

from ndt_fast.analysis.activations import ActivationAnalyzer
from ndt_fast.analysis.features import FeatureVisualizer

__all__ = ["ActivationAnalyzer", "FeatureVisualizer"]
