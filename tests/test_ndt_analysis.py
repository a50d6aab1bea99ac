"""``ndt_fast.analysis`` against ``ndt.analysis``: same inputs, same results (the documented
differences — integrated gradients' quadrature, the model's mode and ``.grad`` — pinned too)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("sklearn")
pytest.importorskip("captum")
ndt_analysis = pytest.importorskip("ndt.analysis")

from ndt_fast.analysis import ActivationAnalyzer, FeatureVisualizer  # noqa: E402


def _assert_same(ours, theirs, path="result"):
    """Recursive equality of analysis results (arrays to 1e-6 relative; fitted objects skipped)."""
    if isinstance(theirs, dict):
        assert ours.keys() == theirs.keys(), path
        for key in theirs:
            if key != "pca_object":
                _assert_same(ours[key], theirs[key], f"{path}[{key!r}]")
    elif isinstance(theirs, (np.ndarray, float, int, np.number)):
        # arccos near 1 turns round-off ε into √(2ε) ≈ 2e-8 rad: angles get that absolute slack
        atol = 1e-7 if path.endswith("['principal_angles']") else 1e-9
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=atol, err_msg=path)
    else:
        assert ours == theirs, path


@pytest.fixture
def activations(rng):
    centres = rng.normal(0, 4, (3, 12))
    x = np.concatenate([c + rng.normal(0, 0.5, (20, 12)) for c in centres])
    return np.maximum(x, 0)  # ReLU-like, with zeros for the sparsity figures


def test_activation_analyzer_same_results_as_ndt(activations):
    ours, theirs = ActivationAnalyzer(), ndt_analysis.ActivationAnalyzer()
    tensor = torch.from_numpy(activations).reshape(60, 3, 4)
    np.testing.assert_array_equal(ours.flatten_activation(tensor), theirs.flatten_activation(tensor))
    _assert_same(ours.pca_analysis(activations, n_components=5), theirs.pca_analysis(activations, n_components=5))
    _assert_same(ours.pca_analysis(activations), theirs.pca_analysis(activations))
    for kwargs in ({"method": "kmeans", "n_clusters": 3, "n_init": 2},
                   {"method": "dbscan", "eps": 2.0, "min_samples": 3}):
        _assert_same(ours.cluster_analysis(activations, **kwargs), theirs.cluster_analysis(activations, **kwargs))
    _assert_same(ours.singular_value_analysis(activations), theirs.singular_value_analysis(activations))
    _assert_same(ours.compare_activations(activations[:30], activations[30:]),
                 theirs.compare_activations(activations[:30], activations[30:]))
    for method in ("variance", "mean_abs", "sparsity"):
        _assert_same(ours.neuron_importance(activations, method), theirs.neuron_importance(activations, method))
    _assert_same(ours.activation_statistics(activations), theirs.activation_statistics(activations))
    tsne = {"perplexity": 5, "max_iter": 250}
    _assert_same(ours.manifold_embedding(activations[:25], **tsne), theirs.manifold_embedding(activations[:25], **tsne))
    for call in (lambda a: a.cluster_analysis(activations, method="spectral"),
                 lambda a: a.manifold_embedding(activations, method="isomap"),
                 lambda a: a.neuron_importance(activations, method="weight")):
        for analyzer in (ours, theirs):
            with pytest.raises(ValueError, match="Unknown"):
                call(analyzer)


class _SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 5, 3, padding=1)
        self.relu = nn.ReLU()
        self.head = nn.Linear(5 * 6 * 6, 4)

    def forward(self, x):
        return self.head(self.relu(self.conv(x)).flatten(1))


def _state(model):
    return [p.detach().clone() for p in model.parameters()], model.training


# ndt's grad_cam puts a full backward hook on the layer of an input that needs no gradient; torch
# warns about that (inside ndt's code, not ours).
@pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")
def test_feature_visualizer_same_maps_as_ndt(tmp_path):
    torch.manual_seed(0)
    model, image = _SmallCNN(), torch.randn(1, 3, 6, 6)
    ours, theirs = FeatureVisualizer(model), ndt_analysis.FeatureVisualizer(model)
    for target in (0, 3):
        np.testing.assert_allclose(ours.grad_cam(image, target, model.conv), theirs.grad_cam(image, target, model.conv),
                                   rtol=1e-5, atol=1e-6)
        for absolute in (True, False):
            np.testing.assert_allclose(ours.saliency_map(image, target, absolute),
                                       theirs.saliency_map(image, target, absolute), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(ours.layer_conductance(image, target, model.conv),
                                   theirs.layer_conductance(image, target, model.conv), rtol=1e-5, atol=1e-7)
    activation = torch.relu(model.conv(image)).detach()
    for a, b in zip(ours.feature_maps(activation, top_k=3), theirs.feature_maps(activation, top_k=3)):
        np.testing.assert_array_equal(a, b)
    weights = torch.softmax(torch.randn(1, 2, 4, 4), dim=-1)
    for head in (None, 1):
        np.testing.assert_array_equal(ours.attention_visualization(weights, head),
                                      theirs.attention_visualization(weights, head))
    results = []
    for visualizer in (ours, theirs):
        torch.manual_seed(7)
        results.append(visualizer.neuron_activation_maximization(model.conv, 2, (3, 6, 6), steps=5, lr=0.05))
    torch.testing.assert_close(results[0], results[1])
    before = {"model_state_dict": {k: v.clone() for k, v in model.state_dict().items()}}
    torch.save(before, tmp_path / "before.pt")
    with torch.no_grad():
        model.conv.weight.mul_(-1.5)
    torch.save({"model_state_dict": model.state_dict()}, tmp_path / "after.pt")
    _assert_same(ours.compare_features(image, 1, model.conv, tmp_path / "before.pt", tmp_path / "after.pt"),
                 theirs.compare_features(image, 1, model.conv, str(tmp_path / "before.pt"), str(tmp_path / "after.pt")))


def test_integrated_gradients_same_as_ndt_on_a_linear_model_and_close_elsewhere():
    torch.manual_seed(1)
    linear = nn.Linear(10, 3)
    x = torch.randn(1, 10)
    np.testing.assert_allclose(FeatureVisualizer(linear).integrated_gradients(x, 2, steps=20),
                               ndt_analysis.FeatureVisualizer(linear).integrated_gradients(x, 2, steps=20),
                               rtol=1e-5, atol=1e-7)
    smooth = nn.Sequential(nn.Linear(10, 16), nn.Tanh(), nn.Linear(16, 3))
    ours = FeatureVisualizer(smooth).integrated_gradients(x, 1, steps=200)
    theirs = ndt_analysis.FeatureVisualizer(smooth).integrated_gradients(x, 1, steps=200)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=2e-2 * np.abs(theirs).max())
    # completeness: the attributions add up to score(x) − score(baseline)
    gap = (smooth(x)[0, 1] - smooth(torch.zeros_like(x))[0, 1]).item()
    assert ours.sum() == pytest.approx(gap, rel=1e-3, abs=1e-5)


def test_hooks_keep_activations_and_gradients_and_mode_and_grads_are_left_alone():
    model = _SmallCNN().train()
    visualizer = FeatureVisualizer(model)
    visualizer.register_hooks({"conv": model.conv})
    model(torch.randn(2, 3, 6, 6)).sum().backward()
    assert visualizer.activations["conv"].shape == visualizer.gradients["conv"].shape == (2, 5, 6, 6)
    visualizer.remove_hooks()
    assert visualizer.hooks == [] and visualizer.activations == {} and visualizer.gradients == {}
    grads = [p.grad.clone() for p in model.parameters()]
    visualizer.grad_cam(torch.randn(1, 3, 6, 6), 0, model.conv)
    visualizer.saliency_map(torch.randn(1, 3, 6, 6), 0)
    assert model.training  # ndt leaves the model in eval mode
    assert all(torch.equal(g, p.grad) for g, p in zip(grads, model.parameters()))  # ndt overwrites .grad


def test_activation_analyzer_does_not_need_captum():
    import subprocess
    import sys

    # Captum hidden: the analyzer imports and runs; the visualizer names the extra to install.
    code = ("import sys; sys.modules['captum'] = None\n"
            "from ndt_fast.analysis import ActivationAnalyzer\n"
            "import numpy as np; ActivationAnalyzer().activation_statistics(np.ones((3, 2)))\n"
            "try:\n    from ndt_fast.analysis import FeatureVisualizer\nexcept ImportError as e:\n"
            "    assert 'ndt-fast[analysis]' in str(e), e\nelse:\n    raise SystemExit('no ImportError')\n")
    subprocess.run([sys.executable, "-c", code], check=True)
