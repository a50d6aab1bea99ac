"""The dashboard and the report in a real browser: Debian's headless Chromium driven by
Playwright (``executable_path``; Playwright's own browser downloads are never used).

The live test watches a run that a subprocess is training: the plotted steps grow between two
reads, the layer and metric selectors switch the view, jump markers appear (the child's model
changes rank every 150 steps) and can be hidden by rule, a second run shows beside it, zooming
(by code and by a mouse drag) refetches the range at full resolution, and after ``kill -9`` of
the trainer the page says the writer stopped. The report test opens the
self-contained HTML from a file URL with the network off. Screenshots go to the test's output
folder; ``NDT_DASHBOARD_SCREENSHOT=path.png`` also writes the live one there (docs/dashboard.png
was made so).
"""

from __future__ import annotations

import os
import shutil
import signal

import pytest

pytest.importorskip("h5py")
pytest.importorskip("plotly")
sync_api = pytest.importorskip("playwright.sync_api")

from dashboard_runs import start_training, wait_ready, write_synthetic_run  # noqa: E402
from ndt_fast.dashboard.report import write_report  # noqa: E402
from ndt_fast.dashboard.server import start  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Headless, no sandbox (CI runs as root), and nothing that talks to the network on its own.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 20_000

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                reason="needs Debian's chromium (scripts/setup.sh installs it)")


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def plotted(page, index: int = 0) -> dict:
    """What Plotly drew in run ``index``'s main plot: its traces' names, point counts, last step."""
    return page.evaluate("""(index) => {
        const gd = document.getElementById(`plot-${index}`);
        if (!gd || !gd.data) return null;
        const finite = (xs) => xs.filter((x) => x !== null);
        return {
            names: gd.data.map((t) => t.name),
            points: gd.data.map((t) => t.x.length),
            lastStep: Math.max(...finite(gd.data[0].x)),
            uirevision: gd.layout.uirevision,
            yTitle: gd.layout.yaxis.title.text,
        };
    }""", index)


def wait_until(page, condition_js: str, arg=None) -> None:
    page.wait_for_function(condition_js, arg=arg, timeout=TIMEOUT_MS, polling=100)


def test_the_dashboard_follows_a_run_being_trained(browser, tmp_path, rng):
    live, other = tmp_path / "live.h5", tmp_path / "other.h5"
    child = start_training(live, step_sleep=0.005)
    write_synthetic_run(other, rng, 20_000, layers=("x", "y"), jumps=30)
    context = browser.new_context(viewport={"width": 1500, "height": 1100})
    errors: list[str] = []
    server = None
    try:
        wait_ready(child)
        server, _ = start([str(live), str(other)], port=0)
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(server.url)
        has_data = "(i) => { const gd = document.getElementById(`plot-${i}`); return gd && gd.data && gd.data.length && gd.data[0].x.length > 0; }"
        wait_until(page, has_data, 0)
        wait_until(page, has_data, 1)
        first = plotted(page)
        # The page polls; the trainer keeps writing: a later step must appear without a reload.
        wait_until(page, "(last) => Math.max(...document.getElementById('plot-0').data[0].x) > last",
                   first["lastStep"])
        assert plotted(page)["lastStep"] > first["lastStep"]
        assert "writing" in page.inner_text("#status-0")
        assert plotted(page, 1)["lastStep"] == 5 * (20_000 - 1)  # the second run, side by side
        assert plotted(page, 1)["points"][0] < 20_000  # drawn from its min/max-downsampled points
        # Zooming asks the server for that range at full resolution: steps 1000..2000, every sample.
        page.evaluate("() => Plotly.relayout('plot-1', {'xaxis.range': [1000, 2000]})")
        wait_until(page, "() => document.getElementById('jumps-1').innerText.startsWith('203 samples in view')")
        assert plotted(page, 1)["points"][0] == 203
        page.dblclick("#plot-1 .nsewdrag")  # Plotly's reset: the whole run again
        wait_until(page, "() => document.getElementById('jumps-1').innerText.startsWith('20,000 samples in view')")
        box = page.locator("#plot-1 .nsewdrag").bounding_box()
        y = box["y"] + box["height"] / 2
        page.mouse.move(box["x"] + 0.30 * box["width"], y)
        page.mouse.down()
        page.mouse.move(box["x"] + 0.35 * box["width"], y, steps=5)
        page.mouse.up()  # a drag-zoom by hand: about 5 % of the run, again at full resolution
        wait_until(page, """() => { const n = parseInt(document.getElementById('jumps-1').innerText.replace(/,/g, ''));
            return n > 100 && n < 2000; }""")

        page.select_option("#layer-0", "switch")
        wait_until(page, "() => document.getElementById('plot-0').layout.uirevision === 'switch|stable_rank'")
        page.select_option("#metric", "participation_ratio")
        wait_until(page, "() => document.getElementById('plot-0').layout.uirevision === 'switch|participation_ratio'")
        assert plotted(page)["yTitle"] == "participation ratio"
        assert plotted(page, 1)["uirevision"] == "x|participation_ratio"  # the metric applies to every run

        # The Switch changes rank every 150 steps: both rules mark it once enough steps are in.
        for rule in ("default", "ndt"):
            wait_until(page, """(name) => document.getElementById('plot-0').data.some(
                (t) => t.name === name && t.x.length > 0)""", f"jumps ({rule} rule)")
        # Activation vs weight space: fc1's weights are tracked (stable rank only).
        page.select_option("#layer-0", "fc1")
        page.select_option("#metric", "stable_rank")
        wait_until(page, """() => { const w = document.getElementById('weights-0');
            return document.getElementById('plot-0').layout.uirevision === 'fc1|stable_rank' && w.data
                && w.data.map((t) => t.name).join() === 'activations,weights' && w.data[1].x.length > 0; }""")
        page.mouse.move(1, 1)  # no hover label, and Plotly's "double-click to zoom out" note gone
        wait_until(page, "() => document.querySelectorAll('.notifier-note').length === 0")
        page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
        if os.environ.get("NDT_DASHBOARD_SCREENSHOT"):
            page.screenshot(path=os.environ["NDT_DASHBOARD_SCREENSHOT"], full_page=True)
        page.uncheck("#rule-ndt")
        wait_until(page, "() => !document.getElementById('plot-0').data.some((t) => t.name === 'jumps (ndt rule)')")
        assert "stable rank" == plotted(page)["yTitle"]

        child.send_signal(signal.SIGKILL)
        child.communicate()
        wait_until(page, "() => document.getElementById('status-0').innerText.includes('stopped')")
        assert plotted(page)["points"][0] > 0  # still drawn from what the killed writer flushed
        assert errors == []
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
        context.close()
        if server is not None:
            server.shutdown()
            server.server_close()


def test_the_report_opens_from_a_file_with_the_network_off(browser, tmp_path, rng):
    path = tmp_path / "run.h5"
    write_synthetic_run(path, rng, 50_000, jumps=40, alerts=3)
    report = write_report([str(path)], tmp_path / "report.html")
    context = browser.new_context(offline=True, viewport={"width": 1200, "height": 1000})
    requested: list[str] = []
    errors: list[str] = []
    try:
        page = context.new_page()
        page.on("request", lambda request: requested.append(request.url))
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(f"file://{report}")
        wait_until(page, "() => { const gd = document.getElementById('plot-0'); return gd && gd.data && gd.data.length > 0; }")
        assert plotted(page)["lastStep"] == 5 * (50_000 - 1)
        assert "jumps (ndt rule)" in plotted(page)["names"] and "alerts" in plotted(page)["names"]
        assert "alerts in view: 3" in page.inner_text("#jumps-0")
        assert "snapshot of" in page.inner_text("#status-0")
        page.select_option("#layer-0", "b")
        wait_until(page, "() => document.getElementById('plot-0').layout.uirevision === 'b|stable_rank'")
        page.select_option("#metric", "participation_ratio")
        wait_until(page, "() => document.getElementById('plot-0').layout.uirevision === 'b|participation_ratio'")
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        assert errors == []
        assert [url for url in requested if not url.startswith(("file:", "data:"))] == []
    finally:
        context.close()
