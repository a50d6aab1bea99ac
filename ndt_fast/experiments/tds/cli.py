"""The command: its options, their checks, and the run (train each seed, then measure, draw and
write everything). The options and checks shared by every training experiment
(:func:`add_training_arguments`, :func:`validate_training_args`) live here too."""

from __future__ import annotations

import argparse
import platform
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from ndt_fast.experiments.tds.article import (
    ARTICLE_EVERY, ARTICLE_STEPS, CLAIMS_JSON, CLAIMS_MD, JUMPS_CSV, RESULTS_CSV, RUN_FILE, SEED_FILES,
    load_training_data)
from ndt_fast.experiments.tds.claims import _aggregate_readings, evaluate_claims, readings
from ndt_fast.experiments.tds.figures import write_figures
from ndt_fast.experiments.tds.report import summary, write_claims, write_jumps_csv
from ndt_fast.experiments.tds.training import SeedRun, train_seed
from ndt_fast.jumps import JumpDetector

#: One line for ``--help`` and ``ndt-fast reproduce --help``.
SUMMARY = ("Reproduce the TDS article's experiment (MLP 784-256-128-10 on MNIST, 8000 steps, layers sampled "
           "every 5 steps) with ndt_fast and check its claims.")
EPILOG = ("Writes into OUT: run.h5 (streamed while training), results.csv, jumps.csv, fig2-fig5 PNGs, claims.md "
          "and claims.json (each claim of the article, what this run measured, and a verdict).")


def positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1 (ArgumentTypeError naming the value otherwise)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {value}")
    return value


def add_training_arguments(parser: argparse.ArgumentParser, out: str, seeds: int = 1) -> None:
    """The options of every training experiment: --steps --freq --seeds --device --data --out
    --threads --overwrite --no-progress (``out``, ``seeds``: the defaults of --out and --seeds)."""
    from ndt_fast.data import default_data_root

    parser.add_argument("--steps", type=positive_int, default=ARTICLE_STEPS,
                        help=f"training steps (default {ARTICLE_STEPS}, the article's)")
    parser.add_argument("--freq", type=positive_int, default=ARTICLE_EVERY,
                        help=f"sample the layers every FREQ steps (default {ARTICLE_EVERY}, the article's)")
    parser.add_argument("--seeds", type=positive_int, default=seeds,
                        help=f"run seeds 0..N-1, each into OUT/seed<k>/; claims.md aggregates mean ± sd (default {seeds})")
    parser.add_argument("--device", default="cpu",
                        help="torch device for training: cpu, cuda, cuda:1, … or auto (default cpu)")
    parser.add_argument("--data", type=Path, default=None,
                        help="directory holding MNIST/raw/ (torchvision's layout); MNIST is downloaded there "
                             f"if missing (default: $NDT_FAST_DATA, else {default_data_root()})")
    parser.add_argument("--out", type=Path, default=Path(out),
                        help=f"output directory (default ./{out})")
    parser.add_argument("--threads", type=positive_int, default=None,
                        help="torch.set_num_threads(THREADS) (default: torch's default, "
                             f"{torch.get_num_threads()} here)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the files of an earlier run in OUT (otherwise an existing run is refused)")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="no progress bar (the summary is still printed)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's options (shared by ``python -m ndt_fast.experiments.tds`` and ``ndt-fast``)."""
    add_training_arguments(parser, out="tds_reproduction")


def _seed_dirs(out: Path, seeds: int) -> list[Path]:
    return [out] if seeds == 1 else [out / f"seed{k}" for k in range(seeds)]


def validate_training_args(args: argparse.Namespace, parser: argparse.ArgumentParser,
                           earlier_run_files: Sequence[Path] = ()) -> None:
    """Check --device and --out (``parser.error``, exit status 2, on bad input); sets
    ``args.device`` to the parsed device's name. Without --overwrite, any of
    ``earlier_run_files`` that exists is refused (an earlier run's output)."""
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError) as error:
        parser.error(f"argument --device: not a torch device: {args.device!r} ({error})")
    if parsed.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"argument --device: {args.device!r} requested but CUDA is not available")
    if parsed.type not in ("cpu", "cuda"):
        parser.error(f"argument --device: only cpu and cuda are supported, got {args.device!r}")
    args.device = str(parsed)
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"argument --out: {str(args.out)!r} exists and is not a directory")
    if not args.overwrite:
        existing = [path for path in earlier_run_files if path.exists()]
        if existing:
            parser.error(f"argument --out: {str(existing[0])!r} already exists (an earlier run); "
                         "pass --overwrite to replace it, or choose another --out")


def validate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Check what argparse cannot; ``parser.error`` (exit status 2) on bad input."""
    # this layout's run files, and the claims an earlier run with another --seeds left in OUT
    earlier = [d / RUN_FILE for d in _seed_dirs(args.out, args.seeds)]
    earlier += [args.out / name for name in (RUN_FILE, CLAIMS_MD, CLAIMS_JSON)]
    validate_training_args(args, parser, list(dict.fromkeys(earlier)))


def command_parser(command: ModuleType, prog: str | None = None) -> argparse.ArgumentParser:
    """The parser of an experiment module (its ``SUMMARY``, ``EPILOG`` and ``add_arguments``)."""
    parser = argparse.ArgumentParser(prog=prog, description=command.SUMMARY, epilog=command.EPILOG)
    command.add_arguments(parser)
    return parser


def command_main(command: ModuleType, argv: Sequence[str] | None, prog: str) -> int:
    """``python -m <experiment>``: parse, validate (exit 2 on bad input), run; the exit status."""
    parser = command_parser(command, prog)
    args = parser.parse_args(argv)
    command.validate(args, parser)
    return int(command.run(args))


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    return command_parser(sys.modules[__name__], prog)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m ndt_fast.experiments.tds``: parse, validate (exit 2 on bad input), run."""
    return command_main(sys.modules[__name__], argv, "python -m ndt_fast.experiments.tds")


def run_context(args: argparse.Namespace, data: str, files: Sequence[str]) -> dict[str, Any]:
    """The run's configuration and environment, as claims.json's ``context``."""
    import ndt_fast

    return {"steps": args.steps, "horizon": min(args.steps, ARTICLE_STEPS), "freq": args.freq,
            "seeds": args.seeds, "device": args.device,
            "threads": torch.get_num_threads(), "data": data, "torch": torch.__version__,
            "ndt_fast": ndt_fast.__version__, "python": platform.python_version(),
            "date": time.strftime("%Y-%m-%d %H:%M %Z"), "files": list(files)}


def prepare_out(out: Path, dirs: Sequence[Path], overwrite: bool, own_files: Sequence[str]) -> None:
    """Create ``out`` and ``dirs``; with ``overwrite``, remove ``own_files`` from each (only the
    command's own files, never the rest of the folder)."""
    # OUT itself too: an earlier single-seed run's files must not sit beside a multi-seed run's claims
    for d in dict.fromkeys([out, *dirs]):
        d.mkdir(parents=True, exist_ok=True)
        if overwrite:
            for name in own_files:
                path = d / name
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()


def _load_data(args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor, str]:
    return load_training_data(args.data, args.device)


def run(args: argparse.Namespace) -> int:
    """Run the experiment for validated ``args`` (see :func:`add_arguments`); returns the exit
    status: 0, 1 (the data could not be loaded) or 130 (interrupted; run files closed)."""
    from ndt_fast.data import MnistError
    from ndt_fast.storage import export_to_csv

    start = time.perf_counter()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        images, labels, data = _load_data(args)
    except (MnistError, FileNotFoundError, ValueError, OSError) as error:
        print(f"ndt-fast reproduce tds: cannot load the training data: {error}", file=sys.stderr)
        return 1
    dirs = _seed_dirs(args.out, args.seeds)
    prepare_out(args.out, dirs, args.overwrite, SEED_FILES)  # (--overwrite removes an earlier run only once the data is here)
    timings = {"data": time.perf_counter() - start}
    runs: list[SeedRun] = []
    try:
        for seed, out_dir in enumerate(dirs):
            runs.append(train_seed(args, seed, images, labels, out_dir))
    except KeyboardInterrupt:
        where = dirs[len(runs)] / RUN_FILE
        print(f"\ninterrupted during seed {len(runs)}: {where} is closed and readable with ndt_fast.load "
              "(no figures or claims were written: they come after the last seed)", file=sys.stderr)
        return 130
    analysis_start = time.perf_counter()
    files: list[Path] = []
    per_seed_readings = []
    all_rows = []
    detector = JumpDetector()  # ndt's defaults, as FastTracker's detect_jumps
    for r in runs:
        rows = evaluate_claims([r.data])
        all_rows.append(rows)
        reading = readings(r.data, detector)
        per_seed_readings.append(reading)
        export_to_csv(r.data.results, str(r.out_dir / RESULTS_CSV))
        write_jumps_csv(r.data, r.out_dir / JUMPS_CSV)
        figures = write_figures(r.data, r.out_dir, rows)
        names = [RUN_FILE, RESULTS_CSV, JUMPS_CSV, *(p.name for p in figures), CLAIMS_MD, CLAIMS_JSON]
        write_claims(r.out_dir, rows, {**run_context(args, data, names), "seeds": 1, "seed": r.seed},
                     _aggregate_readings([reading]))
        files += [r.out_dir / n for n in names]
    if len(runs) > 1:
        rows = evaluate_claims([r.data for r in runs])
        names = [f"seed{k}/" for k in range(len(runs))] + [CLAIMS_MD, CLAIMS_JSON]
        write_claims(args.out, rows, run_context(args, data, names), _aggregate_readings(per_seed_readings))
        files += [args.out / CLAIMS_MD, args.out / CLAIMS_JSON]
    else:
        rows = all_rows[0]
    timings["analysis"] = time.perf_counter() - analysis_start
    timings["total"] = time.perf_counter() - start
    print(summary(args, runs, rows, timings, data, files))
    return 0
