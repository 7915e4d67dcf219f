"""Each stability rule on hand-built windows: it fires exactly when its documented condition holds.

The numbers are chosen by hand against the default Thresholds; comments give the arithmetic.
"""

from rlhf_kit.stability import rules as R
from rlhf_kit.stability.thresholds import Thresholds

T = Thresholds()


def hist(**series):
    """Records step 0..n-1 from equal-length lists of values per key."""
    n = len(next(iter(series.values())))
    return [{"step": i, **{k: v[i] for k, v in series.items()}} for i in range(n)]


def test_nan_inf_fires_on_count_skip_or_null_loss():
    assert R.nan_inf(hist(nan_count=[0, 0]), T) is None
    a = R.nan_inf(hist(nan_count=[0, 3], update_skipped=[0, 1]), T)
    assert a.rule == "nan_inf" and a.severity == "critical" and a.step == 1
    assert a.evidence["nan_count"] == 3 and "skipped" in a.message
    # step_record turns NaN into null: a present-but-null loss is non-finite
    b = R.nan_inf([{"step": 4, "total_loss": None, "reward_mean": 0.1}], T)
    assert b is not None and b.evidence["null_keys"] == "total_loss"
    # a key that is simply absent is not poison (frameworks log fewer keys)
    assert R.nan_inf([{"step": 4, "reward_mean": 0.1}], T) is None


def test_kl_spike_needs_factor_and_absolute_jump():
    # median of [0.5, 0.6, 0.4] = 0.5; 2.6 is 5.2x the median (> 4) and 2.1 above it (> 2.0): spike
    a = R.kl_spike(hist(kl_mean=[0.5, 0.6, 0.4, 2.6]), T)
    assert a.rule == "kl_spike" and a.step == 3 and a.severity == "warning"
    assert a.evidence["median"] == 0.5 and abs(a.evidence["factor"] - 5.2) < 1e-9
    # 2.4 is 4.8x the median but only 1.9 nats above it: below the absolute floor, no spike
    assert R.kl_spike(hist(kl_mean=[0.5, 0.6, 0.4, 2.4]), T) is None
    # median 3.0, 11.0 is 8 nats above but only 3.7x: no spike
    assert R.kl_spike(hist(kl_mean=[3.0, 3.0, 3.0, 11.0]), T) is None
    # fewer than min_history earlier steps: never fires
    assert R.kl_spike(hist(kl_mean=[0.0, 0.0, 9.0]), T) is None
    # above kl_spike_critical (50 nats) the spike is critical
    assert R.kl_spike(hist(kl_mean=[0.1, 0.1, 0.1, 60.0]), T).severity == "critical"


def test_kl_spike_falls_back_to_k3():
    a = R.kl_spike(hist(kl_k3_mean=[0.1, 0.1, 0.1, 3.0]), T)
    assert a is not None and "kl_k3_mean" in a.evidence


def test_kl_runaway_steady_climb():
    # 8 steps 0,0.5,...,3.5: all 7 changes are rises, total rise 3.5 >= 3.0
    climb = [0.5 * i for i in range(8)]
    a = R.kl_runaway(hist(kl_mean=climb), T)
    assert a.rule == "kl_runaway" and a.evidence["rising_share"] == 1.0
    # same rise but only 5 of 7 changes up (0.71 < 0.75): not steady
    zigzag = [0.0, 1.0, 0.5, 1.5, 1.0, 2.0, 2.5, 3.5]
    assert R.kl_runaway(hist(kl_mean=zigzag), T) is None
    # steady but small: 7 x 0.4 = 2.8 < 3.0
    assert R.kl_runaway(hist(kl_mean=[0.4 * i for i in range(8)]), T) is None
    # window not full yet
    assert R.kl_runaway(hist(kl_mean=climb[:7]), T) is None


def test_policy_update_too_large():
    assert R.policy_update_too_large(hist(approx_kl=[0.02], ratio_min=[0.8], ratio_max=[1.3]), T) is None
    assert R.policy_update_too_large(hist(approx_kl=[1.5]), T).evidence["approx_kl"] == 1.5
    # ratio 25 > 20, or ratio 0.04 < 1/20 = 0.05
    assert R.policy_update_too_large(hist(ratio_max=[25.0]), T) is not None
    assert R.policy_update_too_large(hist(ratio_min=[0.04], ratio_max=[1.0]), T) is not None


def test_entropy_collapse_relative_and_absolute():
    # baseline = median of first 3 = 10.0; 0.9 < 0.1 * 10 -> warning
    a = R.entropy_collapse(hist(entropy=[10.0, 10.0, 9.0, 5.0, 0.9]), T)
    assert a.severity == "warning" and a.evidence["baseline"] == 10.0
    assert R.entropy_collapse(hist(entropy=[10.0, 10.0, 9.0, 5.0, 1.1]), T) is None
    # 0.01 < entropy_min 0.05 -> critical, even though it is also below 10%
    assert R.entropy_collapse(hist(entropy=[0.3, 0.3, 0.3, 0.01]), T).severity == "critical"
    # still inside the baseline steps: nothing to compare with
    assert R.entropy_collapse(hist(entropy=[10.0, 0.0, 0.0]), T) is None


def _hack_window(truncated=1.0, length=None, kl_end=5.0):
    # reward 0.0 -> 0.7 with start std 0.1: rise 0.7 > 1.0 * 0.1 ; KL 0 -> kl_end
    n = 8
    rec = hist(reward_mean=[0.1 * i for i in range(n)], reward_std=[0.1] * n,
               kl_mean=[kl_end * i / (n - 1) for i in range(n)], truncated_fraction=[truncated] * n,
               response_length_mean=length or [10.0] * n)
    return rec


def test_reward_hacking_signature():
    # k = 8 // 4 = 2: reward start mean(0, .1) = .05, end mean(.6, .7) = .65; KL 0 -> 5 (rise >= 2, end >= 3)
    a = R.reward_hacking(_hack_window(), T)
    assert a.rule == "reward_hacking" and abs(a.evidence["reward_end"] - 0.65) < 1e-9
    # length neither pinned (truncated 0.2) nor collapsed: no signature
    assert R.reward_hacking(_hack_window(truncated=0.2), T) is None
    # length collapsed 10 -> 2 tokens (2 <= 0.3 * baseline 10) counts too
    collapse = [10.0, 10.0, 10.0, 8, 6, 4, 3, 2.0]
    assert R.reward_hacking(_hack_window(truncated=0.0, length=collapse), T) is not None
    # KL stays small (ends 2.5 < hack_kl_min 3): a healthy improving run
    assert R.reward_hacking(_hack_window(kl_end=2.5), T) is None


def test_grad_explosion():
    # median of [1, 2, 1, 1] = 1; 15 > 10 x 1 -> warning; 150 > 100 x 1 -> critical
    assert R.grad_explosion(hist(grad_norm=[1.0, 2.0, 1.0, 1.0, 15.0]), T).severity == "warning"
    assert R.grad_explosion(hist(grad_norm=[1.0, 2.0, 1.0, 1.0, 150.0]), T).severity == "critical"
    assert R.grad_explosion(hist(grad_norm=[1.0, 2.0, 1.0, 1.0, 9.0]), T) is None
    # absolute cap, off by default, fires without history when set
    assert R.grad_explosion(hist(grad_norm=[500.0]), Thresholds(grad_abs_max=100.0)) is not None


def test_value_divergence_needs_bad_ev_and_growing_loss():
    ev = [-0.1] * 8
    # value loss 1 -> 2.5 (>= 2x) with EV <= 0 throughout: divergence
    assert R.value_divergence(hist(explained_variance=ev, value_loss=[1, 1, 1, 1, 2, 2, 2, 2.5]), T) is not None
    # loss falling: an early critic that has not learned yet, not a divergence
    assert R.value_divergence(hist(explained_variance=ev, value_loss=[2.5, 2, 2, 2, 1, 1, 1, 1]), T) is None
    # one step with EV 0.3 breaks the window
    assert R.value_divergence(hist(explained_variance=ev[:7] + [0.3], value_loss=[1] * 7 + [3]), T) is None


def test_clip_fraction_persistently_high():
    assert R.clip_fraction_high(hist(clip_fraction=[0.5] * 5), T) is not None
    # one step at 0.2 in the last five: not persistent
    assert R.clip_fraction_high(hist(clip_fraction=[0.5, 0.5, 0.2, 0.5, 0.5]), T) is None
    assert R.clip_fraction_high(hist(clip_fraction=[0.5] * 4), T) is None


def test_reward_variance_collapse_and_flat():
    # baseline std = 0.4; last 5 all < 0.05 * 0.4 = 0.02 -> collapse
    a = R.reward_variance_collapse(hist(reward_std=[0.4, 0.4, 0.4, 0.01, 0.01, 0.0, 0.0, 0.01]), T)
    assert a.rule == "reward_variance_collapse" and a.evidence["baseline"] == 0.4
    assert R.reward_variance_collapse(hist(reward_std=[0.4, 0.4, 0.4, 0.01, 0.03, 0.0, 0.0, 0.01]), T) is None
    # never varied: info-level reward_flat, not a collapse
    flat = R.reward_variance_collapse(hist(reward_std=[0.0] * 6), T)
    assert flat.rule == "reward_flat" and flat.severity == "info"


def test_every_rule_has_advice_and_ignores_missing_metrics():
    history = hist(foo=[1.0] * 12)
    assert R.evaluate(history, T) == []
    for name in ("nan_inf", "kl_spike", "kl_runaway", "policy_update_too_large", "entropy_collapse",
                 "reward_hacking", "grad_explosion", "value_divergence", "clip_fraction_high",
                 "reward_variance_collapse", "reward_flat"):
        cause, todo = R.ADVICE[name]
        assert cause and todo


def test_thresholds_from_dict_validates():
    import pytest

    from rlhf_kit.errors import UsageError

    t = Thresholds.from_dict({"clip_high": 0.4, "clip_window": 3.0})
    assert t.clip_high == 0.4 and t.clip_window == 3 and isinstance(t.clip_window, int)
    with pytest.raises(UsageError, match="unknown stability threshold"):
        Thresholds.from_dict({"clip_hi": 0.4})
    with pytest.raises(UsageError, match="must be a number"):
        Thresholds.from_dict({"clip_high": "high"})
