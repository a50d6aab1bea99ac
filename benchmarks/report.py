"""Markdown tables from a pytest-benchmark JSON file, one table per benchmark group.

    python benchmarks/report.py benchmarks/results/cpu-<date>.json [> table.md]

Each row: the implementation (``extra_info["label"]``, else the test name), its median and
interquartile range in µs (a wide IQR flags a noisy measurement), and ``median / ndt_fast
median``, where "ndt_fast" is the group's row marked ``role="subject"``. For a baseline row that
number is baseline ÷ ndt_fast, i.e. how many times faster ndt_fast is; for another ndt_fast
variant (solver="own", trace-only) it is variant ÷ ndt_fast. Within a group the subject comes
first, then variants, then baselines, each in the order they ran; groups are sorted naturally
(n=64 before n=128). Rows whose threads lacked free cores (see conftest.measure) get a †.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

ROLE_ORDER = {"subject": 0, "variant": 1, "reference": 2, "baseline": 3}
# A row is marked when other processes left it fewer free cores than it had threads, give or
# take this many cores (the OS and pytest itself use a little).
SLACK_CORES = 0.15


def _natural_key(text: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _format_us(seconds: float) -> str:
    us = seconds * 1e6
    if us < 10:
        return f"{us:.2f}"
    if us < 1000:
        return f"{us:.1f}"
    return f"{us:,.0f}"


def _row_order(item: tuple[int, dict[str, Any]]) -> tuple[int, int]:
    index, bench = item
    return ROLE_ORDER.get(bench.get("extra_info", {}).get("role"), len(ROLE_ORDER)), index


def _disturbed(bench: dict[str, Any], machine: dict[str, Any]) -> bool:
    """Whether other processes (``extra_info["other_cores"]``, see conftest.measure) took cores
    the benchmark's threads needed."""
    info = bench.get("extra_info", {})
    other = info.get("other_cores")
    cores = machine.get("threads", {}).get("os_cpu_count") or machine.get("cpu", {}).get("count")
    if other is None or not cores:
        return False
    threads = info.get("threads") or machine.get("threads", {}).get("default") or cores
    return other > cores - threads + SLACK_CORES


def _row_name(bench: dict[str, Any], machine: dict[str, Any]) -> str:
    label = bench.get("extra_info", {}).get("label") or bench["name"]
    return f"`{label}`" + (" †" if _disturbed(bench, machine) else "")


def _header(data: dict[str, Any]) -> list[str]:
    machine = data.get("machine_info", {})
    cpu = machine.get("cpu", {})
    commit = data.get("commit_info", {})
    parts = []
    if cpu.get("brand_raw"):
        parts.append(f"CPU {cpu['brand_raw']} ({cpu.get('count', '?')} logical cores)")
    threads = machine.get("threads", {})
    if threads:
        parts.append(f"default threads {threads.get('default')}")
    libraries = machine.get("libraries", {})
    if libraries:
        parts.append(", ".join(f"{name} {version}" for name, version in libraries.items()))
    ndt_fast = machine.get("ndt_fast", {})
    if ndt_fast:
        parts.append(f"ndt_fast {ndt_fast.get('version')} (OWN_SOLVER_MAX_DIM={ndt_fast.get('own_solver_max_dim')})")
    if commit.get("id"):
        dirty = " (dirty tree)" if commit.get("dirty") else ""
        parts.append(f"commit {commit['id'][:10]}{dirty}")
    if data.get("datetime"):
        parts.append(f"results written {data['datetime'][:19].replace('T', ' ')} UTC")
    lines = [f"_{'; '.join(parts)}._", ""] if parts else []
    return lines + [
        "_median / ndt_fast: the row's median divided by the median of the group's ndt_fast row "
        "(the first one); above 1 means ndt_fast is that many times faster._",
        "",
    ]


def render(data: dict[str, Any], *, header: bool = True) -> str:
    groups: dict[str, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    for index, bench in enumerate(data.get("benchmarks", [])):
        groups[bench.get("group") or bench["name"]].append((index, bench))

    lines = _header(data) if header else []
    machine = data.get("machine_info", {})
    disturbed = [b for b in data.get("benchmarks", []) if _disturbed(b, machine)]
    if disturbed:
        lines += [
            f"_†: while this row was measured, other processes kept busy cores its threads needed "
            f"({len(disturbed)} of {len(data['benchmarks'])} rows); its time is not trustworthy._",
            "",
        ]
    for group in sorted(groups, key=_natural_key):
        rows = [bench for _, bench in sorted(groups[group], key=_row_order)]
        by_role: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for b in rows:
            by_role[b.get("extra_info", {}).get("role", "")].append(b)
        # Overhead groups carry an untracked "reference" row: every row is read against it.
        # Otherwise every row is read against the ndt_fast ("subject") row.
        anchor_rows = by_role.get("reference") or by_role.get("subject")
        reference = anchor_rows[0]["stats"]["median"] if anchor_rows else None
        column = "× untracked" if by_role.get("reference") else "median / ndt_fast"
        lines += [
            f"### {group}",
            "",
            f"| implementation | median (µs) | IQR (µs) | {column} |",
            "|---|---:|---:|---:|",
        ]
        for bench in rows:
            stats = bench["stats"]
            ratio = f"{stats['median'] / reference:.2f}×" if reference else "–"
            name = _row_name(bench, machine)
            lines.append(f"| {name} | {_format_us(stats['median'])} | {_format_us(stats['iqr'])} | {ratio} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("json", type=Path, help="file written by pytest --benchmark-json=...")
    parser.add_argument("--no-header", action="store_true", help="omit the machine/commit line")
    args = parser.parse_args(argv)
    data = json.loads(args.json.read_text(encoding="utf-8"))
    if not data.get("benchmarks"):
        print(f"{args.json}: no benchmarks in this file", file=sys.stderr)
        return 1
    sys.stdout.write(render(data, header=not args.no_header))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
