"""What a FastTracker counted and caught — its health, read as properties (a mixin of
``FastTracker``): errors inside hooks, samples a layer missed, a run file that stopped being
written, the user's callbacks and sinks that raised, and the distributed reduction's counters.
Everything here only reads state the tracker's parts keep; nothing raises."""

from __future__ import annotations

from typing import Any


class TrackerHealth:
    """Read-only counters of a ``FastTracker`` (see the module docstring). Expects the tracker's
    ``_slots``, ``_sink``, ``_config``, ``_ranks``, ``_missed`` and ``_callbacks``."""

    _slots: Any
    _sink: Any
    _config: Any
    _ranks: Any
    _missed: dict[str, int]
    _callbacks: Any

    @property
    def write_error(self) -> BaseException | None:
        """The error that stopped writing ``output`` (records are then kept in memory), or None."""
        return self._sink.stream.write_error

    @property
    def errors(self) -> dict[str, int]:
        """Exceptions caught inside hooks, per layer name."""
        return {slot.name: slot.errors for slot in self._slots}

    @property
    def distributed(self) -> str | None:
        """The distributed mode in effect: "global", "local", or None (one process)."""
        return self._config.distributed

    @property
    def collectives(self) -> int:
        """Collectives the tracker has called since construction (``"global"``: one or two per sample)."""
        return self._ranks.collectives if self._ranks is not None else 0

    @property
    def collective_seconds(self) -> float:
        """Seconds spent summing Grams over the ranks (packing and waiting included)."""
        return self._ranks.seconds if self._ranks is not None else 0.0

    @property
    def partial_samples(self) -> dict[str, int]:
        """``"global"``, rank 0: per layer, samples it was captured on some ranks only (recorded:
        those ranks' rows; a warning the first time)."""
        return dict(self._ranks.partial) if self._ranks is not None else {}

    @property
    def distributed_error(self) -> BaseException | None:
        """The error that stopped the ranks' reduction (later samples are flagged rows), or None."""
        return self._ranks.error if self._ranks is not None else None

    @property
    def missed(self) -> dict[str, int]:
        """Sampled steps at which a layer had no captured forward (no row recorded)."""
        return dict(self._missed)

    @property
    def callback_errors(self) -> dict[str, int]:
        """Exceptions raised by the user's ``on_jump`` / ``on_sample`` / ``on_alert`` (caught, reported once)."""
        return self._callbacks.errors

    @property
    def sink_failures(self) -> dict[str, BaseException]:
        """Sinks disabled after an error: name → the error."""
        return self._callbacks.failures
