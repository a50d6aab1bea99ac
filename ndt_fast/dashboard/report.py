"""``ndt-fast report``: the dashboard's views of one or more runs as one self-contained HTML file.

The page is the dashboard's own (``assets/page.html`` + ``page.js``) with plotly.js and the
script inlined, and with a snapshot of every view the page can show — each layer × metric,
downsampled as the server would (``RunReader.view``), the status line and the metadata —
embedded as ``window.NDT_EMBEDDED``. Opening the file needs no server and no network; the
controls switch between the embedded views, and Plotly zooms within the downsampled points
(≤ 3 · ``buckets`` per trace).
"""

from __future__ import annotations

import datetime
import json
import os
from collections.abc import Sequence

from ndt_fast.dashboard.server import DashboardError, asset, open_runs, plotly_js


def _script(code: str) -> str:
    """``code`` as an inline <script>; the text must not contain "</script" (it would end there)."""
    if "</script" in code.lower():
        raise DashboardError("a script to inline contains '</script'; cannot make a self-contained page")
    return "<script>" + code + "</script>"


def _json_for_script(value: object) -> str:
    # A "<" can only occur inside JSON strings (a model summary, a path), where "\u003c" means the
    # same; so no "</script" or "<!--" can end or confuse the inline script.
    return json.dumps(value, allow_nan=False).replace("<", "\\u003c")


def write_report(paths: Sequence[str], output: str | os.PathLike[str], *, buckets: int = 1000) -> str:
    """Write the report of the runs at ``paths`` to ``output``; returns the output path.

    ``buckets``: per trace, the min/max buckets kept (≤ 3 · buckets points). DashboardError for a
    file that cannot be shown, plotly missing, or an output that cannot be written.
    """
    output = os.fspath(output)
    if os.path.isdir(output):
        raise DashboardError(f"{output} is a directory; give the report's file name, e.g. run.html")
    runs = open_runs(paths)
    try:
        snapshot = {
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "runs": [run.summary() for run in runs],
            "status": [run.status() for run in runs],
            "views": [{layer: {metric: run.view(layer, metric, buckets=buckets) for metric in run.metric_names}
                       for layer in run.layer_names} for run in runs],
        }
    finally:
        for run in runs:
            run.close()
    page = asset("page.html").decode()
    plotly = plotly_js().decode()
    page = page.replace('<script src="plotly.min.js"></script>', _script(plotly), 1)
    page = page.replace('<script src="page.js"></script>',
                        _script("window.NDT_EMBEDDED = " + _json_for_script(snapshot) + ";")
                        + _script(asset("page.js").decode()), 1)
    try:
        with open(output, "w", encoding="utf-8") as f:
            f.write(page)
    except OSError as error:
        raise DashboardError(f"cannot write {output}: {error.strerror or error}") from None
    return output
