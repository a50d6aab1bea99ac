"""In-memory storage of tracker records: one growable float64 table per layer.

(The bounded native ring buffer and HDF5 streaming replace this in a later milestone; the
tracker only uses ``append`` and ``columns``/``table``, so the swap stays local.)
"""

from __future__ import annotations

import numpy as np


class RecordTable:
    """Rows of float64 values under fixed column names; amortised O(1) append."""

    def __init__(self, columns: tuple[str, ...], initial_capacity: int = 256) -> None:
        self.columns = columns
        self._data = np.empty((initial_capacity, len(columns)), dtype=np.float64)
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def append(self, row: np.ndarray) -> None:
        """Append one row (length ``len(columns)``)."""
        if self._size == len(self._data):
            grown = np.empty((2 * len(self._data), len(self.columns)), dtype=np.float64)
            grown[: self._size] = self._data[: self._size]
            self._data = grown
        self._data[self._size] = row
        self._size += 1

    def table(self) -> np.ndarray:
        """A copy of the rows so far, shape ``(len(self), len(columns))``."""
        return self._data[: self._size].copy()

    def column(self, name: str) -> np.ndarray:
        """A copy of one column."""
        return self._data[: self._size, self.columns.index(name)].copy()
