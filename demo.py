"""RLHF in miniature, with the Python standard library alone: `python demo.py`.

A toy bandit stands in for a language model: the "policy" is one softmax over eight words (one of
them <eos>), a response is words drawn from it until <eos> or MAX_NEW_TOKENS, and a sentiment
reward scores the words. PPO trains it exactly as it trains GPT-2 in rlhf_core: a KL penalty to the
frozen reference folded into per-token rewards, GAE advantages from a small critic, a clipped
importance-ratio objective, gradient clipping and Adam. Two runs are written as real run directories
through the kit's own HookBus and RunLogHook, watched live by the StabilityMonitor:

  1. healthy   sensible learning rate and KL penalty: reward rises, KL stays bounded, no alerts;
  2. unstable  learning rate 40x higher and no KL penalty: the reward is exploitable (more happy
               words = more reward), so the policy games it; the monitor raises alerts.

Then it prints the kit's text report of each run. No torch, numpy or plotly: this file and the
read side of rlhf_kit (events, hooks, runlog, stability, profiler.breakdown) are standard library only.

Example:
    python demo.py --output_dir /tmp/demo_runs --quiet

Known limitations:
    The policy has no context (every position uses the same softmax), so it is a bandit, not a
    language model; the numbers teach the quantities, not realistic magnitudes.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
from dataclasses import asdict, dataclass

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # run from anywhere without installing

from rlhf_kit.events import RunInfo  # noqa: E402
from rlhf_kit.hooks import HookBus  # noqa: E402
from rlhf_kit.runlog import RunDir, RunLogHook, load_run, unique_run_dir  # noqa: E402
from rlhf_kit.stability import StabilityMonitor, text_report  # noqa: E402

WORDS = ("great", "good", "fine", "okay", "meh", "bad", "awful", "<eos>")
EOS = len(WORDS) - 1
SENTIMENT = (1.0, 0.6, 0.3, 0.1, -0.2, -0.6, -1.0, 0.0)  # reward per word: summed, so length pays
MAX_NEW_TOKENS = 8


@dataclass(frozen=True)
class DemoConfig:
    """One demo run. Field names follow train.py's flags."""

    run_name: str
    learning_rate: float = 0.05
    kl_coef: float = 1.0
    steps: int = 40
    batch_size: int = 16
    ppo_epochs: int = 4
    clip_range: float = 0.2
    gamma: float = 1.0
    lam: float = 0.95
    max_grad_norm: float = 1.0
    value_lr: float = 0.1
    seed: int = 0


# ---- maths on plain lists ----------------------------------------------------------------
def log_softmax(logits: list[float]) -> list[float]:
    m = max(logits)
    lse = m + math.log(sum(math.exp(x - m) for x in logits))
    return [x - lse for x in logits]


def entropy(logp: list[float]) -> float:
    return -sum(math.exp(l) * l for l in logp)


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def var(xs: list[float]) -> float:
    m = mean(xs)
    return mean([(x - m) ** 2 for x in xs])


def gae(rewards: list[float], values: list[float], gamma: float, lam: float) -> list[float]:
    """Generalised advantage estimates of one response (values after the last token are 0)."""
    adv, last = [0.0] * len(rewards), 0.0
    for t in reversed(range(len(rewards))):
        next_v = values[t + 1] if t + 1 < len(values) else 0.0
        delta = rewards[t] + gamma * next_v - values[t]
        last = delta + gamma * lam * last
        adv[t] = last
    return adv


class Adam:
    """Adam on one flat list of parameters (the policy's logits)."""

    def __init__(self, n: int, lr: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8):
        self.lr, self.b1, self.b2, self.eps, self.t = lr, b1, b2, eps, 0
        self.m, self.v = [0.0] * n, [0.0] * n

    def step(self, params: list[float], grad: list[float]) -> None:
        self.t += 1
        for i, g in enumerate(grad):
            self.m[i] = self.b1 * self.m[i] + (1 - self.b1) * g
            self.v[i] = self.b2 * self.v[i] + (1 - self.b2) * g * g
            m_hat, v_hat = self.m[i] / (1 - self.b1 ** self.t), self.v[i] / (1 - self.b2 ** self.t)
            params[i] -= self.lr * m_hat / (math.sqrt(v_hat) + self.eps)


# ---- one PPO iteration -------------------------------------------------------------------
class ToyPPO:
    """Policy logits, frozen reference, a per-position critic, and the PPO step that trains them."""

    def __init__(self, cfg: DemoConfig):
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.ref = [0.0] * (len(WORDS) - 1) + [math.log(2.0)]  # reference: <eos> twice as likely
        self.theta = list(self.ref)
        self.values = [0.0] * MAX_NEW_TOKENS  # critic: expected return from each position
        self.opt = Adam(len(self.theta), cfg.learning_rate)
        self.reward_history: list[list[float]] = []

    def sample(self) -> list[int]:
        probs = [math.exp(l) for l in log_softmax(self.theta)]
        out: list[int] = []
        while len(out) < MAX_NEW_TOKENS:
            out.append(self.rng.choices(range(len(WORDS)), probs)[0])
            if out[-1] == EOS:
                break
        return out

    def step(self, bus: HookBus) -> dict:
        """Rollout, score, advantages, PPO update, statistics: the same story as rlhf_core's train_step."""
        c = self.cfg
        with bus.phase("rollout") as rec:
            responses = [self.sample() for _ in range(c.batch_size)]
            rec.work["tokens"] = rec.work.get("tokens", 0) + sum(map(len, responses))
        with bus.phase("reward"):
            scores = [sum(SENTIMENT[w] for w in r) for r in responses]
        with bus.phase("old_logprobs"):
            lp_old = log_softmax(self.theta)
        with bus.phase("ref_logprobs"):
            lp_ref = log_softmax(self.ref)
        with bus.phase("values"):
            values = [[self.values[t] for t in range(len(r))] for r in responses]
        with bus.phase("advantages"):
            kl_tok = [[lp_old[w] - lp_ref[w] for w in r] for r in responses]  # k1 per token
            shaped = [[-c.kl_coef * k for k in ks] for ks in kl_tok]
            for rw, s in zip(shaped, scores):
                rw[-1] += s  # the task reward arrives with the last token
            adv = [gae(rw, v, c.gamma, c.lam) for rw, v in zip(shaped, values)]
            returns = [[a + v for a, v in zip(ar, vr)] for ar, vr in zip(adv, values)]
            flat = [a for ar in adv for a in ar]
            mu, sd = mean(flat), math.sqrt(var(flat)) + 1e-8
            adv = [[(a - mu) / sd for a in ar] for ar in adv]  # whitening
        with bus.phase("update"):
            stats = self._update(responses, lp_old, adv, returns, bus)
        self.reward_history = (self.reward_history + [scores])[-10:]
        kl_seq = [sum(ks) for ks in kl_tok]
        k3_seq = [sum(math.exp(lp_ref[w] - lp_old[w]) - 1 - (lp_ref[w] - lp_old[w]) for w in r) for r in responses]
        lengths = [len(r) for r in responses]
        resid = [rt - v for rr, vr in zip(returns, values) for rt, v in zip(rr, vr)]
        all_returns = [x for rr in returns for x in rr]
        return {
            "reward_mean": mean(scores), "reward_std": math.sqrt(var(scores)),
            "reward_min": min(scores), "reward_max": max(scores),
            "reward_var_rolling": var([s for batch in self.reward_history for s in batch]),
            "kl_mean": mean(kl_seq), "kl_std": math.sqrt(var(kl_seq)),
            "kl_k3_mean": mean(k3_seq), "kl_coef": c.kl_coef, "kl_loss": c.kl_coef * mean(kl_seq),
            "entropy": entropy(lp_old),  # of the policy that sampled this batch
            "explained_variance": 1 - var(resid) / var(all_returns) if var(all_returns) > 0 else 0.0,
            "response_length_mean": mean(lengths),
            "truncated_fraction": mean([float(r[-1] != EOS) for r in responses]),
            "learning_rate": c.learning_rate, "nan_count": 0, "update_skipped": 0, **stats,
        }

    def _update(self, responses, lp_old, adv, returns, bus) -> dict:
        """ppo_epochs passes of the clipped objective over the batch, plus the critic's regression."""
        c, n_tok = self.cfg, sum(len(r) for r in responses)
        start = list(self.theta)
        clipped = 0
        r_min, r_max, grad_norms, value_losses, pol_losses, akl = math.inf, 0.0, [], [], [], 0.0
        for _ in range(c.ppo_epochs):
            with bus.phase("forward"):
                lp = log_softmax(self.theta)
                probs = [math.exp(l) for l in lp]
            with bus.phase("backward"):
                grad, loss, clipped, akl = [0.0] * len(self.theta), 0.0, 0, 0.0
                for r, ar in zip(responses, adv):
                    for w, a in zip(r, ar):
                        ratio = math.exp(lp[w] - lp_old[w])
                        r_min, r_max = min(r_min, ratio), max(r_max, ratio)
                        akl += (ratio - 1) - math.log(ratio)  # k3 of KL(pi_old || pi)
                        lo, hi = 1 - c.clip_range, 1 + c.clip_range
                        loss += -min(ratio * a, min(max(ratio, lo), hi) * a) / n_tok
                        if (a > 0 and ratio > hi) or (a < 0 and ratio < lo):
                            clipped += 1  # the clipped term is the min: no gradient from this token
                            continue
                        for j in range(len(grad)):  # d ratio / d theta_j = ratio * (1[j=w] - p_j)
                            grad[j] -= a * ratio * ((j == w) - probs[j]) / n_tok
            with bus.phase("optimizer"):
                norm = math.sqrt(sum(g * g for g in grad))
                scale = min(1.0, c.max_grad_norm / (norm + 1e-12))
                self.opt.step(self.theta, [g * scale for g in grad])
                grad_norms.append(norm)
                pol_losses.append(loss)
                value_losses.append(self._fit_values(responses, returns))
        delta = math.sqrt(sum((a - b) ** 2 for a, b in zip(self.theta, start)))
        lp_now, lp_ref = log_softmax(self.theta), log_softmax(self.ref)
        drift = mean([lp_now[w] - lp_ref[w] for r in responses for w in r])
        return {
            "policy_loss": mean(pol_losses), "value_loss": mean(value_losses),
            "total_loss": mean(pol_losses) + 0.5 * mean(value_losses),
            "clip_fraction": clipped / n_tok, "approx_kl": akl / n_tok,
            "ratio_min": r_min, "ratio_max": r_max, "grad_norm": grad_norms[-1],
            "grad_clip_fraction": mean([float(g > c.max_grad_norm) for g in grad_norms]),
            "update_ratio": delta / (math.sqrt(sum(x * x for x in start)) + 1e-12),
            "policy_drift_kl": drift,
        }

    def _fit_values(self, responses, returns) -> float:
        """One SGD step of the per-position critic on squared error; returns 0.5 * MSE before it."""
        grad, count, loss = [0.0] * MAX_NEW_TOKENS, [0] * MAX_NEW_TOKENS, 0.0
        for r, rr in zip(responses, returns):
            for t, ret in enumerate(rr):
                err = self.values[t] - ret
                grad[t] += err
                count[t] += 1
                loss += 0.5 * err * err
        for t in range(MAX_NEW_TOKENS):
            if count[t]:
                self.values[t] -= self.cfg.value_lr * grad[t] / count[t]
        return loss / max(1, sum(count))


# ---- running, writing, printing ----------------------------------------------------------
GLOSSARY = (
    ("reward", "mean task score of the batch (sum of word sentiments), before the KL penalty"),
    ("KL", "sum over tokens of log pi - log pi_ref: how far the policy has moved from the reference"),
    ("entropy", "nats of randomness left in the policy's word choice (ln 8 = 2.08 is uniform)"),
    ("clip", "share of tokens whose ratio pi/pi_old left [1-eps, 1+eps]; PPO ignores their gradient"),
    ("len", "mean response length in words; trunc = share cut at MAX_NEW_TOKENS without <eos>"),
)


class ConsoleAlerts:
    """Prints each alert as the monitor raises it (the demo is the edge, so it may print)."""

    def __init__(self, quiet: bool):
        self.quiet = quiet

    def on_alert(self, alert) -> None:
        if not self.quiet:
            span = f"{alert.step}" if alert.last_step <= alert.step else f"{alert.step}-{alert.last_step}"
            print(f"    ! step {span}: [{alert.severity}] {alert.rule}: {alert.message}")


def run_demo(cfg: DemoConfig, output_dir: str, quiet: bool = False) -> RunDir:
    """Train one toy PPO run and write its run directory. Returns where it was written."""
    run_dir = unique_run_dir(output_dir, cfg.run_name)
    bus = HookBus([RunLogHook(run_dir), StabilityMonitor(), ConsoleAlerts(quiet)])
    bus.run_start(RunInfo(run_id=run_dir.root.name, framework="demo", config=asdict(cfg),
                          model={"family": "softmax-bandit", "vocab": len(WORDS), "n_params": len(WORDS)}))
    ppo = ToyPPO(cfg)
    if not quiet:
        print(f"  {'step':>4}  {'reward':>7}  {'KL':>6}  {'entropy':>7}  {'clip':>5}  {'len':>4}  {'trunc':>5}")
    for step in range(cfg.steps):
        bus.begin_step(step)
        metrics = ppo.step(bus)
        with bus.phase("log"):
            record = bus.end_step(step, 0, metrics)
        if not quiet and (step % 5 == 0 or step == cfg.steps - 1):
            print(f"  {step:>4}  {record['reward_mean']:>7.3f}  {record['kl_mean']:>6.3f}  "
                  f"{record['entropy']:>7.3f}  {record['clip_fraction']:>5.2f}  "
                  f"{record['response_length_mean']:>4.1f}  {record['truncated_fraction']:>5.2f}")
    bus.run_end()
    return run_dir


RUNS = (
    ("1. A healthy run", DemoConfig("demo_healthy"),
     "learning rate 0.05, KL penalty 1.0: the policy prefers happy words a little more each step, "
     "while the KL penalty keeps it close to the reference."),
    ("2. An unstable run", DemoConfig("demo_unstable", learning_rate=2.0, kl_coef=0.0),
     "learning rate 40x higher and no KL penalty. The reward sums word sentiments, so longer happy "
     "responses score more: watch the policy game that, and the monitor catch it."),
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Toy PPO with the standard library; writes run directories "
                                            "and prints the kit's report.")
    p.add_argument("--output_dir", default="runs", help="where the run directories go (default: runs)")
    p.add_argument("--quiet", action="store_true", help="print only the reports")
    args = p.parse_args(argv)
    if not args.quiet:
        print(__doc__.split("\n\n")[1].strip(), "\n")
        print("Columns:")
        for name, meaning in GLOSSARY:
            print(f"  {name:<8} {meaning}")
    dirs = []
    for title, cfg, story in RUNS:
        if not args.quiet:
            print(f"\n{title}: {story}")
        dirs.append(run_demo(cfg, args.output_dir, args.quiet))
    for i, rd in enumerate(dirs):
        print("\n" + "=" * 100)
        print(text_report(load_run(rd.root), explain=(i == 0)))
    print("\nRun directories: " + ", ".join(str(d.root) for d in dirs))
    print("Open them in the HTML report with `rlhf-kit report " + " ".join(str(d.root) for d in dirs) + "`.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
