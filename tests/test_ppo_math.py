"""The PPO maths against numbers worked out by hand (in the comments)."""

import math

import pytest
import torch

from rlhf_core import advantages as A

T = torch.tensor


def test_masked_mean_and_var_ignore_masked_entries():
    x, m = T([[1.0, 2.0, 3.0, 100.0]]), T([[1.0, 1.0, 1.0, 0.0]])
    # mean(1, 2, 3) = 2; unbiased var = ((1)^2 + 0 + (1)^2) / (3 - 1) = 1
    assert A.masked_mean(x, m).item() == pytest.approx(2.0)
    assert A.masked_var(x, m).item() == pytest.approx(1.0)
    # whitened: (x - 2) / 1 on real entries, 0 on the masked one
    assert A.masked_whiten(x, m).tolist()[0] == pytest.approx([-1.0, 0.0, 1.0, 0.0], abs=1e-6)


def test_response_mask_keeps_first_eos_and_drops_the_rest():
    eos = 9
    resp = T([[5, 9, 9, 9], [1, 2, 3, 4], [9, 1, 9, 2]])
    assert A.response_mask(resp, eos).tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]


def test_kl_estimators_k1_and_k3():
    # one sequence, two real tokens and one masked
    logp = T([[math.log(0.5), math.log(0.25), 0.0]])
    ref = T([[math.log(0.25), math.log(0.5), 0.0]])
    m = T([[1.0, 1.0, 0.0]])
    k1, k1_sum, k3_sum = A.kl_estimators(logp, ref, m)
    # k1 = log 0.5 - log 0.25 = ln 2 ; log 0.25 - log 0.5 = -ln 2 ; sum = 0
    assert k1.tolist()[0] == pytest.approx([math.log(2), -math.log(2), 0.0])
    assert k1_sum.item() == pytest.approx(0.0, abs=1e-7)
    # k3 = (r - 1) - ln r with r = ref/pi: r = 0.5 -> -0.5 + ln 2 = 0.19315; r = 2 -> 1 - ln 2 = 0.30685
    assert k3_sum.item() == pytest.approx(0.5, abs=1e-6)


def test_shaped_rewards_put_score_on_last_real_token():
    k1 = T([[0.1, 0.2, 0.3], [0.5, 0.0, 0.0]])
    m = T([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    r = A.shaped_rewards(T([1.0, -2.0]), k1, m, kl_coef=0.5)
    # row 0: -0.5*[0.1, 0.2, 0.3] + [0, 0, 1] = [-0.05, -0.1, 0.85]
    # row 1: -0.5*0.5 + (-2) on token 0, masked after = [-2.25, 0, 0]
    assert r.tolist()[0] == pytest.approx([-0.05, -0.1, 0.85])
    assert r.tolist()[1] == pytest.approx([-2.25, 0.0, 0.0])


def test_gae_by_hand():
    rewards = T([[0.0, 1.0]])
    values = T([[0.5, 0.2]])
    m = T([[1.0, 1.0]])
    adv, ret = A.gae(rewards, values, m, gamma=0.9, lam=0.5)
    # t=1: delta = 1 + 0.9*0 - 0.2 = 0.8;  A1 = 0.8
    # t=0: delta = 0 + 0.9*0.2 - 0.5 = -0.32;  A0 = -0.32 + 0.9*0.5*0.8 = 0.04
    assert adv.tolist()[0] == pytest.approx([0.04, 0.8])
    assert ret.tolist()[0] == pytest.approx([0.54, 1.0])


def test_gae_stops_at_the_last_real_token():
    rewards = T([[1.0, 5.0]])          # the 5 sits on a masked token and must not leak back
    values = T([[0.0, 3.0]])
    adv, _ = A.gae(rewards, values, T([[1.0, 0.0]]), gamma=1.0, lam=1.0)
    assert adv.tolist()[0] == pytest.approx([1.0, 0.0])


def test_policy_loss_clips_and_counts():
    old = T([[0.0, 0.0]])
    new = T([[math.log(1.5), math.log(0.9)]])   # ratios 1.5 and 0.9
    adv = T([[1.0, -1.0]])
    out = A.policy_loss(new, old, adv, T([[1.0, 1.0]]), clip_range=0.2)
    # token 0: max(-1*1.5, -1*1.2) = -1.2 ; token 1: max(1*0.9, 1*0.9) = 0.9 ; mean = -0.15
    assert out.loss.item() == pytest.approx(-0.15, abs=1e-6)
    assert out.clip_fraction.item() == pytest.approx(0.5)     # |1.5 - 1| > 0.2, |0.9 - 1| is not
    # k3(pi_old||pi) per token: r - 1 - ln r: 0.5 - ln 1.5 = 0.094535 ; -0.1 - ln 0.9 = 0.005361
    assert out.approx_kl.item() == pytest.approx((0.094535 + 0.005361) / 2, abs=1e-5)


def test_value_loss_clipped_by_hand():
    values, old, ret = T([[1.0, 0.0]]), T([[0.0, 0.0]]), T([[2.0, 1.0]])
    loss, frac = A.value_loss(values, old, ret, T([[1.0, 1.0]]), clip_range_value=0.2)
    # token 0: unclipped (1-2)^2 = 1, clipped V = 0.2 -> (0.2-2)^2 = 3.24 -> 3.24
    # token 1: both (0-1)^2 = 1 -> 1 ;  0.5 * mean(3.24, 1) = 1.06
    assert loss.item() == pytest.approx(1.06)
    assert frac.item() == pytest.approx(0.5)


def test_explained_variance():
    ret = T([[1.0, 2.0, 3.0]])
    m = T([[1.0, 1.0, 1.0]])
    assert A.explained_variance(ret, ret, m).item() == pytest.approx(1.0)
    # constant prediction 2: Var(R - V) = Var(R) -> 0
    assert A.explained_variance(T([[2.0, 2.0, 2.0]]), ret, m).item() == pytest.approx(0.0, abs=1e-6)


def test_adaptive_kl_controller():
    ctl = A.AdaptiveKLController(0.1, target=6.0, horizon=100)
    ctl.update(current_kl=12.0, n_samples=10)
    # error = clip(12/6 - 1, -0.2, 0.2) = 0.2 ; mult = 1 + 0.2 * 10/100 = 1.02
    assert ctl.value == pytest.approx(0.102)
    fixed = A.AdaptiveKLController(0.1, target=0.0, horizon=100)
    fixed.update(50.0, 10)
    assert fixed.value == 0.1


def test_token_logprob_and_its_fused_gradient_by_hand():
    from rlhf_core.policy import gather_logprobs

    # logits [0, ln 3] -> softmax [1/4, 3/4]; token 1: log(3/4); d/dlogits = onehot - softmax
    logits = torch.tensor([[0.0, math.log(3.0)]], requires_grad=True)
    lp = gather_logprobs(logits, torch.tensor([1]))
    assert lp.item() == pytest.approx(math.log(0.75))
    (2.0 * lp).sum().backward()
    assert logits.grad[0].tolist() == pytest.approx([2.0 * -0.25, 2.0 * (1 - 0.75)])


def test_token_logprob_gradient_equals_autograd_of_the_plain_formula():
    from rlhf_core.policy import gather_logprobs

    g = torch.Generator().manual_seed(0)
    logits = (3 * torch.randn(2, 5, 97, generator=g)).requires_grad_()
    tokens = torch.randint(97, (2, 5), generator=g)
    weights = torch.randn(2, 5, generator=g)
    (gather_logprobs(logits, tokens) * weights).sum().backward()
    fused = logits.grad.clone()
    logits.grad = None
    plain = torch.log_softmax(logits, -1).gather(-1, tokens[..., None]).squeeze(-1)
    (plain * weights).sum().backward()
    torch.testing.assert_close(fused, logits.grad, atol=1e-6, rtol=1e-5)
