"""The ``ndt-fast dashboard`` and ``ndt-fast report`` subcommands.

Each command object has ``validate(args, parser)`` and ``run(args) -> int``, the protocol
``ndt_fast.cli.main`` calls. Nothing heavy (h5py, plotly) is imported until a command runs, so
``ndt-fast --help`` and the other subcommands work without the ``dashboard`` extra. A file that
cannot be shown, a port in use, plotly missing: one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


def _run(command: str, action: Callable[[], None]) -> int:
    """Run ``action`` (which imports what it needs); a missing extra or a DashboardError is one
    line on stderr and exit status 1."""
    try:
        from ndt_fast.dashboard.server import DashboardError
    except ImportError as error:
        print(f'ndt-fast {command}: error: needs the dashboard extra (pip install "ndt-fast[dashboard]"): {error}',
              file=sys.stderr)
        return 1
    try:
        action()
    except DashboardError as error:
        print(f"ndt-fast {command}: error: {error}", file=sys.stderr)
        return 1
    return 0


class _Dashboard:
    @staticmethod
    def validate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
        if not 0 <= args.port <= 65535:
            parser.error(f"--port must be 0..65535, got {args.port}")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        def serve() -> None:
            from ndt_fast.dashboard.server import serve

            try:
                serve(args.runs, args.host, args.port, verbose=args.verbose)
            except KeyboardInterrupt:
                print("stopped", file=sys.stderr)

        return _run("dashboard", serve)


class _Report:
    @staticmethod
    def validate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
        if args.buckets < 50:
            parser.error(f"--buckets must be ≥ 50, got {args.buckets}")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        def report() -> None:
            from ndt_fast.dashboard.report import write_report

            print(f"wrote {write_report(args.runs, args.output, buckets=args.buckets)}", file=sys.stderr)

        return _run("report", report)


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Add ``dashboard`` and ``report`` to ``ndt-fast``'s subcommands."""
    dashboard = commands.add_parser(
        "dashboard", help="watch runs in the browser while they train (or after)",
        description="Serve a local web page of one or more run files (FastTracker(output=...)) that follows "
                    "them as they grow. Only the files named here are served.")
    dashboard.add_argument("runs", nargs="+", metavar="RUN.h5", help="run files, shown side by side")
    dashboard.add_argument("--port", type=int, default=8050, help="TCP port (default 8050; 0 = any free port)")
    dashboard.add_argument("--host", default="127.0.0.1",
                           help="address to listen on (default 127.0.0.1: this machine only)")
    dashboard.add_argument("--verbose", action="store_true", help="log every request on stderr")
    dashboard.set_defaults(_module=_Dashboard, _parser=dashboard)
    report = commands.add_parser(
        "report", help="write the dashboard's views as one self-contained HTML file",
        description="Write the dashboard's views of run files as one HTML file that opens without a network.")
    report.add_argument("runs", nargs="+", metavar="RUN.h5", help="run files, shown side by side")
    report.add_argument("-o", "--output", required=True, metavar="REPORT.html", help="the HTML file to write")
    report.add_argument("--buckets", type=int, default=1000,
                        help="min/max buckets per trace (≤ 3 points each; default 1000)")
    report.set_defaults(_module=_Report, _parser=report)
