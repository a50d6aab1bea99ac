"""distributed="global" / "local" with real torch.distributed gloo processes under DDP.

Each test starts 2 or 3 ranks of tests/distributed_child.py (subprocesses on loopback) and checks
rank 0's run file against the metrics of the concatenated global batch computed in this process
from the exact activations every rank saw (tests/reference.py: a float64 SVD).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

import ndt_fast
from ndt_fast import FastTracker
from ndt_fast._schema import FLAG_TRACKER_ERROR
from ndt_fast._buffer import torch_matrix_view
from ndt_fast._native import core
from ndt_fast._schema import gram_side
from reference import METRIC_NAMES, reference_metrics

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not built")

# Metrics that take square roots of eigenvalues (σ = √λ): sensitive to the round-off of zero eigenvalues.
SQRT_METRICS = ("participation_ratio", "nuclear_norm_ratio", "effective_rank")
CHILD = os.path.join(os.path.dirname(__file__), "distributed_child.py")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(tmp_path, *, world: int, model: str = "mlp", steps: int = 60, sampling: int = 5,
              mode: str | None = "global", kill_rank: int | None = None, kill_step: int | None = None,
              timeout: float = 60, mismatch: str | None = None, wrap: str = "ddp",
              track_weights: bool = False) -> list[dict]:
    config = {"world": world, "port": free_port(), "out": str(tmp_path), "model": model, "steps": steps,
              "sampling": sampling, "mode": mode, "kill_rank": kill_rank, "kill_step": kill_step,
              "timeout": timeout, "mismatch": mismatch, "wrap": wrap,
              "track_weights": track_weights}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(os.path.dirname(CHILD)),
                                                       os.environ.get("PYTHONPATH", "")]))
    procs = [subprocess.Popen([sys.executable, CHILD, str(path), str(rank)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for rank in range(world)]
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    for rank, (p, out) in enumerate(zip(procs, outputs)):
        if rank != kill_rank:
            assert p.returncode == 0, f"rank {rank} failed:\n{out}"
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) if r != kill_rank else None for r in range(world)]


def sqrt_round_off(sigma: np.ndarray, features: int) -> float:
    """How far round-off alone may move the σ-based metrics of a feature-side float64 Gram, relative:
    each eigenvalue λ = σ² carries an absolute error δ ≈ features·u·λmax (Gram formation and the
    eigensolver), so σ moves by up to min(√δ, δ / 2σ); the sum of those over Σσ, times 4 for the
    metrics that square or log the σ shares. A well-conditioned Gram gives ~1e-14; a rank-deficient
    one (d − rows zero eigenvalues, or a LayerNorm output) ~1e-8."""
    sigma = np.concatenate([sigma, np.zeros(max(features - len(sigma), 0))])
    delta = features * np.finfo(np.float64).eps * sigma[0] ** 2
    with np.errstate(divide="ignore"):
        moves = np.minimum(np.sqrt(delta), delta / (2 * sigma))
    return 4 * float(moves.sum() / sigma.sum())


def relative(got: float, want: float) -> float:
    return abs(got - want) / max(abs(want), 1e-300)


def one_process_metrics(matrix: np.ndarray) -> dict[str, float]:
    """The metrics one process computes from the float64 Gram of ``matrix`` on the side a single
    tracker takes (the smaller one)."""
    side, dim = gram_side(*matrix.shape)
    accumulator = core.GramAccumulator(dim, side)
    accumulator.add(torch_matrix_view(torch.from_numpy(np.ascontiguousarray(matrix))))
    record = core.metrics_of_accumulators([accumulator], eps=1e-10, energy_threshold=0.9, center=False,
                                          metrics=sum(core.METRIC_BITS.values()), solver="auto")[0]
    return dict(zip(core.RECORD_COLUMNS, record))


def global_reference(tmp_path, world: int, steps: int, sampling: int, layers: int) -> dict:
    """{(step, layer): (one process's metrics, float64 SVD reference, rows) of the ranks'
    activations stacked in rank order}, and the ranks' mean loss per step."""
    saved = [np.load(tmp_path / f"rank{r}.npz") for r in range(world)]
    reference = {}
    for step in range(0, steps, sampling):
        for layer in range(layers):
            matrix = np.concatenate([s[f"act_{step}_{layer}"] for s in saved])
            svd = reference_metrics(matrix)
            reference[(step, layer)] = (one_process_metrics(matrix), svd, matrix.shape[0],
                                        sqrt_round_off(svd.sigma, matrix.shape[1]))
    losses = np.mean([s["losses"] for s in saved], axis=0)
    return {"metrics": reference, "losses": losses}


@pytest.mark.parametrize(("world", "model", "wrap"), [(2, "mlp", "ddp"), (3, "mlp", "ddp"), (2, "transformer", "ddp"),
                                                     (2, "mlp", "fsdp")])
def test_global_metrics_equal_the_concatenated_batch(tmp_path, world, model, wrap):
    steps, sampling = 60, 5
    ranks = run_ranks(tmp_path, world=world, model=model, steps=steps, sampling=sampling, wrap=wrap)
    names = ranks[0]["layer_names"]
    expected = global_reference(tmp_path, world, steps, sampling, len(names))
    run = ndt_fast.load(tmp_path / "run.h5")  # one file, written by rank 0
    assert sorted(os.listdir(tmp_path)) == sorted(["config.json", "run.h5"] + [f"rank{r}.{e}" for r in range(world)
                                                                              for e in ("json", "npz")])
    assert run.metadata["tracker"]["distributed"] == {"mode": "global", "world_size": world}
    # Relative differences from one process. The ranks' summed Grams equal the one-process Gram of
    # every row up to summation order (~1e-16), so every metric must agree to 1e-10 — except the
    # σ-based ones where the Gram is (nearly) rank-deficient: its zero eigenvalues come out as
    # ±1e-16·λmax round-off whose square roots (~1e-8·σmax) enter them, in one process too (README,
    # "Distributed training"); there the bound is that round-off's own size (sqrt_round_off).
    worst = worst_svd = 0.0
    for layer, name in enumerate(names):
        frame = run[name]
        assert frame["step"].tolist() == list(range(0, steps, sampling))
        for _, row in frame.iterrows():
            one_process, svd, rows, round_off = expected["metrics"][(int(row["step"]), layer)]
            assert row["rows"] == rows  # the global batch's rows, uneven shards summed
            assert row["flags"] == 0
            for metric in (*METRIC_NAMES, "trace", "lambda_max"):
                bound = max(1e-10, round_off) if metric in SQRT_METRICS else 1e-10
                difference = relative(row[metric], one_process[metric])
                assert difference <= bound, (name, int(row["step"]), metric, difference, bound)
                worst = max(worst, difference / bound)
            for metric in METRIC_NAMES:
                worst_svd = max(worst_svd, relative(row[metric], svd[metric]))
            assert row["loss"] == pytest.approx(expected["losses"][int(row["step"])], rel=1e-12)
    # and the library's exactness bound against a float64 SVD of the stacked rows
    assert worst_svd <= 1e-5, worst_svd
    for r, state in enumerate(ranks):
        assert state["rank"] == r and state["world_size"] == world and state["mode"] == "global"
        assert state["layer_names"] == (["Linear_0", "Linear_1", "Linear_2"] if model == "mlp" else
                                        ["TransformerEncoderLayer_0", "TransformerEncoderLayer_1", "Linear_2"])
        # None on unsampled steps. On sampled ones: the first has a header round, then the
        # all-reduce of the summed Grams. Later ones one all-reduce, which also carries the rows of
        # the layers whose global batch has fewer rows than features (the MLP's first: d = 48) in a
        # slot per rank — plus a gather to rank 0 while a rank's rows outgrow that slot (the first
        # such sample, and whenever a shard is larger than any before: they vary here).
        counts = {int(step): n for step, n in state["per_step"].items()}
        assert all(n == 0 for step, n in counts.items() if step % sampling), counts
        sampled = [counts[s] for s in range(0, steps, sampling)]
        assert sampled[0] == 2 and set(sampled[1:]) <= {1, 2}, sampled
        if model == "mlp":
            assert sampled[1] == 2 and sampled[1:].count(1) >= len(sampled[1:]) // 2, sampled
        else:
            assert set(sampled[1:]) == {1}, sampled
        assert state["collectives"] == sum(counts.values())
        if r:
            assert state["output"] is None and all(n == 0 for n in state["rows"].values())


@pytest.mark.parametrize("wrap", ["ddp", "fsdp"])
def test_weights_are_measured_when_whole_and_flagged_when_sharded(tmp_path, wrap):
    """DDP replicates the weights: rank 0 measures them. FSDP shards them (DTensors): their metrics
    need the whole matrix, so the weight columns are NaN and the error is reported, while the
    activation rows are recorded as usual."""
    ranks = run_ranks(tmp_path, world=2, steps=20, sampling=5, wrap=wrap, track_weights=True)
    run = ndt_fast.load(tmp_path / "run.h5")
    for name in ranks[0]["layer_names"]:
        frame = run[name]
        assert len(frame) == 4 and np.isfinite(frame["stable_rank"]).all()
        assert np.isfinite(frame["weight_stable_rank"]).all() == (wrap == "ddp")
        assert (ranks[0]["errors"][name] > 0) == (wrap == "fsdp")


def test_local_mode_writes_one_file_per_rank(tmp_path):
    steps, sampling, world = 30, 5, 2
    ranks = run_ranks(tmp_path, world=world, mode="local", steps=steps, sampling=sampling)
    for r, state in enumerate(ranks):
        assert state["mode"] == "local" and state["collectives"] == 0
        assert state["output"] == str(tmp_path / f"run.rank{r}.h5")
        saved = np.load(tmp_path / f"rank{r}.npz")
        run = ndt_fast.load(tmp_path / f"run.rank{r}.h5")
        frame = run[state["layer_names"][0]]
        assert frame["step"].tolist() == list(range(0, steps, sampling))
        for _, row in frame.iterrows():  # this rank's own shard
            want = reference_metrics(saved[f"act_{int(row['step'])}_0"])
            assert row["stable_rank"] == pytest.approx(want["stable_rank"], rel=1e-10)
    assert not (tmp_path / "run.h5").exists()


def test_a_killed_rank_leaves_rank_zero_file_with_every_completed_sample(tmp_path):
    # Rank 1 dies after the optimizer step of sampled step 35, before its log(): rank 0's
    # collective of step 35 fails (gloo: connection closed), then DDP's next backward fails.
    steps, sampling, kill_step = 60, 5, 35
    ranks = run_ranks(tmp_path, world=2, steps=steps, sampling=sampling, kill_rank=1, kill_step=kill_step,
                      timeout=20)
    state = ranks[0]
    assert state["error"] is not None and state["last_finished"] == kill_step
    run = ndt_fast.load(tmp_path / "run.h5")
    for name in state["layer_names"]:
        frame = run[name]
        completed = frame[frame["flags"] == 0]
        assert completed["step"].tolist() == list(range(0, kill_step, sampling))
        assert np.isfinite(completed["stable_rank"]).all()
        # the sample whose collective failed is a flagged row, never a number
        failed = frame[frame["step"] == kill_step]
        assert len(failed) == 1 and int(failed["flags"].iloc[0]) & FLAG_TRACKER_ERROR
        assert np.isnan(failed["stable_rank"].iloc[0])


@pytest.mark.parametrize(("mismatch", "message"), [("layers", "every rank must track the same layers"),
                                                   ("sampling", "differ in ['sampling_frequency']")])
def test_ranks_that_disagree_are_refused_at_construction_on_every_rank(tmp_path, mismatch, message):
    ranks = run_ranks(tmp_path, world=2, model="transformer", mismatch=mismatch)
    for state in ranks:
        assert message in state["construct_error"]
        assert not state["file_exists"]  # refused before the run file was opened


def test_global_without_a_process_group_is_refused():
    model = torch.nn.Linear(3, 3)
    with pytest.raises(ValueError, match="initialized torch.distributed process group"):
        FastTracker(model, distributed="global")
    with pytest.raises(ValueError, match="distributed must be"):
        FastTracker(model, distributed="everywhere")


@pytest.fixture
def one_rank_group():
    """A real gloo process group of one rank in this process (destroyed afterwards)."""
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        yield
    finally:
        torch.distributed.destroy_process_group()


def test_bad_distributed_arguments_are_refused_by_name(one_rank_group):
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    with pytest.raises(ValueError, match="center=True is not supported with distributed='global'"):
        FastTracker(model, distributed="global", center=True)
    with pytest.raises(ValueError, match="device_path='auto' is not supported with distributed='global'"):
        FastTracker(model, distributed="global", device_path="auto")
    for bad in (0, -1.0, float("inf"), "10", True):
        with pytest.raises(ValueError, match="distributed_timeout must be a positive number"):
            FastTracker(model, distributed="global", distributed_timeout=bad)
    # one process: auto is nothing distributed; explicit modes work with one rank
    assert FastTracker(model).distributed is None


def test_one_rank_global_run_matches_a_plain_tracker_and_local_names_its_file(one_rank_group, tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(12, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    plain = FastTracker(model, sampling_frequency=2, window=2)  # the feature side, as "global" uses
    ranked = FastTracker(model, sampling_frequency=2, window=2, distributed="global")
    local = FastTracker(model, sampling_frequency=2, distributed="local", output=tmp_path / "run.h5")
    for step in range(10):
        loss = model(torch.randn(16, 12)).pow(2).mean()
        for tracker in (plain, ranked, local):
            tracker.log(step, loss)
    assert ranked.collectives == 5 + 1  # one per sample, plus the header round of the first
    for name, frame in plain.get_results().items():
        other = ranked.get_results(name)
        assert frame["step"].tolist() == other["step"].tolist() == [0, 2, 4, 6, 8]
        np.testing.assert_allclose(other[list(METRIC_NAMES)].to_numpy(), frame[list(METRIC_NAMES)].to_numpy(),
                                   rtol=1e-12)
    assert local.output == str(tmp_path / "run.rank0.h5") and local.distributed == "local"
    for tracker in (plain, ranked, local):
        tracker.close()
    assert ndt_fast.load(tmp_path / "run.rank0.h5").metadata["tracker"]["distributed"] == {
        "mode": "local", "world_size": 1, "rank": 0}


def test_lightning_ddp_fit_records_the_global_batch_on_rank_zero(tmp_path):
    """DimensionalityMonitor under Lightning's "ddp" strategy (2 CPU processes): every rank attaches
    a tracker, rank 0's run file holds the metrics of both ranks' rows."""
    pytest.importorskip("lightning")
    child = os.path.join(os.path.dirname(__file__), "lightning_ddp_child.py")
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    done = subprocess.run([sys.executable, child, str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    saved = [np.load(tmp_path / f"rank{r}.npz") for r in range(2)]
    assert all(str(s["mode"]) == "global" for s in saved)
    assert all(int(s["collectives"]) == 10 + 1 for s in saved)  # 10 samples, one header round
    frame = ndt_fast.load(tmp_path / "run.h5")["Linear_0"]
    assert frame["step"].tolist() == list(range(2, 21, 2))  # the monitor's steps: global_step after each
    for _, row in frame.iterrows():
        stacked = np.concatenate([s[f"step_{int(row['step'])}"] for s in saved])
        assert row["rows"] == len(stacked) == 32
        want = one_process_metrics(stacked)
        for metric in ("stable_rank", "participation_ratio_eig", "cumulative_90", "trace", "lambda_max"):
            assert relative(row[metric], want[metric]) <= 1e-10, metric


def test_hugging_face_trainer_under_torch_distributed_records_the_global_batch(tmp_path):
    """DimensionalityCallback in 2 HF Trainer processes (gloo, launched as torchrun would):
    every rank attaches, rank 0 records the global batch (2 ranks × 4 sequences × 16 tokens)."""
    pytest.importorskip("transformers")
    child = os.path.join(os.path.dirname(__file__), "hf_ddp_child.py")
    port = free_port()
    procs = [subprocess.Popen([sys.executable, child, str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env=dict(os.environ, RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2",
                                                  MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)))
             for r in range(2)]
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outputs)
    states = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [s["mode"] for s in states] == ["global", "global"] and [s["rank"] for s in states] == [0, 1]
    assert all(s["collectives"] == 3 + 1 for s in states)  # steps 4, 8, 12, plus the first header round
    assert states[0]["rows"] == {"GPT2Block_0": [128] * 3, "GPT2Block_1": [128] * 3}
    assert all(not rows for rows in states[1]["rows"].values())
    run = ndt_fast.load(tmp_path / "run.h5")
    assert run["GPT2Block_1"]["step"].tolist() == [4, 8, 12] and (run["GPT2Block_1"]["flags"] == 0).all()


def run_edge(tmp_path, scenario: str, world: int) -> list[dict]:
    child = os.path.join(os.path.dirname(__file__), "distributed_edge_child.py")
    port = free_port()
    procs = [subprocess.Popen([sys.executable, child, scenario, str(r), str(world), str(port), str(tmp_path)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(world)]
    outputs = [p.communicate(timeout=120)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-2000:] for o in outputs)  # nobody aborted
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(world)]


def test_a_feature_count_that_changes_on_one_rank_is_a_flagged_row_not_a_crash(tmp_path):
    # Every bucket's layout comes from state all ranks share: rank 1's wider Flatten at step 12
    # must not make the ranks' buffers differ (gloo would abort the process).
    ranks = run_edge(tmp_path, "dim_change", 2)
    assert all(not any(r["failed_after"]) for r in ranks)
    assert ranks[0]["steps"] == [10, 11, 12, 13]
    assert [bool(f) for f in ranks[0]["flags"]] == [False, False, True, False]
    assert ranks[0]["rows"] == [8, 8, 0, 8]  # the layer learns its count again and goes on


def test_a_layer_captured_on_some_ranks_only_is_recorded_counted_and_warned(tmp_path):
    ranks = run_edge(tmp_path, "partial", 2)
    assert ranks[0]["rows"] == [8, 4, 8, 8] and not any(ranks[0]["flags"])
    assert ranks[0]["partial"] == {"flat": 1}


def test_ranks_logging_different_steps_stop_the_reduction_on_every_rank(tmp_path):
    # Steps 9, 10, 11 sum to 3 × 10: the sum of squares tells them apart on every rank, so no rank
    # goes on alone into a collective the others never join.
    ranks = run_edge(tmp_path, "steps", 3)
    assert all(r["failed_after"] == [True] * 4 for r in ranks)
    assert all(ranks[0]["flags"]) and len(ranks[0]["flags"]) == 4
