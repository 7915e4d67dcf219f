"""The run-log schema: every record the kit writes or reads, and every metric, declared once.

Runners (ours, TRL, OpenRLHF) produce these records; instruments consume them. This module
imports nothing outside the standard library, so a run directory copied off a GPU box can be
analysed anywhere.

Records:
    RunInfo      one per run (run.json)
    StepRecord   one per PPO iteration (logs/train.jsonl), a flat dict of metric values
    PhaseRecord  one per phase per step per rank (logs/phases.jsonl)
    Alert        one per rule firing (logs/alerts.jsonl)
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import Any

SCHEMA_VERSION = 1

# --------------------------------------------------------------------------------------
# Phases of one RLHF iteration, in the order they run. Children run inside their parent.
# --------------------------------------------------------------------------------------
PHASES: tuple[str, ...] = (
    "rollout",       # generation: sample responses from the policy
    "reward",        # score the decoded responses
    "old_logprobs",  # log pi_old(a|s) by a scoring forward (TRL; ours with --rescore, else taken while sampling)
    "ref_logprobs",  # log pi_ref(a|s) under the frozen reference
    "values",        # V(s) from the value head / critic
    "advantages",    # KL-shaped rewards, GAE, whitening
    "update",        # PPO epochs over mini-batches
    "forward",       # .. inside update
    "backward",      # .. inside update
    "optimizer",     # .. inside update (clip + step + zero_grad)
    "comm",          # all-reduce and other inter-rank communication
    "checkpoint",
    "log",
)
PHASE_PARENT: dict[str, str] = {"forward": "update", "backward": "update", "optimizer": "update"}
TOP_LEVEL_PHASES: tuple[str, ...] = tuple(p for p in PHASES if p not in PHASE_PARENT)

# The seed's JSONL keys, kept exactly.
SEED_KEYS: tuple[str, ...] = (
    "timestamp", "step", "epoch", "total_loss", "policy_loss", "kl_loss",
    "reward_mean", "reward_std", "kl_mean", "kl_std", "clip_fraction",
)
RECORD_KEYS: tuple[str, ...] = ("timestamp", "step", "epoch", "rank")


@dataclass(frozen=True)
class Metric:
    """One logged quantity.

    Attributes:
        name: the key in train.jsonl.
        unit: human unit ("nats", "s", "tokens/s", "" for plain numbers).
        group: TensorBoard section and dashboard chart group.
        meaning: one sentence: what it is and how it is computed.
        healthy: what a healthy value looks like, for the docs and the dashboard legend.
    """

    name: str
    unit: str
    group: str
    meaning: str
    healthy: str = ""

    @property
    def tag(self) -> str:
        """TensorBoard tag: `group/name`, without repeating a group prefix already in the name."""
        return self.name if self.name.startswith(self.group + "/") else f"{self.group}/{self.name}"


def _m(name: str, unit: str, group: str, meaning: str, healthy: str = "") -> Metric:
    return Metric(name, unit, group, meaning, healthy)


METRICS: tuple[Metric, ...] = (
    # loss
    _m("total_loss", "", "loss", "policy_loss + vf_coef * value_loss - ent_coef * entropy, averaged over mini-batches."),
    _m("policy_loss", "", "loss", "Clipped PPO surrogate: mean over tokens of max(-A*r, -A*clip(r, 1-eps, 1+eps))."),
    _m("value_loss", "", "loss", "Clipped value loss: 0.5 * mean(max((V-R)^2, (clip(V, V_old +- eps_v)-R)^2))."),
    _m("kl_loss", "", "loss", "KL penalty folded into the rewards: kl_coef * mean over sequences of summed k1 KL."),
    # reward
    _m("reward_mean", "", "reward", "Mean task score of the sampled responses (before the KL penalty)."),
    _m("reward_std", "", "reward", "Standard deviation of the task score over the batch.", "above 0: a zero std gives no learning signal"),
    _m("reward_min", "", "reward", "Lowest task score in the batch."),
    _m("reward_max", "", "reward", "Highest task score in the batch."),
    _m("reward_var_rolling", "", "reward", "Variance of the task score over the last 10 iterations' batches.", "does not collapse to 0"),
    _m("non_score_reward", "", "reward", "Mean summed per-token KL penalty, -kl_coef * sum_t k1_t (negative)."),
    _m("return_mean", "", "reward", "Mean GAE return (advantage + value) over response tokens."),
    # kl to the reference
    _m("kl_mean", "nats", "kl", "k1 estimator of KL(pi || pi_ref), log pi - log pi_ref summed over response tokens, mean over sequences.", "small and bounded"),
    _m("kl_std", "nats", "kl", "Standard deviation over sequences of the summed k1 KL."),
    _m("kl_k3_mean", "nats", "kl", "k3 estimator (r - 1) - log r with r = pi_ref/pi, summed over tokens, mean over sequences; never negative."),
    _m("kl_k3_std", "nats", "kl", "Standard deviation over sequences of the summed k3 KL."),
    _m("kl_coef", "", "kl", "KL penalty coefficient in use this iteration (changes under the adaptive controller)."),
    _m("kl_token_mean", "nats/token", "kl", "KL(pi || pi_ref) per response token, averaged over tokens, as a framework reports it (TRL GRPO/RLOO `kl`: k3; OpenRLHF `kl`: its --kl_estimator; veRL `actor/kl_loss`); not comparable with kl_mean, which sums over tokens.", "small and bounded"),
    # policy update
    _m("clip_fraction", "", "policy", "Share of response tokens whose ratio pi/pi_old fell outside [1-eps, 1+eps].", "0.0-0.3"),
    _m("approx_kl", "nats", "policy", "Drift per update: k3 KL(pi_old || pi) over the last mini-batch pass.", "below ~0.05"),
    _m("policy_drift_kl", "nats", "policy", "k1 KL of the current policy from the initial one on this batch's tokens (log pi - log pi_init)."),
    _m("entropy", "nats", "policy", "Mean per-token entropy of the sampling policy's next-token distribution over response tokens (taken while sampling).", "falls slowly, never to 0"),
    _m("ratio_mean", "", "policy", "Mean importance ratio pi/pi_old over response tokens.", "close to 1"),
    _m("ratio_min", "", "policy", "Smallest importance ratio in the update."),
    _m("ratio_max", "", "policy", "Largest importance ratio in the update."),
    # value
    _m("explained_variance", "", "value", "1 - Var(returns - values) / Var(returns) over response tokens.", "rises towards 1; at or below 0 the critic predicts nothing"),
    _m("value_mean", "", "value", "Mean value estimate over response tokens."),
    _m("value_clip_fraction", "", "value", "Share of tokens where the clipped value loss term was the larger one."),
    # gradients
    _m("grad_norm", "", "grad", "Global L2 norm of the policy (and value) gradients before clipping, last optimizer step.", "steady, no spikes"),
    _m("grad_clip_fraction", "", "grad", "Share of this iteration's optimizer steps where gradient clipping fired."),
    _m("update_ratio", "", "grad", "||delta theta|| / ||theta|| of the trainable parameters over the iteration.", "around 1e-4 to 1e-2"),
    _m("learning_rate", "", "grad", "Learning rate used by the optimizer."),
    # rollout
    _m("response_length_mean", "tokens", "rollout", "Mean number of generated tokens per response, up to and including EOS."),
    _m("response_length_std", "tokens", "rollout", "Standard deviation of the response length."),
    _m("truncated_fraction", "", "rollout", "Share of responses cut at max_new_tokens without an EOS."),
    # health
    _m("nan_count", "", "health", "Number of non-finite values found in the losses, gradients and rewards this iteration.", "0"),
    _m("update_skipped", "", "health", "1 when the update was skipped because of non-finite values, else 0.", "0"),
    # throughput
    _m("step_seconds", "s", "throughput", "Wall-clock seconds of the whole iteration, less instrument_seconds."),
    _m("instrument_seconds", "s", "throughput", "Seconds the instruments' phase hooks (memory counters, trace labels) "
       "took this iteration on the host; kept out of step_seconds and the phase times."),
    _m("tokens_per_second", "tokens/s", "throughput", "Generated tokens per second of wall-clock iteration time."),
    _m("rollout_tokens_per_second", "tokens/s", "throughput", "Generated tokens per second of the rollout phase alone."),
    # time per phase (seconds, summed over repeats inside the iteration)
    *(_m(f"time/{p}", "s", "time", f"Seconds spent in the '{p}' phase this iteration"
         + (f" (inside '{PHASE_PARENT[p]}')." if p in PHASE_PARENT else ".")) for p in PHASES),
    _m("time/make_experience", "s", "time", "Seconds of OpenRLHF's make_experience (reward, old/ref log-probs, values and advantages together) this iteration."),
)
METRIC_BY_NAME: dict[str, Metric] = {m.name: m for m in METRICS}
GROUPS: tuple[str, ...] = tuple(dict.fromkeys(m.group for m in METRICS))


def metric(name: str) -> Metric | None:
    """The declared metric for a key, or None for keys outside the table."""
    return METRIC_BY_NAME.get(name)


def now_iso() -> str:
    """Local time as an ISO-8601 string with seconds, the seed's timestamp format."""
    return datetime.now().isoformat(timespec="seconds")


def clean_number(value: Any) -> Any:
    """JSON has no NaN or Infinity: non-finite floats become None (nan_count records them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@dataclass
class RunInfo:
    """What ran: one per run directory (run.json).

    Attributes:
        run_id: directory name.
        framework: "rlhf_core" | "trl" | "openrlhf" | "verl" | "demo".
        config: the full run configuration as nested dicts.
        model: model facts for FLOPs and memory, see `ModelSpec` keys in docs/metrics.md
               (family, n_layer, hidden, n_head, vocab, intermediate, tied, n_params, ...).
        device: "cpu" | "cuda" | "cuda:0" ...; device_name: e.g. "NVIDIA H100 80GB HBM3".
        versions: package versions ({"torch": "2.13.0", ...}).
        world_size: number of ranks.
    """

    run_id: str
    framework: str = "rlhf_core"
    created: str = field(default_factory=now_iso)
    config: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    device: str = "cpu"
    device_name: str = ""
    versions: dict = field(default_factory=dict)
    world_size: int = 1
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "RunInfo":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class PhaseRecord:
    """Time, work and memory of one phase in one step on one rank.

    Attributes:
        name: one of PHASES (adapters may add framework-specific names).
        step: the iteration it belongs to.
        rank: the process rank (0 without distribution).
        start: seconds since the run started when the phase was first entered this step.
        seconds: total seconds spent in it this step (summed over `count` entries).
        count: how many times it was entered this step (forward runs once per mini-batch).
        parent: the enclosing phase name, "" for top-level phases.
        work: what it computed, for FLOPs: {"mode": "gen"|"fwd"|"bwd"|"fwd_bwd", "tokens": int,
              "sum_t2": int (sum over sequences of length^2)}; empty when unknown.
        memory: bytes, filled by memory instruments: {"allocated", "peak", "reserved", "rss",
                "delta", and per category "params", "grads", "optim", "activations", ...}.
    """

    name: str
    step: int
    rank: int = 0
    start: float = 0.0
    seconds: float = 0.0
    count: int = 0
    parent: str = ""
    work: dict = field(default_factory=dict)
    memory: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "PhaseRecord":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


SEVERITIES: tuple[str, ...] = ("info", "warning", "critical")


@dataclass
class Alert:
    """A stability rule that fired.

    Attributes:
        rule: rule id, e.g. "kl_spike".
        severity: "info" | "warning" | "critical".
        step: first step at which the rule fired.
        message: one line for the console.
        evidence: the values that triggered it ({"kl_mean": 4.1, "median": 0.2, ...}).
        cause: the likely cause, in a sentence.
        what_to_try: what to change, in a sentence or two.
        last_step: last step at which the condition still held (same as step when new).
    """

    rule: str
    severity: str
    step: int
    message: str
    evidence: dict = field(default_factory=dict)
    cause: str = ""
    what_to_try: str = ""
    last_step: int = -1
    timestamp: float = field(default_factory=time.time)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["evidence"] = {k: clean_number(v) for k, v in self.evidence.items()}
        return d

    @classmethod
    def from_dict(cls, data: dict) -> "Alert":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def step_record(step: int, epoch: int, metrics: dict[str, float], rank: int = 0) -> dict:
    """A train.jsonl line: the seed's leading keys, then every metric, non-finite as None."""
    record: dict[str, Any] = {"timestamp": now_iso(), "step": step, "epoch": epoch}
    if rank:
        record["rank"] = rank
    record.update({k: clean_number(v) for k, v in metrics.items()})
    return record


def metrics_markdown() -> str:
    """docs/metrics.md, generated from METRICS (never written by hand)."""
    lines = [
        "# Metrics",
        "",
        "Generated from `rlhf_kit/events.py` by `rlhf-kit metrics-doc`; do not edit by hand.",
        "Every key below can appear in `logs/train.jsonl`; the seed's keys are kept exactly:",
        "`" + " ".join(SEED_KEYS) + "`.",
        "",
    ]
    for group in GROUPS:
        lines += [f"## {group}", "", "| key | unit | meaning | healthy |", "|---|---|---|---|"]
        for m in METRICS:
            if m.group == group:
                lines.append(f"| `{m.name}` | {m.unit} | {m.meaning} | {m.healthy} |")
        lines.append("")
    return "\n".join(lines)
