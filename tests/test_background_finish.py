"""FastTracker(background_finish=True): each host sample finished on a background thread.

The promises under test: the same records and jumps as finishing on the training thread, in the
same order (with windows, batched spectra, weights, a NaN layer, a run file); a finish still
running while training goes on reads the Grams and weights of its own step, not the next
forward's or the optimizer's; a finish that raises gives flagged rows in their place; with no
thread to run on, samples are finished on the training thread; results, jumps and sinks wait for
the sample in flight; ``close()`` stops the thread; ``on_jump`` runs on the training thread.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

import ndt_fast
from models import Switch, assert_same, fail_finish_at, mlp, run_python, steps_of, train
from ndt_fast import FastTracker
from ndt_fast._native import core
from ndt_fast.storage import load
from ndt_fast.tracker import background

pytestmark = pytest.mark.usefixtures("torch_env")

OPTIONS = [
    {"sampling_frequency": 1},
    {"sampling_frequency": 5},
    {"sampling_frequency": 5, "window": 3},
    {"sampling_frequency": 1, "spectra_batch": 3},
    {"sampling_frequency": 2, "track_weights": True},
    {"sampling_frequency": 1, "nan_at": 7},
    {"sampling_frequency": 1, "max_rows": 10},
]


def finish_threads() -> list[str]:
    """The process's native finish threads (named by the worker; Linux's /proc)."""
    names = (Path(task, "comm").read_text().strip() for task in Path("/proc/self/task").iterdir())
    return [name for name in names if name == "ndt_fast-finish"]


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_same_records_and_jumps_as_the_training_thread(seed, options):
    reference = train(seed, 41, **options)
    tracker = train(seed, 41, background_finish=True, **options)
    assert tracker.background_finish and not reference.background_finish
    assert_same(tracker.get_results(), reference.get_results())
    pd.testing.assert_frame_equal(tracker.get_jumps(), reference.get_jumps())
    assert tracker.jumps == reference.jumps
    assert tracker.errors == reference.errors
    reference.close(), tracker.close()


def test_a_run_file_holds_the_same_samples(seed, tmp_path):
    reference = train(seed, 23, output=tmp_path / "sync.h5")
    tracker = train(seed, 23, background_finish=True, output=tmp_path / "background.h5")
    reference.close(), tracker.close()
    got, want = load(tmp_path / "background.h5"), load(tmp_path / "sync.h5")
    assert_same(dict(got), dict(want))
    pd.testing.assert_frame_equal(got.jumps, want.jumps)


class HeldJobs:
    """Holds every sample handed to the background thread until ``release()``: what the training
    thread does in the meantime (the next forward, an in-place weight change) happens,
    deterministically, before the finish reads its inputs — the worst case for a finish that
    must read only what it was handed. Meanwhile the sample counts as in flight, and a result
    that waits for it is a test error (it would deadlock)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.held: list[tuple[background.BackgroundFinish, tuple, dict]] = []
        self.holding = True
        submit, result = background.BackgroundFinish.submit, background.BackgroundFinish.result
        in_flight = background.BackgroundFinish.in_flight.fget
        self._submit = submit

        def held_submit(finish, *args, **kwargs):
            if not self.holding:
                return submit(finish, *args, **kwargs)
            self.held.append((finish, args, kwargs))
            return True

        def held_result(finish, wait):
            if self._holds(finish):
                assert not wait, "a result waited for a held sample: release() it first"
                return None
            return result(finish, wait)

        monkeypatch.setattr(background.BackgroundFinish, "submit", held_submit)
        monkeypatch.setattr(background.BackgroundFinish, "result", held_result)
        monkeypatch.setattr(background.BackgroundFinish, "in_flight",
                            property(lambda finish: self._holds(finish) or in_flight(finish)))

    def _holds(self, finish: background.BackgroundFinish) -> bool:
        return any(held is finish for held, _, _ in self.held)

    def release(self) -> None:
        """Hand the held samples to the real thread, and stop holding."""
        held, self.held, self.holding = self.held, [], False
        for finish, args, kwargs in held:
            assert self._submit(finish, *args, **kwargs)


def test_a_running_finish_reads_its_own_grams_and_weights(seed, monkeypatch):
    """While step 0's finish is held, the next forward fills the layer's Gram again and the weight
    changes in place (as an optimizer step would): step 0's record must not see either. Without
    the spare accumulators or the weight copy it would."""
    torch.manual_seed(seed)
    x0, x1 = torch.randn(16, 8), torch.randn(16, 8) * 5
    records = {}
    for mode in (False, True):
        torch.manual_seed(seed)
        model = mlp(8, 6)
        torch.nn.init.normal_(model[0].weight)
        held = HeldJobs(monkeypatch) if mode else None
        tracker = FastTracker(model, sampling_frequency=1, track_weights=True, background_finish=mode)
        model(x0)
        tracker.log(0, 1.0)
        model(x1)  # the step-1 forward, into the layer's (spare) accumulator
        with torch.no_grad():
            model[0].weight.add_(torch.randn_like(model[0].weight))
        if held is not None:
            assert tracker._sink.in_flight
            held.release()
        tracker.log(1, 1.0)
        records[mode] = tracker.get_results("Linear_0")
        tracker.close()
        monkeypatch.undo()
    assert_same({"l": records[True]}, {"l": records[False]})


def test_a_deferred_gram_measures_the_output_before_an_in_place_op(seed):
    """The Gram is computed on the background thread from a copy taken in the hook: a ReLU(inplace)
    after the tracked Linear does not change what is measured."""
    results = {}
    for mode in (False, True):
        torch.manual_seed(seed)
        model = torch.nn.Sequential(torch.nn.Linear(12, 10), torch.nn.ReLU(inplace=True), torch.nn.Linear(10, 4))
        tracker = FastTracker(model, layers=[model[0]], layer_names=["l0"], background_finish=mode)
        assert tracker._capture.defer_grams is mode
        for step in range(6):
            model(torch.randn(16, 12))
            tracker.log(step, 0.0)
        results[mode] = tracker.get_results()
        tracker.close()
    assert_same(results[True], results[False])


@pytest.mark.parametrize("options", [{"background_finish": True}, {"spectra_batch": 3},
                                     {"background_finish": True, "spectra_batch": 3}])
def test_a_failing_finish_gives_flagged_rows_in_order(seed, monkeypatch, caplog, options):
    """The error path (a sample recorded through record() with flagged rows) overtakes neither
    the sample in the background nor the samples waiting for their batched spectra."""
    tracker = train(seed, 0, **options)
    fail_finish_at(tracker, monkeypatch, 3)
    torch.manual_seed(seed)
    with caplog.at_level(logging.ERROR, logger="ndt_fast"):
        for step in range(5):
            tracker.model(torch.randn(24, 20))
            tracker.log(step, 0.0)
        df = tracker.get_results("l0")
    assert df["step"].tolist() == [0, 1, 2, 3, 4]
    assert df["flags"].tolist() == [0, 0, ndt_fast.FLAG_TRACKER_ERROR, 0, 0]
    assert tracker.errors["l0"] == 1
    assert ("accumulator is empty" if options.get("background_finish") else "injected") in caplog.text
    tracker.close()


def test_without_a_thread_samples_are_finished_on_the_training_thread(seed, monkeypatch, caplog):
    class NoThreads:
        """The native module, except that its worker cannot make a thread."""

        class FinishWorker:
            def start(self):
                raise RuntimeError("Resource temporarily unavailable")

        def __getattr__(self, name):
            return getattr(core, name)

    monkeypatch.setattr(background, "core", NoThreads())
    reference = train(seed, 12)
    with caplog.at_level(logging.WARNING, logger="ndt_fast"):
        tracker = train(seed, 12, background_finish=True)
    assert_same(tracker.get_results(), reference.get_results())
    assert caplog.text.count("no thread to finish samples on") == 1
    reference.close(), tracker.close()


def test_results_wait_for_the_sample_in_flight_and_close_stops_the_thread(seed, monkeypatch):
    held = HeldJobs(monkeypatch)
    got = []
    tracker = train(seed, 0, background_finish=True, on_sample=lambda sample: got.append(sample.step))
    torch.manual_seed(seed)
    for step in range(3):
        tracker.model(torch.randn(24, 20))
        tracker.log(step, 0.0)
        if step == 0:
            held.release()
    assert tracker._sink.in_flight
    assert tracker.get_results("l0")["step"].tolist() == [0, 1, 2]
    assert tracker.flush_sinks(timeout=30) and got == [0, 1, 2]
    assert finish_threads()
    tracker.close()
    assert not finish_threads()


def test_on_jump_comes_on_the_training_thread_at_most_one_log_later(seed):
    """A planted collapse (rank 16 → 1 at step 300): the same jumps as without the background
    thread, announced on the training thread, at the same log() or the next one."""
    seen = {}
    for mode in (False, True):
        torch.manual_seed(seed)
        lin, switch = torch.nn.Linear(16, 16), Switch(16)
        model = torch.nn.Sequential(lin, switch)
        calls, now = [], [0]
        tracker = FastTracker(model, layers=[lin, switch], layer_names=["lin", "switch"], background_finish=mode,
                              on_jump=lambda layer, jump: calls.append((layer, jump, threading.current_thread(),
                                                                        now[0])))
        for step in range(400):
            switch.rank = 1 if step >= 300 else 16
            model(torch.randn(32, 16))
            now[0] = step
            tracker.log(step, 0.0)
        tracker.close()
        assert all(thread is threading.main_thread() for _, _, thread, _ in calls)
        seen[mode] = calls
    assert [c[:2] for c in seen[True]] == [c[:2] for c in seen[False]]
    assert any(jump.step >= 300 for _, jump, _, _ in seen[False])
    assert all(0 <= late[3] - early[3] <= 1 for late, early in zip(seen[True], seen[False]))


class Cast(nn.Module):
    """Its input, rounded to a quarter and cast to ``dtype`` (an integer output has no view the
    core reads: it is measured in float32)."""

    def __init__(self, dtype: torch.dtype) -> None:
        super().__init__()
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * 4).round().to(self.dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.int32])
def test_outputs_the_core_cannot_read_as_float32_are_measured_as_on_the_training_thread(seed, dtype):
    """A float16 output is read as it is, an integer one converted to float32 first, whether its
    Gram is computed in the hook or deferred to the background thread."""
    results = {}
    for mode in (False, True):
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Linear(12, 10), Cast(dtype))
        tracker = FastTracker(model, layers=[model[1]], layer_names=["l"], background_finish=mode)
        for step in range(5):
            model(torch.randn(16, 12))
            tracker.log(step, 0.0)
        results[mode] = tracker.get_results()
        tracker.close()
    assert results[False]["l"]["flags"].eq(0).all() and len(results[False]["l"]) == 5
    assert_same(results[True], results[False])


@pytest.mark.parametrize("sampling_frequency", [1, 3])
def test_a_deferred_layer_has_one_gram_accumulator_not_two(seed, sampling_frequency):
    """Between hand-overs a deferred layer's hooks only copy, so the one accumulator circulates:
    every sample's Grams are computed into the same object per layer (the previous sample's, taken
    back before the next hand-over), not into one in flight plus a spare of the same size."""
    def ten_forwards(tracker: FastTracker) -> FastTracker:
        torch.manual_seed(seed)
        for step in range(10):
            tracker.model(torch.randn(24, 20))
            tracker.log(step, 0.0)
        return tracker

    tracker = train(seed, 0, background_finish=True, sampling_frequency=sampling_frequency)
    handed: list[list[int]] = []
    submit = tracker._sink._background.submit

    def recording_submit(finisher, ring, args, refills, keep):
        handed.append([id(accumulator) for accumulator in args[4]])
        return submit(finisher, ring, args, refills, keep)

    tracker._sink._background.submit = recording_submit
    ten_forwards(tracker)
    assert len(handed) == len(range(0, 10, sampling_frequency)) and len({tuple(ids) for ids in handed}) == 1
    assert all(slot.accumulator is None for slot in tracker._slots)  # (the one is with the sink)
    reference = ten_forwards(train(seed, 0, sampling_frequency=sampling_frequency))
    assert_same(tracker.get_results(), reference.get_results())
    tracker.close(), reference.close()


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_background_finish_must_be_a_bool(value):
    with pytest.raises(TypeError, match="background_finish"):
        FastTracker(mlp(4, 3), background_finish=value)


def test_a_script_that_never_closes_still_writes_the_sample_in_flight(tmp_path):
    """No close(), no get_results(): at exit the sample still running on the background thread
    (the last step's, a 900 × 900 Gram and its spectrum: tenths of a second where the earlier
    steps' 8 × 8 take microseconds) is recorded before the run file is closed."""
    path = tmp_path / "run.h5"
    script = (
        "import time\nimport torch\nfrom torch import nn\nfrom ndt_fast import FastTracker\n"
        "model = nn.Sequential(nn.Linear(20, 1000), nn.ReLU(), nn.Linear(1000, 4))\n"
        f"tracker = FastTracker(model, output={str(path)!r}, background_finish=True)\n"
        "for step in range(7):\n    model(torch.randn(900 if step == 6 else 8, 20))\n"
        "    tracker.log(step, 1.0)\n"
        "time.sleep(0.001)\n"
        "print(tracker._sink._background._worker.result(False) is None)  # still running\n"
    )
    done = run_python(script)
    assert done.stdout.strip() == "True"  # step 6 was running on the background thread at the end
    assert "Exception ignored" not in done.stderr and "Error" not in done.stderr, done.stderr
    assert steps_of(path) == [list(range(7))] * 2


def test_the_native_finish_refuses_refills_that_do_not_match_its_accumulators():
    """The binding's ``refills`` (the deferred Grams): one per accumulator or none, else a
    ValueError naming it, before anything is computed or recorded."""
    from ndt_fast._native import core

    finisher = core.SampleFinisher(2, eps=1e-10, energy_threshold=0.9, center=False, metrics=0b111111,
                                   weight_metrics=0b111111, track_weights=False, detect_jumps=False)
    accumulators = [core.GramAccumulator(4, "feature"), core.GramAccumulator(4, "feature")]
    with pytest.raises(ValueError, match="refills"):
        finisher.finish(None, 0, 0.0, 0.0, [0, 1], accumulators, [None, None], [], 1, [None])
    assert finisher.pending == 0
