"""The rank_straggler rule: offline over multi-rank run directories, and live on rank 0 of two HookBus ranks."""

import time

from test_multirank_profiler import write_ddp_run

from rlhf_kit.events import RunInfo
from rlhf_kit.hooks import HookBus
from rlhf_kit.runlog import RunDir, RunLogHook, load_run
from rlhf_kit.stability import StabilityMonitor, Thresholds, analyze_run
from rlhf_kit.stability.report import text_report


def _stragglers(alerts):
    return [a for a in alerts if a.rule == "rank_straggler"]


def test_persistent_slow_rank_fires_once_per_episode(tmp_path):
    # rank 2 is 0.3 s slower in rollout on steps 3-9: busy 1.1 s vs 0.8 s -> share 0.375 > 0.2.
    # Judged steps 3,4,5,6,7 are the first straggler_window (5) in a row -> fires at step 7, holds to 9.
    run = write_ddp_run(tmp_path / "r", world=3, steps=10, slow=2, extra=0.3, slow_steps=set(range(3, 10)))
    (a,) = _stragglers(analyze_run(run))
    assert (a.step, a.last_step, a.severity) == (7, 9, "warning")
    assert a.evidence["rank"] == 2 and a.evidence["phase"] == "rollout"
    assert abs(a.evidence["share"] - 0.375) < 1e-6
    assert "rank 2" in a.message and "rollout" in a.message
    assert "rank_straggler" in text_report(run)


def test_share_threshold_is_configurable(tmp_path):
    # 0.12 s extra on 0.8 s -> share 0.15: quiet at the default 0.2, fires at 0.1
    run = write_ddp_run(tmp_path / "r", world=2, steps=6, slow=1, extra=0.12)
    assert _stragglers(analyze_run(run)) == []
    (a,) = _stragglers(analyze_run(run, Thresholds(straggler_share=0.1)))
    assert a.step == 5 and a.evidence["rank"] == 1
    # the absolute floor: 120 ms over the others is not above a 200 ms floor
    assert _stragglers(analyze_run(run, Thresholds(straggler_share=0.1, straggler_min_seconds=0.2))) == []


def test_not_persistent_does_not_fire(tmp_path):
    # slow on 4 of every 5 steps: never 5 judged steps in a row
    run = write_ddp_run(tmp_path / "r", world=2, steps=10, slow=1, extra=0.5, slow_steps={1, 2, 3, 4, 6, 7, 8, 9})
    assert _stragglers(analyze_run(run)) == []
    single = write_ddp_run(tmp_path / "one", world=1, steps=8)
    assert _stragglers(analyze_run(single)) == []


def test_live_monitor_on_rank0_tails_other_ranks(tmp_path):
    """Two HookBus ranks append to one phases.jsonl; rank 1 sleeps 30 ms in reward every step.

    Rank 0 finishes each step first, so its monitor judges the step before (the newest one both ranks
    finished): the 5th judged step is step 6, where the alert must appear, in alerts.jsonl.
    """
    rd = RunDir(tmp_path / "live")
    monitor = StabilityMonitor()
    buses = [HookBus([RunLogHook(rd, write_steps=True), monitor]), HookBus([RunLogHook(rd, write_steps=False)], rank=1)]
    info = RunInfo(run_id="live", world_size=2, config={"run": {"output_dir": str(tmp_path)}})
    buses[0].run_start(info)
    for step in range(1, 9):
        for r, bus in enumerate(buses):
            bus.begin_step(step)
            with bus.phase("rollout"):
                pass
            with bus.phase("reward"):
                time.sleep(0.03 if r == 1 else 0.0)
            bus.end_step(step, 0, {})
    for bus in buses:
        bus.run_end()
    (a,) = _stragglers(load_run(rd.root).alerts)
    assert a.step == 6 and a.evidence["judged_step"] == 5 and a.evidence["rank"] == 1
    assert a.evidence["phase"] == "reward"
    assert _stragglers(monitor.alerts)[0].last_step == 8
