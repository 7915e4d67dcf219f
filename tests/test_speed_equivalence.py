"""The equivalence claims the speed benchmarks rest on.

- limits.py times Hugging Face `generate` as "the same sampling": its arguments must add no logits
  warper, and the distribution it samples from must be the one our policy scores with.
- compare_trl.py compares "equal work": our iteration with P PPO epochs and the whole batch as one
  mini-batch must do P optimizer steps and generate B x N tokens, counted the way the workers count.
- compare_trl.py's summary must refuse a speed-up when the sides did different work.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import compare_trl  # noqa: E402
import limits  # noqa: E402

PROMPTS = ["The movie was", "I think that the food", "Today", "My favourite book is"]  # ragged: left padding


@pytest.fixture(scope="module")
def policy():
    from rlhf_core.policy import PolicyModel

    return PolicyModel("tiny-gpt2", "cpu", quiet=True)


def test_generate_samples_the_distribution_our_policy_scores(policy):
    torch.manual_seed(0)
    enc = policy.tokenizer(PROMPTS, return_tensors="pt", padding=True)
    with torch.inference_mode():
        out = policy.model.generate(input_ids=enc.input_ids, attention_mask=enc.attention_mask,
                                    output_scores=True, output_logits=True, return_dict_in_generate=True,
                                    **limits.sampling_kwargs(6, policy.eos_token_id))
    raw, used = torch.stack(out.logits, 1), torch.stack(out.scores, 1)           # (B, N, V) each
    assert used.shape[1] == 6
    # No warper: the logits sampled from are the model's logits, untouched (top_k=0, top_p=1, T=1).
    torch.testing.assert_close(used, raw)
    start = enc.input_ids.shape[1]
    seq = out.sequences                                                            # (B, P + N)
    mask = torch.cat([enc.attention_mask, torch.ones_like(seq[:, start:])], dim=1)
    with torch.inference_mode():
        ours = policy.score(seq, mask, start).logprobs                             # (B, N)
    theirs = torch.log_softmax(raw.float(), -1).gather(-1, seq[:, start:, None]).squeeze(-1)
    # Same log-probs for every sampled token, left-padded rows included: same distribution.
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("epochs", [1, 3])
def test_our_iteration_does_the_counted_work(policy, epochs):
    from torch.optim.optimizer import register_optimizer_step_post_hook

    from rlhf_core.config import TrainConfig
    from rlhf_core.ppo import PPOTrainer
    from rlhf_core.reward import ToyRewardModel

    cfg = TrainConfig()
    cfg.ppo.ppo_epochs, cfg.rollout.batch_size = epochs, len(PROMPTS)
    trainer = PPOTrainer(policy, policy.frozen_copy(), ToyRewardModel("cpu"), "cpu", config=cfg)
    seen = []
    handle = register_optimizer_step_post_hook(lambda opt, *_: seen.append(opt))
    try:
        trainer.train_step(PROMPTS, 5)
    finally:
        handle.remove()
    assert len(seen) == epochs and all(o is trainer.optimizer for o in seen)
    assert trainer.last_rollout.response.shape == (4, 5)  # B x N generated tokens


def _rows(wall, steps, tokens):
    return [{"wall": w, "cpu": w / 2, "optimizer_steps": steps, "gen_tokens": tokens} for w in wall]


def test_summary_medians_and_speedup():
    cfg = {"model": "m", "batch": 4, "tokens": 15, "epochs": 1, "threads": 1}
    rows = {"ours-head": _rows([0.1, 0.3, 0.2], 1, 60), "trl-ppo": _rows([0.9, 0.5, 0.6], 1, 60)}
    line = compare_trl.summarise(cfg, {"rows": rows, "meta": {}})
    # medians: ours 0.2 s, TRL 0.6 s -> 3.0x; tokens/s = 60 / 0.2 = 300
    assert line["equal_work"] is True
    assert line["sides"]["ours-head"]["median_s"] == 0.2 and line["sides"]["trl-ppo"]["median_s"] == 0.6
    assert line["speedup"] == {"head_vs_trl": 3.0} and line["speedup_cpu"] == {"head_vs_trl": 3.0}
    assert line["sides"]["ours-head"]["gen_tokens_per_s"] == 300.0


def test_summary_refuses_unequal_work():
    cfg = {"model": "m", "batch": 4, "tokens": 15, "epochs": 4, "threads": 1}
    rows = {"ours-head": _rows([0.2], 4, 60), "trl-ppo": _rows([0.6], 1, 60)}  # 4 optimizer steps vs 1
    line = compare_trl.summarise(cfg, {"rows": rows, "meta": {}})
    assert line["equal_work"] is False and line["speedup"] == {}


def test_old_logprobs_from_sampling_give_the_rescored_rollout_and_losses(policy):
    """Skipping the old_logprobs forward (the default) changes the PPO inputs only by float rounding."""
    from rlhf_core.config import TrainConfig
    from rlhf_core.ppo import PPOTrainer
    from rlhf_core.reward import ToyRewardModel

    runs = {}
    for rescore in (False, True):
        cfg = TrainConfig()
        cfg.rollout.rescore, cfg.rollout.batch_size = rescore, len(PROMPTS)
        torch.manual_seed(0)
        trainer = PPOTrainer(policy, policy.frozen_copy(), ToyRewardModel("cpu"), "cpu", config=cfg)
        torch.nn.init.normal_(trainer.value_model.linear.weight)  # non-zero values to compare
        r = trainer.make_rollout(PROMPTS, 9)
        trainer.compute_advantages(r)
        runs[rescore] = (r, trainer._losses(r))
    (fast, fast_loss), (plain, plain_loss) = runs[False], runs[True]
    assert torch.equal(fast.sequences, plain.sequences) and torch.equal(fast.mask, plain.mask)
    keep = plain.mask.bool()
    for name in ("logprobs", "values", "advantages", "returns", "entropy"):
        torch.testing.assert_close(getattr(fast, name)[keep], getattr(plain, name)[keep], atol=1e-5, rtol=1e-4)
    for name in ("loss", "policy_loss", "value_loss", "approx_kl"):
        torch.testing.assert_close(fast_loss[name], plain_loss[name], atol=1e-5, rtol=1e-4)
    assert not torch.equal(fast.values, torch.zeros_like(fast.values))
