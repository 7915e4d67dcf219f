"""TRL <= 1.12's PPOTrainer (trl.experimental.ppo, removed after 1.12) with RLHFKitCallback.

TRL 1.12 is installed beside the suite's TRL 1.16 in .venv/trl112 (the Makefile puts it there with
--no-deps --target); the run happens in a subprocess with that directory first on sys.path.
PPO's loop calls no on_step_begin, logs before on_step_end and steps the optimizer itself, so this
covers the callback's other event order; its phases come from timing TRL's PPO helpers.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TRL112 = ROOT / ".venv" / "trl112"
STEPS = 2


def harness(out: Path) -> None:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    import trl
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    from rlhf_core.models import resolve
    from rlhf_kit.adapters.trl import RLHFKitCallback

    assert trl.__version__ == "1.12.0", trl.__version__
    path, _ = resolve("tiny-gpt2")
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(path)
    tok.pad_token = tok.eos_token
    policy, ref = (AutoModelForCausalLM.from_pretrained(path) for _ in range(2))
    value, reward = (AutoModelForSequenceClassification.from_pretrained(path, num_labels=1) for _ in range(2))
    for m in (value, reward):
        m.config.pad_token_id = tok.pad_token_id
    prompts = ["The movie was", "I think that", "Today we", "She said"] * 2
    data = Dataset.from_dict({"input_ids": [tok(p)["input_ids"] for p in prompts]})
    args = PPOConfig(output_dir=str(out / "out"), per_device_train_batch_size=2, gradient_accumulation_steps=1,
                     num_mini_batches=1, total_episodes=2 * STEPS, response_length=4, num_ppo_epochs=1,
                     logging_steps=1, report_to=[], save_strategy="no", use_cpu=True, bf16=False,
                     num_sample_generations=0, stop_token="eos", learning_rate=1e-3, seed=0)
    cb = RLHFKitCallback(output_dir=str(out / "runs"), run_name="ppo")
    trainer = PPOTrainer(args=args, processing_class=tok, model=policy, ref_model=ref, reward_model=reward,
                         value_model=value, train_dataset=data, callbacks=[cb])
    trainer.train()


@pytest.mark.skipif(not TRL112.is_dir(), reason="TRL 1.12 not installed in .venv/trl112 (make test installs it)")
def test_ppo_trl112_run_directory(tmp_path):
    from rlhf_kit.runlog import load_run

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TRL112), str(ROOT)])}
    res = subprocess.run([sys.executable, __file__, str(tmp_path)], capture_output=True, text=True,
                         timeout=300, env=env)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    run = load_run(tmp_path / "runs" / "ppo")
    assert run.info.framework == "trl" and run.info.versions["trl"] == "1.12.0"
    assert [r["step"] for r in run.steps] == list(range(1, STEPS + 1))
    for rec in run.steps:
        for key in ("kl_mean", "reward_mean", "entropy", "approx_kl", "clip_fraction", "policy_loss",
                    "value_loss", "ratio_mean", "grad_norm", "learning_rate", "step_seconds"):
            assert isinstance(rec.get(key), float), (key, rec)
        assert rec["grad_norm"] > 0  # PPO logs none: this one is the optimizer pre-step hook's
    names = {(p.step, p.name): p.parent for p in run.phases}
    for step in range(1, STEPS + 1):
        for phase in ("rollout", "ref_logprobs", "values", "reward", "update", "forward", "optimizer"):
            assert (step, phase) in names, (step, phase)
    assert names[(1, "forward")] == "update" and names[(1, "rollout")] == ""


if __name__ == "__main__":
    harness(Path(sys.argv[1]))
