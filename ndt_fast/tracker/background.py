"""The native finish on a background thread (``FastTracker(background_finish=True)``).

A host sample's finish (spectra, metrics, records into the ring, jump banks) is native code that
releases the GIL; on the training thread it is time the step waits for (~0.2 ms for the TDS MLP's
three layers, ~1 ms for two 128 × 128 Grams), and so are the Grams its hooks compute. With
``background_finish`` the hooks keep copies of the activations (``ndt_fast.tracker.capture``),
the training thread only hands the sample over — its layers' accumulators change hands; they come
back when the result is taken, in time for the next hand-over, since the hooks only copy in
between — and one native thread (``_core.FinishWorker``) computes
the Grams and the finish while training goes on. The thread is native, not Python: a Python
worker takes the GIL to start and to end each job, and each time the training thread, busy in
a framework's Python, waits for it (measured ~0.25 ms per sample on a small model; NOTES.md).

One sample at a time: handing over a sample first takes the previous one's result (waiting for
it if it is still running, which at one sample per step means the finish took longer than a
training step). So the finisher, which is not thread-safe, is only ever used by one thread at a
time; and records reach the ring in step order: nothing else pushes while a finish runs, since
``RecordSink.record`` and ``flush`` take the result first too, and the ring itself is
thread-safe (``RecordRing``: a mutex per push).

What the training thread does with a result (at the next sample, the next ``log()`` that finds it
done, or ``get_results()``/``close()``, which wait): the ring's overflow, the confirmed jumps (so
``tracker.jumps`` and ``on_jump`` come at that ``log()``), a caught error's flagged rows.
"""

from __future__ import annotations

import logging
from typing import Any

from ndt_fast._native import core

logger = logging.getLogger("ndt_fast.tracker")


class BackgroundFinish:
    """One native worker thread (made at the first :meth:`submit`), at most one sample in flight.

    ``submit(...)`` starts ``finisher.finish(ring, *args, refills)`` on the thread; ``result(wait)``
    returns ``(outcome, error)`` of the sample in flight once it is done (``wait=True``: blocks
    until then), or None when nothing is in flight or it is still running. The finish's exception
    is returned, never raised. When no thread can be made, ``submit`` returns False, says why
    once, and the caller finishes the sample itself.
    """

    def __init__(self) -> None:
        self._worker: Any = None
        self._refused = False

    @property
    def in_flight(self) -> bool:
        return self._worker is not None and self._worker.in_flight

    def submit(self, finisher: Any, ring: Any, args: tuple[Any, ...], refills: list[Any], keep: Any) -> bool:
        """Finish a sample on the thread (nothing may be in flight: take its result first).
        ``args``: ``SampleFinisher.finish``'s from ``step`` to ``threads``; ``keep``: the owners of
        the views' memory (referenced until the result is taken). Bad arguments raise ValueError
        here, on the caller's thread, as ``finish`` would."""
        if self._refused:
            return False
        try:
            if self._worker is None:
                worker = core.FinishWorker()
                worker.start()
                self._worker = worker
            # (RuntimeError here too: a fork()ed child's worker makes a thread of its own first)
            self._worker.submit(finisher, ring, *args, refills, keep)
        except RuntimeError as error:  # "Resource temporarily unavailable": no thread to be had
            self._refused = True
            logger.warning("ndt_fast: background_finish: no thread to finish samples on (%s); they are "
                           "finished on the training thread (reported once)", error)
            return False
        return True

    def result(self, wait: bool) -> tuple[Any, BaseException | None] | None:
        return self._worker.result(wait) if self._worker is not None else None

    def close(self) -> None:
        """Stop the thread (the sample in flight, if any, runs to its end first; take its result before)."""
        if self._worker is not None:
            self._worker.close()
            self._worker = None
