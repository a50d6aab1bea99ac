"""``ndt-fast dashboard``: a local web page of one or more runs that follows them as they grow.

The server is the standard library's ``ThreadingHTTPServer``: the page needs one HTML file, two
scripts and three JSON routes, so a web framework would add a dependency and nothing else.
Plotly.js comes from the installed ``plotly`` Python package and is served by this server, so
the page works without a network.

Routes (everything else is 404; a run is addressed by its position on the command line, never by
a path, so no request can reach a file that was not named there)::

    GET /                         the page
    GET /page.js, /plotly.min.js  its scripts
    GET /api/runs                 [summary of each run]          (RunReader.summary)
    GET /api/runs/<i>/status      the status line of run i        (RunReader.status)
    GET /api/runs/<i>/view?layer=L&metric=M[&buckets=B&x0=A&x1=B]  one view, downsampled

Each request reads the file anew (refreshing its SWMR datasets), so the page's polling is the
server's polling; the training process is never contacted. A request that fails (file being
replaced, bad query) answers a JSON ``{"error": "one line"}`` and the page keeps polling.
"""

from __future__ import annotations

import errno
import json
import math
import re
import sys
import threading
from collections.abc import Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ndt_fast.dashboard.runs import RunFileError, RunReader

MIN_BUCKETS, MAX_BUCKETS = 50, 4000  # per view: ≤ 3 points per bucket (+ both ends), ≤ 12,002 a trace
_VIEW = re.compile(r"^/api/runs/(\d+)/(status|view)$")


class DashboardError(Exception):
    """A dashboard or report that cannot start (message: one line, for the command line)."""


def plotly_js() -> bytes:
    """The plotly.min.js bundled with the installed ``plotly`` package (DashboardError without it)."""
    try:
        from plotly.offline import get_plotlyjs
    except ImportError:
        raise DashboardError('the dashboard needs plotly: pip install "ndt-fast[dashboard]"') from None
    return get_plotlyjs().encode()


def asset(name: str) -> bytes:
    """A file of ``ndt_fast/dashboard/assets`` (the page and its script)."""
    return resources.files("ndt_fast.dashboard").joinpath("assets", name).read_bytes()


def open_runs(paths: Sequence[str]) -> list[RunReader]:
    """A reader per path, in order; DashboardError naming the first that cannot be shown."""
    if not paths:
        raise DashboardError("name at least one run file")
    readers: list[RunReader] = []
    try:
        for path in paths:
            readers.append(RunReader(path))
    except RunFileError as error:
        for reader in readers:
            reader.close()
        raise DashboardError(str(error)) from None
    return readers


def _number(query: dict[str, list[str]], key: str) -> float | None:
    if key not in query:
        return None
    value = float(query[key][0])
    if not math.isfinite(value):
        raise ValueError(f"{key} must be finite")
    return value


class _Handler(BaseHTTPRequestHandler):
    server: DashboardServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        if self.server.verbose:
            super().log_message(format, *args)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, value: Any, status: int = HTTPStatus.OK) -> None:
        self._send(status, json.dumps(value, allow_nan=False).encode(), "application/json")

    def do_GET(self) -> None:  # noqa: N802 - the base class's name
        url = urlsplit(self.path)
        static = self.server.static.get(url.path)
        if static is not None:
            self._send(HTTPStatus.OK, *static)
            return
        if url.path == "/api/runs":
            self._json([run.summary() for run in self.server.runs])
            return
        match = _VIEW.match(url.path)
        if match is None or int(match.group(1)) >= len(self.server.runs):
            self._json({"error": f"not found: {url.path}"}, HTTPStatus.NOT_FOUND)
            return
        run = self.server.runs[int(match.group(1))]
        try:
            if match.group(2) == "status":
                self._json(run.status())
                return
            query = parse_qs(url.query)
            buckets = int(_number(query, "buckets") or 1000)
            self._json(run.view(query.get("layer", [""])[0], query.get("metric", [""])[0],
                                buckets=min(max(buckets, MIN_BUCKETS), MAX_BUCKETS),
                                x0=_number(query, "x0"), x1=_number(query, "x1")))
        except (RunFileError, ValueError) as error:
            self._json({"error": " ".join(str(error).split())}, HTTPStatus.BAD_REQUEST)
        except (OSError, KeyError, RuntimeError) as error:  # mid-rewrite, or a file gone bad: try again later
            self._json({"error": f"{run.name}: cannot be read now ({' '.join(str(error).split())})"},
                       HTTPStatus.SERVICE_UNAVAILABLE)


class DashboardServer(ThreadingHTTPServer):
    """The HTTP server of the dashboard: ``runs`` (RunReader list) and the static files."""

    daemon_threads = True

    def __init__(self, runs: list[RunReader], host: str, port: int, *, verbose: bool = False) -> None:
        self.runs = runs
        self.verbose = verbose
        self.static = {
            "/": (asset("page.html"), "text/html; charset=utf-8"),
            "/page.js": (asset("page.js"), "text/javascript; charset=utf-8"),
            "/plotly.min.js": (plotly_js(), "text/javascript; charset=utf-8"),
        }
        try:
            super().__init__((host, port), _Handler)
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise DashboardError(f"port {port} on {host} is in use; choose another with --port "
                                     "(--port 0 picks a free one)") from None
            raise DashboardError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

    def server_close(self) -> None:
        super().server_close()
        for run in self.runs:
            run.close()


def start(paths: Sequence[str], host: str = "127.0.0.1", port: int = 8050, *,
          verbose: bool = False) -> tuple[DashboardServer, threading.Thread]:
    """Open the runs and serve them from a background thread; returns (server, thread).

    Stop with ``server.shutdown(); server.server_close()``. DashboardError for a file that cannot
    be shown, a port in use, an address that is not this machine's, or plotly missing.
    """
    runs = open_runs(paths)
    try:
        server = DashboardServer(runs, host, port, verbose=verbose)
    except BaseException:
        for run in runs:
            run.close()
        raise
    thread = threading.Thread(target=server.serve_forever, name="ndt_fast-dashboard", daemon=True)
    thread.start()
    return server, thread


def serve(paths: Sequence[str], host: str = "127.0.0.1", port: int = 8050, *, verbose: bool = False) -> None:
    """``ndt-fast dashboard``: serve until interrupted (Ctrl-C)."""
    server, thread = start(paths, host, port, verbose=verbose)
    print(f"ndt_fast dashboard of {len(server.runs)} run(s) at {server.url} (Ctrl-C to stop)", file=sys.stderr,
          flush=True)
    try:
        thread.join()
    finally:
        server.shutdown()
        server.server_close()
