"""The runner end to end through its real CLI on tiny-gpt2: outputs, determinism, resume, bad input."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, TINY, run_cli
from rlhf_kit.events import PHASES, SEED_KEYS
from rlhf_kit.runlog import RunDir, TornLineWarning, load_run, read_jsonl

pytestmark = pytest.mark.slow

TIMING_KEYS = ("timestamp", "step_seconds", "tokens_per_second", "rollout_tokens_per_second")


def metric_values(run_dir):
    """train.jsonl without wall-clock quantities."""
    return [{k: v for k, v in r.items() if not k.startswith("time/") and k not in TIMING_KEYS}
            for r in read_jsonl(RunDir(run_dir).train_log)]


def test_run_directory_has_every_part(tiny_run):
    run = load_run(tiny_run)
    assert run.info.framework == "rlhf_core" and run.info.model["vocab"] == 50257
    assert [r["step"] for r in run.steps] == [1, 2, 3, 4]
    assert [r["epoch"] for r in run.steps] == [1, 1, 2, 2]
    for key in SEED_KEYS:
        assert key in run.steps[0], key
    names = {p.name for p in run.phases}
    # every phase of an iteration was timed (old log-probs come from sampling unless --rescore)
    assert set(PHASES) - {"comm", "log", "old_logprobs"} <= names
    assert any(p.work.get("mode") == "gen" for p in run.phases)
    for r in run.steps:
        assert r["nan_count"] == 0 and r["update_skipped"] == 0
        assert r["step_seconds"] > 0 and r["tokens_per_second"] > 0
    ckpts = sorted(p.name for p in RunDir(tiny_run).checkpoints.iterdir())
    assert ckpts == ["latest.pt", "step_2.pt", "step_4.pt"]


def test_tensorboard_scalars_are_grouped_by_metric_group(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    res = run_cli("train.py", "--epochs", "1", "--steps_per_epoch", "2", *TINY[:-2], "--output_dir", str(tmp_path),
                  "--run_name", "tb")
    assert res.returncode == 0, res.stderr
    acc = EventAccumulator(str(tmp_path / "tb" / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"reward/reward_mean", "kl/kl_mean", "loss/policy_loss", "time/rollout", "policy/entropy"} <= tags
    assert [e.step for e in acc.Scalars("reward/reward_mean")] == [1, 2]


def test_same_seed_gives_identical_metrics(tiny_run, tmp_path):
    res = run_cli("train.py", "--epochs", "2", "--steps_per_epoch", "2", *TINY, "--output_dir", str(tmp_path),
                  "--run_name", "again")
    assert res.returncode == 0, res.stderr
    first, second = metric_values(tiny_run), metric_values(tmp_path / "again")
    assert first == second
    assert len({r["reward_mean"] for r in first} | {r["kl_mean"] for r in first}) > 1  # not a constant log


def test_resume_continues_exactly(tiny_run, tmp_path):
    # tiny_run: 4 steps uninterrupted. Here: 2 steps, then resume to 4.
    base = ["--steps_per_epoch", "2", *TINY, "--output_dir", str(tmp_path)]
    assert run_cli("train.py", "--epochs", "1", *base, "--run_name", "part").returncode == 0
    res = run_cli("train.py", "--epochs", "2", *base, "--resume", str(tmp_path / "part"))
    assert res.returncode == 0, res.stderr
    assert "Resumed from" in res.stdout
    assert metric_values(tmp_path / "part") == metric_values(tiny_run)


def test_resume_latest_and_set_aside_later_steps(tmp_path):
    base = ["--steps_per_epoch", "1", *TINY, "--output_dir", str(tmp_path), "--run_name", "r"]
    assert run_cli("train.py", "--epochs", "3", *base).returncode == 0
    # resume from step 1's checkpoint: steps 2-3 of the old log are kept aside, not lost
    res = run_cli("train.py", "--epochs", "2", *base[:-2], "--resume", str(tmp_path / "r/checkpoints/step_1.pt"))
    assert res.returncode == 0, res.stderr
    rd = RunDir(tmp_path / "r")
    assert [r["step"] for r in read_jsonl(rd.train_log)] == [1, 2]
    assert [r["step"] for r in read_jsonl(rd.logs / "train.jsonl.before-resume")] == [1, 2, 3]


def test_separate_value_model_and_more_ppo_epochs(tmp_path):
    res = run_cli("train.py", "--epochs", "1", "--steps_per_epoch", "2", *TINY, "--output_dir", str(tmp_path),
                  "--value_model", "separate", "--ppo_epochs", "2", "--mini_batch_size", "1", "--target_kl", "1",
                  "--run_name", "sep")
    assert res.returncode == 0, res.stderr
    run = load_run(tmp_path / "sep")
    fwd = [p for p in run.phases if p.name == "forward"]
    assert {p.count for p in fwd} == {4}                    # 2 PPO epochs x 2 mini-batches of 1
    assert run.steps[-1]["kl_coef"] != run.steps[0]["kl_coef"]   # the adaptive controller moved it


BAD_INPUTS = [
    (["--batch_size", "0"], "--batch_size"),
    (["--epochs", "-1"], "--epochs"),
    (["--max_new_tokens", "0"], "--max_new_tokens"),
    (["--steps_per_epoch", "abc"], "steps_per_epoch"),
    (["--device", "tpu"], "--device"),
    (["--reward_type", "vibes"], "--reward_type"),
    (["--model_name", "./no/such/model"], "no/such/model"),
    (["--model_name", "not-a-model"], "embedded choices"),
    (["--mini_batch_size", "9"], "--mini_batch_size"),
    (["--resume", "/no/such.pt"], "no such checkpoint"),
    (["--unknown_flag", "1"], "unrecognized"),
]


@pytest.mark.parametrize("args,needle", BAD_INPUTS, ids=[a[0] for a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_and_exit_2(args, needle, tmp_path):
    res = run_cli("train.py", *args, "--output_dir", str(tmp_path))
    assert res.returncode == 2, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_usage_error(tmp_path):
    res = run_cli("train.py", "--device", "cuda", "--output_dir", str(tmp_path))
    assert res.returncode == 2 and "no CUDA device" in res.stderr


def test_unwritable_output_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = run_cli("train.py", "--output_dir", str(blocker / "sub"))
    assert res.returncode == 2 and "cannot be written" in res.stderr and "Traceback" not in res.stderr


def test_corrupt_checkpoint_fails_cleanly_and_keeps_logs(tiny_run, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(tiny_run, run)
    bad = run / "checkpoints" / "step_2.pt"
    bad.write_bytes(bad.read_bytes()[:1000])  # truncated
    before = (run / "logs" / "train.jsonl").read_bytes()
    res = run_cli("train.py", "--epochs", "3", "--steps_per_epoch", "2", *TINY, "--resume", str(bad))
    assert res.returncode == 2 and "corrupt" in res.stderr and "Traceback" not in res.stderr
    assert (run / "logs" / "train.jsonl").read_bytes() == before


def test_sigkill_leaves_every_finished_step_readable(tmp_path):
    cmd = [sys.executable, "train.py", "--epochs", "1", "--steps_per_epoch", "500", *TINY,
           "--output_dir", str(tmp_path), "--run_name", "killed"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = tmp_path / "killed" / "logs" / "train.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not log.exists() or log.read_text().count("\n") < 3):
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    steps = [r["step"] for r in read_jsonl(log)]
    assert len(steps) >= 3 and steps == list(range(1, len(steps) + 1))
    with open(log, "a") as f:                      # a torn last line, as a crash mid-write leaves
        f.write(json.dumps({"step": 999})[:7])
    with pytest.warns(TornLineWarning):
        assert [r["step"] for r in read_jsonl(log)] == steps


def test_memory_flag_writes_measured_and_predicted_memory(tmp_path):
    res = run_cli("train.py", "--epochs", "1", "--steps_per_epoch", "2", *TINY, "--output_dir", str(tmp_path),
                  "--run_name", "mem", "--memory", "true")
    assert res.returncode == 0, res.stderr
    memory = load_run(tmp_path / "mem").memory
    for phase in ("rollout", "scoring", "update"):
        predicted, measured = memory["predicted_peak"][phase], memory["measured_peak"][phase]
        assert abs(predicted - measured) <= 0.1 * measured, (phase, predicted, measured)
