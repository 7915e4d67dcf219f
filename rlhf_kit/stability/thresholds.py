"""Every threshold the stability rules use, in one documented, configurable dataclass.

The defaults are tuned on this repo's runner (tiny-gpt2 / small-gpt2, see docs/stability.md for the
measured detection steps and false alarms) and on common PPO-for-LLM practice. Override any field:

    Thresholds(kl_spike_factor=5.0)            # in code
    Thresholds.from_dict({"clip_high": 0.4})   # from a config dict; unknown keys are a UsageError

KL values are the seed's `kl_mean`: the k1 estimate summed over response tokens, mean over the batch,
in nats per sequence, so the KL thresholds scale with response length.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from rlhf_kit.errors import UsageError


@dataclass(frozen=True)
class Thresholds:
    """Knobs of the stability rules. Window sizes count optimizer steps (train.jsonl records).

    Attributes:
        history: most records a live monitor keeps; every rule looks at most this far back.
        baseline_steps: the highest value over the first N records is the "start of run" baseline
            (entropy, reward std, response length), so a collapse within those N steps still counts.
        min_history: records a running-median rule needs before it may fire (no alarms on step 0).
        median_window: the running medians (KL spike, gradient explosion) use this many earlier steps.
        kl_spike_factor: KL spike when kl_mean > factor * running median of earlier steps ...
        kl_spike_min: ... and kl_mean - median > this many nats (an absolute floor: a doubling of a
            near-zero KL is no spike).
        kl_spike_critical: a spike above this many nats is critical.
        kl_runaway_window: steps over which a steady climb is judged.
        kl_runaway_rising: share of step-to-step KL changes in that window that must be increases.
        kl_runaway_min_rise: nats the KL must gain over the window.
        approx_kl_max: per-update drift KL(pi_old || pi) above this means one update moved the policy
            too far (trust region broken; usually the learning rate).
        ratio_max: an importance ratio pi/pi_old above this (or below 1/ratio_max) says the same.
        entropy_collapse_frac: entropy collapse when entropy < frac * its start-of-run baseline ...
        entropy_min: ... or below this many nats per token outright (critical).
        hack_window: steps over which the reward-hacking signature is judged.
        hack_reward_rise: rise of reward_mean over the window, in units of the start-of-window
            reward_std (or absolute when that std is ~0).
        hack_kl_rise: nats the KL must gain over the window alongside the reward.
        hack_kl_min: KL must also end above this many nats (a policy still near the reference is not
            hacking).
        hack_truncated: truncated_fraction at or above this means length is pinned to max_new_tokens.
        hack_length_collapse: response_length_mean at or below this frac of its baseline = collapsed.
        grad_factor: gradient explosion when grad_norm > factor * running median of earlier norms.
        grad_abs_max: grad_norm above this is an explosion whatever the history (0 disables).
        value_window: steps of explained_variance <= value_ev_max needed for value divergence ...
        value_ev_max: ... (0: the critic explains nothing) ...
        value_loss_growth: ... while value_loss ends this factor above its start-of-window level.
        clip_high: clip fraction above this ...
        clip_window: ... for this many consecutive steps is "persistently high".
        reward_var_window: reward_std must stay low this many consecutive steps ...
        reward_var_frac: ... below frac * its start-of-run baseline ...
        reward_var_min_baseline: ... and the baseline must have been above this (a reward that never
            varied is reported as info `reward_flat`, not as a collapse).
        rearm_steps: a rule whose condition has been clear this many steps closes its episode; firing
            again afterwards is a new alert (a new line in alerts.jsonl).
        straggler_share: multi-rank runs: a rank whose busy time (its phases except `comm`) exceeds the
            median of the other ranks by more than this share (0.2 = 20% slower) ...
        straggler_window: ... on each of this many consecutive judged steps, the same rank each time ...
        straggler_min_seconds: ... and by more than this many seconds (sub-millisecond jitter on tiny
            steps is not a straggler).
    """

    history: int = 200
    baseline_steps: int = 3
    min_history: int = 3
    median_window: int = 20
    kl_spike_factor: float = 4.0
    kl_spike_min: float = 2.0
    kl_spike_critical: float = 50.0
    kl_runaway_window: int = 8
    kl_runaway_rising: float = 0.75
    kl_runaway_min_rise: float = 3.0
    approx_kl_max: float = 1.0
    ratio_max: float = 20.0
    entropy_collapse_frac: float = 0.1
    entropy_min: float = 0.05
    hack_window: int = 8
    hack_reward_rise: float = 1.0
    hack_kl_rise: float = 2.0
    hack_kl_min: float = 3.0
    hack_truncated: float = 0.9
    hack_length_collapse: float = 0.3
    grad_factor: float = 10.0
    grad_abs_max: float = 0.0
    value_window: int = 8
    value_ev_max: float = 0.0
    value_loss_growth: float = 2.0
    clip_high: float = 0.3
    clip_window: int = 5
    reward_var_window: int = 5
    reward_var_frac: float = 0.05
    reward_var_min_baseline: float = 1e-6
    rearm_steps: int = 3
    straggler_share: float = 0.2
    straggler_window: int = 5
    straggler_min_seconds: float = 0.005

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "Thresholds":
        """Thresholds with `data` overriding the defaults.

        Raises:
            UsageError: a key that is not a threshold, or a value that is not a number.
        """
        known = {f.name: f.type for f in fields(cls)}
        bad = sorted(set(data) - set(known))
        if bad:
            raise UsageError(f"unknown stability threshold(s) {', '.join(bad)}; allowed: {', '.join(known)}")
        out = {}
        for key, value in data.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise UsageError(f"stability threshold {key} must be a number, got {value!r}")
            out[key] = int(value) if known[key] == "int" else float(value)
        return cls(**out)
