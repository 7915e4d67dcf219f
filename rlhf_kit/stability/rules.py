"""Stability rules: pure functions from a window of step records to an Alert (or None).

Each rule looks at `history`, the train.jsonl records up to and including the step being judged
(oldest first; the first `Thresholds.baseline_steps` records of the run always lead it, so rules can
compare with the start of the run), and decides whether its condition holds AT THE LAST RECORD.
Rules never keep state: the monitor (monitor.py) turns a rule that holds step after step into one
alert episode. A missing or non-finite metric never fires a rule except `nan_inf`, so runs from
frameworks that log fewer signals simply get fewer checks.

Example:
    >>> from rlhf_kit.stability.rules import evaluate
    >>> from rlhf_kit.stability.thresholds import Thresholds
    >>> history = [{"step": s, "grad_norm": 1.0} for s in range(5)] + [{"step": 5, "grad_norm": 40.0}]
    >>> [a.rule for a in evaluate(history, Thresholds())]
    ['grad_explosion']

Known limitations:
    Thresholds are absolute nats for the summed-over-tokens KL, so very long responses need larger
    KL thresholds. The reward-hacking signature cannot tell a policy that legitimately learned long
    answers from one gaming a length bias; it fires only when the KL climbs alongside.
"""

from __future__ import annotations

import math
from statistics import median
from typing import Callable, Sequence

from rlhf_kit.events import Alert
from rlhf_kit.stability.thresholds import Thresholds

Check = Callable[[Sequence[dict], Thresholds], "Alert | None"]

# rule -> (likely cause, what to try). One place, so docs/stability.md and the report agree.
ADVICE: dict[str, tuple[str, str]] = {
    "nan_inf": (
        "A non-finite value in the loss, gradients or rewards: usually a learning rate far too high, "
        "log(0) from a probability that underflowed, or a reward model returning NaN.",
        "Lower --learning_rate, keep --max_grad_norm on, check the reward function on the logged "
        "batch; the runner skipped the update, so the last checkpoint is still clean."),
    "kl_spike": (
        "One update pushed the policy far from the reference: step size too large for this batch, "
        "or a rare high-advantage batch that the KL penalty could not hold back.",
        "Lower --learning_rate, raise --kl_coef, lower --clip_range or --ppo_epochs, or set "
        "--target_kl so the update stops early."),
    "kl_runaway": (
        "The KL to the reference climbs step after step: the reward pays more than the KL penalty "
        "costs, so the policy keeps walking away from the reference.",
        "Raise --kl_coef (or use an adaptive KL target), lower --learning_rate, and check the "
        "samples for reward hacking."),
    "policy_update_too_large": (
        "A single PPO update moved the policy far from the one that sampled the batch "
        "(approx KL or importance ratios out of the trust region): the learning rate is too high.",
        "Lower --learning_rate (10x), lower --ppo_epochs, or set --target_kl to stop the epoch "
        "when approx_kl exceeds it."),
    "entropy_collapse": (
        "The policy became (nearly) deterministic: it stopped exploring, often after a too-large "
        "update or with no KL penalty holding it near the reference.",
        "Raise --kl_coef, add an entropy bonus (--ent_coef), lower --learning_rate, raise "
        "--temperature for sampling."),
    "reward_hacking": (
        "Reward rises while the KL climbs and response length pins to a bound or collapses: the "
        "policy found a cheap way to please the reward model instead of improving the text.",
        "Raise --kl_coef, read the samples, fix the exploitable reward (length bias), and cap or "
        "penalise truncated responses."),
    "grad_explosion": (
        "The gradient norm jumped far above its running median: a bad batch, a too-high learning "
        "rate, or values/advantages on an exploding scale.",
        "Keep --max_grad_norm on (try 0.5-1.0), lower --learning_rate, whiten advantages, check "
        "the reward scale."),
    "value_divergence": (
        "The critic explains none of the return variance and its loss is growing: the value "
        "targets moved faster than the critic learns, or the value head shares a trunk that the "
        "policy update keeps changing.",
        "Lower --vf_coef or the learning rate, try --value_model separate, check reward scale."),
    "clip_fraction_high": (
        "Most tokens' ratios sit outside the clip range step after step: each update is too big, "
        "so PPO throws most of its gradient away.",
        "Lower --learning_rate or --ppo_epochs, or use larger --mini_batch_size."),
    "reward_variance_collapse": (
        "Every response in the batch now gets (almost) the same reward: with no spread, the "
        "advantages are zero and PPO has nothing to learn from (often after entropy collapse).",
        "Raise --temperature or --kl_coef, check the reward is not saturated, and restart from "
        "the checkpoint before the collapse."),
    "rank_straggler": (
        "One rank computes longer than the others step after step, and the gradient all-reduce makes "
        "every rank wait for it: uneven work (longer generations from that rank's prompts), a slower "
        "or shared device, CPU oversubscription, or another job on that node.",
        "Read the per-rank table (`rlhf-kit health` or `rlhf-kit profile`) for the phase that differs; "
        "give every rank the same work (fixed max_new_tokens, equal per-rank batches), pin threads "
        "(OMP_NUM_THREADS = cores / ranks) and devices, and check the node for other processes."),
    "reward_flat": (
        "The reward has had no spread since the start of the run, so there is no learning signal.",
        "Check the reward function on a few samples; with a random-init model try --reward_type "
        "length or a pretrained model."),
}


# ---- small helpers ---------------------------------------------------------------------
def num(record: dict, key: str) -> float | None:
    """The finite float value of `key` in a record, else None (missing, null, bool or non-finite)."""
    v = record.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def series(records: Sequence[dict], key: str) -> list[float]:
    """Finite values of `key` over `records`, in order, gaps dropped."""
    return [v for v in (num(r, key) for r in records) if v is not None]


def kl_key(history: Sequence[dict]) -> str:
    """The KL-to-reference key this run logs: the seed's k1 `kl_mean`, else k3."""
    return "kl_mean" if num(history[-1], "kl_mean") is not None else "kl_k3_mean"


def _baseline(history: Sequence[dict], key: str, t: Thresholds) -> float | None:
    """Start-of-run level of `key`: the highest of its first baseline_steps values (None until past
    them). The highest, not the median, so a collapse that happens within those steps still counts."""
    if len(history) <= t.baseline_steps:
        return None
    head = series(history[: t.baseline_steps], key)
    return max(head) if head else None


def make_alert(rule: str, history: Sequence[dict], severity: str, message: str, evidence: dict) -> Alert:
    """An Alert for the last record of `history`, with the rule's cause and advice filled in."""
    step = int(history[-1].get("step", len(history) - 1))
    cause, what_to_try = ADVICE[rule]
    rounded = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in evidence.items()}
    return Alert(rule=rule, severity=severity, step=step, message=message, evidence=rounded,
                 cause=cause, what_to_try=what_to_try, last_step=step)


# ---- the rules -------------------------------------------------------------------------
_POISON_KEYS = ("total_loss", "policy_loss", "value_loss", "grad_norm", "reward_mean", "kl_mean")


def nan_inf(history: Sequence[dict], t: Thresholds) -> Alert | None:
    """Non-finite loss/grad/reward: nan_count > 0, update_skipped, or a logged loss that is null."""
    rec = history[-1]
    count = num(rec, "nan_count") or 0.0
    skipped = num(rec, "update_skipped") or 0.0
    # step_record writes NaN/Inf as null, so a present-but-null key is a non-finite value.
    nulls = [k for k in _POISON_KEYS if k in rec and rec[k] is None]
    if count <= 0 and skipped <= 0 and not nulls:
        return None
    what = f"{int(count)} non-finite value(s)" if count else "non-finite " + ", ".join(nulls)
    return make_alert("nan_inf", history, "critical",
                      f"{what}; update {'skipped' if skipped else 'applied'}",
                      {"nan_count": count, "update_skipped": skipped, "null_keys": ",".join(nulls)})


def kl_spike(history: Sequence[dict], t: Thresholds) -> Alert | None:
    """KL to the reference jumps above factor x its running median (and by more than kl_spike_min)."""
    key = kl_key(history)
    cur = num(history[-1], key)
    prev = series(history[:-1][-t.median_window:], key)
    if cur is None or len(prev) < t.min_history:
        return None
    med = median(prev)
    if cur - med <= t.kl_spike_min or cur <= t.kl_spike_factor * max(med, 0.0):
        return None
    severity = "critical" if cur > t.kl_spike_critical else "warning"
    return make_alert("kl_spike", history, severity, f"{key} {cur:.3g} nats vs running median {med:.3g}",
                      {key: cur, "median": med, "factor": cur / med if med > 0 else None})


def kl_runaway(history: Sequence[dict], t: Thresholds) -> Alert | None:
    """KL climbs steadily: most step-to-step changes over the window are increases, and it gained a lot."""
    key = kl_key(history)
    w = series(history[-t.kl_runaway_window:], key)
    if len(w) < max(t.kl_runaway_window, 2):
        return None
    diffs = [b - a for a, b in zip(w, w[1:])]
    rising = sum(d > 0 for d in diffs) / len(diffs)
    if rising < t.kl_runaway_rising or w[-1] - w[0] < t.kl_runaway_min_rise:
        return None
    return make_alert("kl_runaway", history, "warning",
                      f"{key} climbed {w[0]:.3g} -> {w[-1]:.3g} nats over {len(w)} steps",
                      {f"{key}_start": w[0], f"{key}_end": w[-1], "rising_share": rising})


def policy_update_too_large(history: Sequence[dict], t: Thresholds) -> Alert | None:
    """One update left the trust region: approx_kl above approx_kl_max or ratios beyond ratio_max."""
    rec = history[-1]
    akl, rmax, rmin = num(rec, "approx_kl"), num(rec, "ratio_max"), num(rec, "ratio_min")
    too_far = akl is not None and akl > t.approx_kl_max
    ratio_out = (rmax is not None and rmax > t.ratio_max) or (rmin is not None and 0 <= rmin < 1 / t.ratio_max)
    if not (too_far or ratio_out):
        return None
    parts = [f"approx_kl {akl:.3g}"] if too_far else []
    if ratio_out:
        lo, hi = ("?" if v is None else f"{v:.3g}" for v in (rmin, rmax))
        parts.append(f"ratio in [{lo}, {hi}]")
    return make_alert("policy_update_too_large", history, "warning", "; ".join(parts) + " in one update",
                      {"approx_kl": akl, "ratio_min": rmin, "ratio_max": rmax})


def entropy_collapse(history: Sequence[dict], t: Thresholds) -> Alert | None:
    """Entropy fell below entropy_collapse_frac of its start-of-run level, or below entropy_min."""
    cur, base = num(history[-1], "entropy"), _baseline(history, "entropy", t)
    if cur is None or base is None or base <= 0:
        return None
    if cur >= t.entropy_collapse_frac * base and cur >= t.entropy_min:
        return None
    severity = "critical" if cur < t.entropy_min else "warning"
    return make_alert("entropy_collapse", history, severity,
                      f"entropy {cur:.3g} nats/token, was {base:.3g} at the start",
                      {"entropy": cur, "baseline": base})


def reward_hacking(history: Sequence[dict], t: Thresholds) -> Alert | None:
    """Reward up, KL up, and response length pinned at max_new_tokens or collapsed, over hack_window."""
    w = history[-t.hack_window:]
    if len(w) < t.hack_window:
        return None
    key, k = kl_key(history), max(1, len(w) // 4)
    rewards, kls = series(w, "reward_mean"), series(w, key)
    if len(rewards) < 2 * k or len(kls) < 2:
        return None
    r_start, r_end = sum(rewards[:k]) / k, sum(rewards[-k:]) / k
    spread = median(series(w[:k], "reward_std") or [0.0])
    reward_up = r_end - r_start > t.hack_reward_rise * max(spread, 1e-3)
    kl_up = kls[-1] - kls[0] >= t.hack_kl_rise and kls[-1] >= t.hack_kl_min
    trunc, length = num(w[-1], "truncated_fraction"), num(w[-1], "response_length_mean")
    base_len = _baseline(history, "response_length_mean", t)
    pinned = trunc is not None and trunc >= t.hack_truncated
    collapsed = length is not None and base_len is not None and length <= t.hack_length_collapse * base_len
    if not (reward_up and kl_up and (pinned or collapsed)):
        return None
    how = "pinned at max_new_tokens" if pinned else "collapsed"
    return make_alert("reward_hacking", history, "warning",
                      f"reward {r_start:.3g} -> {r_end:.3g} while {key} {kls[0]:.3g} -> {kls[-1]:.3g} "
                      f"and length {how}",
                      {"reward_start": r_start, "reward_end": r_end, f"{key}_start": kls[0],
                       f"{key}_end": kls[-1], "truncated_fraction": trunc, "response_length_mean": length})


def grad_explosion(history: Sequence[dict], t: Thresholds) -> Alert | None:
    """grad_norm (before clipping) above grad_factor x its running median, or above grad_abs_max."""
    cur = num(history[-1], "grad_norm")
    if cur is None:
        return None
    prev = series(history[:-1][-t.median_window:], "grad_norm")
    med = median(prev) if len(prev) >= t.min_history else None
    relative = med is not None and med > 0 and cur > t.grad_factor * med
    absolute = t.grad_abs_max > 0 and cur > t.grad_abs_max
    if not (relative or absolute):
        return None
    severity = "critical" if med and cur > 10 * t.grad_factor * med else "warning"
    return make_alert("grad_explosion", history, severity,
                      f"grad_norm {cur:.3g}" + (f" is {cur / med:.0f}x its running median {med:.3g}" if med else ""),
                      {"grad_norm": cur, "median": med})


def value_divergence(history: Sequence[dict], t: Thresholds) -> Alert | None:
    """explained_variance <= value_ev_max for value_window steps while value_loss grows value_loss_growth x."""
    w = history[-t.value_window:]
    ev, vl = series(w, "explained_variance"), series(w, "value_loss")
    if len(w) < t.value_window or len(ev) < t.value_window or len(vl) < 2:
        return None
    if max(ev) > t.value_ev_max or vl[-1] < t.value_loss_growth * max(vl[0], 1e-12):
        return None
    return make_alert("value_divergence", history, "warning",
                      f"explained_variance <= {t.value_ev_max:g} for {len(w)} steps, value_loss "
                      f"{vl[0]:.3g} -> {vl[-1]:.3g}",
                      {"explained_variance_max": max(ev), "value_loss_start": vl[0], "value_loss_end": vl[-1]})


def clip_fraction_high(history: Sequence[dict], t: Thresholds) -> Alert | None:
    """clip_fraction above clip_high on each of the last clip_window steps."""
    w = series(history[-t.clip_window:], "clip_fraction")
    if len(history) < t.clip_window or len(w) < t.clip_window or min(w) <= t.clip_high:
        return None
    return make_alert("clip_fraction_high", history, "warning",
                      f"clip_fraction above {t.clip_high:g} for {len(w)} steps (now {w[-1]:.2f})",
                      {"clip_fraction_min": min(w), "clip_fraction": w[-1]})


def reward_variance_collapse(history: Sequence[dict], t: Thresholds) -> Alert | None:
    """reward_std below reward_var_frac x its start-of-run level for reward_var_window steps.

    A reward that never varied fires the info-level `reward_flat` instead, once past the window.
    """
    base = _baseline(history, "reward_std", t)
    w = series(history[-t.reward_var_window:], "reward_std")
    if base is None or len(history) < t.reward_var_window or len(w) < t.reward_var_window:
        return None
    if base <= t.reward_var_min_baseline:
        if max(w) <= t.reward_var_min_baseline:
            return make_alert("reward_flat", history, "info",
                              "reward_std has been 0 since the start: no learning signal",
                              {"reward_std_max": max(w), "baseline": base})
        return None
    if max(w) >= t.reward_var_frac * base:
        return None
    return make_alert("reward_variance_collapse", history, "warning",
                      f"reward_std {w[-1]:.3g}, was {base:.3g} at the start",
                      {"reward_std": w[-1], "reward_std_max": max(w), "baseline": base})


def rank_straggler(history: Sequence[dict], t: Thresholds) -> Alert | None:
    """Multi-rank: the same rank was busy > straggler_share longer than the others' median on each of
    the last straggler_window judged steps (records carrying `straggler_*` keys, see monitor.py)."""
    if num(history[-1], "straggler_share") is None:
        return None
    judged = [r for r in history if num(r, "straggler_share") is not None][-t.straggler_window:]
    if len(judged) < t.straggler_window:
        return None
    rank = judged[-1].get("straggler_rank")
    for r in judged:
        excess = num(r, "straggler_excess_seconds") or 0.0
        if r.get("straggler_rank") != rank or r["straggler_share"] <= t.straggler_share \
                or excess <= t.straggler_min_seconds:
            return None
    shares = [r["straggler_share"] for r in judged]
    phase = judged[-1].get("straggler_phase") or "?"
    return make_alert("rank_straggler", history, "warning",
                      f"rank {rank} was {100 * min(shares):.0f}-{100 * max(shares):.0f}% slower than the other "
                      f"ranks for {len(judged)} steps, most in {phase}",
                      {"rank": rank, "share": shares[-1], "ratio": num(judged[-1], "straggler_ratio"),
                       "phase": phase, "judged_step": judged[-1].get("straggler_step")})


RULES: tuple[Check, ...] = (
    nan_inf, kl_spike, kl_runaway, policy_update_too_large, entropy_collapse, reward_hacking,
    grad_explosion, value_divergence, clip_fraction_high, reward_variance_collapse, rank_straggler,
)


def evaluate(history: Sequence[dict], t: Thresholds | None = None,
             rules: Sequence[Check] = RULES) -> list[Alert]:
    """Run every rule on `history` (judged at its last record). Returns the alerts that hold, in rule order."""
    if not history:
        return []
    t = t or Thresholds()
    return [a for a in (rule(history, t) for rule in rules) if a is not None]
