"""`rlhf-kit report` end to end through the real CLI: one self-contained file, clean errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from test_dashboard_helpers import make_run, metrics_at


def rlhf_kit(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlhf_kit.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=120)


def embedded_runs(html: str) -> list[dict]:
    m = re.search(r'<script type="application/json" id="rk-data">(.*?)</script>', html, re.S)
    return json.loads(m.group(1))


def test_report_is_self_contained_and_holds_the_logged_data(tmp_path):
    a, _, _ = make_run(tmp_path / "runs", "run_a", steps=6, alert_at=3)
    b, _, _ = make_run(tmp_path / "runs", "run_b", steps=4, alert_at=None, memory=False, profile=False)
    out = tmp_path / "out" / "report.html"
    out.parent.mkdir()
    res = rlhf_kit("report", str(a.root), str(b.root), "-o", str(out))
    assert res.returncode == 0, res.stderr
    assert "wrote" in res.stdout
    html = out.read_text()
    # offline: no script, stylesheet or image is fetched from anywhere
    assert not re.search(r'<script[^>]+src=', html)
    assert not re.search(r'<link[^>]+href=', html)
    from plotly.offline import get_plotlyjs
    assert get_plotlyjs() in html  # the chart library itself is inlined from the plotly package
    assert 'id="rk-schema"' in html
    runs = embedded_runs(html)
    assert [r["name"] for r in runs] == ["run_a", "run_b"]
    assert runs[0]["steps"]["kl_mean"] == [metrics_at(s)["kl_mean"] for s in range(6)]
    assert runs[0]["alerts"][0]["rule"] == "kl_spike"
    # the flame graph is embedded, the trace linked relative to the report
    prof = runs[0]["profile"]
    assert prof["embed"]["profile/flame.svg"].startswith("data:image/svg+xml;base64,")
    assert prof["href"]["profile/trace_0.json"] == "../runs/run_a/profile/trace_0.json"


def test_read_side_does_not_import_torch(tmp_path):
    rd, _, _ = make_run(tmp_path, steps=3)
    code = ("import sys; from rlhf_kit.dashboard.report import write_report; import rlhf_kit.dashboard.server; "
            f"write_report([{str(rd.root)!r}], {str(tmp_path / 'r.html')!r}); "
            "bad = [m for m in ('torch', 'numpy') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


def test_bad_inputs_are_one_line_and_exit_2(tmp_path):
    rd, _, _ = make_run(tmp_path, steps=2)
    (tmp_path / "empty").mkdir()
    cases = [
        (["report"], "RUN_DIR"),
        (["report", str(tmp_path / "missing")], "does not exist"),
        (["report", str(tmp_path / "empty")], "not a run directory"),
        (["report", str(rd.root), "-o", str(tmp_path / "nodir" / "r.html")], "does not exist"),
        (["report", str(rd.root), "-o", str(tmp_path)], "is a directory"),
        (["dashboard", str(tmp_path), "--port", "99999"], "--port"),
        (["dashboard", str(tmp_path), "--port", "abc"], "--port"),
        (["dashboard", str(tmp_path / "missing")], "does not exist"),
    ]
    for args, needle in cases:
        res = rlhf_kit(*args)
        assert res.returncode == 2, (args, res.stderr)
        assert res.stderr.count("\n") == 1 and needle in res.stderr, (args, res.stderr)
        assert "Traceback" not in res.stderr
