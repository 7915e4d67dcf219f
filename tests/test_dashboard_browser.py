"""The report and the live page in a real browser: Debian's chromium driven by Playwright.

Chromium comes from the Makefile's system target (apt), never from `playwright install`.
"""

from __future__ import annotations

import os
import threading

import pytest
from test_dashboard_helpers import make_run, metrics_at, write_step

from rlhf_kit.dashboard.report import write_report
from rlhf_kit.dashboard.server import make_server
from rlhf_kit.runlog import write_json_atomic

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -r requirements-dev.txt")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK),
                                                   reason="needs Debian's chromium (make test installs it)")]


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    pg = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    yield pg
    pg.close()
    assert errors == [], errors  # no script error on any page


def trace_y(page, chart: str, name: str) -> list:
    """y values of the trace `name` on the Plotly chart div `chart`, as the browser holds them."""
    return page.evaluate("([id, name]) => Array.from(document.getElementById(id).data"
                         ".find((t) => t.name === name).y)", [chart, name])


def test_report_shows_logged_points_and_alert(page, tmp_path):
    rd, _, _ = make_run(tmp_path, "run_a", steps=8, alert_at=5)
    out = write_report([rd.root], tmp_path / "report.html")
    page.goto(out.as_uri())
    page.wait_for_function("document.getElementById('chart-reward') && document.getElementById('chart-reward').data")
    assert trace_y(page, "chart-reward", "reward_mean") == [metrics_at(s)["reward_mean"] for s in range(8)]
    assert trace_y(page, "chart-kl", "kl_mean") == [metrics_at(s)["kl_mean"] for s in range(8)]
    # the keys outside METRICS land in an "other" chart instead of vanishing
    assert trace_y(page, "chart-other", "my_extra") == [7.0] * 8
    row = page.locator("#alert-table tr.alert")
    assert row.count() == 1 and row.first.is_visible() and "kl_spike" in row.first.inner_text()
    # the alert is marked on the KL chart (its evidence names kl_mean) at its step
    shapes = page.evaluate("document.getElementById('chart-kl').layout.shapes.map((s) => s.x0)")
    assert shapes == [5]
    assert page.evaluate("document.getElementById('chart-reward').layout.shapes.length") == 0
    # phase bars: one bar per step for each logged phase; the pie; memory; flame graph
    bars = page.evaluate("document.getElementById('chart-phases-0').data.map((t) => [t.name, t.y.length])")
    assert bars == [["rollout", 8], ["reward", 8], ["update", 8], ["other", 8]]
    assert page.locator("#chart-phase-pie-0 .main-svg").count() > 0
    assert page.locator("#chart-memory-predicted-0 .main-svg").count() > 0
    assert page.locator("img.flame").first.evaluate("(img) => img.complete && img.naturalWidth > 0")
    assert "ui.perfetto.dev" in page.locator("#profile-list").inner_text()


def test_report_overlays_runs(page, tmp_path):
    a, _, _ = make_run(tmp_path, "run_a", steps=4, alert_at=None)
    b, _, _ = make_run(tmp_path, "run_b", steps=6, alert_at=None, memory=False)
    # a measured-only memory.json, as the memory hook writes it when it cannot predict
    write_json_atomic(b.memory_json, {"config": {}, "predicted": {}, "predicted_peak": {},
                                      "measured_peak": {"rollout": 3 << 20}, "device": "cpu", "notes": []})
    out = write_report([a.root, b.root], tmp_path / "report.html")
    page.goto(out.as_uri())
    page.wait_for_function("document.getElementById('chart-reward') && document.getElementById('chart-reward').data")
    assert len(trace_y(page, "chart-reward", "run_a · reward_mean")) == 4
    assert len(trace_y(page, "chart-reward", "run_b · reward_mean")) == 6
    # the config table puts the runs side by side
    assert page.locator("#config-table tr").first.inner_text().split("\t")[1:] == ["run_a", "run_b"]
    # run_b (index 1): no predicted chart, a measured-peak bar of 3 MiB
    assert page.locator("#chart-memory-predicted-1").count() == 0
    assert trace_y(page, "chart-memory-peak-1", "measured peak") == [3.0]


@pytest.fixture
def live_server(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    server = make_server(runs, port=0)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield runs, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_live_page_shows_new_steps_without_reload(page, live_server):
    runs, url = live_server
    rd, bus, _ = make_run(runs, "training", steps=4, alert_at=2, close=False)
    page.goto(url)
    page.wait_for_function("document.getElementById('chart-reward') && document.getElementById('chart-reward').data")
    assert trace_y(page, "chart-reward", "reward_mean") == [metrics_at(s)["reward_mean"] for s in range(4)]
    assert "kl_spike" in page.locator("#alert-table").inner_text()
    page.evaluate("window.__sameDocument = true")  # gone if the page reloads
    write_step(bus, 4)
    write_step(bus, 5)
    # the page polls every second; 5 s leaves room for a loaded CI machine
    page.wait_for_function("document.getElementById('chart-reward').data[0].y.length === 6", timeout=5000)
    assert trace_y(page, "chart-reward", "reward_mean")[-2:] == [metrics_at(4)["reward_mean"], metrics_at(5)["reward_mean"]]
    assert page.evaluate("window.__sameDocument") is True
    assert "training: 6 steps" in page.locator("#rk-status").inner_text()
    bus.run_end()


def test_live_page_survives_run_deleted(page, live_server):
    import shutil

    runs, url = live_server
    rd, _, _ = make_run(runs, "gone", steps=3, alert_at=None)
    page.goto(url + "?run=gone")
    page.wait_for_function("document.getElementById('chart-reward') && document.getElementById('chart-reward').data")
    shutil.rmtree(rd.root)
    page.wait_for_function("document.getElementById('rk-status').textContent.includes('no longer exists')",
                           timeout=5000)
    assert len(trace_y(page, "chart-reward", "reward_mean")) == 3  # what was shown stays



def test_real_tiny_run_end_to_end(page, tiny_run, tmp_path):
    """A real tiny-gpt2 run (conftest's `tiny_run`, trained by train.py), reported through the
    CLI: every metric group the run logged has a chart holding exactly the logged values."""
    import json
    import subprocess
    import sys

    from rlhf_kit.events import METRIC_BY_NAME

    out = tmp_path / "report.html"
    res = subprocess.run([sys.executable, "-m", "rlhf_kit.cli", "report", str(tiny_run), "-o", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    logged = [json.loads(line) for line in (tiny_run / "logs" / "train.jsonl").read_text().splitlines()]
    assert len(logged) == 4
    page.goto(out.as_uri())
    page.wait_for_function("document.getElementById('chart-reward') && document.getElementById('chart-reward').data")
    groups = {METRIC_BY_NAME[k].group for rec in logged for k, v in rec.items()
              if k in METRIC_BY_NAME and isinstance(v, (int, float))} - {"time"}
    assert {"loss", "reward", "kl", "policy"} <= groups
    for group in groups:
        names = page.evaluate(f"document.getElementById('chart-{group}').data.map((t) => t.name)")
        assert names, group
        for name in names:
            assert trace_y(page, f"chart-{group}", name) == [rec.get(name) for rec in logged], (group, name)
    steps = page.evaluate("document.getElementById('chart-phases-0').data[0].x")
    assert steps == [rec["step"] for rec in logged]
