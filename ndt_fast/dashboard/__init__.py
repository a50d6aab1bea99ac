"""Watching runs: ``ndt-fast dashboard`` (a live local web page) and ``ndt-fast report`` (one
self-contained HTML file). Needs the ``dashboard`` extra (plotly, h5py).

- ``runs``: ``RunReader``, a run file read for display (live SWMR reads, views, status line).
- ``writer_state``: whether a run's writer is alive, seen from outside.
- ``downsample``: min/max per bucket, so 10⁶ samples draw as ≤ a few thousand points.
- ``server``: the HTTP server and its JSON routes (standard library only); ``serve``, ``start``.
- ``report``: ``write_report``, the self-contained HTML report.
- ``commands``: the two ``ndt-fast`` subcommands (imports the rest only when run).
- ``assets/``: the page (HTML + JavaScript drawing with Plotly.js), shared by both.

This package imports nothing heavy itself; import the submodules.
"""
