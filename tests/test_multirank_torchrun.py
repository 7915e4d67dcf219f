"""The multi-rank instruments on a real `torchrun --nproc_per_node 2` run (gloo, CPU, tiny-gpt2).

Rank 1 is made a straggler from outside the kit: a launcher script wraps the toy reward model so
that rank 1 sleeps 0.15 s inside the `reward` phase of every step. Then the live monitor on rank 0
must record `rank_straggler` naming rank 1 and `reward`, `rlhf-kit health` must print the per-rank
table and straggler, and the report must carry the per-rank timeline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from rlhf_kit.runlog import load_run

LAUNCHER = '''
import os, sys, time
import rlhf_core.reward as rw
_score = rw.ToyRewardModel.compute_reward
def slow_on_rank1(self, *args, **kwargs):
    if os.environ.get("RANK") == "1":
        time.sleep(0.15)  # inside the runner's reward phase
    return _score(self, *args, **kwargs)
rw.ToyRewardModel.compute_reward = slow_on_rank1
from rlhf_kit.cli import train_main
sys.exit(train_main(sys.argv[1:]))
'''
FLAGS = ["--epochs", "1", "--steps_per_epoch", "10", "--batch_size", "4", "--max_new_tokens", "5",
         "--device", "cpu", "--progress", "false", "--tensorboard", "false"]


@pytest.fixture(scope="module")
def straggler_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    script = out / "launch_slow_rank.py"
    script.write_text(LAUNCHER)
    res = subprocess.run([str(Path(sys.executable).with_name("torchrun")), "--standalone", "--nproc_per_node=2",
                          str(script), *FLAGS, "--output_dir", str(out), "--run_name", "slow"],
                         cwd=ROOT, capture_output=True, text=True, timeout=400,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, res.stderr[-3000:]
    return out / "slow"


@pytest.mark.slow
def test_live_alert_health_and_report_on_real_torchrun(straggler_run, tmp_path):
    run = load_run(straggler_run)
    assert run.info.world_size == 2 and {p.rank for p in run.phases} == {0, 1}
    alerts = [a for a in run.alerts if a.rule == "rank_straggler"]
    assert alerts, [a.rule for a in run.alerts]
    assert alerts[0].evidence["rank"] == 1 and alerts[0].evidence["phase"] == "reward"
    health = subprocess.run([sys.executable, "-m", "rlhf_kit.cli", "health", str(straggler_run)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert "Straggler: rank 1" in health.stdout and "reward makes the difference" in health.stdout, health.stdout
    out = tmp_path / "report.html"
    rep = subprocess.run([sys.executable, "-m", "rlhf_kit.cli", "report", str(straggler_run), "-o", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert rep.returncode == 0, rep.stderr
    html = out.read_text()
    start = html.index('id="rk-data">') + len('id="rk-data">')
    (view,) = json.loads(html[start:html.index("</script>", start)])
    assert view["ranks"]["world"] == 2 and len(view["ranks"]["steps"]) == 10
    assert {f["rank"] for f in view["ranks"]["straggler"].values()} == {1}
    assert "rank_straggler" in [a["rule"] for a in view["alerts"]]
