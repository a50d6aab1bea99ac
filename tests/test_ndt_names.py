"""Every name of ndt 2.0.0's ``__all__`` (and ``ndt.analysis``) against ndt itself: the same
inputs give the same outputs, or the same exception type with ndt's message fragment. Where
ndt_fast differs on purpose, the test pins the difference (the README's compatibility table
gives the reason). The tracker's attributes and ``force=True`` are in test_ndt_tracker_compat.py.
"""

from __future__ import annotations

import functools
import logging
import math

import numpy as np
import pytest
import torch
from torch import nn

import ndt_fast as nf

ndt = pytest.importorskip("ndt")
ndt_validity = pytest.importorskip("ndt.validity")

ESTIMATORS = ("stable_rank", "participation_ratio", "cumulative_energy_90", "nuclear_norm_ratio",
              "compute_all_metrics")


def test_every_ndt_name_exists():
    missing = [name for name in ndt.__all__ if not hasattr(nf, name)]
    assert missing == []
    assert nf.HighFrequencyTracker is nf.FastTracker


def test_import_ndt_fast_imports_no_optional_dependency():
    import subprocess
    import sys

    code = ("import sys, ndt_fast; bad = [m for m in ('torch', 'yaml', 'sklearn', 'captum', 'pandas') "
            "if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- estimators ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ESTIMATORS)
def test_estimators_same_numbers(name, rng):
    x = torch.from_numpy(rng.standard_normal((40, 24)))
    ours, theirs = getattr(nf, name)(x), getattr(ndt, name)(x)
    np.testing.assert_allclose(np.asarray(ours, dtype=float), np.asarray(theirs, dtype=float), rtol=1e-6)


@pytest.mark.parametrize("name", ESTIMATORS)
@pytest.mark.parametrize("shape", [(3, 4, 5), (7,), (2, 2, 2, 2)])
def test_not_2d_is_ndts_value_error(name, shape):
    x = torch.ones(shape)
    for module in (ndt, nf):
        with pytest.raises(ValueError, match="Expected 2D matrix"):
            getattr(module, name)(x)


@pytest.mark.parametrize("name", ESTIMATORS)
def test_empty_is_ndts_value_error(name):
    for module in (ndt, nf):
        with pytest.raises(ValueError, match="Expected a non-empty matrix"):
            getattr(module, name)(torch.zeros(0, 4))


@pytest.mark.parametrize("name", ESTIMATORS)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_is_value_error_naming_nan_or_inf(name, value, rng):
    x = torch.from_numpy(rng.standard_normal((6, 5)))
    x[2, 3] = value
    with pytest.raises(ValueError, match="NaN or Inf"):
        getattr(nf, name)(x)
    with pytest.raises(ValueError, match="NaN or Inf"):
        getattr(nf, name)(x.numpy())
    # ndt: stable_rank says "NaN or Inf"; its others raise "SVD computation failed" for NaN and
    # return NaN for ±Inf (the difference the README lists).
    if name == "stable_rank":
        with pytest.raises(ValueError, match="NaN or Inf"):
            ndt.stable_rank(x)
    elif math.isnan(value):
        with pytest.raises(ValueError, match="SVD computation failed"):
            getattr(ndt, name)(x)
    # ndt_fast's own record API keeps flagging instead of raising
    record = nf.compute_metrics(x)
    assert math.isnan(record["stable_rank"]) and record["flags"] & nf.FLAG_NON_FINITE


@pytest.mark.parametrize("threshold", [0.0, -0.5, 1.5, math.nan])
def test_bad_threshold_is_ndts_value_error(threshold):
    for module in (ndt, nf):
        with pytest.raises(ValueError, match=r"Threshold must be in \(0, 1\]"):
            module.cumulative_energy_90(torch.eye(3), threshold=threshold)


# ---- jumps ---------------------------------------------------------------------------------------


def _jump_fields(jumps):
    return [(j.step, round(j.z_score, 9), j.value_before, j.value_after, j.metric_name) for j in jumps]


def test_jump_detector_same_jumps_rolling_statistics_and_empty_input(rng):
    values = list(np.r_[rng.normal(10, 0.3, 120), rng.normal(14, 0.3, 80)])
    ours, theirs = nf.JumpDetector(window_size=30, z_threshold=2.5), ndt.JumpDetector(window_size=30, z_threshold=2.5)
    assert _jump_fields(ours.detect_jumps(values, "sr", step_offset=7)) == _jump_fields(
        theirs.detect_jumps(values, "sr", step_offset=7))
    for direction in (None, "up", "down"):
        assert _jump_fields(ours.detect_jumps_with_direction(values, direction=direction)) == _jump_fields(
            theirs.detect_jumps_with_direction(values, direction=direction))
    for a, b in zip(ours.compute_rolling_statistics(values), theirs.compute_rolling_statistics(values)):
        np.testing.assert_array_equal(a, b)
    assert ours.detect_jumps([]) == theirs.detect_jumps([]) == []
    assert ours.detect_jumps(values[:5]) == theirs.detect_jumps(values[:5]) == []
    for detector in (ours, theirs):
        with pytest.raises(ValueError, match="values list cannot be empty"):
            detector.compute_rolling_statistics([])
    flat = [3.0] * 40
    for a, b in zip(ours.compute_rolling_statistics(flat), theirs.compute_rolling_statistics(flat)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kwargs, fragment", [({"window_size": 1}, "window_size must be >= 2"),
                                              ({"z_threshold": 0}, "z_threshold must be > 0"),
                                              ({"min_samples": 0}, "min_samples must be >= 1")])
def test_jump_detector_bad_arguments(kwargs, fragment):
    for module in (ndt, nf):
        with pytest.raises(ValueError, match=fragment):
            module.JumpDetector(**kwargs)


def test_jump_repr_is_ndts():
    assert repr(nf.Jump(5, 3.14159, 1.0, 2.5, "m")) == repr(ndt.Jump(5, 3.14159, 1.0, 2.5, "m"))


# ---- capture and records -------------------------------------------------------------------------


def _mlp():
    return nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))


def test_activation_capture_same_activations():
    torch.manual_seed(0)
    model, x = _mlp(), torch.randn(5, 12)
    ours, theirs = nf.ActivationCapture(), ndt.ActivationCapture()
    ours.register_hooks(model, [model[0], model[2]])
    theirs.register_hooks(model, [model[0], model[2]])
    model(x)
    assert ours.activations.keys() == theirs.activations.keys() == {"Linear_0", "Linear_1"}
    for name in theirs.activations:
        assert torch.equal(ours.get_activation(name), theirs.get_activation(name))
        assert not ours.get_activation(name).requires_grad
    assert ours.get_activation("nope") is None
    assert ours.get_all_activations().keys() == theirs.get_all_activations().keys()
    assert len(ours.hooks) == len(theirs.hooks) == 2
    ours.clear_activations()
    assert ours.activations == {} and len(ours.hooks) == 2
    for capture in (ours, theirs):
        capture.remove_hooks()
        assert capture.hooks == [] and capture.activations == {}
    model(x)
    assert ours.activations == {}
    for module in (ndt, nf):
        with pytest.raises(ValueError, match=r"Number of layer names \(1\) must match number of layers \(2\)"):
            module.ActivationCapture().register_hooks(model, [model[0], model[2]], ["only_one"])


def test_activation_capture_reads_tuple_outputs_where_ndt_breaks_the_forward():
    attention = nn.MultiheadAttention(8, 2, batch_first=True)
    x = torch.randn(2, 5, 8)
    with nf.ActivationCapture() as capture:
        capture.register_hooks(attention, [attention], ["attn"])
        out, _ = attention(x, x, x)
        assert torch.equal(capture.get_activation("attn"), out.detach())
    assert capture.hooks == []
    theirs = ndt.ActivationCapture()
    theirs.register_hooks(attention, [attention], ["attn"])
    with pytest.raises(AttributeError):  # ndt calls .detach() on the tuple, inside the forward
        attention(x, x, x)
    theirs.remove_hooks()


def test_dimensionality_metrics_is_ndts_record():
    fields = dict(step=5, stable_rank=1.5, participation_ratio=2.0, cumulative_90=3, nuclear_norm_ratio=2.5,
                  loss=0.7)
    assert nf.DimensionalityMetrics(**fields).to_dict() == ndt.DimensionalityMetrics(**fields).to_dict()
    assert list(nf.DimensionalityMetrics(**fields, grad_norm=1.0).to_dict()) == list(
        ndt.DimensionalityMetrics(**fields, grad_norm=1.0).to_dict())


# ---- architectures -------------------------------------------------------------------------------


class _SimpleCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 6, 3, padding=1)
        self.fc1, self.fc2 = nn.Linear(6 * 8 * 8, 10), nn.Linear(10, 3)


class _TinyViT(nn.Module):
    def __init__(self):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, 16, 4, stride=4)
        self.blocks = nn.ModuleList(nn.TransformerEncoderLayer(16, 2, 32, batch_first=True) for _ in range(2))
        self.head = nn.Linear(16, 10)


@functools.cache
def _models():
    """Built once per session (resnet18's construction is most of these tests' time)."""
    import torchvision

    return {
        "mlp": _mlp(),
        "cnn": _SimpleCNN(),
        "resnet18": torchvision.models.resnet18(num_classes=10),
        "transformer": nn.Sequential(nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32), 2,
                                                           enable_nested_tensor=False), nn.Linear(16, 4)),
        "vit": _TinyViT(),
        "nothing": nn.Sequential(nn.ReLU()),
    }


def test_detection_and_handler_choice_match_ndt():
    for label, model in _models().items():
        ours, theirs = nf.detect_architecture(model), ndt.detect_architecture(model)
        assert (ours and ours.get_name()) == (theirs and theirs.get_name()), label
        for architecture in (None, "mlp", "CNN", "transformer", "vit", "rnn"):
            outcomes = []
            for module in (nf, ndt):
                try:
                    outcomes.append(module.get_handler(model, architecture).get_name())
                except ValueError as error:
                    outcomes.append(str(error).split(".")[0].split(":")[0])
            assert outcomes[0] == outcomes[1], (label, architecture, outcomes)


def test_mlp_handler_same_layers_and_names():
    model = nn.Sequential(nn.Flatten(), nn.Linear(20, 12), nn.ReLU(), nn.Linear(12, 6), nn.ReLU(), nn.Linear(6, 2))
    ours, theirs = nf.MLPHandler(), ndt.MLPHandler()
    assert ours.get_activation_layers(model) == theirs.get_activation_layers(model)
    assert ours.get_layer_names(model) == theirs.get_layer_names(model) == [
        "Linear_0_20x12", "Linear_1_12x6", "Linear_2_6x2"]
    assert isinstance(ours, nf.ArchitectureHandler)


def test_other_handlers_select_fasttrackers_layers_with_ndts_naming():
    from ndt_fast.layers import auto_select_layers

    models = _models()
    resnet, cnn = models["resnet18"], models["cnn"]
    handler = nf.get_handler(resnet)
    layers, names = handler.get_activation_layers(resnet), handler.get_layer_names(resnet)
    assert layers == auto_select_layers(resnet)  # the 8 BasicBlocks and fc (ndt: 4 last convs + fc)
    assert names == [f"Block_{i}" for i in range(8)] + ["FC_0_10"]
    assert len(ndt.get_handler(resnet).get_activation_layers(resnet)) == 5
    assert nf.get_handler(cnn).get_layer_names(cnn) == ["Conv_0_4ch", "Conv_1_6ch", "FC_0_10", "FC_1_3"]
    assert ndt.get_handler(cnn).get_layer_names(cnn) == ["Conv_0_4ch", "Conv_1_6ch", "FC_0_10"]
    vit = models["vit"]
    assert nf.get_handler(vit).get_layer_names(vit) == ["Layer_0", "Layer_1", "Layer_2"]
    layers, names = nf.architectures.get_layers_for_model(vit)
    assert len(layers) == len(names) == len(set(names)) == 3


# ---- validity harness ----------------------------------------------------------------------------


def test_standard_battery_is_ndts():
    ours, theirs = nf.standard_battery(), ndt.standard_battery()
    assert [(f.name, f.ground_truth, f.tolerance) for f in ours] == [
        (f.name, f.ground_truth, f.tolerance) for f in theirs]
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a.values, b.values)
    from ndt_fast.compat import validity as compat

    for ours_fn, theirs_fn, kwargs in [(compat.planted_transition, ndt_validity.planted_transition, {"seed": 3}),
                                       (compat.planted_multi, ndt_validity.planted_multi, {"seed": 4}),
                                       (compat.pure_noise, ndt_validity.pure_noise, {"seed": 5, "noise": 2.0}),
                                       (compat.drift_no_jump, ndt_validity.drift_no_jump, {"seed": 6})]:
        np.testing.assert_array_equal(ours_fn(**kwargs).values, theirs_fn(**kwargs).values)
    with pytest.raises(ValueError, match="one more entry"):
        compat.planted_multi(changes=(10,), levels=(1.0,))


def _report_numbers(report):
    rows = [(r.fixture, r.n_steps, r.n_ground_truth, r.detected, r.true_positives, r.false_positives,
             r.false_negatives, r.recall, r.false_positive_rate_per_1000) for r in report.results]
    return rows, report.detector_name, report.mean_recall, report.false_positives_on_null, report.valid


@pytest.mark.parametrize("z", [2.0, 3.0, 6.0])
def test_validate_detector_same_report_as_ndt(z):
    ours = nf.validate_detector(nf.jump_detector_as_callable(nf.JumpDetector(z_threshold=z)), name="jd")
    theirs = ndt.validate_detector(ndt.jump_detector_as_callable(ndt.JumpDetector(z_threshold=z)), name="jd")
    assert isinstance(ours, nf.ValidityReport)
    assert _report_numbers(ours) == _report_numbers(theirs)
    # render(): the same lines but for the last (the verdict's explanation, in our words)
    assert ours.render().splitlines()[:-1] == theirs.render().splitlines()[:-1]
    assert str(ours) == ours.render()


def test_validate_detector_custom_fixtures_and_thresholds_match_ndt():
    from ndt_fast.compat import validity as compat

    def every_tenth(values):
        return list(range(0, len(values), 10))

    ours_battery = [compat.Fixture(np.arange(100.0), (50,), "mine", tolerance=3), compat.pure_noise(n_steps=200)]
    theirs_battery = [ndt_validity.Fixture(np.arange(100.0), (50,), "mine", tolerance=3),
                      ndt_validity.pure_noise(n_steps=200)]
    for kwargs in ({}, {"min_recall": 1.0, "max_false_positives_per_1000": 100.0}):
        assert _report_numbers(compat.validate_detector(every_tenth, ours_battery, **kwargs)) == _report_numbers(
            ndt.validate_detector(every_tenth, theirs_battery, **kwargs))
    with pytest.raises(TypeError, match="callable"):
        compat.validate_detector("not a detector")


# ---- config and logging --------------------------------------------------------------------------


def test_config_files_round_trip_between_ndt_and_ndt_fast(tmp_path, capsys):
    config = {"sampling_frequency": 10, "enable_jump_detection": True, "jump_z_threshold": 3.0,
              "layer_names": ["a", "b"]}
    nf.save_config(config, tmp_path / "ours.yaml")
    ndt.save_config(config, str(tmp_path / "theirs.yaml"))
    capsys.readouterr()  # ndt prints "Saved configuration to …"; ndt_fast logs it instead
    assert (tmp_path / "ours.yaml").read_text() == (tmp_path / "theirs.yaml").read_text()
    assert nf.load_config(tmp_path / "theirs.yaml") == ndt.load_config(str(tmp_path / "ours.yaml")) == config
    for module in (nf, ndt):
        with pytest.raises(FileNotFoundError, match="Config file not found"):
            module.load_config(str(tmp_path / "missing.yaml"))
    with pytest.raises(TypeError, match="plain YAML"):
        nf.save_config({"device": torch.device("cpu")}, tmp_path / "device.yaml")
    assert not (tmp_path / "device.yaml").exists()
    nf.save_config({"shape": (1, 2)}, tmp_path / "tuple.yaml")  # ndt writes a !!python/tuple tag it cannot read
    assert nf.load_config(tmp_path / "tuple.yaml") == {"shape": [1, 2]}
    assert nf.compat.utils.get_default_config() == ndt.utils.config.get_default_config()


def test_setup_logger_matches_ndt_and_does_not_stack_handlers(tmp_path, capsys):
    ours = nf.setup_logger("ndt_fast.test_names", level=logging.DEBUG, log_file=tmp_path / "ours.log")
    theirs = ndt.setup_logger("ndt.test_names", level=logging.DEBUG, log_file=str(tmp_path / "theirs.log"))
    try:
        assert ours.level == theirs.level == logging.DEBUG
        assert [type(h) for h in ours.handlers] == [type(h) for h in theirs.handlers]
        assert [h.formatter._fmt for h in ours.handlers] == [h.formatter._fmt for h in theirs.handlers]
        ours.info("hello")
        assert "ndt_fast.test_names - INFO - hello" in capsys.readouterr().out
        assert "hello" in (tmp_path / "ours.log").read_text()
        again = nf.setup_logger("ndt_fast.test_names")
        assert again is ours and len(ours.handlers) == 1
        assert nf.setup_logger().name == "ndt_fast"
    finally:
        for log in (ours, theirs, logging.getLogger("ndt_fast")):
            for handler in list(log.handlers):
                log.removeHandler(handler)
                handler.close()
