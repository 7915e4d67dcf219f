"""StabilityMonitor as a hook: episodes, escalation, re-arming, and the offline replay of a run dir."""

import json
import subprocess
import sys

from rlhf_kit.events import Alert, RunInfo
from rlhf_kit.hooks import HookBus
from rlhf_kit.runlog import RunDir, RunLogHook, load_run, read_jsonl
from rlhf_kit.stability import StabilityMonitor, Thresholds, analyze_run, merge_alerts, text_report


def grad_records(norms):
    return [{"step": i, "grad_norm": g} for i, g in enumerate(norms)]


def test_one_episode_while_rule_keeps_firing():
    mon = StabilityMonitor()
    emitted = []
    # median 1 for steps 0-3, then 20, 25, 30: each > 10x the running median (the median stays
    # 1 while the 1.0s are the majority of the 20-step window) -> one episode, steps 4..6
    for rec in grad_records([1.0, 1.0, 1.0, 1.0, 20.0, 25.0, 30.0]):
        emitted += mon.observe(rec)
    assert [(a.rule, a.step) for a in emitted] == [("grad_explosion", 4)]
    assert len(mon.alerts) == 1 and mon.alerts[0].last_step == 6
    # what was emitted is a copy: the live episode moved on, the logged line did not
    assert emitted[0].last_step == 4


def test_escalation_writes_a_second_line_with_the_same_first_step():
    mon = StabilityMonitor()
    emitted = []
    # 15 > 10x median 1 (warning), then 200 > 100x median 1 (critical)
    for rec in grad_records([1.0, 1.0, 1.0, 1.0, 15.0, 200.0]):
        emitted += mon.observe(rec)
    assert [(a.step, a.severity, a.last_step) for a in emitted] == [(4, "warning", 4), (4, "critical", 5)]
    merged = merge_alerts(emitted)
    assert len(merged) == 1 and merged[0].severity == "critical" and merged[0].last_step == 5


def test_rearm_after_clear_steps_starts_a_new_episode():
    t = Thresholds(rearm_steps=3)
    mon = StabilityMonitor(t)
    # spike at 4, clear 5-6 (2 steps < 3): step 7 continues the episode; clear 8-10 (3 steps)
    # closes it; the spike at 11 is a new episode. Median stays 1.0 throughout.
    norms = [1.0] * 4 + [50.0, 1.0, 1.0, 50.0, 1.0, 1.0, 1.0, 50.0]
    emitted = []
    for rec in grad_records(norms):
        emitted += mon.observe(rec)
    assert [a.step for a in emitted] == [4, 11]
    assert [(a.step, a.last_step) for a in mon.alerts] == [(4, 7), (11, 11)]


def test_bounded_history_keeps_the_baseline_steps():
    mon = StabilityMonitor(Thresholds(history=5, baseline_steps=3))
    for i in range(20):
        mon.observe({"step": i, "entropy": 10.0})
    assert [r["step"] for r in mon.records] == [0, 1, 2, 15, 16, 17, 18, 19]


def _write_run(root, records):
    """A run directory written the way every runner and adapter writes one: HookBus + RunLogHook."""
    rd = RunDir(root)
    bus = HookBus([RunLogHook(rd), StabilityMonitor()])
    bus.run_start(RunInfo(run_id=root.name, framework="trl"))
    for rec in records:
        step = rec.pop("step")
        bus.begin_step(step)
        with bus.phase("rollout", work={"mode": "gen", "tokens": 10}):
            pass
        bus.end_step(step, 0, rec)
    bus.run_end()
    return rd


def test_live_alerts_land_in_alerts_jsonl_and_match_offline_analysis(tmp_path):
    rd = _write_run(tmp_path / "r1", grad_records([1.0, 1.2, 0.9, 1.0, 30.0, 1.0, 1.1]))
    lines = read_jsonl(rd.alerts_log)
    assert [(d["rule"], d["step"], d["severity"]) for d in lines] == [("grad_explosion", 4, "warning")]
    assert lines[0]["cause"] and lines[0]["what_to_try"] and lines[0]["evidence"]["grad_norm"] == 30.0
    offline = analyze_run(rd.root)
    assert [(a.rule, a.step, a.last_step) for a in offline] == [("grad_explosion", 4, 4)]


def test_offline_analysis_survives_torn_line_and_nan(tmp_path):
    import warnings

    rd = _write_run(tmp_path / "r2", [{"step": 0, "total_loss": 1.0}, {"step": 1, "total_loss": float("nan")}])
    with open(rd.train_log, "a") as f:
        f.write('{"step": 2, "total_lo')  # a writer killed mid-line
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        alerts = analyze_run(rd.root)
    assert [(a.rule, a.step) for a in alerts] == [("nan_inf", 1)]


def test_resumed_run_relogged_steps_count_once(tmp_path):
    recs = grad_records([1.0, 1.0, 1.0, 1.0]) + grad_records([1.0, 1.0, 1.0, 1.0, 40.0])[2:]
    rd = _write_run(tmp_path / "r3", recs)
    assert len(read_jsonl(rd.train_log)) == 7
    assert [(a.rule, a.step) for a in analyze_run(rd.root)] == [("grad_explosion", 4)]


def test_text_report_from_alerts_jsonl(tmp_path):
    rd = _write_run(tmp_path / "r4", grad_records([1.0, 1.0, 1.0, 1.0, 30.0]))
    text = text_report(load_run(rd.root), explain=True)
    assert "grad_explosion at step 4" in text and "likely cause:" in text and "what to try:" in text
    assert "grad_norm" in text and "Global L2 norm" in text  # explain mode teaches the metric
    assert "1 warning" in text


def test_merge_alerts_never_moves_backwards():
    a = Alert("kl_spike", "critical", 3, "m", last_step=9)
    b = Alert("kl_spike", "warning", 3, "m2", last_step=5)
    c = Alert("kl_spike", "warning", 12, "m3", last_step=12)
    merged = merge_alerts([a, b, c])
    assert [(m.step, m.severity, m.last_step) for m in merged] == [(3, "critical", 9), (12, "warning", 12)]


def test_read_side_imports_no_torch_or_numpy():
    code = ("import sys, rlhf_kit.stability, rlhf_kit.stability.cli; "
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy'))))")
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
