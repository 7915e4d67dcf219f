"""Fault injection on the REAL runner: settings that cause a fault must raise its alert, and the
same settings without the fault (and a healthy default run) must raise nothing at warning or above.

Each test trains through `python train.py` (the real CLI) for a few steps, then judges the run
directory it wrote with the offline analysis (`analyze_run`, what `rlhf-kit health` prints). When the
live monitor is wired into training, its logs/alerts.jsonl must agree with the offline replay.
Measured detection steps and runtimes are in docs/stability.md.
"""

import subprocess
import sys
from pathlib import Path

from rlhf_kit.runlog import load_run
from rlhf_kit.stability import analyze_run, merge_alerts

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["--progress", "False", "--tensorboard", "False", "--save_every", "1000"]
# small-gpt2 (16M params, random init): the smallest embedded model whose policy visibly moves.
# ppo_epochs 4 gives several optimizer steps per batch, so the per-update drift signals exist.
SMALL = ["--model_name", "small-gpt2", "--epochs", "1", "--batch_size", "4", "--max_new_tokens", "8",
         "--ppo_epochs", "4"]
DRIFT_RULES = {"kl_spike", "kl_runaway", "policy_update_too_large", "grad_explosion"}


def train(tmp_path: Path, name: str, *flags: str):
    """Run the real CLI; return (offline alerts, run). Checks live alerts against the replay."""
    proc = subprocess.run([sys.executable, "train.py", *flags, *QUIET, "--output_dir", str(tmp_path),
                           "--run_name", name], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = load_run(tmp_path / name)
    alerts = analyze_run(run)
    if run.alerts:  # the live monitor ran inside training: same rules, same verdict
        assert {(a.rule, a.step) for a in merge_alerts(run.alerts)} == {(a.rule, a.step) for a in alerts}
    return alerts, run


def serious(alerts):
    return [(a.rule, a.severity, a.step) for a in alerts if a.severity != "info"]


def test_learning_rate_1000x_raises_drift_alerts_within_a_few_steps(tmp_path):
    # default --learning_rate is 1e-5; 1e-2 is 1000x. Measured: policy_update_too_large at step 1
    # (importance ratio down to ~0.04 after the 4 optimizer steps on one batch), kl_spike at step 4.
    alerts, run = train(tmp_path, "lr1000", *SMALL, "--steps_per_epoch", "4", "--learning_rate", "1e-2")
    first = run.steps[0]["step"]
    hits = [a for a in alerts if a.rule in DRIFT_RULES and a.step <= first + 3]
    assert hits, f"no KL/gradient alert in the first 4 steps: {serious(alerts)}"


def test_same_settings_at_the_default_learning_rate_stay_quiet(tmp_path):
    alerts, _ = train(tmp_path, "lr_ok", *SMALL, "--steps_per_epoch", "4", "--learning_rate", "1e-5")
    assert serious(alerts) == []


def test_healthy_default_run_raises_nothing_at_warning_or_above(tmp_path):
    # the embedded default model and every default PPO setting, 8 iterations
    alerts, run = train(tmp_path, "healthy", "--epochs", "1", "--steps_per_epoch", "8",
                        "--max_new_tokens", "10")
    assert len(run.steps) == 8
    assert serious(alerts) == []


# Reward hacking needs a reward the random-init policy can game within a test's few steps:
# - `--reward_type length` with `--max_new_tokens 8` pays 0.25 per word up to its 8-word peak, so every
#   response token that starts a new word (GPT-2's space-prefixed tokens, 66% of the vocabulary) is
#   paid; the policy need not emit EOS, so the length stays pinned at max_new_tokens.
# - `--temperature 0.15` sharpens small-gpt2's near-uniform sampling (10.8 nats/token at 1.0, about
#   8 here): a policy spread over 50,257 tokens cannot concentrate on the paid ones in 12 steps (no
#   reward rose at temperature 1.0 for learning rates 1e-4 to 1e-2), one spread over a few thousand can.
# - `--learning_rate 2e-4` (20x the default) with 4 PPO epochs; half of it (1e-4) hacked in 1 of 2 seeds.
# - `--threads 1`: these runs are tiny, so one thread uses about a quarter of the CPU time of torch's default
#   on this loaded 2-core box (28 s vs 123 s for the same 12 steps).
# Measured (seed 42): reward 0.34 -> 0.77 and kl_mean 0 -> 37 nats over steps 1-8, alert at step 8;
# seeds 1, 2, 3, 4 alerted at steps 8, 8, 12, 8.
HACK = ["--model_name", "small-gpt2", "--epochs", "1", "--steps_per_epoch", "12", "--batch_size", "8",
        "--max_new_tokens", "8", "--ppo_epochs", "4", "--reward_type", "length", "--temperature", "0.15",
        "--learning_rate", "2e-4", "--threads", "1"]


def test_kl_coef_0_with_an_exploitable_reward_raises_reward_hacking(tmp_path):
    alerts, run = train(tmp_path, "hack", *HACK, "--kl_coef", "0")
    hacks = [a for a in alerts if a.rule == "reward_hacking"]
    assert hacks, f"no reward_hacking alert in {len(run.steps)} steps: {serious(alerts)}"
    # the signature's three legs, read back from the log rather than from the alert
    steps = {r["step"]: r for r in run.steps}
    first = hacks[0].step
    window = [steps[s] for s in range(first - 7, first + 1)]
    mean = lambda rows: sum(r["reward_mean"] for r in rows) / len(rows)  # noqa: E731
    assert mean(window[-2:]) > mean(window[:2])
    assert window[-1]["kl_mean"] >= 3.0
    assert window[-1]["truncated_fraction"] >= 0.9
