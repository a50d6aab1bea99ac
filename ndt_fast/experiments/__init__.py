"""Reproductions of published experiments, runnable from the command line.

- ``tds``: the Towards Data Science article "I Measured Neural Network Training Every 5 Steps
  for 10,000 Iterations" (MLP 784-256-128-10 on MNIST, 8000 steps, measured every 5 steps):
  ``ndt-fast reproduce tds`` or ``python -m ndt_fast.experiments.tds``.

- ``architectures``: the article's MLP beside a wider and a deeper one — do early dimensionality dynamics
  rank them as final test accuracy does? ``ndt-fast experiment architectures``.
- ``intervention``: corrupted training data during windows of steps vs a control run — does an
  early window do lasting damage where a late one does not? ``ndt-fast experiment intervention``.

Each module exposes ``add_arguments(parser)``, ``validate(args, parser)``, ``run(args) -> int``
and ``main(argv=None) -> int``, so ``ndt_fast.cli`` mounts it as a subcommand without
duplicating its options. Importing this package imports nothing heavy (torch, matplotlib, h5py
are imported by the experiment modules themselves).
"""

#: Experiment name → module, as mounted under ``ndt-fast reproduce``.
EXPERIMENTS = {"tds": "ndt_fast.experiments.tds"}
#: Experiments beyond the article's figures → module, as mounted under ``ndt-fast experiment``.
STUDIES = {"architectures": "ndt_fast.experiments.architectures",
           "intervention": "ndt_fast.experiments.intervention"}

__all__ = ["EXPERIMENTS", "STUDIES"]
