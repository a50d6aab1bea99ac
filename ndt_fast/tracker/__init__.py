"""FastTracker: a drop-in for ndtracker's ``HighFrequencyTracker``, computed natively.

    from ndt_fast import FastTracker as HighFrequencyTracker   # the only change to the loop

    tracker = HighFrequencyTracker(model, sampling_frequency=5)
    for step, (x, y) in enumerate(loader):
        loss = train_step(model, x, y)
        tracker.log(step, loss)            # a float or a 0-d tensor; read only on sampled steps
    results = tracker.get_results()        # {layer name: DataFrame}
    tracker.close()

One sample, one way (each part is a module of this package)::

    schedule   is this step sampled? arm the hooks for the forwards that feed it
    capture    armed hook: output → 2-D matrix → its layer's accumulator, on the backend routing
               chose once for that layer (host, or a CUDA device with device_path="auto")
    log(step)  queue.submit: host only and nothing in flight → sink.finish, one native call
               (spectra + metrics of every layer → records → ring → jump banks; with
               background_finish on a background thread); otherwise each backend's share is
               submitted and the sample waits in step order
    sink       records → native ring → writer thread → memory or HDF5 run file; jumps
    config     every argument check; metadata: what a run file says about its run
    background background_finish: a sample's Grams and finish on one background thread
    health     what the tracker counted and caught (errors, missed, ...), as properties

CUDA models: by default (``device_path="host"``) a CUDA activation is copied to the host in the
hook (a sync per layer and sample). ``device_path="auto"`` opts into the device backends
(``ndt_fast.cuda.backend``; NEVER RUN on a GPU, see ``docs/CUDA.md``): hooks and ``log()`` only
queue work, and results are collected later — without waiting at each ``log()``, with waiting in
``get_results()``, ``get_jumps()``, ``detect_jumps()`` and ``close()``.

Robustness: outputs that are tuples/lists/dicts, any rank, float16/bfloat16/autocast, channels_last,
a batch of 1 and varying batch sizes are handled (``ndt_fast.layers``). Forwards in eval mode or
under ``torch.no_grad()`` are ignored by default. An exception inside a hook is caught, counted in
``tracker.errors`` and logged once per layer; the forward pass always completes. NaN/Inf
activations give NaN metrics with ``flags & FLAG_NON_FINITE``; an all-zero layer zeros with ``FLAG_ZERO``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ndt_fast._schema import (
    EXTRA_COLUMNS,
    FLAG_TRACKER_ERROR,
    JUMP_RULES,
    METRIC_NAMES,
    NDT_COLUMNS,
    WEIGHT_COLUMNS,
)
from ndt_fast.compat.capture import TrackerHooks
from ndt_fast.jumps import Jump, JumpDetector
from ndt_fast.layers import first_tensor
from ndt_fast.storage.records import RecordLayout, jumps_frame, samples_frame
from ndt_fast.storage.stream import RecordStream
from ndt_fast.tracker import backends
from ndt_fast.tracker.backends import DeviceRouter, HostBackend, MetricSettings
from ndt_fast.tracker.callbacks import TrackerCallbacks
from ndt_fast.tracker.capture import Capture
from ndt_fast.tracker.config import DEVICE_PATHS, TrackerConfig, tracked_layers
from ndt_fast.tracker.distributed import RankReduce, agreement_settings, rank_output
from ndt_fast.tracker.health import TrackerHealth
from ndt_fast.tracker.metadata import run_metadata
from ndt_fast.tracker.queue import SampleQueue
from ndt_fast.tracker.schedule import Schedule
from ndt_fast.tracker.sink import RecordSink

__all__ = ["DEVICE_PATHS", "EXTRA_COLUMNS", "FLAG_TRACKER_ERROR", "JUMP_RULES", "NDT_COLUMNS", "WEIGHT_COLUMNS",
           "FastTracker"]

logger = logging.getLogger(__name__)


class FastTracker(TrackerHealth):
    """Tracks the dimensionality of a model's layers during training (ndt-compatible surface).

    Args (ndt's, same defaults): ``model``; ``layers`` (None: auto-selected, ``ndt_fast.layers``);
    ``layer_names`` (default ndt's ``f"{ClassName}_{i}"``); ``sampling_frequency`` (sample when
    ``step % sampling_frequency == 0``, or ``force=True``); ``enable_jump_detection`` (online
    detector on every metric of every layer, and ``detect_jumps``); ``jump_window_size``,
    ``jump_z_threshold`` (ndt's z-score rule, offline and online); ``device`` (accepted for
    compatibility, ``tracker.device``, default the model's device as in ndt; metrics are computed
    where the data is, see ``device_path``).

    Keyword-only extras:
        window: accumulate the feature-side Gram over the ``window`` steps ending at each sampled
            step (exact), 1 ≤ window ≤ sampling_frequency; 1 = ndt's last forward before ``log``.
        metrics: names of the metrics to compute (default all six; ``stable_rank`` /
            ``participation_ratio_eig`` alone skip the eigensolver).
        center: subtract column means first (ndt does not).
        track_weights: also record the metrics of each layer's weight (``weight.reshape(out, -1)``)
            in ``weight_*`` columns: True = the same metrics, or the names of the ones to compute.
        select: ``output → tensor`` callable picking the tracked tensor from a module's output.
        conv_rows: ``"flatten"`` (ndt: ``(batch, C·H·W)``) or ``"spatial"`` (``(batch·H·W, C)``).
        skip_eval_forwards: ignore forwards in eval mode or with grad disabled (default True).
        eps, energy_threshold: as in ``ndt_fast.compute_all_metrics``.
        output: HDF5 run file written while training (live-readable, crash-safe, ``ndt_fast.load``);
            an existing file is refused unless ``resume=True``. None: records kept in memory.
        resume: append to the run in ``output``; steps already in the file are skipped.
        capacity: records the bounded native ring holds between writes (default 65536).
        flush_interval: with ``output``, the most seconds a record waits before it is on disk.
        jump_rule: which online rule feeds ``tracker.jumps``: ``"default"`` (``ndt_fast.validity``'s,
            ≤ 1 false positive per 1000 samples on noise, drift, AR(1), heavy tails) or ``"ndt"``.
        max_rows: measure at most this many rows of each activation matrix: a fixed random subset
            per layer and row count (an approximation, see the README). None: every row, exact.
        device_path: ``"host"`` (default): every layer measured on the CPU, a CUDA activation
            copied there in the hook (a sync, reported once). ``"auto"`` (opt-in, NEVER RUN on a
            GPU): CUDA layers keep a float32 Gram on their device (the smaller side when
            ``window == 1``), float64 spectra; ``log()`` never synchronizes; at most
            ``backends.MAX_PENDING_SAMPLES`` samples wait for the device; ``center=True`` stays
            on the host; a weight the device cannot take is measured on the host (a sync,
            reported once); ``lambda_max`` is always filled there.
        threads: threads for the tracker's native work (ours and BLAS's); default 1 (in a
            training loop the framework's threads hold the cores); 0 = automatic.
        keep_last_output: on unscheduled steps each hook keeps a reference to its layer's last
            training-forward output (no copy), dropped by every ``log()``; so ``log(step, loss,
            force=True)`` on any step measures it, as ndt does, without ``arm()``. Default True
            (cost: benchmarks/test_force_overhead.py; memory: one output per layer until that
            step's ``log()``, measured as it is then). False: forcing such a step needs ``arm()``.
        sinks: where each finished sample also goes, off the training thread (``ndt_fast.sinks``:
            ``TensorBoardSink``, ``WandbSink``, any ``Sink``); a failing sink is reported once and
            disabled (``sink_failures``), the tracker's records are unaffected.
        on_sample: ``fn(sample: ndt_fast.sinks.Sample)``, called on the sinks' thread for each
            finished sample (errors reported once, counted in ``callback_errors``).
        on_jump: ``fn(layer: str, jump: Jump)``, called on the training thread at the end of the
            ``log()`` that confirms a jump of ``jump_rule`` (or in ``close()``): a default-rule
            jump is confirmed 11 to 13 samples after ``jump.step`` (plus, on the device path, the
            samples the device is behind). Errors reported once, counted, never raised.
        spectra_batch: solve the spectra of this many consecutive host samples in one native call
            (≥ 1, default 1), so that samples × layers fill the eigensolver's SIMD lanes (a TDS-MLP
            sample alone has two 64 × 64 Grams for eight lanes). The numbers are the same as with
            1 (the same bits); what changes is when they appear: a sample's records — and so
            ``tracker.jumps``, ``on_jump`` and the sinks — come up to ``spectra_batch − 1``
            samples later than with 1 (a jump: that much after its usual confirmation delay).
            ``get_results()``, ``get_jumps()``, ``detect_jumps()``, ``flush_sinks()`` and
            ``close()`` record whatever waits first; a run file receives waiting samples at the
            next batch or at those calls. Memory: one copy of each small Gram per waiting sample.
            Measured in benchmarks/NOTES.md (issue 14).
        background_finish: compute each host sample on one background thread — its Grams (with
            ``window=1``, not distributed: the hooks keep a copy of each activation instead) and
            its finish (spectra, metrics, records, jump banks: the native call a sampled ``log()``
            otherwise waits for) — while training goes on (default False; the Lightning and
            Hugging Face callbacks turn it on where a core is free for it). Same numbers, same
            order; a sample's records, ``tracker.jumps`` and ``on_jump`` (still on the training
            thread) come at the first ``log()`` that finds it done — at the latest the next
            sample's — and ``get_results()``, ``get_jumps()``, ``flush_sinks()`` and ``close()``
            wait for it.
            Memory: one Gram per layer as without it (it travels to the thread and back), the
            sampled activations' copies until the thread has folded them, with ``track_weights``
            a copy of each weight (the optimizer changes it in place). One sample at a time: a
            sample whose predecessor is still running waits for it. It saves wall time where a
            core is free (measured with one torch thread on a CPU; a GPU run is expected to gain
            too, unverified: no GPU was available) and costs some CPU (the hand-over); if no
            thread can be started, samples are computed on the training thread (reported once).
            ``ndt_fast.tracker.background``.
        alerts: monitoring alerts (``ndt_fast.monitor``): True = the article's three rules with
            their validated defaults (bottleneck, instability, information flow), or a list of
            ``AlertRule`` objects; computed from finished samples off the training thread (with
            ``output=``; else at each ``log()``), kept in ``tracker.alerts`` / ``get_alerts()``
            and in the run file (``ndt_fast.load(path).alerts``). A rule that raises is reported
            once and disabled; training never sees it.
        on_alert: ``fn(alert: ndt_fast.monitor.Alert)``, called on the training thread at the
            first ``log()`` after the alert was raised (or in ``close()``; with ``output=`` the
            writer thread raises alerts within ``flush_interval / 2`` seconds). Errors reported
            once, counted in ``callback_errors["on_alert"]``, never raised.

        distributed: ``None`` (default: ``"global"`` when ``torch.distributed`` is initialized with
            more than one process, else nothing distributed), ``"global"`` (the exact metrics of the
            global batch: the ranks' feature-side Grams summed by one all-reduce per sampled step,
            rank 0 records, writes and detects, the others record nothing) or ``"local"`` (each
            rank its own shard, written to ``run.rank<k>.h5``). Every rank must make its tracker
            and call ``log()`` with the same steps. ``ndt_fast.tracker.distributed``; README,
            "Distributed training".
        process_group: the gloo group of the ``"global"`` reduction (default: the tracker makes
            its own over every rank) or of ``"local"``'s rank numbering.
        distributed_timeout: seconds a collective may wait for the other ranks before it fails
            (the sample and later ones are then flagged rows on rank 0; training goes on).

    Raises ValueError/TypeError for invalid arguments; never raises from inside a forward pass.
    """

    def __init__(self, model: nn.Module, layers: Sequence[nn.Module] | None = None,
                 layer_names: Sequence[str] | None = None, sampling_frequency: int = 1,
                 enable_jump_detection: bool = True, jump_window_size: int = 50, jump_z_threshold: float = 3.0,
                 device: torch.device | str | None = None, *, window: int = 1, metrics: Iterable[str] | None = None,
                 center: bool = False, track_weights: bool | Iterable[str] = False,
                 select: Callable[[Any], torch.Tensor] | None = None, conv_rows: str = "flatten",
                 skip_eval_forwards: bool = True, eps: float = 1e-10, energy_threshold: float = 0.9,
                 output: str | os.PathLike[str] | None = None, resume: bool = False, capacity: int = 65536,
                 flush_interval: float = 1.0, jump_rule: str = "default", threads: int = 1,
                 max_rows: int | None = None, device_path: str = "host", keep_last_output: bool = True,
                 sinks: Sequence[Any] = (), on_sample: Callable[[Any], Any] | None = None,
                 on_jump: Callable[[str, Jump], Any] | None = None, distributed: str | None = None,
                 process_group: Any = None, distributed_timeout: float = 300.0,
                 alerts: bool | Sequence[Any] = False, on_alert: Callable[[Any], Any] | None = None,
                 spectra_batch: int = 1, background_finish: bool = False) -> None:
        modules, names = tracked_layers(model, layers, layer_names)
        config = TrackerConfig.check(
            sampling_frequency=sampling_frequency, window=window, metrics=metrics, center=center,
            track_weights=track_weights, select=select, conv_rows=conv_rows, skip_eval_forwards=skip_eval_forwards,
            eps=eps, energy_threshold=energy_threshold, output=output, resume=resume, capacity=capacity,
            flush_interval=flush_interval, enable_jump_detection=enable_jump_detection,
            jump_window_size=jump_window_size, jump_z_threshold=jump_z_threshold, jump_rule=jump_rule,
            threads=threads, max_rows=max_rows, device_path=device_path, device=device,
            keep_last_output=keep_last_output, sinks=sinks, on_sample=on_sample, on_jump=on_jump,
            distributed=distributed, distributed_timeout=distributed_timeout, alerts=alerts, on_alert=on_alert,
            spectra_batch=spectra_batch, background_finish=background_finish)
        # ndt's attributes (device: ndt's default, the model's; CPU for a model without parameters)
        self.model, self.layer_names = model, names
        self.device = device if device is not None else next((p.device for p in model.parameters()),
                                                               torch.device("cpu"))
        self.keep_last_output = config.keep_last_output
        self.sampling_frequency, self.window, self.center = sampling_frequency, config.window, config.center
        self.track_weights, self.select, self.skip_eval_forwards = config.track_weights, select, config.skip_eval_forwards
        self.eps, self.energy_threshold, self.threads = config.eps, config.energy_threshold, threads
        self.max_rows, self.device_path, self.jump_rule = max_rows, device_path, jump_rule
        self.enable_jump_detection = config.enable_jump_detection
        self.spectra_batch, self.background_finish = config.spectra_batch, config.background_finish
        self.jump_detector = (JumpDetector(window_size=jump_window_size, z_threshold=jump_z_threshold)
                              if config.enable_jump_detection else None)
        self.step_counter = 0

        weight_columns = WEIGHT_COLUMNS if config.track_weights else ()
        self._layout = RecordLayout(layer_names=tuple(names), sample_columns=NDT_COLUMNS + EXTRA_COLUMNS + weight_columns,
                                    metric_names=METRIC_NAMES + weight_columns, rule_names=JUMP_RULES)
        settings = MetricSettings(config.eps, config.energy_threshold, config.metric_mask, config.weight_mask,
                                  config.center, config.threads)
        host = HostBackend(settings)
        router = None
        if device_path == "auto" and not config.center:  # the device kernels do not centre
            router = DeviceRouter(backends.device_kind(), settings=settings, slots=backends.MAX_PENDING_SAMPLES,
                                  records_per_sample=len(names) * (2 if config.track_weights else 1))
        self._schedule = Schedule(sampling_frequency, config.window)
        self._capture = Capture(modules, names, config, host, router)
        self._slots = self._capture.slots
        self._by_name = {slot.name: slot for slot in self._slots}
        self._missed: dict[str, int] = {}
        self._ranks: RankReduce | None = None
        self.rank, self.world_size = 0, 1
        if config.distributed is not None:  # (a collective on every rank: before anything is opened)
            config = self._join_ranks(config, process_group)
        self._config = config
        # (before a run file is opened; alerts read a layer's width from its Gram once it has one)
        self._callbacks = TrackerCallbacks(config, self._layout, widths=self._feature_widths)
        self._sink = RecordSink(config, self._layout, self._slots, self._open_records, host.accumulator)
        self._callbacks.attach(self._sink)
        self._queue = SampleQueue(self._capture, self._sink, host, router, settings=settings,
                                  track_weights=config.track_weights, max_pending=backends.MAX_PENDING_SAMPLES)
        self._capture.armed = self._schedule.in_window(0)
        self._capture.install()  # hooks last: nothing above may fail after the model has been touched

    def _join_ranks(self, config: TrackerConfig, process_group: Any) -> TrackerConfig:
        """``distributed=``: "global" — join the ranks' reduction; only rank 0 writes, detects and
        calls sinks. "local" — this rank's own run, in ``run.rank<k>.h5``."""
        if config.distributed == "local":
            group = process_group if process_group is not None else torch.distributed.group.WORLD
            self.rank, self.world_size = torch.distributed.get_rank(group), torch.distributed.get_world_size(group)
            return (dataclasses.replace(config, output=rank_output(config.output, self.rank))
                    if config.output is not None else config)
        self._ranks = RankReduce(self._slots, self._capture, agreement_settings(config), process_group,
                                 config.distributed_timeout, config.window)
        self.rank, self.world_size = self._ranks.rank, self._ranks.world_size
        if self._ranks.writes:
            return config
        return dataclasses.replace(config, output=None, resume=False, sinks=(), on_sample=None, on_jump=None,
                                   alerts=(), on_alert=None)

    def _feature_widths(self) -> list[int | None]:
        """Per layer, its activation's feature count where known (a feature-side Gram's size;
        a sample-side Gram means more features than rows, so the rows bound its rank)."""
        return [slot.key[1] if slot.key is not None and slot.key[0] == "feature" else None for slot in self._slots]

    def _open_records(self, sink: RecordSink) -> RecordStream:
        """The record stream, with the run file (and, on resume, the detectors replayed) first."""
        c, run_file = self._config, None
        if c.output is not None:
            from ndt_fast.storage.hdf5 import RunFile  # h5py only when a file is asked for

            ranks = None
            if c.distributed is not None:
                ranks = {"mode": c.distributed, "world_size": self.world_size}
                if c.distributed == "local":
                    ranks["rank"] = self.rank
            run_file = RunFile(c.output, self._layout, run_metadata(self.model, c, self.layer_names, ranks),
                               resume=c.resume)
            if c.resume:
                samples = run_file.committed_frames()[0]
                sink.replay(run_file.resumed_from, samples)
                self._callbacks.replay(samples)
        return RecordStream(self._layout, capacity=c.capacity, output=run_file, flush_interval=c.flush_interval)

    # ---- the training-loop API ------------------------------------------------------------------

    def log(self, step: int, loss: Any, grad_norm: Any = None, force: bool = False) -> None:
        """Record the sample of ``step`` if it is due (``step % sampling_frequency == 0``) or forced.

        ``loss`` and ``grad_norm`` may be floats or 0-d tensors, read only on sampled steps (CUDA
        tensors on the device path: copied asynchronously, never read with a sync). A layer with
        no captured forward since the last sample gets no row (as in ndt), counted in
        ``tracker.missed``. ``force=True`` on an unscheduled step measures each layer's last
        training forward since the previous ``log()`` (``keep_last_output``; else ``arm()`` first).
        """
        step = int(step)
        due = step % self.sampling_frequency == 0
        if force and not due and self.keep_last_output:
            self._capture.take_kept()
        # New records may be in the ring: a sample recorded here, or (background_finish) the
        # result of the last one taken — with its jumps — if it is done by now.
        new_records = force or due
        if self._sink.in_flight:
            new_records = self._sink.collect() or new_records
        if force or due:
            self._record(step, loss, grad_norm)
        elif not self._schedule.in_window(step):
            for slot in self._slots:  # captured for a step that turned out not to be sampled
                if slot.captured or slot.failed:
                    self._capture.discard(slot)
            if self._queue.pending:
                self._queue.poll()  # completed device results only: never waits
        elif self._queue.pending:
            self._queue.poll()
        if self.keep_last_output:
            self._capture.drop_kept()  # held from a forward to this log() only
        if self._callbacks.active:
            self._callbacks.after_log(step, new_records)
        self._capture.armed = self._schedule.in_window(step + 1)

    def arm(self) -> None:
        """Capture the next forward pass(es) whatever the schedule, until the next ``log()``
        (with ``keep_last_output=False``, ``log(..., force=True)`` on an unscheduled step needs it)."""
        self._capture.armed = True

    def _record(self, step: int, loss: Any, grad_norm: Any) -> None:
        self.step_counter = step
        ready, failed = [], []
        for slot in self._slots:  # one pass: this runs at every sample
            if slot.captured:
                ready.append(slot)
            elif slot.failed:
                failed.append(slot)
        if self._ranks is not None:  # distributed="global": the global batch's Grams, on rank 0
            local_ready, local_failed = ready, failed
            ready, failed, loss, grad_norm = self._ranks.reduce(step, ready, failed, self._queue.read(loss, "loss"),
                                                                self._queue.read(grad_norm, "grad_norm"))
            for slot in local_ready:
                slot.captured = False
            for slot in local_failed:
                self._capture.discard(slot)
            if not self._ranks.writes:
                return
        if len(ready) + len(failed) < len(self._slots):
            self._count_missed(step, ready, failed)
        if ready or failed:
            self._queue.submit(step, ready, failed, loss, grad_norm)
            for slot in ready:
                slot.captured = False
            for slot in failed:
                self._capture.discard(slot)

    def _count_missed(self, step: int, ready: list[Any], failed: list[Any]) -> None:
        present = {slot.index for slot in ready} | {slot.index for slot in failed}
        for slot in self._slots:
            if slot.index not in present:
                self._missed[slot.name] = self._missed.get(slot.name, 0) + 1
                if self._missed[slot.name] == 1:
                    logger.warning("ndt_fast: no activation captured for layer %r at step %d: its forward ran "
                                   "in eval mode / no_grad, did not run since the last log(), or ran at an "
                                   "unscheduled step with keep_last_output=False (then call tracker.arm() "
                                   "before the forward pass of a step you will log with force=True)",
                                   slot.name, step)

    # ---- results --------------------------------------------------------------------------------

    def get_results(self, layer_name: str | None = None) -> pd.DataFrame | dict[str, pd.DataFrame]:
        """One DataFrame per layer: ndt's columns ``step, stable_rank, participation_ratio,
        cumulative_90, nuclear_norm_ratio, loss, grad_norm`` first, then ``participation_ratio_eig,
        effective_rank, trace, lambda_max, flags, rows`` (and ``weight_*`` with track_weights).
        ``grad_norm`` is NaN where none was given. Everything recorded is returned (with
        ``output=``: the file, earlier runs too, plus what is not written yet). Unknown
        ``layer_name`` → ValueError."""
        if layer_name is not None and layer_name not in self._by_name:
            raise ValueError(f"Unknown layer name: {layer_name}")
        samples = self._samples()
        columns = self._layout.sample_columns
        if layer_name is not None:
            return samples_frame(columns, samples[self._by_name[layer_name].index])
        return {slot.name: samples_frame(columns, samples[slot.index]) for slot in self._slots}

    def detect_jumps(self, layer_name: str | None = None, metric: str = "stable_rank",
                     threshold_z: float | None = None) -> dict[str, list[Jump]]:
        """ndt's offline z-score jumps per layer; ``Jump.step`` is the training step.
        ``threshold_z`` overrides ``jump_z_threshold`` for this call (ndt's example 03 passes it;
        ndt's own tracker rejects it with a TypeError)."""
        if self.jump_detector is None:
            raise ValueError("Jump detection is disabled. Enable it during initialization.")
        detector = self.jump_detector if threshold_z is None else JumpDetector(
            self.jump_detector.window_size, threshold_z, self.jump_detector.min_samples)
        valid = METRIC_NAMES + (WEIGHT_COLUMNS if self.track_weights else ())
        if metric not in valid:
            raise ValueError(f"metric must be one of {list(valid)}, got {metric}")
        if layer_name is not None and layer_name not in self._by_name:
            raise ValueError(f"Unknown layer name: {layer_name}")
        slots = [self._by_name[layer_name]] if layer_name is not None else self._slots
        samples = self._samples()
        column, step_column = self._layout.sample_columns.index(metric), self._layout.sample_columns.index("step")
        return {slot.name: detector.detect_at_steps(samples[slot.index][:, column],
                                                    samples[slot.index][:, step_column].astype(np.int64),
                                                    f"{slot.name}_{metric}")
                for slot in slots}

    def get_jumps(self) -> pd.DataFrame:
        """Every online detection so far, both rules: ``layer, step, metric, rule, z_score,
        value_before, value_after`` (ndt rule: |z|; default rule: signed z), ordered by step.
        A detection of the default rule is confirmed 12 samples after its step."""
        self._queue.drain()
        return jumps_frame(self._layout, self._sink.stream.results()[1])

    @property
    def alerts(self) -> list[Any]:
        """Monitoring alerts raised so far (``ndt_fast.monitor.Alert``), in order (``alerts=``)."""
        return list(self._callbacks.monitor.alerts) if self._callbacks.monitor is not None else []

    def get_alerts(self) -> pd.DataFrame:
        """Every alert recorded, as ``ndt_fast.monitor.alerts_frame``: ``step, rule, layer, layers,
        message, evidence`` (with ``output=``: the file's, earlier runs too, plus what is not
        written yet). No ``alerts=``: an empty frame with those columns."""
        from ndt_fast.monitor.alert import alerts_frame, alerts_from_rows

        self._queue.drain()
        return alerts_frame(alerts_from_rows(self._sink.stream.alerts()))

    def _samples(self) -> list[np.ndarray]:
        self._queue.drain()  # everything the devices still owe (a sync; outside the training step)
        return self._sink.stream.results()[0]

    @property
    def jumps(self) -> list[Jump]:
        """Online detections of ``jump_rule``, appended as they are confirmed."""
        return self._sink.jumps

    @property
    def output(self) -> str | None:
        """The run file being written (None: records are kept in memory)."""
        return self._sink.stream.path

    @property
    def activation_capture(self) -> TrackerHooks:
        """ndt's ``tracker.activation_capture``, read-only: ``hooks`` (the live hook handles; empty
        after ``close()``) and ``activations`` (the outputs kept for ``force=True`` since the last
        ``log()``, detached, by layer name)."""
        return TrackerHooks(hooks=[slot.handle for slot in self._slots if slot.handle is not None],
                            activations={slot.name: tensor.detach() for slot in self._slots
                                         if (tensor := first_tensor(slot.kept)) is not None})

    def flush_sinks(self, timeout: float = 30.0) -> bool:
        """Wait until every sample recorded so far is written by the sinks (False: ``timeout``
        seconds ran out). Outside the training step (waits for the devices and the sinks' thread)."""
        self._queue.drain()
        return self._callbacks.flush(self.step_counter, timeout)

    # ---- lifetime ----------------------------------------------------------------------------------

    def close(self) -> None:
        """Remove every hook (the model is left exactly as it was), write what is left to
        ``output`` and close it. Results stay readable. Idempotent."""
        try:
            if hasattr(self, "_queue"):
                self._queue.drain()  # waits for the devices: every queued sample is recorded
        finally:  # whatever happened there, no hook stays behind and the records are closed
            if hasattr(self, "_capture"):
                self._capture.remove()
            if hasattr(self, "_sink"):
                self._sink.close()  # (the background thread, if any)
                self._sink.stream.close()
            if hasattr(self, "_callbacks"):
                self._callbacks.close(self.step_counter)

    def __enter__(self) -> FastTracker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        # At interpreter exit, run files were already closed by the stream's atexit hook; what is
        # left (an in-memory tracker) has no one to hand results to, and draining it would need
        # imports that no longer work ("sys.meta_path is None").
        if hasattr(self, "_slots") and not sys.is_finalizing():
            self.close()
