"""Per-rank phase table and straggler figure on multi-rank run directories written like DDP ranks.

`write_ddp_run` is also imported by the other tests/test_multirank_*.py files.
"""

import time

import pytest

from rlhf_kit.events import PhaseRecord, RunInfo, step_record
from rlhf_kit.hooks import HookBus
from rlhf_kit.profiler import ranks as rk
from rlhf_kit.runlog import RunDir, RunLogHook, load_run

# Every rank's phase seconds per step when balanced; a comm phase holds the waiting.
BASE = {"rollout": 0.4, "reward": 0.1, "update": 0.3, "forward": 0.1, "backward": 0.15, "comm": 0.05}


def write_ddp_run(path, world=3, steps=4, slow=None, extra=0.0, slow_phase="rollout", slow_steps=None):
    """A run directory as `world` DDP ranks write it: every rank its phases, rank 0 train.jsonl.

    Rank `slow` spends `extra` more seconds in `slow_phase` on `slow_steps` (default every step);
    the other ranks wait that long in `comm`, so every rank's wall step time stays equal, as under
    a real all-reduce.
    """
    rd = RunDir(path)
    hooks = [RunLogHook(rd, write_steps=(r == 0)) for r in range(world)]
    hooks[0].on_run_start(RunInfo(run_id=path.name, device="cpu", world_size=world))
    for step in range(1, steps + 1):
        hit = slow is not None and (slow_steps is None or step in slow_steps)
        for r, hook in enumerate(hooks):
            ph = dict(BASE)
            if hit and r == slow:
                ph[slow_phase] += extra
            elif hit:
                ph["comm"] += extra
            t, recs = 0.0, []
            for name, sec in ph.items():
                parent = "update" if name in ("forward", "backward") else ""
                recs.append(PhaseRecord(name=name, step=step, rank=r, start=10.0 * step + (0 if parent else t),
                                        seconds=sec, count=1, parent=parent))
                t += 0 if parent else sec
            record = step_record(step, 0, {"step_seconds": t, **{f"time/{n}": s for n, s in ph.items()}}, rank=r)
            hook.on_step_end(record, recs)
    for hook in hooks:
        hook.on_run_end()
    return load_run(path)


def test_balanced_run_has_ratio_one(tmp_path):
    run = write_ddp_run(tmp_path / "even", world=3)
    s = rk.straggler(run)
    assert s.world == 3 and s.steps == 4
    assert s.ratio == pytest.approx(1.0)
    assert s.phase == ""  # no phase exceeds the others
    rows = {r.name: r for r in rk.rank_breakdown(run)}
    assert rows["rollout"].min_ms == pytest.approx(400.0) and rows["rollout"].max_ms == pytest.approx(400.0)


def test_slow_rank_ratio_phase_and_comm_wait(tmp_path):
    # rank 2 spends 0.4 s more in rollout. Busy (top level, no comm): 0.4+0.1+0.3 = 0.8 s on ranks 0 and 1,
    # 1.2 s on rank 2. Median over ranks = 0.8 -> ratio 1.2/0.8 = 1.5; the others wait 0.05+0.4 = 0.45 s in comm.
    run = write_ddp_run(tmp_path / "slow", world=3, slow=2, extra=0.4)
    s = rk.straggler(run)
    assert s.slow_rank == 2
    assert s.ratio == pytest.approx(1.5)
    assert s.phase == "rollout" and s.phase_excess_ms == pytest.approx(400.0)
    assert s.comm_wait_ms == pytest.approx(450.0)
    assert s.busy_ms == pytest.approx({0: 800.0, 1: 800.0, 2: 1200.0})
    assert s.slowest_each_step == 4
    rows = {r.name: r for r in rk.rank_breakdown(run)}
    r = rows["rollout"]
    assert (r.min_ms, r.median_ms, r.max_ms, r.slow_rank) == pytest.approx((400.0, 400.0, 800.0, 2))
    assert rows["comm"].slow_rank in (0, 1) and rows["comm"].min_ms == pytest.approx(50.0)
    assert rows["forward"].parent == "update"
    text = rk.format_ranks(rk.rank_breakdown(run), s)
    assert "rank 2" in text and "1.50x" in text and "rollout makes the difference" in text


def test_per_step_figures_and_share(tmp_path):
    # 2 ranks, rank 1 slower in update by 0.2 s on step 3 only: busy 1.0 vs 0.8 s.
    # ratio = 1.0 / median(0.8, 1.0) = 1.0/0.9; share against the other rank = 1.0/0.8 - 1 = 0.25
    run = write_ddp_run(tmp_path / "two", world=2, slow=1, extra=0.2, slow_phase="update", slow_steps={3})
    per = rk.step_stragglers(run.phases)
    assert sorted(per) == [1, 2, 3, 4]
    assert per[3].slow_rank == 1 and per[3].phase == "update"
    assert per[3].ratio == pytest.approx(1.0 / 0.9) and per[3].share == pytest.approx(0.25)
    assert per[2].share == pytest.approx(0.0)


def test_incomplete_step_and_single_rank_get_no_figure(tmp_path):
    run = write_ddp_run(tmp_path / "two", world=2, steps=2)
    # rank 1 has not written step 3 yet: judging step 3 on rank 0 alone would hide the straggler
    late = run.phases + [PhaseRecord(name="rollout", step=3, rank=0, seconds=0.1)]
    assert sorted(rk.step_stragglers(late)) == [1, 2]
    single = write_ddp_run(tmp_path / "one", world=1)
    assert rk.straggler(single) is None and rk.rank_breakdown(single) == []
    assert rk.format_ranks([], None).startswith("single rank")


def test_hookbus_ranks_with_a_sleeping_rank(tmp_path):
    """The real HookBus timing on 2 ranks; rank 1 sleeps 50 ms in reward, so it must be the straggler."""
    rd = RunDir(tmp_path / "bus")
    buses = [HookBus([RunLogHook(rd, write_steps=(r == 0))], rank=r) for r in range(2)]
    buses[0].run_start(RunInfo(run_id="bus", world_size=2))
    for step in (1, 2, 3):
        for r, bus in enumerate(buses):
            bus.begin_step(step)
            with bus.phase("rollout"):
                sum(range(1000))
            with bus.phase("reward"):
                time.sleep(0.05 if r == 1 else 0.0)
            with bus.phase("comm"):
                pass
            bus.end_step(step, 0, {})
    for bus in buses:
        bus.run_end()
    s = rk.straggler(load_run(rd.root))
    assert s.slow_rank == 1 and s.phase == "reward" and s.ratio > 1.0
    assert s.slowest_each_step == 3


def test_profile_report_and_health_show_ranks(tmp_path):
    from rlhf_kit.profiler.cli import report
    from rlhf_kit.stability.report import text_report

    run = write_ddp_run(tmp_path / "slow", world=2, slow=1, extra=0.3)
    for text in (report(run), text_report(run)):
        assert "Straggler: rank 1" in text and "rollout makes the difference" in text
    single = write_ddp_run(tmp_path / "one", world=1)
    assert "Straggler" not in report(single) and "Per rank" not in text_report(single)
