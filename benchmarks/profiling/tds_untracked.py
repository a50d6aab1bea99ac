"""The TDS reproduction's training loop without tracking: `ndt_fast.experiments.tds.train_seed`
with FastTracker replaced by a no-op, 8000 steps (or --steps), printing ms/step. The baseline
against which the tracked run's "training + tracking" time is read (benchmarks/results/tds-run-*.txt).
"""

import argparse
import tempfile
from pathlib import Path

import ndt_fast.experiments.tds as tds


class _NoTracker:
    """Takes FastTracker's place: same calls, no work."""

    def __init__(self, model, **kwargs):
        self.jump_detector = None
        self.write_error = None

    def log(self, *args, **kwargs):
        pass

    def get_results(self):
        return {}

    def close(self):
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8000)
    steps = parser.parse_args().steps
    args = tds.build_parser().parse_args(["--steps", str(steps), "--no-progress"])
    images, labels, _ = tds._load_data(args)
    import ndt_fast.tracker

    ndt_fast.tracker.FastTracker = _NoTracker  # train_seed imports it from there
    tds.training.find_jumps = lambda *a, **k: {}  # train_seed looks it up in tds.training
    run = tds.train_seed(args, 0, images, labels, Path(tempfile.mkdtemp()))
    print(f"untracked TDS loop: {steps} steps in {run.train_s:.1f} s = {run.train_s / steps * 1e3:.2f} ms/step")


if __name__ == "__main__":
    main()
