"""``ActivationAnalyzer``: what a layer's representation looks like at a moment of training.

ndt's ``ndt.analysis.ActivationAnalyzer`` (same methods, arguments and result keys), built on
scikit-learn (PCA, k-means, DBSCAN, t-SNE, silhouette) and numpy's LAPACK SVD; UMAP when
``umap-learn`` is installed. Typical use: at a step where ``tracker.jumps`` reports a jump,
capture the layer's activations before and after and call ``compare_activations``.

Every method takes ``activations`` as an array of shape (n_samples, n_features) (numpy, or
anything ``np.asarray`` accepts; use ``flatten_activation`` for a torch tensor of any rank).
Fixed seeds (``random_state=42``, as ndt) make k-means, t-SNE and UMAP repeatable.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.cluster import DBSCAN, KMeans
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from sklearn.metrics import silhouette_score

__all__ = ["ActivationAnalyzer"]

RANDOM_STATE = 42


def _components_for(cumulative: np.ndarray, fraction: float, n_components: int) -> int:
    """Fewest leading components whose cumulative explained variance reaches ``fraction``."""
    return min(int(np.searchsorted(cumulative, fraction)) + 1, n_components)


class ActivationAnalyzer:
    """PCA, clustering, embeddings and spectra of activation matrices (ndt's analyzer).

    ``results`` is a dict the caller may use to keep analyses; the methods return their results
    and do not write it (as in ndt).
    """

    def __init__(self) -> None:
        self.results: dict[str, Any] = {}

    def flatten_activation(self, activation: Any) -> np.ndarray:
        """``activation`` (torch tensor or array, shape (batch, …)) as a (batch, features) array."""
        if hasattr(activation, "detach"):  # a torch tensor, without importing torch here
            activation = activation.detach().cpu().numpy()
        activation = np.asarray(activation)
        return activation.reshape(activation.shape[0], -1)

    def pca_analysis(self, activations: np.ndarray, n_components: int | None = None,
                     return_transformed: bool = True) -> dict[str, Any]:
        """PCA (centred, as scikit-learn does): explained variance ratios and their cumulative
        sum, components, singular values, mean, the number of components for 90 % and 95 %
        (``n_components_90``, ``n_components_95``), the fitted ``pca_object``, and with
        ``return_transformed`` the projected data. ``n_components`` defaults to min(n, d)."""
        x = np.asarray(activations)
        n_components = min(x.shape) if n_components is None else n_components
        pca = PCA(n_components=n_components)
        transformed = pca.fit_transform(x)
        cumulative = np.cumsum(pca.explained_variance_ratio_)
        out: dict[str, Any] = {
            "explained_variance_ratio": pca.explained_variance_ratio_,
            "cumulative_variance": cumulative,
            "components": pca.components_,
            "singular_values": pca.singular_values_,
            "n_components_90": _components_for(cumulative, 0.90, n_components),
            "n_components_95": _components_for(cumulative, 0.95, n_components),
            "mean": pca.mean_,
            "pca_object": pca,
        }
        if return_transformed:
            out["transformed"] = transformed
        return out

    def cluster_analysis(self, activations: np.ndarray, method: str = "kmeans", n_clusters: int = 5,
                         **kwargs: Any) -> dict[str, Any]:
        """Cluster the rows: ``"kmeans"`` (``n_clusters``; centres and inertia) or ``"dbscan"``
        (``eps``, ``min_samples`` in kwargs; ``n_noise``). ``silhouette_score`` when there are at
        least two clusters (DBSCAN noise points left out). Other methods → ValueError."""
        x = np.asarray(activations)
        if method == "kmeans":
            model = KMeans(n_clusters=n_clusters, random_state=RANDOM_STATE, **kwargs)
            labels = model.fit_predict(x)
            out: dict[str, Any] = {"labels": labels, "n_clusters": n_clusters,
                                   "cluster_centers": model.cluster_centers_, "inertia": model.inertia_}
        elif method == "dbscan":
            labels = DBSCAN(eps=kwargs.get("eps", 0.5), min_samples=kwargs.get("min_samples", 5)).fit_predict(x)
            found = set(labels.tolist()) - {-1}
            out = {"labels": labels, "n_clusters": len(found), "n_noise": int(np.sum(labels == -1))}
        else:
            raise ValueError(f"Unknown clustering method: {method}")
        clustered = labels != -1
        if len(set(labels[clustered].tolist())) > 1 and clustered.sum() > 1:
            out["silhouette_score"] = silhouette_score(x[clustered], labels[clustered])
        return out

    def manifold_embedding(self, activations: np.ndarray, method: str = "tsne", n_components: int = 2,
                           **kwargs: Any) -> dict[str, Any]:
        """A 2-D/3-D embedding of the rows: ``"tsne"`` (perplexity defaults to min(30, n − 1)) or
        ``"umap"`` (needs umap-learn; n_neighbors defaults to min(15, n − 1)). Returns
        ``embedding`` (n, n_components), ``method`` and ``params``. Other methods → ValueError."""
        x = np.asarray(activations)
        if method == "tsne":
            perplexity = kwargs.pop("perplexity", min(30, x.shape[0] - 1))
            embedding = TSNE(n_components=n_components, perplexity=perplexity, random_state=RANDOM_STATE,
                             **kwargs).fit_transform(x)
            params = {"perplexity": perplexity, "n_components": n_components}
        elif method == "umap":
            try:
                import umap
            except ImportError as error:
                raise ImportError("UMAP not installed. Install with: pip install umap-learn") from error
            n_neighbors = kwargs.pop("n_neighbors", min(15, x.shape[0] - 1))
            embedding = umap.UMAP(n_components=n_components, n_neighbors=n_neighbors, random_state=RANDOM_STATE,
                                  **kwargs).fit_transform(x)
            params = {"n_neighbors": n_neighbors, "n_components": n_components}
        else:
            raise ValueError(f"Unknown embedding method: {method}")
        return {"embedding": embedding, "method": method, "params": params}

    def singular_value_analysis(self, activations: np.ndarray) -> dict[str, Any]:
        """The singular-value spectrum σ (descending, uncentred) and its summaries:
        ``normalized_sv`` σ/Σσ, ``stable_rank`` Σσ²/σ₁², ``participation_ratio`` 1/Σ(σ/Σσ)²,
        ``spectral_entropy`` −Σ p log p of p = σ/Σσ, ``condition_number`` σ₁/σ_min (inf when
        σ_min = 0). A zero matrix gives 0 for the ratios (σ/Σσ is then NaN, as in ndt)."""
        s = np.linalg.svd(np.asarray(activations), compute_uv=False)
        total = s.sum()
        with np.errstate(invalid="ignore", divide="ignore"):
            normalized = s / total
        nonzero = normalized[normalized > 0]
        return {
            "singular_values": s,
            "normalized_sv": normalized,
            "stable_rank": (s**2).sum() / s[0] ** 2 if s[0] > 0 else 0,
            "participation_ratio": 1.0 / (normalized**2).sum() if total > 0 else 0,
            "spectral_entropy": -np.sum(nonzero * np.log(nonzero)),
            "condition_number": s[0] / s[-1] if s[-1] > 0 else np.inf,
        }

    def compare_activations(self, activations_before: np.ndarray, activations_after: np.ndarray) -> dict[str, Any]:
        """Before vs after a moment of training (e.g. a jump): PCA and spectra of both
        (``pca_before``/``pca_after``, ``sv_before``/``sv_after``), ``dim_change`` (after − before
        of stable rank, participation ratio, n_components_90), and the overlap of the two
        leading principal subspaces (up to 10 components): ``principal_angles`` and
        ``subspace_overlap`` = mean cosine (1 = the same subspace). Both need the same features."""
        pca_before = self.pca_analysis(activations_before, return_transformed=False)
        pca_after = self.pca_analysis(activations_after, return_transformed=False)
        sv_before = self.singular_value_analysis(activations_before)
        sv_after = self.singular_value_analysis(activations_after)
        k = min(10, pca_before["components"].shape[0], pca_after["components"].shape[0])
        # cosines of the principal angles = singular values of V1ᵀV2 (orthonormal bases)
        cosines = np.linalg.svd(pca_before["components"][:k] @ pca_after["components"][:k].T, compute_uv=False)
        angles = np.arccos(np.clip(cosines, -1, 1))
        return {
            "pca_before": pca_before,
            "pca_after": pca_after,
            "sv_before": sv_before,
            "sv_after": sv_after,
            "dim_change": {
                "stable_rank": sv_after["stable_rank"] - sv_before["stable_rank"],
                "participation_ratio": sv_after["participation_ratio"] - sv_before["participation_ratio"],
                "n_components_90": pca_after["n_components_90"] - pca_before["n_components_90"],
            },
            "subspace_overlap": np.cos(angles).mean(),
            "principal_angles": angles,
        }

    def neuron_importance(self, activations: np.ndarray, method: str = "variance") -> dict[str, Any]:
        """Per-feature scores: ``"variance"``, ``"mean_abs"`` or ``"sparsity"`` (fraction non-zero);
        ``ranking`` (descending), ``dead_neurons`` (always zero), ``n_dead``, ``top_10_indices``.
        Other methods → ValueError."""
        x = np.asarray(activations)
        if method == "variance":
            scores = np.var(x, axis=0)
        elif method == "mean_abs":
            scores = np.mean(np.abs(x), axis=0)
        elif method == "sparsity":
            scores = 1.0 - np.mean(x == 0, axis=0)
        else:
            raise ValueError(f"Unknown importance method: {method}")
        ranking = np.argsort(scores)[::-1]
        dead = np.flatnonzero(np.all(x == 0, axis=0))
        return {"scores": scores, "ranking": ranking, "dead_neurons": dead, "n_dead": len(dead),
                "top_10_indices": ranking[:10], "method": method}

    def activation_statistics(self, activations: np.ndarray) -> dict[str, float]:
        """Mean, std, min, max, sparsity (fraction of zeros), n_samples, n_features."""
        x = np.asarray(activations)
        return {"mean": float(np.mean(x)), "std": float(np.std(x)), "min": float(np.min(x)),
                "max": float(np.max(x)), "sparsity": float(np.mean(x == 0)),
                "n_samples": x.shape[0], "n_features": x.shape[1]}
