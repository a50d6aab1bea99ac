"""ndt 2.0.0's README tutorials, its examples 01-03 and its docstring examples, written here
(nothing copied) on small synthetic data, with ``ndt`` swapped for ndt_fast by one import line.

The swap is the import block below: ``from ndt import (…)`` became ``from ndt_fast import (…)``,
and ``from ndt.validity import …`` became ``from ndt_fast.compat.validity import …``. The rest of
each test is written the way ndt's documents write it.
"""

from __future__ import annotations

import json
import logging

import matplotlib
import numpy as np
import pytest
import torch
from torch import nn, optim
from torch.utils.data import DataLoader, TensorDataset

# --- the one-line change: was `from ndt import (...)` ---------------------------------------------
from ndt_fast import (ActivationCapture, DimensionalityMetrics, HighFrequencyTracker, JumpDetector,
                      MLPHandler, compute_all_metrics, cumulative_energy_90, detect_architecture,
                      export_to_csv, export_to_hdf5, export_to_json, get_handler, jump_detector_as_callable,
                      load_config, nuclear_norm_ratio, participation_ratio, plot_metrics_comparison,
                      plot_phases, save_config, setup_logger, stable_rank, standard_battery, validate_detector)
# --- and: was `from ndt.validity import Fixture, planted_transition, pure_noise` ------------------
from ndt_fast.compat.validity import Fixture, planted_transition, pure_noise

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _loader(n: int, shape: tuple[int, ...], classes: int, batch_size: int, seed: int) -> DataLoader:
    """Random images with a class-dependent mean, so training makes progress (MNIST/CIFAR stand-in)."""
    g = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, classes, (n,), generator=g)
    data = torch.randn(n, *shape, generator=g) * 0.5 + targets.view(-1, *[1] * len(shape)).float() / classes
    return DataLoader(TensorDataset(data, targets), batch_size=batch_size, shuffle=True, generator=g)


# ---- README, tutorial 1: validate a detector ------------------------------------------------------


def test_readme_tutorial_1_validity_of_jump_detector():
    detector = jump_detector_as_callable(JumpDetector(z_threshold=3.0))
    report = validate_detector(detector, name="JumpDetector(z=3.0)")
    text = report.render()
    assert text.startswith("Validity report for: JumpDetector(z=3.0)")
    assert "VERDICT: NOT VALID on these fixtures" in text
    # the figures ndt's README prints for this very call
    assert report.valid is False
    assert report.mean_recall == 1.0
    assert report.false_positives_on_null == 6
    assert [r.fixture for r in report.results] == [f.name for f in standard_battery()]


# ---- README, tutorial 2: track dimensionality during training ------------------------------------


def test_readme_tutorial_2_track_in_three_lines():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 10))
    dataloader = _loader(640, (784,), 10, 32, seed=1)
    criterion, optimizer = nn.CrossEntropyLoss(), optim.SGD(model.parameters(), lr=0.01)

    tracker = HighFrequencyTracker(model, sampling_frequency=10)
    for step, (x, y) in enumerate(dataloader):
        optimizer.zero_grad()
        output = model(x)
        loss = criterion(output, y)
        loss.backward()
        optimizer.step()
        tracker.log(step, loss.item())
    results = tracker.get_results()
    fig = plot_phases(results, metric="stable_rank")
    tracker.close()

    assert list(results) == ["Linear_0", "Linear_1", "Linear_2"]
    for df in results.values():
        assert list(df["step"]) == [0, 10]
        assert {"stable_rank", "participation_ratio", "cumulative_90", "nuclear_norm_ratio"} <= set(df.columns)
    assert fig.axes


# ---- README, tutorial 3: own detector, own fixtures -----------------------------------------------


def test_readme_tutorial_3_own_detector_and_fixtures():
    def slope_detector(values, k=20, threshold=3.0):
        v = np.asarray(values)
        return [i for i in range(k, len(v) - k) if abs(v[i:i + k].mean() - v[i - k:i].mean()) > threshold]

    rng = np.random.default_rng(0)
    trajectory = np.r_[np.full(300, 5.0), np.full(300, 12.0)] + rng.normal(0, 0.2, 600)
    my_run = Fixture(values=trajectory, ground_truth=(300,), name="grokking_run", tolerance=25)
    battery = [planted_transition(), pure_noise(), my_run]
    report = validate_detector(slope_detector, battery, name="slope_detector")
    text = report.render()
    assert "grokking_run" in text and "slope_detector" in text
    by_name = {r.fixture: r for r in report.results}
    assert by_name["grokking_run"].recall == 1.0 and by_name["planted_transition"].recall == 1.0
    assert by_name["pure_noise"].false_positives == 0


# ---- examples/01_quickstart_mnist.py ----------------------------------------------------------------


def test_example_01_quickstart(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
                          nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
    train_loader = _loader(64 * 30, (1, 28, 28), 10, 64, seed=2)
    tracker = HighFrequencyTracker(model, sampling_frequency=10, enable_jump_detection=True)
    optimizer = optim.Adam(model.parameters(), lr=0.001)
    criterion = nn.CrossEntropyLoss()
    model.train()
    step = 0
    for _epoch in range(2):
        for data, target in train_loader:
            optimizer.zero_grad()
            output = model(data)
            loss = criterion(output, target)
            loss.backward()
            optimizer.step()
            tracker.log(step, loss.item())
            step += 1
            if step >= 40:
                break
        if step >= 40:
            break
    results = tracker.get_results()
    jumps_dict = tracker.detect_jumps(metric="stable_rank")
    fig = plot_phases(results, metric="stable_rank")
    fig.savefig(tmp_path / "mnist_stable_rank.png", dpi=50, bbox_inches="tight")
    export_to_csv(results, str(tmp_path / "mnist_results.csv"))
    tracker.close()

    assert len(results) == 4 and all(len(df) == 4 for df in results.values())
    assert set(jumps_dict) == set(results) and all(isinstance(j, list) for j in jumps_dict.values())
    assert (tmp_path / "mnist_stable_rank.png").stat().st_size > 0
    assert (tmp_path / "mnist_results.csv").read_text().count("\n") == 1 + 16


def _train_with_grad_norm(model, tracker, train_loader, optimizer, device, target_steps):
    """Examples 02 and 03's loop: cross-entropy step, gradient norm by clip_grad_norm_(inf),
    ``tracker.log(step, loss.item(), grad_norm=grad_norm.item())``, epochs until target_steps."""
    criterion = nn.CrossEntropyLoss()
    step = 0
    while step < target_steps:
        for data, target in train_loader:
            data, target = data.to(device), target.to(device)
            optimizer.zero_grad()
            loss = criterion(model(data), target)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=float("inf"))
            optimizer.step()
            tracker.log(step, loss.item(), grad_norm=grad_norm.item())
            step += 1
            if step >= target_steps:
                return


# ---- examples/02_cnn_cifar10.py ----------------------------------------------------------------------


class SimpleCNN(nn.Module):
    """The example's CIFAR-10 network (3 conv + 2 fc), 32 × 32 inputs."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3, padding=1)
        self.conv3 = nn.Conv2d(64, 128, kernel_size=3, padding=1)
        self.pool = nn.MaxPool2d(2, 2)
        self.fc1 = nn.Linear(128 * 4 * 4, 256)
        self.fc2 = nn.Linear(256, 10)
        self.relu = nn.ReLU()

    def forward(self, x):
        x = self.pool(self.relu(self.conv1(x)))
        x = self.pool(self.relu(self.conv2(x)))
        x = self.pool(self.relu(self.conv3(x)))
        x = self.relu(self.fc1(x.view(-1, 128 * 4 * 4)))
        return self.fc2(x)


def test_example_02_cnn(tmp_path):
    torch.manual_seed(0)
    model = SimpleCNN()
    device = torch.device("cpu")
    model = model.to(device)
    train_loader = _loader(8 * 21, (3, 32, 32), 10, 8, seed=3)
    tracker = HighFrequencyTracker(model, layers=[model.conv1, model.conv2, model.conv3, model.fc1],
                                   layer_names=["Conv1", "Conv2", "Conv3", "FC1"], sampling_frequency=20,
                                   device=device)
    optimizer = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    _train_with_grad_norm(model, tracker, train_loader, optimizer, device, target_steps=len(train_loader))
    results = tracker.get_results()
    conv3_results = tracker.get_results(layer_name="Conv3")
    fig = plot_metrics_comparison(conv3_results, layer_name="Conv3")
    export_to_json(results, str(tmp_path / "cifar10_results.json"))
    jumps_dict = tracker.detect_jumps(metric="stable_rank")
    tracker.close()

    assert list(conv3_results["step"]) == [0, 20] and conv3_results["grad_norm"].notna().all()
    assert fig.get_suptitle() == "Dimensionality Metrics - Conv3"
    assert set(json.loads((tmp_path / "cifar10_results.json").read_text())) == {"Conv1", "Conv2", "Conv3", "FC1"}
    assert set(jumps_dict) == {"Conv1", "Conv2", "Conv3", "FC1"}


# ---- examples/03_reproduce_tds_experiment.py ---------------------------------------------------------


class TDSExperimentMLP(nn.Module):
    """784-256-128-10 with ReLU, as the TDS article."""

    def __init__(self):
        super().__init__()
        self.flatten = nn.Flatten()
        self.layer1, self.relu1 = nn.Linear(784, 256), nn.ReLU()
        self.layer2, self.relu2 = nn.Linear(256, 128), nn.ReLU()
        self.layer3 = nn.Linear(128, 10)

    def forward(self, x):
        return self.layer3(self.relu2(self.layer2(self.relu1(self.layer1(self.flatten(x))))))


def test_example_03_tds_experiment(tmp_path):
    torch.manual_seed(0)
    device = torch.device("cpu")
    model = TDSExperimentMLP().to(device)
    train_loader = _loader(64 * 12, (1, 28, 28), 10, 64, seed=4)
    names = ["Layer1_784-256", "Layer2_256-128", "Layer3_128-10"]
    tracker = HighFrequencyTracker(model, layers=[model.layer1, model.layer2, model.layer3], layer_names=names,
                                   sampling_frequency=5, enable_jump_detection=True, device=device)
    optimizer = optim.Adam(model.parameters(), lr=0.001, betas=(0.9, 0.999))
    model.train()
    _train_with_grad_norm(model, tracker, train_loader, optimizer, device, target_steps=150)
    results = tracker.get_results()
    summary = {name: (df["stable_rank"].iloc[0], df["stable_rank"].iloc[-1], df["stable_rank"].min(),
                      df["stable_rank"].max()) for name, df in results.items()}
    jumps_dict = tracker.detect_jumps(metric="stable_rank", threshold_z=2.0)  # (ndt's own tracker: TypeError)
    fig_activation = plot_phases(results, metric="stable_rank", title="Activation Space Dimensionality (Every 5 Steps)")
    layer2_results = tracker.get_results(layer_name="Layer2_256-128")
    fig_correlation = plot_metrics_comparison(layer2_results, layer_name="Layer2_256-128",
                                              title="Dimensionality vs Loss")
    export_to_csv(results, str(tmp_path / "tds_experiment_results.csv"))
    export_to_hdf5(results, str(tmp_path / "tds_experiment_results.h5"))
    tracker.close()

    assert list(results) == names and all(len(df) == 30 for df in results.values())
    assert all(lo <= first <= hi and lo <= last <= hi for first, last, lo, hi in summary.values())
    assert all(jump.step % 5 == 0 for jumps in jumps_dict.values() for jump in jumps)  # training steps
    assert fig_activation.axes[0].get_title() == "Activation Space Dimensionality (Every 5 Steps)"
    assert fig_correlation.get_suptitle() == "Dimensionality vs Loss"
    assert (tmp_path / "tds_experiment_results.h5").stat().st_size > 0


# ---- docstring examples of the other names ------------------------------------------------------------


def test_docstring_examples_of_the_estimators():
    A = torch.randn(100, 50)
    sr, pr, ce90, nnr = compute_all_metrics(A)
    # one call computes all four; alone, stable rank may take another path (λmax by Lanczos)
    assert (sr, pr, ce90, nnr) == pytest.approx((stable_rank(A), participation_ratio(A), cumulative_energy_90(A),
                                                 nuclear_norm_ratio(A)), rel=1e-9)
    assert 1.0 <= sr <= 50 and 1 <= ce90 <= 50 and isinstance(ce90, int)


def test_docstring_examples_of_jump_detector():
    detector = JumpDetector(window_size=50, z_threshold=3.0)
    values = [10.0] * 100 + [20.0] * 100
    jumps = detector.detect_jumps(values, metric_name="stable_rank")
    # at 100 the window before is constant (std 0: skipped, as in ndt); the next samples see the step
    assert jumps and all(101 <= j.step < 110 and j.metric_name == "stable_rank" for j in jumps)
    assert str(jumps[0]).startswith("Jump(step=101, metric=stable_rank, z_score=")
    means, stds, z_scores = detector.compute_rolling_statistics(values)
    assert stds[100] == 0.0 and z_scores[100] == 0.0 and z_scores.argmax() == 101 and means[100] == 10.0


def test_docstring_example_of_activation_capture():
    model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 10))
    capture = ActivationCapture()
    capture.register_hooks(model, [model[0], model[2]])
    model(torch.randn(32, 10))
    assert list(capture.activations.keys()) == ["Linear_0", "Linear_1"]
    capture.remove_hooks()


def test_docstring_examples_of_architectures():
    model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 10))
    handler = detect_architecture(model)
    assert handler.get_name() == "MLP"
    handler = get_handler(model, architecture="mlp")
    layers = handler.get_activation_layers(model)
    assert isinstance(handler, MLPHandler) and layers == [model[0], model[2]]
    tracker = HighFrequencyTracker(model, layers=layers, layer_names=handler.get_layer_names(model))
    assert tracker.layer_names == ["Linear_0_784x512", "Linear_1_512x10"]
    tracker.close()


def test_docstring_examples_of_config_and_logger(tmp_path, capsys):
    config = {"sampling_frequency": 10, "enable_jump_detection": True, "jump_z_threshold": 3.0}
    save_config(config, str(tmp_path / "tracker_config.yaml"))
    config = load_config(str(tmp_path / "tracker_config.yaml"))
    tracker = HighFrequencyTracker(nn.Sequential(nn.Linear(4, 3)), **config)
    assert tracker.sampling_frequency == 10
    tracker.close()
    logger = setup_logger("ndt_fast", level=logging.DEBUG, log_file=str(tmp_path / "tracking.log"))
    try:
        logger.info("Starting tracking...")
        assert "Starting tracking..." in capsys.readouterr().out
        assert "Starting tracking..." in (tmp_path / "tracking.log").read_text()
    finally:
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
            handler.close()
        logger.setLevel(logging.NOTSET)


def test_dimensionality_metrics_rows_make_ndts_dataframe():
    import pandas as pd

    rows = [DimensionalityMetrics(step=s, stable_rank=1.0 + s, participation_ratio=2.0, cumulative_90=3,
                                  nuclear_norm_ratio=1.5, loss=0.5) for s in (0, 5)]
    df = pd.DataFrame([m.to_dict() for m in rows])
    assert list(df.columns) == ["step", "stable_rank", "participation_ratio", "cumulative_90",
                                "nuclear_norm_ratio", "loss", "grad_norm"]


def test_analysis_at_a_transition():
    """ndt.analysis's docstring workflow: capture a layer, flatten, PCA; compare two moments."""
    pytest.importorskip("sklearn")
    pytest.importorskip("captum")
    from ndt_fast.analysis import ActivationAnalyzer, FeatureVisualizer  # was: from ndt.analysis import …

    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 5))
    capture = ActivationCapture()
    capture.register_hooks(model, [model[0]], ["layer_0"])
    model(torch.randn(16, 3, 8, 8))
    activations = capture.get_all_activations()
    capture.remove_hooks()
    analyzer = ActivationAnalyzer()
    flat_acts = activations["layer_0"].view(16, -1).cpu().numpy()
    pca_results = analyzer.pca_analysis(flat_acts, n_components=10)
    assert pca_results["n_components_90"] <= 10
    comparison = analyzer.compare_activations(flat_acts, flat_acts * 2.0)
    assert comparison["subspace_overlap"] == pytest.approx(1.0)
    visualizer = FeatureVisualizer(model)
    cam = visualizer.grad_cam(torch.randn(1, 3, 8, 8), 2, model[0])
    saliency = visualizer.saliency_map(torch.randn(1, 3, 8, 8), 2)
    assert cam.shape == saliency.shape == (8, 8) and 0.0 <= cam.min() and cam.max() <= 1.0
