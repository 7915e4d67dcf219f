"""Run directories for the dashboard tests, written the way runners and adapters write them:
through HookBus + RunLogHook. Metric values follow simple formulas of the step so tests can
compare what a chart shows with what was logged."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rlhf_kit.events import Alert, RunInfo
from rlhf_kit.hooks import HookBus
from rlhf_kit.runlog import RunDir, RunLogHook, write_json_atomic

MEMORY = {
    "config": {"batch_size": 2},
    "predicted": {"rollout": {"policy": {"params": 4 << 20, "kv_cache": 1 << 20}, "reference": {"params": 4 << 20}},
                  "update": {"policy": {"params": 4 << 20, "grads": 4 << 20, "optim": 8 << 20}}},
    "predicted_peak": {"rollout": 9 << 20, "update": 16 << 20},
    "measured_peak": {"rollout": 10 << 20, "update": 17 << 20},
    "device": "cpu", "notes": ["measured on CPU: RSS deltas, not allocator peaks"],
}


def metrics_at(step: int) -> dict:
    """The logged values at `step` (a reward that rises, a KL that climbs)."""
    return {"total_loss": 1.0 - 0.01 * step, "policy_loss": -0.02 * step, "kl_loss": 0.001 * step,
            "reward_mean": 0.1 * step, "reward_std": 0.5, "kl_mean": 0.01 * step, "kl_std": 0.002,
            "clip_fraction": 0.1, "entropy": 3.0 - 0.01 * step, "grad_norm": 1.0 + step % 3,
            "response_length_mean": 5.0, "my_extra": 7.0}


def write_step(bus: HookBus, step: int, epoch: int = 0) -> dict:
    """One step through the bus: three timed phases (a little real work each), then the record."""
    bus.begin_step(step)
    for name in ("rollout", "reward", "update"):
        with bus.phase(name, work={"mode": "gen", "tokens": 10}):
            time.sleep(0.001)
    return bus.end_step(step, epoch, metrics_at(step))


def make_run(root: Path, name: str = "run_a", steps: int = 6, alert_at: int | None = 3,
             memory: bool = True, profile: bool = True, close: bool = True):
    """Write a run directory; returns (RunDir, bus, hook) so a test can keep appending."""
    rd = RunDir(Path(root) / name)
    hook = RunLogHook(rd)
    bus = HookBus([hook])
    bus.run_start(RunInfo(run_id=name, framework="rlhf_core", config={"ppo": {"learning_rate": 1e-5, "kl_coef": 0.1}},
                          model={"family": "gpt2", "n_layer": 2}, versions={"python": "3.11", "torch": "2.13.0"}))
    for step in range(steps):
        write_step(bus, step)
        if alert_at == step:
            bus.alert(Alert(rule="kl_spike", severity="warning", step=step, message=f"KL jumped at step {step}",
                            evidence={"kl_mean": metrics_at(step)["kl_mean"], "median": 0.01},
                            cause="the policy moved too far in one update", what_to_try="lower the learning rate"))
    if memory:
        write_json_atomic(rd.memory_json, MEMORY)
    if profile:
        rd.profile.mkdir(parents=True, exist_ok=True)
        (rd.profile / "flame.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="40" height="10">'
                                              '<rect width="40" height="10" fill="orange"/></svg>')
        (rd.profile / "trace_0.json").write_text(json.dumps({"traceEvents": []}))
    if close:
        bus.run_end()
    return rd, bus, hook
