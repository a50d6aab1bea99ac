"""``ndt-fast experiment architectures`` and ``ndt-fast experiment intervention``: both commands end
to end over a few hundred steps on synthetic MNIST-format data (every output file checked), their
argument errors, and the pieces their verdicts rest on (the corruption, the rank agreement, the
lasting-damage rule) on inputs built to pass or fail."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pd = pytest.importorskip("pandas")
pytest.importorskip("h5py")
pytest.importorskip("matplotlib")

import ndt_fast  # noqa: E402
from ndt_fast import cli  # noqa: E402
from ndt_fast.data import write_idx_files  # noqa: E402
from ndt_fast.experiments import architectures, intervention  # noqa: E402
from ndt_fast.experiments.tds import RUN_FILE, Stat  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
VERDICTS = ("reproduced", "not reproduced", "not measurable as stated")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic MNIST in torchvision's layout (600 training, 100 test images)."""
    root = tmp_path_factory.mktemp("mnist")
    write_idx_files(root, n_train=600, n_test=100, seed=3)
    return root


@pytest.fixture
def keep_threads():
    """The commands run with --threads 1 (2-core CI machines); give the rest of the session torch's
    setting back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _png(path: Path) -> None:
    blob = path.read_bytes()
    assert blob.startswith(PNG_MAGIC) and blob[12:16] == b"IHDR", path
    assert int.from_bytes(blob[16:20], "big") >= 600 and int.from_bytes(blob[20:24], "big") >= 300, path


def _run_files(folder: Path, steps: int, freq: int, layers: list[str]) -> None:
    run = ndt_fast.load(folder / RUN_FILE)
    assert list(run) == layers
    for df in run.values():
        assert list(df["step"]) == list(range(0, steps, freq))
    csv = pd.read_csv(folder / "results.csv")
    assert len(csv) == len(layers) * len(range(0, steps, freq)) and csv.columns[0] == "layer"
    jumps = pd.read_csv(folder / "jumps.csv")
    assert list(jumps.columns) == ["space", "every", "layer", "step", "z_score", "value_before", "value_after"]


def _verdict_row(text: str, claim_id: str) -> str:
    row = next(line for line in text.splitlines() if line.startswith(f"| {claim_id} "))
    match = re.search(r"\*\*(.+?)\*\*", row)
    assert match, row
    return match.group(1)


def test_architectures_end_to_end(tmp_path: Path, data_dir: Path, keep_threads, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "arch"
    steps, freq = 200, 5
    code = cli.main(["experiment", "architectures", "--steps", str(steps), "--freq", str(freq), "--seeds", "2",
                     "--threads", "1", "--data", str(data_dir), "--out", str(out), "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "A1 early dynamics rank architectures" in printed and len(printed.strip().splitlines()) <= 12
    for name, widths in architectures.ARCHITECTURES.items():
        for seed in range(2):
            _run_files(out / name / f"seed{seed}", steps, freq, architectures.layer_names(widths))
    table = pd.read_csv(out / architectures.RUNS_CSV)
    assert len(table) == 6 and set(table["architecture"]) == set(architectures.ARCHITECTURES)
    assert table["test_accuracy"].between(0, 1).all()
    _png(out / architectures.FIGURE)
    text = (out / "claims.md").read_text(encoding="utf-8")
    payload = json.loads((out / "claims.json").read_text(encoding="utf-8"))
    claim = payload["claims"][0]
    assert claim["id"] == "A1" and claim["verdict"] in VERDICTS and _verdict_row(text, "A1") == claim["verdict"]
    assert len(claim["rho_per_seed"]) == 2
    assert set(payload["architectures"]) == set(architectures.ARCHITECTURES)
    assert payload["architectures"]["wide"]["test_accuracy"]["n"] == 2


def test_intervention_end_to_end(tmp_path: Path, data_dir: Path, keep_threads, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "int"
    steps, freq = 200, 5
    code = cli.main(["experiment", "intervention", "--windows", "0:50,100:150", "--corruption", "input-noise",
                     "--steps", str(steps), "--freq", str(freq), "--seeds", "2", "--threads", "1",
                     "--data", str(data_dir), "--out", str(out), "--no-progress"])
    assert code == 0
    assert "I1 early corruption damages" in capsys.readouterr().out
    names = ["control", "window_0-50", "window_100-150"]
    for name in names:
        for seed in range(2):
            _run_files(out / name / f"seed{seed}", steps, freq, list(ndt_fast.experiments.tds.LAYER_NAMES))
    table = pd.read_csv(out / intervention.RUNS_CSV)
    assert list(table["condition"].unique()) == names and len(table) == 6
    assert {f"accuracy_{c}" for c in range(10)} <= set(table.columns)
    _png(out / intervention.FIGURE)
    # A run corrupted only in 100:150 trains exactly as the control before step 100: same seed,
    # same batches, the corruption's own generator.
    control = ndt_fast.load(out / "control" / "seed0" / RUN_FILE)["Layer2_256-128"]
    late = ndt_fast.load(out / "window_100-150" / "seed0" / RUN_FILE)["Layer2_256-128"]
    before = control["step"] < 100
    np.testing.assert_array_equal(control["stable_rank"][before], late["stable_rank"][before])
    assert not np.array_equal(control["stable_rank"][~before], late["stable_rank"][~before])
    payload = json.loads((out / "claims.json").read_text(encoding="utf-8"))
    claim = payload["claims"][0]
    assert claim["verdict"] in VERDICTS and claim["early_window"] == [0, 50] and claim["late_window"] == [100, 150]
    assert _verdict_row((out / "claims.md").read_text(encoding="utf-8"), "I1") == claim["verdict"]
    assert set(payload["damage"]) == {"window_0-50", "window_100-150"}


@pytest.mark.parametrize(("command", "argv", "message"), [
    ("intervention", ["--windows", "5:2"], "argument --windows"),
    ("intervention", ["--windows", "0:10,x"], "argument --windows"),
    ("intervention", ["--windows", "0:9000"], "ends after --steps 8000"),
    ("intervention", ["--fraction", "0"], "argument --fraction"),
    ("intervention", ["--corruption", "blur"], "argument --corruption"),
    ("architectures", ["--seeds", "0"], "argument --seeds"),
    ("architectures", ["--device", "tpu:9"], "argument --device"),
])
def test_bad_arguments_exit_2(command: str, argv: list[str], message: str, tmp_path: Path,
                              capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["experiment", command, *argv, "--out", str(tmp_path / "out")])
    assert info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["architectures", "intervention"])
def test_missing_data_exits_1(command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture) -> None:
    import ndt_fast.data as data

    def no_network(raw: Path) -> None:
        raise OSError("no network in this test")

    monkeypatch.setattr(data, "_download_with_torchvision", no_network)
    monkeypatch.setattr(data, "_download_from_pypi", no_network)
    code = cli.main(["experiment", command, "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "out"),
                     "--no-progress"])
    assert code == 1
    assert "cannot load the data" in capsys.readouterr().err


def test_corruption_changes_only_its_window_and_its_share() -> None:
    images = torch.arange(64 * 4, dtype=torch.float32).reshape(64, 4)
    labels = torch.arange(64) % 10
    state = torch.get_rng_state()
    shuffle = intervention.WindowCorruption("label-shuffle", 0.5, 10, 20, seed=1)
    x, y = shuffle(9, images, labels)
    assert x is images and y is labels  # outside the window: the batch itself
    x, y = shuffle(10, images, labels)
    assert torch.equal(x, images)
    changed = (y != labels).sum().item()
    assert 0 < changed <= 32  # only the chosen half can change
    assert sorted(y.tolist()) == sorted(labels.tolist())  # a permutation: class counts kept
    noise = intervention.WindowCorruption("input-noise", 0.25, 0, 5, seed=1)
    x, y = noise(4, images, labels)
    assert torch.equal(y, labels) and (x != images).any(dim=1).sum().item() == 16
    assert torch.equal(torch.get_rng_state(), state)  # torch's global generator untouched
    with pytest.raises(ValueError, match="fraction"):
        intervention.WindowCorruption("label-shuffle", 1.5, 0, 1, seed=0)


def test_lasting_damage_rule() -> None:
    lasting = intervention.lasting
    assert lasting(Stat(0.01, 0.002, 3, 3)) is True  # 1 pp, far above 2 standard errors
    assert lasting(Stat(0.01, 0.02, 3, 3)) is False  # 1 pp, but within 2 standard errors (2.3 pp)
    assert lasting(Stat(0.0005, 0.0, 3, 3)) is False  # below the 0.1 pp floor
    assert lasting(Stat(0.002, math.nan, 1, 1)) is True  # one seed: the floor alone
    assert lasting(Stat(math.nan, math.nan, 0, 3)) is None
    windows = [(0, 1000), (2000, 5000), (6000, 7000)]
    assert intervention.early_and_late(windows) == ((2000, 5000), (6000, 7000))
    big, none = Stat(0.02, 0.001, 3, 3), Stat(0.0, 0.001, 3, 3)
    damages = {"window_0-1000": none, "window_2000-5000": big, "window_6000-7000": none}
    assert intervention.verdict(damages, windows)[0] == "reproduced"
    damages["window_6000-7000"] = big
    assert intervention.verdict(damages, windows)[0] == "not reproduced"
    assert intervention.verdict({"window_0-1000": big}, [(0, 1000)])[0] == "not measurable as stated"


def test_rank_agreement_and_verdict() -> None:
    table = pd.DataFrame({"seed": [0, 0, 0, 1, 1, 1],
                          "early_expansion": [1.0, 2.0, 3.0, 1.0, 2.0, 3.0],
                          "test_accuracy": [0.90, 0.95, 0.97, 0.97, 0.95, 0.90]})
    rho = architectures.rank_agreement(table)["rho"].tolist()
    assert rho == pytest.approx([1.0, -1.0])
    assert architectures.verdict(Stat(0.75, 0.3, 2, 2))[0] == "reproduced"
    assert architectures.verdict(Stat(0.0, 1.4, 2, 2))[0] == "not reproduced"
    assert architectures.verdict(Stat(math.nan, math.nan, 0, 2))[0] == "not measurable as stated"


def test_mlp_shapes_and_names() -> None:
    model = architectures.MLP((784, 256, 256, 128, 10))
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    assert len(model.tracked_layers()) == 4
    assert architectures.layer_names((784, 512, 256, 10)) == ["Layer1_784-512", "Layer2_512-256", "Layer3_256-10"]
    assert architectures.dimensionality_layer((784, 256, 128, 10)) == "Layer2_256-128"
    with pytest.raises(ValueError, match="widths"):
        architectures.MLP((784,))
