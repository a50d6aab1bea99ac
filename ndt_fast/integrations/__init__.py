"""Callbacks for the trainers people use; each imports its framework, so import the submodule:

- ``ndt_fast.integrations.lightning.DimensionalityMonitor`` (``lightning`` or ``pytorch_lightning``)
- ``ndt_fast.integrations.transformers.DimensionalityCallback`` (Hugging Face ``Trainer``)

``import ndt_fast`` (and this package) imports neither framework.
"""
