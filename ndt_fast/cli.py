"""The ``ndt-fast`` command.

    ndt-fast reproduce tds [--steps 8000] [--freq 5] [--seeds 1] [--device cpu] [--data DIR] [--out DIR] …

Subcommands:
- ``reproduce <experiment>``: run a published experiment and check its claims
  (``ndt_fast.experiments``; ``tds`` is the TDS article's MNIST MLP run).
- ``experiment <name>``: the experiments beyond the article's figures, each with a verdict
  (``architectures``: wider/deeper MLPs; ``intervention``: corrupted-data windows).
- ``dashboard RUN.h5… [--port 8050] [--host 127.0.0.1]`` / ``report RUN.h5… -o REPORT.html``:
  watch runs live in the browser, or write them as one self-contained HTML file
  (``ndt_fast.dashboard``).

``main(argv=None) -> int`` is the console-script entry point (``ndt-fast = "ndt_fast.cli:main"``);
it returns the exit status: 0 on success, 1 when the experiment could not run (e.g. no data),
2 for bad arguments (argparse's convention), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

from ndt_fast.experiments import EXPERIMENTS, STUDIES


def build_parser() -> argparse.ArgumentParser:
    """``ndt-fast`` with its subcommands; each experiment's options come from its own module."""
    parser = argparse.ArgumentParser(prog="ndt-fast", description="ndt_fast command-line tools.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    reproduce = commands.add_parser("reproduce", help="reproduce a published experiment and check its claims",
                                    description="Reproduce a published experiment and check its claims.")
    _mount(reproduce.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True), EXPERIMENTS)
    # ---- ndt-fast experiment … : the experiments beyond the article's figures -------------------
    experiment = commands.add_parser("experiment", help="run an experiment beyond the article's figures "
                                     "(architectures, intervention windows) and give its verdict",
                                     description="Run an experiment beyond the article's figures.")
    _mount(experiment.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True), STUDIES)
    # ndt-fast dashboard RUN.h5… / ndt-fast report RUN.h5… -o REPORT.html (ndt_fast.dashboard.commands)
    from ndt_fast.dashboard.commands import add_commands as add_dashboard_commands

    add_dashboard_commands(commands)
    return parser


def _mount(subparsers: argparse._SubParsersAction, modules: dict[str, str]) -> None:
    """One subcommand per experiment module, its options from the module itself."""
    for name, module_name in modules.items():
        module = importlib.import_module(module_name)
        summary = getattr(module, "SUMMARY", name)
        sub = subparsers.add_parser(name, help=summary, description=summary, epilog=getattr(module, "EPILOG", None))
        module.add_arguments(sub)
        sub.set_defaults(_module=module, _parser=sub)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``) and run the subcommand; returns the exit status.

    Bad arguments exit with status 2 (``SystemExit``) after a usage message on stderr.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    module, sub = args._module, args._parser
    module.validate(args, sub)
    return int(module.run(args))


if __name__ == "__main__":
    raise SystemExit(main())
