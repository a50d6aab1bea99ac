"""The native finish on a background thread (``FastTracker(background_finish=True)``).

A host sample's finish (spectra, metrics, records into the ring, jump banks) is native code that
releases the GIL; on the training thread it is time the step waits for (~0.2 ms for the TDS MLP's
three layers, ~1 ms for two 128 × 128 Grams), and so are the Grams its hooks compute. With
``background_finish`` the hooks keep copies of the activations (``ndt_fast.tracker.capture``),
the training thread only hands the sample over — its layers' accumulators change hands, the slots
get spare ones for the next forwards — and one background thread computes the Grams and the
finish in one native call (the GIL released once) while training goes on.

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

import concurrent.futures
import logging
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("ndt_fast.tracker")


class BackgroundFinish:
    """One worker thread (made at the first :meth:`submit`), at most one job in flight.

    ``submit(job)`` runs ``job()`` on the thread; ``result(wait)`` returns ``(value, error)`` of
    the job in flight once it is done (``wait=True``: blocks until then), or None when nothing is
    in flight or it is still running. A job's exception is returned, never raised. When no thread
    can run it (the interpreter is shutting down, the thread could not start), ``submit`` returns
    False, says why once, and the caller runs the job itself.
    """

    def __init__(self) -> None:
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._future: concurrent.futures.Future[Any] | None = None
        self._refused = False

    @property
    def in_flight(self) -> bool:
        return self._future is not None

    def submit(self, job: Callable[[], Any]) -> bool:
        """Run ``job`` on the thread (nothing may be in flight: take its result first)."""
        assert self._future is None, "one job at a time"
        try:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1,
                                                                       thread_name_prefix="ndt_fast-finish")
            self._future = self._executor.submit(job)
        except RuntimeError as error:  # after shutdown, or "can't start new thread"
            if not self._refused:
                self._refused = True
                logger.warning("ndt_fast: background_finish: no thread to finish samples on (%s); they are "
                               "finished on the training thread (reported once)", error)
            return False
        return True

    def result(self, wait: bool) -> tuple[Any, BaseException | None] | None:
        future = self._future
        if future is None or (not wait and not future.done()):
            return None
        self._future = None
        error = future.exception()  # (waits if needed)
        return (None, error) if error is not None else (future.result(), None)

    def close(self) -> None:
        """Stop the thread (the job in flight, if any, runs to its end first; take its result before)."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
