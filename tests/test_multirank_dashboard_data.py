"""The per-rank view's data: rank_view in the report's run view and in the live server's update."""

from test_multirank_profiler import write_ddp_run

from rlhf_kit.dashboard.data import rank_view, run_view
from rlhf_kit.runlog import load_run


def test_rank_view_rows_and_straggler(tmp_path):
    run = write_ddp_run(tmp_path / "r", world=2, steps=3, slow=1, extra=0.25)
    rv = rank_view(run.phases)
    assert rv["world"] == 2 and rv["ranks"] == [0, 1] and rv["steps"] == [1, 2, 3]
    assert rv["phases"] == ["rollout", "reward", "update", "forward", "backward", "comm"]
    rows = {(s, r, rv["phases"][i]): (start, sec) for s, r, i, start, sec in rv["rows"]}
    # rank 1's rollout takes 0.4 + 0.25 s; its reward starts when that rollout ends
    assert rows[(3, 1, "rollout")] == (0.0, 0.65) and rows[(3, 1, "reward")] == (0.65, 0.1)
    assert rows[(3, 0, "reward")] == (0.4, 0.1) and rows[(3, 0, "comm")] == (0.8, 0.3)
    assert rv["straggler"]["3"]["rank"] == 1 and rv["straggler"]["3"]["phase"] == "rollout"
    assert rank_view(run.phases, max_steps=2)["steps"] == [2, 3]
    assert run_view(load_run(write_ddp_run(tmp_path / "one", world=1).dir.root))["ranks"] == {}


def test_live_update_carries_rank_view(tmp_path):
    from rlhf_kit.dashboard.server import RunCache

    run = write_ddp_run(tmp_path / "r", world=3, steps=2, slow=0, extra=0.2)
    upd = RunCache(run.dir).update(0, "")
    assert upd["ranks"]["world"] == 3 and upd["ranks"]["straggler"]["2"]["rank"] == 0
