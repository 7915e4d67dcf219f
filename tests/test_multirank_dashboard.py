"""Per-rank timeline view in Debian's chromium: the report and the live page.

The browser fixtures and marks come from tests/test_dashboard_browser.py, so these run under the same
rules (skipped without playwright or chromium). The view's data: test_multirank_dashboard_data.py.
"""

from __future__ import annotations

import pytest
from test_multirank_profiler import write_ddp_run

from rlhf_kit.dashboard.report import write_report


# ---- in the browser ------------------------------------------------------------------
pytest.importorskip("playwright.sync_api", reason="pip install -r requirements-dev.txt")
from test_dashboard_browser import browser, live_server, page, pytestmark  # noqa: E402,F401  (shared fixtures)


def _bars(page, chart):
    return page.evaluate(f"document.getElementById('{chart}').data.map((t) => [t.name, Array.from(t.y), Array.from(t.x)])")


def test_report_timeline_per_rank_and_step_choice(page, tmp_path):
    slow = write_ddp_run(tmp_path / "ddp", world=2, steps=3, slow=1, extra=0.3, slow_steps={2})
    single = write_ddp_run(tmp_path / "single", world=1, steps=3)
    out = write_report([slow.dir.root, single.dir.root], tmp_path / "report.html")
    page.goto(out.as_uri())
    page.wait_for_function("document.getElementById('chart-ranks-0') && document.getElementById('chart-ranks-0').data")
    assert page.locator("#chart-ranks-1").count() == 0  # the single-rank run gets no timeline
    bars = {name: dict(zip(y, x)) for name, y, x in _bars(page, "chart-ranks-0")}
    assert bars["rollout"] == {"rank 0": 0.4, "rank 1": 0.4}  # newest step (3) shown first: balanced
    page.select_option("#rank-step-0", "2")
    page.wait_for_function("document.getElementById('rank-straggler-0').textContent.startsWith('Step 2')")
    bars = {name: dict(zip(y, x)) for name, y, x in _bars(page, "chart-ranks-0")}
    assert bars["rollout"]["rank 1"] == pytest.approx(0.7) and bars["comm"]["rank 0"] == pytest.approx(0.35)
    text = page.locator("#rank-straggler-0").inner_text()
    assert "rank 1 is the slowest" in text and "rollout makes the difference" in text


def test_live_page_follows_new_steps_per_rank(page, live_server, tmp_path):
    runs, url = live_server
    write_ddp_run(runs / "ddp", world=2, steps=2)
    page.goto(url + "?run=ddp")
    page.wait_for_function("document.getElementById('chart-ranks-0') && document.getElementById('chart-ranks-0').data")
    assert page.locator("#rank-step-0 option").count() == 2
    # the same run grown to 4 steps with a slow rank 1 on the new ones (files replaced by longer ones)
    longer = write_ddp_run(tmp_path / "ddp", world=2, steps=4, slow=1, extra=0.2, slow_steps={3, 4})
    for name in ("train.jsonl", "phases.jsonl"):
        (runs / "ddp" / "logs" / name).write_text((longer.dir.logs / name).read_text())
    page.wait_for_function("document.querySelectorAll('#rank-step-0 option').length === 4", timeout=5000)
    page.wait_for_function("document.getElementById('rank-straggler-0').textContent.startsWith('Step 4')", timeout=5000)
    assert "rank 1 is the slowest" in page.locator("#rank-straggler-0").inner_text()
