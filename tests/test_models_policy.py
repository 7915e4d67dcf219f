"""Offline models, the PolicyModel API, the toy rewards, and PPOTrainer invariants on tiny-gpt2."""

import math

import pytest
import torch

import conftest  # noqa: F401  (sets the model cache)
from rlhf_core.config import TrainConfig
from rlhf_core.models import PRESETS, build_preset, load_model, resolve
from rlhf_core.policy import PolicyModel
from rlhf_core.ppo import PPOTrainer, set_seed
from rlhf_core.reward import ToyRewardModel
from rlhf_kit.errors import UsageError


@pytest.fixture(scope="module")
def policy():
    set_seed(0)
    return PolicyModel("tiny-gpt2", "cpu")


def test_tokenizer_is_real_gpt2(policy):
    assert policy.tokenizer("Hello world").input_ids == [15496, 995]
    assert policy.tokenizer.padding_side == "left" and policy.eos_token_id == 50256


def test_tiny_preset_has_the_public_tiny_gpt2_shape(policy):
    c = policy.model.config
    assert (c.vocab_size, c.n_positions, c.n_embd, c.n_layer, c.n_head) == (50257, 1024, 2, 2, 2)


def test_preset_build_is_deterministic(tmp_path):
    a = build_preset("tiny-gpt2", tmp_path / "a")
    b = build_preset("tiny-gpt2", tmp_path / "b")
    ma, _ = load_model(str(a))
    mb, _ = load_model(str(b))
    for (na, pa), (_, pb) in zip(ma.state_dict().items(), mb.state_dict().items()):
        assert torch.equal(pa, pb), na


def test_seed_default_name_falls_back_to_embedded_twin():
    path, notice = resolve("sshleifer/tiny-gpt2")
    assert path.endswith("tiny-gpt2") and "embedded twin" in notice


def test_unknown_model_lists_embedded_choices():
    with pytest.raises(UsageError, match=", ".join(PRESETS)):
        resolve("definitely-not-a-model")


def test_sample_shapes_and_eos_padding(policy):
    enc = policy.tokenizer(["Hi", "The movie was great"], return_tensors="pt", padding=True)
    g = torch.Generator().manual_seed(0)
    seqs, logps = policy.sample(enc.input_ids, 7, enc.attention_mask, generator=g)
    assert seqs.shape == (2, enc.input_ids.shape[1] + 7) and logps.shape == (2, 7)
    assert torch.all(logps <= 0)
    assert policy.get_logprobs(seqs).shape == (2, seqs.shape[1] - 1)


def test_generation_logprobs_match_a_scoring_pass(policy):
    """The log-probs the KV-cached sampler reports equal a full forward's, left padding included."""
    enc = policy.tokenizer(["Hi", "The movie was great"], return_tensors="pt", padding=True)
    p = enc.input_ids.shape[1]
    g = torch.Generator().manual_seed(1)
    seqs, gen_logps = policy.sample(enc.input_ids, 6, enc.attention_mask, temperature=0.7, generator=g)
    mask = torch.cat([enc.attention_mask, torch.ones(2, 6, dtype=torch.long)], 1)
    with torch.no_grad():
        scored = policy.score(seqs, mask, p, temperature=0.7).logprobs
    torch.testing.assert_close(scored, gen_logps, atol=1e-5, rtol=1e-5)


def test_sampling_pass_gives_the_scoring_pass_states_up_to_the_first_eos(policy):
    """The old log-probs and value-head inputs the rollout takes from sampling (no --rescore)."""
    from rlhf_core.advantages import response_mask

    enc = policy.tokenizer(["Hi", "The movie was great", "A"], return_tensors="pt", padding=True)
    p = enc.input_ids.shape[1]
    g = torch.Generator().manual_seed(3)
    seqs, gen = policy.sample_scored(enc.input_ids, 12, enc.attention_mask, temperature=1.3, generator=g)
    mask = response_mask(seqs[:, p:], policy.eos_token_id)                       # (B, N)
    attention = torch.cat([enc.attention_mask, mask], 1)                        # as the rollout scores it
    with torch.no_grad():
        scored = policy.score(seqs, attention, p, temperature=1.3, with_hidden=True, with_entropy=True)
    keep = mask.bool()
    torch.testing.assert_close(gen.entropy[keep], scored.entropy[keep], atol=1e-5, rtol=1e-5)
    assert gen.hidden.shape == scored.hidden.shape == (3, 12, policy.model.config.n_embd)
    torch.testing.assert_close(gen.logprobs[keep], scored.logprobs[keep], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(gen.hidden[keep], scored.hidden[keep], atol=1e-5, rtol=1e-5)


def test_left_padding_does_not_change_logprobs(policy):
    ids = policy.tokenizer("The movie was great", return_tensors="pt").input_ids
    padded = torch.cat([torch.full((1, 3), policy.pad_token_id), ids], 1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones_like(ids)], 1)
    with torch.no_grad():
        alone = policy.score(ids, torch.ones_like(ids), 1).logprobs
        with_pad = policy.score(padded, mask, 4).logprobs
    torch.testing.assert_close(with_pad, alone, atol=1e-5, rtol=1e-5)


def test_toy_rewards():
    rm = ToyRewardModel()
    s = rm.compute_reward(["what a wonderful, happy day", "this is awful and sad"], "sentiment")
    assert s[0] > 0.5 and s[1] < -0.5
    assert rm.compute_reward(["well, thank you", "thank you all the same", "meh"], "preference").tolist() == [1.0, 0.5, 0.0]
    # 8 words is the target (1.0); 4 words is 50% off -> 1 - 2 * 0.5 = 0
    assert rm.compute_reward(["a b c d e f g h", "a b c d"], "length").tolist() == [1.0, 0.0]
    with pytest.raises(UsageError, match="sentiment, preference, length"):
        rm.compute_reward(["x"], "vibes")


def _trainer(lr: float, model: str = "tiny-gpt2", **ppo) -> PPOTrainer:
    set_seed(0)
    cfg = TrainConfig()
    cfg.ppo.learning_rate = lr
    for k, v in ppo.items():
        setattr(cfg.ppo, k, v)
    policy = PolicyModel(model, "cpu")
    return PPOTrainer(policy, policy.frozen_copy(), ToyRewardModel(tokenizer=policy.tokenizer), "cpu", config=cfg)


def test_train_step_changes_every_trainable_parameter():
    # small-gpt2, not tiny-gpt2: a LayerNorm over n_embd = 2 maps every input to +-(1, -1), so no
    # gradient reaches tiny-gpt2's blocks through ln_f and only optimizer noise would move them.
    trainer = _trainer(1e-2, model="small-gpt2")
    before = {n: p.detach().clone() for n, p in trainer.policy.named_parameters()}
    trainer.cfg.rollout.reward_type = "length"   # a reward with variance on random text
    trainer.train_step(["The movie was", "Today the weather is"], max_new_tokens=5)
    for n, p in trainer.policy.named_parameters():
        assert not torch.equal(before[n], p), f"{n} did not change"
    ref = dict(trainer.reference.named_parameters())
    assert all(torch.equal(before[n], ref[n]) for n in before)   # the reference stays frozen


def test_non_finite_reward_skips_the_update_and_checkpoint_stays_clean(tmp_path):
    trainer = _trainer(1e-2)
    trainer.reward_model.compute_reward = lambda texts, kind: torch.tensor([math.nan] * len(texts))
    m = trainer.train_step(["The movie was", "Today"], max_new_tokens=4)
    assert m["nan_count"] >= 2
    # NaN scores are zeroed before GAE, so the update itself stays finite and proceeds
    assert all(torch.isfinite(p).all() for p in trainer.policy.parameters())
    trainer.save_checkpoint(str(tmp_path / "ok.pt"))
    # a poisoned weight is refused, not written
    with torch.no_grad():
        next(trainer.policy.parameters()).fill_(math.nan)
    with pytest.raises(RuntimeError, match="poisoned"):
        trainer.save_checkpoint(str(tmp_path / "bad.pt"))
    assert not (tmp_path / "bad.pt").exists()


def test_non_finite_loss_skips_the_optimizer_step():
    trainer = _trainer(1e-2, vf_coef=math.inf)   # value loss * inf -> non-finite total loss
    before = {n: p.detach().clone() for n, p in trainer.policy.named_parameters()}
    m = trainer.train_step(["The movie was", "Today"], max_new_tokens=4)
    assert m["update_skipped"] == 1.0 and m["nan_count"] >= 1
    for n, p in trainer.policy.named_parameters():
        assert torch.equal(before[n], p), n
