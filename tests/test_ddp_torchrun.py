"""`torchrun --nproc_per_node 2 train.py` end to end on tiny-gpt2 (gloo, CPU): logs, checkpoints, resume."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, run_cli
from rlhf_kit.runlog import RunDir, load_run, read_jsonl

FLAGS = ["--epochs", "1", "--steps_per_epoch", "2", "--batch_size", "4", "--max_new_tokens", "5", "--save_every", "1",
         "--device", "cpu", "--progress", "false", "--tensorboard", "false"]
TIMING = ("timestamp", "step_seconds", "tokens_per_second", "rollout_tokens_per_second")


def torchrun(*args: str, nproc: int = 2) -> subprocess.CompletedProcess:
    torchrun_bin = Path(sys.executable).with_name("torchrun")
    return subprocess.run([str(torchrun_bin), "--standalone", f"--nproc_per_node={nproc}", "train.py", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def metric_values(path: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("time/") and k not in TIMING} for r in read_jsonl(path)]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp_runs")
    res = torchrun(*FLAGS, "--output_dir", str(out), "--run_name", "ddp")
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.count("Starting RLHF training run") == 1  # console output from rank 0 only
    return out / "ddp"


@pytest.mark.slow
def test_rank0_writes_steps_and_every_rank_its_phases(ddp_run):
    run = load_run(ddp_run)
    assert run.info.world_size == 2 and run.info.config["rollout"]["batch_size"] == 4
    assert [r["step"] for r in run.steps] == [1, 2] and {r.get("rank", 0) for r in run.steps} == {0}
    for r in run.steps:
        assert r["nan_count"] == 0 and r["update_skipped"] == 0 and r["time/comm"] > 0
    for step in (1, 2):
        for rank in (0, 1):
            names = {p.name: p for p in run.phases if p.step == step and p.rank == rank}
            assert {"rollout", "advantages", "comm", "update", "backward", "checkpoint"} <= set(names), (step, rank)
            assert names["comm"].count == 2 and names["advantages"].count == 2


@pytest.mark.slow
def test_checkpoint_holds_every_ranks_sampling_stream(ddp_run):
    import torch

    ckpts = sorted(p.name for p in RunDir(ddp_run).checkpoints.iterdir())
    assert ckpts == ["latest.pt", "step_1.pt", "step_2.pt"]
    state = torch.load(RunDir(ddp_run).checkpoints / "step_2.pt", weights_only=True)
    assert state["world_size"] == 2 and len(state["rank_rng"]) == 2
    g0, g1 = (s["generator"] for s in state["rank_rng"])
    assert not torch.equal(g0, g1)  # rank-derived seeds: the ranks sample different responses


@pytest.mark.slow
def test_resume_same_world_size_is_exact_then_one_process_continues(ddp_run, tmp_path):
    import shutil

    run = tmp_path / "ddp"
    shutil.copytree(ddp_run, run)
    res = torchrun(*FLAGS, "--resume", str(run / "checkpoints" / "step_1.pt"))
    assert res.returncode == 0, res.stderr[-3000:]
    logs = RunDir(run).logs
    assert metric_values(logs / "train.jsonl") == metric_values(logs / "train.jsonl.before-resume")
    # the same global batch on one process: weights, optimizer and step carry over, sampling restarts
    res = run_cli("train.py", *FLAGS, "--resume", str(run / "checkpoints" / "step_1.pt"))
    assert res.returncode == 0, res.stderr[-3000:]
    steps = read_jsonl(logs / "train.jsonl")
    assert [r["step"] for r in steps] == [1, 2] and steps[1]["nan_count"] == 0
    assert load_run(run).info.world_size == 1


def test_world_size_must_divide_the_global_batch(monkeypatch):
    from rlhf_core.config import parse_config
    from rlhf_core.distributed import init_distributed
    from rlhf_kit.errors import UsageError

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(UsageError, match="--batch_size 3 is the global batch and must be divisible by the world size 2"):
        init_distributed(parse_config(["--batch_size", "3"]), "cpu")
    with pytest.raises(UsageError, match="--mini_batch_size 3 is global"):
        init_distributed(parse_config(["--batch_size", "4", "--mini_batch_size", "3"]), "cpu")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert not init_distributed(parse_config(["--batch_size", "3"]), "cpu").enabled  # one process: no group
