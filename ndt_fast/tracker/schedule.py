"""Which training steps are sampled, and which forward passes feed a sample.

A step is sampled when ``step % sampling_frequency == 0`` (or ``log(..., force=True)``). With
``window = k`` the forwards of the k steps ending at a sampled step feed its Gram, so hooks are
armed for exactly those steps; the tracker predicts the next step as the last logged one + 1.
"""

from __future__ import annotations


class Schedule:
    __slots__ = ("frequency", "window")

    def __init__(self, frequency: int, window: int) -> None:
        self.frequency = frequency
        self.window = window

    def is_due(self, step: int) -> bool:
        """Whether ``step`` is sampled."""
        return step % self.frequency == 0

    def in_window(self, step: int) -> bool:
        """Whether forwards of ``step`` belong to the window of some sampled step ≥ ``step``."""
        return (-step) % self.frequency < self.window  # steps from `step` to the next due step
