"""Storage of tracker records: native ring → memory or a live HDF5 run file; loaders, exports.

- ``records``: the fixed-width record layout and in-memory tables.
- ``stream``: ``RecordStream``, the ring + writer thread + failure handling.
- ``hdf5``: the run file format (SWMR, crash-safe), ``load``.
- ``export``: CSV / JSON / HDF5 exports with ndtracker's names.
"""

from ndt_fast.storage.export import export_to_csv, export_to_hdf5, export_to_json
from ndt_fast.storage.records import RecordLayout


def load(path):  # noqa: ANN001, ANN201 — documented in ndt_fast.storage.hdf5.load
    """Read a run file; see ``ndt_fast.storage.hdf5.load`` (h5py is imported only when needed)."""
    from ndt_fast.storage.hdf5 import load as _load

    return _load(path)


__all__ = ["RecordLayout", "export_to_csv", "export_to_hdf5", "export_to_json", "load"]
