"""Offline imports: veRL JSONL and OpenRLHF TensorBoard logs -> run directories every instrument reads.

The OpenRLHF event files are written the way openrlhf.utils.logging_utils.TensorboardLogger
writes them: SummaryWriter(<tensorboard_dir>/<run_name>), add_scalar(f"train/{k}", v, step) for
every status key of PPOTrainer.fit, add_text("train/generated_samples", ...).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rlhf_kit.adapters.common import map_metrics
from rlhf_kit.runlog import load_run

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlhf_kit.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def assert_report_shows(run_dir: Path, tmp: Path, keys: tuple[str, ...], phases: tuple[str, ...]) -> None:
    """`rlhf-kit report` on the run succeeds, and the report's data has these series and phases.

    The HTML embeds the whole METRICS table, so a name in the HTML proves nothing: the check
    reads the report's data layer (the dict the HTML is drawn from) instead.
    """
    from rlhf_kit.dashboard.data import run_view

    out = tmp / f"{run_dir.name}.html"
    res = run_cli("report", str(run_dir), "-o", str(out), cwd=tmp)
    assert res.returncode == 0 and out.stat().st_size > 0, res.stderr
    view = run_view(load_run(run_dir))
    for key in keys:
        assert any(isinstance(v, float) for v in view["steps"].get(key, [])), key
    shown = {row["name"] for row in view["breakdown"]["rows"] if row["ms"]}
    assert set(phases) <= shown, (phases, shown)


# ---- shared mapping rules ----------------------------------------------------------------
def test_map_metrics_renames_sums_times_and_keeps_extras():
    raw = {"train/timing_s/update_actor": 1.5, "timing_s/update_critic": 0.25, "actor/pg_loss": -0.1,
           "perf/mfu/actor": 0.31, "note": "text", "flag": True}
    km = {"timing_s/update_actor": "time/update", "timing_s/update_critic": "time/update",
          "actor/pg_loss": "policy_loss"}
    out = map_metrics(raw, km, by_suffix=True)
    # 1.5 + 0.25 = 1.75: both veRL update phases are our one update phase
    assert out == {"time/update": 1.75, "policy_loss": -0.1, "perf/mfu/actor": 0.31}
    # without suffix matching the prefixed key is not ours and stays under its own name
    assert map_metrics(raw, km)["train/timing_s/update_actor"] == 1.5


def test_map_metrics_first_source_wins_for_non_time_targets():
    out = map_metrics({"reward": 1.0, "rollout/reward_mean": 2.0},
                      {"rollout/reward_mean": "reward_mean", "reward": "reward_mean"})
    assert out["reward_mean"] == 2.0 and out["reward"] == 1.0


# ---- veRL ----------------------------------------------------------------------------------
def _verl_line(step: int) -> dict:
    return {"step": step, "elapsed_seconds": 10.0 * step, "data": {
        "timing_s/gen": 2.0, "timing_s/reward": 0.5, "timing_s/old_log_prob": 0.4, "timing_s/ref": 0.3,
        "timing_s/values": 0.2, "timing_s/adv": 0.05, "timing_s/update_actor": 1.0,
        "timing_s/update_critic": 0.6, "timing_s/step": 5.2, "training/epoch": 0,
        "actor/pg_loss": -0.02, "actor/pg_clipfrac": 0.1, "actor/ppo_kl": 0.001, "actor/entropy": 2.0 - 0.1 * step,
        "actor/grad_norm": 0.8, "actor/kl_loss": 0.01 * step, "critic/score/mean": 0.1 * step,
        "critic/score/max": 1.0, "critic/score/min": 0.0, "critic/vf_explained_var": 0.3,
        "response_length/mean": 120.0, "response_length/clip_ratio": 0.05, "perf/mfu/actor": 0.4}}


def test_verl_import_end_to_end(tmp_path):
    log = tmp_path / "metrics.jsonl"
    lines = [json.dumps(_verl_line(s)) for s in (1, 2, 3)]
    log.write_text("\n".join(lines) + "\n" + lines[0][:25])  # torn last line: skipped
    out = tmp_path / "run_verl"
    res = run_cli("import", "verl", str(log), "-o", str(out), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "imported 3 steps" in res.stdout
    run = load_run(out)
    assert run.info.framework == "verl"
    assert [r["step"] for r in run.steps] == [1, 2, 3]
    last = run.steps[-1]
    assert last["reward_mean"] == pytest.approx(0.3) and last["kl_token_mean"] == pytest.approx(0.03)
    assert last["entropy"] == pytest.approx(1.7) and last["step_seconds"] == 5.2
    assert last["time/update"] == pytest.approx(1.6)  # 1.0 actor + 0.6 critic
    assert last["perf/mfu/actor"] == 0.4  # unmapped, kept under its own name
    phases = {p.name: p.seconds for p in run.phases if p.step == 3}
    assert phases == pytest.approx({"rollout": 2.0, "reward": 0.5, "old_logprobs": 0.4, "ref_logprobs": 0.3,
                                    "values": 0.2, "advantages": 0.05, "update": 1.6})
    assert_report_shows(out, tmp_path, ("reward_mean", "kl_token_mean", "entropy"), ("rollout", "update", "reward"))


def test_verl_import_bad_inputs_one_line(tmp_path):
    res = run_cli("import", "verl", str(tmp_path / "nope.jsonl"), cwd=tmp_path)
    assert res.returncode == 2 and "does not exist" in res.stderr and "Traceback" not in res.stderr
    junk = tmp_path / "junk.jsonl"
    junk.write_text("not json\n")
    res = run_cli("import", "verl", str(junk), cwd=tmp_path)
    assert res.returncode == 2 and "no veRL metric lines" in res.stderr and len(res.stderr.splitlines()) == 1
    assert not (tmp_path / "runs").exists()  # nothing created for bad input
    res = run_cli("import", "wandb", str(junk), cwd=tmp_path)
    assert res.returncode == 2 and "invalid choice" in res.stderr


# ---- OpenRLHF ------------------------------------------------------------------------------
def openrlhf_status(step: int) -> dict:
    """One PPOTrainer.fit status dict, OpenRLHF 0.11 key names (actor + critic + rollout + timing)."""
    return {"policy_loss": -0.01 * step, "critic_loss": 0.5 / step, "values": 0.1, "kl": 0.002 * step,
            "reward": 0.2 * step, "return": 0.19 * step, "response_length": 50.0, "total_length": 80.0,
            "ppo_clip_ratio": 0.05, "ppo_kl": 0.0005, "entropy_loss": 1.5, "actor_grad_norm": 0.7,
            "actor_lr": 1e-6, "critic_lr": 9e-6, "critic_grad_norm": 1.1, "logprobs_diff": 0.001,
            "rollout/reward_mean": 0.2 * step, "rollout/reward_std": 0.4, "rollout/response_length_mean": 50.0,
            "rollout/truncated_rate": 0.1, "rollout/num_samples": 64.0,
            "timing/make_experience": 3.0, "timing/ppo_train": 4.0, "timing/broadcast": 0.5,
            "timing/generation": 6.0, "timing/step_total": 13.5}


def write_openrlhf_tb(tb_dir: Path, run_name: str, steps: int) -> Path:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(tb_dir / run_name))
    for step in range(1, steps + 1):
        for k, v in openrlhf_status(step).items():
            writer.add_scalar(f"train/{k}", v, step)
        writer.add_text("train/generated_samples", "Sample:\\nhello\\n\\nReward: 0.1", step)
    writer.add_scalar("eval/eval_pass1", 0.5, steps)
    writer.close()
    return tb_dir / run_name


def test_openrlhf_import_end_to_end(tmp_path):
    write_openrlhf_tb(tmp_path / "tb", "exp1", steps=4)
    res = run_cli("import", "openrlhf", str(tmp_path / "tb"), cwd=tmp_path)  # the parent dir is fine
    assert res.returncode == 0, res.stderr
    run = load_run(tmp_path / "runs" / "openrlhf_tb")
    assert run.info.framework == "openrlhf"
    assert [r["step"] for r in run.steps] == [1, 2, 3, 4]
    s = run.steps[1]
    assert s["reward_mean"] == pytest.approx(0.4) and s["reward_std"] == pytest.approx(0.4)
    assert s["kl_token_mean"] == pytest.approx(0.004) and s["entropy"] == pytest.approx(1.5)
    assert s["value_loss"] == pytest.approx(0.25) and s["grad_norm"] == pytest.approx(0.7)
    assert s["step_seconds"] == pytest.approx(13.5) and s["return"] == pytest.approx(0.38)
    assert "eval/eval_pass1" not in s and "generated_samples" not in s
    phases = {p.name: p.seconds for p in run.phases if p.step == 2}
    assert phases == pytest.approx({"rollout": 6.0, "make_experience": 3.0, "update": 4.0, "comm": 0.5})
    assert_report_shows(run.dir.root, tmp_path, ("reward_mean", "kl_token_mean", "entropy"),
                        ("rollout", "make_experience", "update", "comm"))


def test_openrlhf_empty_and_torn_event_files(tmp_path):
    empty = tmp_path / "tb_empty" / "run"
    empty.mkdir(parents=True)
    (empty / "events.out.tfevents.1.host").write_bytes(b"")
    res = run_cli("import", "openrlhf", str(empty), cwd=tmp_path)
    assert res.returncode == 2 and "empty or torn" in res.stderr and "Traceback" not in res.stderr

    good = write_openrlhf_tb(tmp_path / "tb_torn", "run", steps=3)
    event = next(good.glob("*tfevents*"))
    data = event.read_bytes()
    event.write_bytes(data[: len(data) - 40])  # a writer killed mid-record
    res = run_cli("import", "openrlhf", str(good), "-o", str(tmp_path / "torn_run"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    steps = load_run(tmp_path / "torn_run").steps
    assert 1 <= len(steps) <= 3 and steps[0]["reward_mean"] == pytest.approx(0.2)

    res = run_cli("import", "openrlhf", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert res.returncode == 2 and "does not exist" in res.stderr
    res = run_cli("import", "openrlhf", str(good), "-o", str(tmp_path / "torn_run"), cwd=tmp_path)
    assert res.returncode == 2 and "already holds a run" in res.stderr


def test_openrlhf_several_runs_asks_for_one(tmp_path):
    write_openrlhf_tb(tmp_path / "tb", "a", steps=1)
    write_openrlhf_tb(tmp_path / "tb", "b", steps=1)
    res = run_cli("import", "openrlhf", str(tmp_path / "tb"), cwd=tmp_path)
    assert res.returncode == 2 and "several TensorBoard runs (a, b)" in res.stderr


def test_openrlhf_launcher_bad_inputs_one_line(tmp_path):
    res = run_cli("openrlhf", cwd=tmp_path)
    assert res.returncode == 2 and "after --" in res.stderr and len(res.stderr.splitlines()) == 1
    # without Ray (this CPU machine) the launcher says what it needs instead of a traceback
    res = run_cli("openrlhf", "--", "--actor.model_name_or_path", "x", cwd=tmp_path)
    assert res.returncode == 2 and "needs OpenRLHF and Ray" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "runs").exists()
