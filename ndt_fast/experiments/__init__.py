"""Reproductions of published experiments, runnable from the command line.

- ``tds``: the Towards Data Science article "I Measured Neural Network Training Every 5 Steps
  for 10,000 Iterations" (MLP 784-256-128-10 on MNIST, 8000 steps, measured every 5 steps):
  ``ndt-fast reproduce tds`` or ``python -m ndt_fast.experiments.tds``.

Each module exposes ``add_arguments(parser)``, ``validate(args, parser)``, ``run(args) -> int``
and ``main(argv=None) -> int``, so ``ndt_fast.cli`` mounts it as a subcommand without
duplicating its options. Importing this package imports nothing heavy (torch, matplotlib, h5py
are imported by the experiment modules themselves).
"""

#: Experiment name → module, as mounted under ``ndt-fast reproduce``.
EXPERIMENTS = {"tds": "ndt_fast.experiments.tds"}

__all__ = ["EXPERIMENTS"]
