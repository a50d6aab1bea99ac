"""Markdown validity table: ndt_fast's default jump rule beside ndt's JumpDetector(z=3).

    python benchmarks/validity_table.py [--seeds 10] [--length 2000] [--detail] [> table.md]

Runs both detectors on ``ndt_fast.validity.standard_fixtures`` (seeds 0 … seeds−1, each fixture
``length`` samples) and prints recall, false positives per 1000 samples per fixture kind and the
verdict side by side; ``--detail`` adds each detector's per-kind table. Then runs ndtracker's own
harness (``ndt.validity.validate_detector`` on ``ndt.validity.standard_battery()``) on both.
"""

from __future__ import annotations

import argparse
import time

from ndt_fast import validity as V


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="fixtures per kind (seeds 0 … N-1)")
    parser.add_argument("--length", type=int, default=2000, help="samples per fixture")
    parser.add_argument("--detail", action="store_true", help="also print each detector's per-kind table")
    args = parser.parse_args()

    fixtures = V.standard_fixtures(range(args.seeds), length=args.length)
    detectors = [V.default_detector(), V.ndt_detector()]
    reports, seconds = [], []
    for detector in detectors:
        start = time.perf_counter()
        reports.append(V.validate_detector(detector, fixtures))
        seconds.append(time.perf_counter() - start)

    print(f"## Jump-detector validity: {args.seeds} seeds (0-{args.seeds - 1}) × {args.length} samples per kind\n")
    print(
        f"Noise σ = 1 everywhere; planted steps ±{V.DEFAULT_STEP_SIZE:g}σ (single_step: 1 per fixture, "
        f"multi_step: 5, ≥ 50 apart); drift 0.05σ / sample; AR(1) φ = 0.9; Student-t 3 dof. A detection "
        f"within {V.DEFAULT_TOLERANCE} samples of a planted step finds it; every other one is a false "
        f"positive (FP). VALID: recall ≥ {V.MIN_RECALL:g} and ≤ {V.MAX_FP_PER_1000:g} FP / 1000 samples "
        "on every kind.\n"
    )
    print(V.comparison_table(*reports))
    print(
        "\n(reference loops, "
        + ", ".join(f"{r.detector_name}: {s:.1f} s" for r, s in zip(reports, seconds))
        + f", for {len(fixtures) * args.length} samples)"
    )
    if args.detail:
        for report in reports:
            print("\n" + report.table())

    print("\n## ndtracker's own harness (ndt.validity.standard_battery(), its verdict rule)\n")
    try:
        import ndt.validity as ndt_validity
        from ndt.core.jump_detector import JumpDetector as NdtJumpDetector
    except ImportError:
        print("ndtracker is not installed: skipped")
        return
    theirs = ndt_validity.jump_detector_as_callable(NdtJumpDetector(z_threshold=3.0))
    print("| detector | mean recall | false positives on null controls | verdict |")
    print("|---|---:|---:|---|")
    for name, detector in ((reports[0].detector_name, detectors[0]), ("ndt JumpDetector(z=3), ndt's own", theirs)):
        r = ndt_validity.validate_detector(detector, ndt_validity.standard_battery(), name=name)
        print(f"| {name} | {r.mean_recall:.2f} | {r.false_positives_on_null} | {'VALID' if r.valid else 'NOT VALID'} |")


if __name__ == "__main__":
    main()
