"""A real TRL GRPOTrainer, 3 steps on CPU on the embedded tiny-gpt2, with RLHFKitCallback attached.

num_iterations=2 makes TRL compute old log-probs and reuse each generation for two steps, and
beta > 0 makes it score the reference: every phase the adapter knows is exercised by TRL itself.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl", reason="TRL not installed: pip install -r requirements-dev.txt")

from rlhf_kit.events import Alert  # noqa: E402
from rlhf_kit.runlog import load_run  # noqa: E402


class EveryStepAlert:
    """A test instrument: returns one alert per step, to prove alerts reach alerts.jsonl."""

    def on_step_end(self, record, phases):
        return [Alert(rule="test_rule", severity="info", step=record["step"], message="seen")]


@pytest.fixture(scope="module")
def grpo_run(tmp_path_factory) -> Path:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from rlhf_core.models import resolve
    from rlhf_kit.adapters.trl import RLHFKitCallback
    from rlhf_kit.profiler.trace import TraceHook

    tmp = tmp_path_factory.mktemp("trl")
    path, _ = resolve("tiny-gpt2")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    tok.pad_token = tok.eos_token
    data = Dataset.from_dict({"prompt": ["The movie was", "I think that", "Today we", "She said"] * 2})

    def length_reward(completions, **kwargs):
        return [float(len(c)) / 10.0 for c in completions]

    args = GRPOConfig(output_dir=str(tmp / "out"), max_steps=3, per_device_train_batch_size=2,
                      num_generations=2, max_completion_length=4, num_iterations=2, beta=0.04,
                      logging_steps=1, report_to=[], save_strategy="no", use_cpu=True, bf16=False,
                      learning_rate=1e-3, dataloader_num_workers=0, disable_tqdm=True, seed=0)
    # the kit's torch.profiler window (another instrument), driven by this callback's steps: traces step 2
    trace = TraceHook(lambda info: tmp / "runs" / info.run_id / "profile", wait=0, warmup=1, active=1)
    cb = RLHFKitCallback(output_dir=str(tmp / "runs"), run_name="grpo", hooks=[EveryStepAlert(), trace])
    trainer = GRPOTrainer(model=model, reward_funcs=length_reward, args=args, train_dataset=data,
                          processing_class=tok, callbacks=[cb])
    trainer.train()
    return cb.run_dir.root


def test_grpo_run_directory_has_metrics(grpo_run):
    run = load_run(grpo_run)
    assert run.info.framework == "trl" and run.info.model["n_layer"] == 2 and run.info.versions["trl"]
    assert [r["step"] for r in run.steps] == [1, 2, 3]
    for rec in run.steps:  # what TRL logs at every optimizer step
        for key in ("kl_token_mean", "entropy", "grad_norm", "total_loss", "clip_fraction",
                    "learning_rate", "step_seconds"):
            assert isinstance(rec.get(key), float), (key, rec)
        assert rec["entropy"] > 0 and rec["kl_token_mean"] >= 0  # k3 KL is never negative
    for rec in (run.steps[0], run.steps[2]):  # what it logs only when it generated (steps 1 and 3)
        for key in ("reward_mean", "reward_std", "response_length_mean", "truncated_fraction"):
            assert isinstance(rec.get(key), float), (key, rec)
    assert "reward_mean" not in run.steps[1]
    assert run.steps[0]["kl_token_mean"] == 0.0  # step 1: the policy is still the reference
    # TRL's raw names were renamed, not duplicated
    assert "reward" not in run.steps[0] and "kl" not in run.steps[0]


def test_grpo_phases_come_from_trl_profiling(grpo_run):
    run = load_run(grpo_run)
    by_step: dict[int, dict[str, float]] = {}
    for p in run.phases:
        by_step.setdefault(p.step, {})[p.name] = p.seconds
    generated = {"rollout", "reward", "old_logprobs", "ref_logprobs"}
    trained = {"forward", "update", "optimizer"}
    # num_iterations=2: TRL generates at steps 1 and 3 and reuses the batch at step 2
    assert generated | trained <= set(by_step[1]) and generated | trained <= set(by_step[3])
    assert set(by_step[2]) == trained
    assert all(s > 0 for d in by_step.values() for s in d.values())
    first = run.steps[0]
    # the kit's rollout phase spans TRL's own generate context: both clocks agree closely
    trl_gen = first["profiling/GRPOTrainer.transformers.generate"]
    assert first["time/rollout"] == pytest.approx(trl_gen, rel=0.2, abs=0.02)
    parents = {p.name: p.parent for p in run.phases}
    assert parents["forward"] == "update" and parents["optimizer"] == "update" and parents["rollout"] == ""


def test_grpo_alerts_and_report(grpo_run, tmp_path):
    run = load_run(grpo_run)
    assert [a.step for a in run.alerts if a.rule == "test_rule"] == [1, 2, 3]
    out = tmp_path / "report.html"
    res = subprocess.run([sys.executable, "-m", "rlhf_kit.cli", "report", str(grpo_run), "-o", str(out)],
                         capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr
    from rlhf_kit.dashboard.data import run_view  # the data the HTML is drawn from

    view = run_view(run)
    for key in ("reward_mean", "kl_token_mean", "entropy"):
        assert any(isinstance(v, float) for v in view["steps"][key]), key
    shown = {row["name"] for row in view["breakdown"]["rows"] if row["ms"]}
    assert {"rollout", "reward", "ref_logprobs", "update"} <= shown
    assert [a["rule"] for a in view["alerts"]] == ["test_rule"] * 3


def test_torch_profiler_window_labels_trl_phases(grpo_run):
    import json

    traces = sorted((grpo_run / "profile").glob("trace_*.json"))
    assert len(traces) == 1
    names = {ev.get("name") for ev in json.loads(traces[0].read_text())["traceEvents"]}
    assert {"rlhf/update", "rlhf/forward", "rlhf/optimizer"} <= names


def test_profiling_capture_removed_after_training(grpo_run):
    from trl.extras.profiling import ProfilingContext

    from rlhf_kit.adapters import trl as adapter

    assert not adapter._ACTIVE and not adapter._ORIGINAL
    assert ProfilingContext.__enter__.__module__ == "trl.extras.profiling"
