"""The dashboard's data layer: columns, views, alerts (recorded or offline), profile files."""

from __future__ import annotations

import warnings

from test_dashboard_helpers import make_run, metrics_at

from rlhf_kit.dashboard.data import columns, profile_files, run_view, schema
from rlhf_kit.events import GROUPS, METRICS
from rlhf_kit.runlog import load_run


def test_columns_pads_missing_keys_and_drops_non_numbers():
    recs = [{"step": 0, "a": 1.0, "timestamp": "t"},
            {"step": 1, "a": None, "b": 2},          # b first appears at record 1
            {"step": 2, "a": "x", "b": True}]        # strings and bools are not chart values
    cols = columns(recs)
    assert cols == {"step": [0, 1, 2], "a": [1.0, None, None], "b": [None, 2, None]}


def test_columns_empty():
    assert columns([]) == {"step": []}


def test_schema_is_the_metrics_table():
    s = schema()
    assert s["groups"] == list(GROUPS)
    assert [m["name"] for m in s["metrics"]] == [m.name for m in METRICS]
    assert "forward" not in s["phases"] and s["children"]["forward"] == "update"


def test_run_view_carries_logged_values_and_recorded_alert(tmp_path):
    rd, _, _ = make_run(tmp_path, steps=5, alert_at=2)
    view = run_view(load_run(rd.root))
    assert view["steps"]["step"] == [0, 1, 2, 3, 4]
    assert view["steps"]["reward_mean"] == [metrics_at(s)["reward_mean"] for s in range(5)]
    assert len(view["steps"]["time/rollout"]) == 5 and all(t > 0 for t in view["steps"]["time/rollout"])
    assert view["alerts_source"] == "recorded"
    assert [(a["rule"], a["step"]) for a in view["alerts"]] == [("kl_spike", 2)]
    assert view["info"]["versions"]["torch"] == "2.13.0"
    assert view["memory"]["predicted_peak"]["update"] == 16 << 20
    # the profiler's table is there, one row per logged top-level phase plus "other"
    names = [r["name"] for r in view["breakdown"]["rows"]]
    assert names == ["rollout", "reward", "update", "other"]
    assert "memory" not in view["breakdown"]["rows"][0]


def test_offline_alerts_when_none_recorded(tmp_path):
    """A run with a NaN step and no alerts.jsonl gets its alerts from the stability rules."""
    from rlhf_kit.hooks import HookBus
    from rlhf_kit.runlog import RunDir, RunLogHook

    rd = RunDir(tmp_path / "nan_run")
    bus = HookBus([RunLogHook(rd)])
    for step in range(6):
        bus.begin_step(step)
        m = metrics_at(step)
        if step == 4:
            m.update(nan_count=3, update_skipped=1, total_loss=float("nan"))
        bus.end_step(step, 0, m)
    bus.run_end()
    view = run_view(load_run(rd.root))
    assert view["alerts_source"] == "offline"
    assert any(a["step"] == 4 and a["severity"] == "critical" for a in view["alerts"]), view["alerts"]
    assert run_view(load_run(rd.root), analyze=False)["alerts"] == []


def test_profile_files_sorted_by_kind(tmp_path):
    rd, _, _ = make_run(tmp_path, steps=1)
    (rd.profile / "stacks.folded").write_text("a;b 1\n")
    assert profile_files(rd) == {"flamegraphs": ["profile/flame.svg"], "traces": ["profile/trace_0.json"],
                                 "other": ["profile/stacks.folded"]}


def test_torn_last_line_is_skipped(tmp_path):
    rd, _, _ = make_run(tmp_path, steps=3, alert_at=None)
    with open(rd.train_log, "a") as f:
        f.write('{"step": 3, "reward_mea')  # a writer killed mid-line
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        view = run_view(load_run(rd.root))
    assert view["steps"]["step"] == [0, 1, 2]


def test_non_finite_values_become_gaps(tmp_path):
    """Another tool may write NaN/Infinity (Python's json reads them); the page gets null."""
    import json

    from rlhf_kit.dashboard.html import script_json

    rd, _, _ = make_run(tmp_path, steps=2, alert_at=None, memory=False, profile=False)
    with open(rd.train_log, "a") as f:
        f.write('{"step": 2, "reward_mean": NaN, "kl_mean": Infinity}\n')
    with open(rd.alerts_log, "a") as f:
        f.write('{"rule": "x", "severity": "info", "step": 2, "message": "m", "evidence": {"v": NaN}}\n')
    view = run_view(load_run(rd.root))
    assert view["steps"]["reward_mean"][2] is None and view["steps"]["kl_mean"][2] is None
    back = json.loads(script_json([view]))  # strict: would raise on NaN
    assert back[0]["alerts"][0]["evidence"] == {"v": None}
