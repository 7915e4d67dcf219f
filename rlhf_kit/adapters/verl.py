"""veRL: turn its file-logger JSONL into a kit run directory (`rlhf-kit import verl <jsonl>`).

veRL's `trainer.logger=['file']` backend writes one line per step to $VERL_FILE_LOGGER_PATH:
`{"step": 12, "elapsed_seconds": ..., "data": {"timing_s/gen": 3.1, "actor/pg_loss": ...}}`.
Older and hand-rolled logs are flat (`{"step": 12, "timing_s/gen": ...}`); both are read.
Keys may carry a prefix (`train/actor/pg_loss`), so they are matched by suffix.

Example:
    rlhf-kit import verl metrics.jsonl -o runs/verl_gsm8k
    rlhf-kit report runs/verl_gsm8k

Known limitations:
    - `perf/mfu/*` and `perf/throughput` are kept under their own names: veRL computes them
      per GPU over prompt + response tokens, which is not our `tokens_per_second`.
    - veRL logs no reward standard deviation, so reward-variance alerts cannot fire.
"""

from __future__ import annotations

import json
from pathlib import Path

from rlhf_kit.adapters.common import RunWriter, as_number, check_key_map, map_metrics, phases_from_times
from rlhf_kit.errors import UsageError
from rlhf_kit.events import RunInfo
from rlhf_kit.runlog import RunDir

# veRL key (suffix) -> our metric. Order matters only between keys with the same target.
KEY_MAP: dict[str, str] = {
    # time per phase (ray_trainer.py marked_timer names)
    "timing_s/gen": "time/rollout",
    "timing_s/reward": "time/reward",
    "timing_s/old_log_prob": "time/old_logprobs",
    "timing_s/ref": "time/ref_logprobs",
    "timing_s/values": "time/values",
    "timing_s/adv": "time/advantages",
    "timing_s/update_actor": "time/update",
    "timing_s/update_critic": "time/update",  # summed with update_actor: our update trains both
    "timing_s/update_weights": "time/comm",
    "timing_s/save_checkpoint": "time/checkpoint",
    "timing_s/step": "step_seconds",
    # actor
    "actor/pg_loss": "policy_loss",
    "actor/pg_clipfrac": "clip_fraction",
    "actor/ppo_kl": "approx_kl",
    "actor/entropy": "entropy",
    "actor/grad_norm": "grad_norm",
    "actor/lr": "learning_rate",
    "actor/kl_loss": "kl_token_mean",
    "actor/reward_kl_penalty": "kl_token_mean",  # KL-in-reward runs log this instead of kl_loss
    "actor/reward_kl_penalty_coeff": "kl_coef",
    "actor/kl_coef": "kl_coef",
    # critic and scores
    "critic/score/mean": "reward_mean",
    "critic/score/max": "reward_max",
    "critic/score/min": "reward_min",
    "critic/returns/mean": "return_mean",
    "critic/values/mean": "value_mean",
    "critic/vf_loss": "value_loss",
    "critic/vf_clipfrac": "value_clip_fraction",
    "critic/vf_explained_var": "explained_variance",
    # rollout
    "response_length/mean": "response_length_mean",
    "response_length/clip_ratio": "truncated_fraction",
}
check_key_map(KEY_MAP)


def read_verl_jsonl(path: Path) -> list[tuple[int, dict]]:
    """(step, flat metrics) per line of a veRL file-logger JSONL.

    Raises:
        UsageError: missing file, or no line with a step and metrics (a torn last line is
            skipped; a file that is all unreadable is an error).
    """
    if not path.is_file():
        raise UsageError(f"veRL log {path} does not exist; pass the JSONL written by trainer.logger=['file']")
    rows, bad = [], 0
    for i, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines()):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if not isinstance(obj, dict):
            bad += 1
            continue
        data = obj.get("data") if isinstance(obj.get("data"), dict) else obj
        step = obj.get("step", data.get("step", i))
        if not isinstance(step, (int, float)):
            bad += 1
            continue
        rows.append((int(step), {k: v for k, v in data.items() if k != "step"}))
    if not rows:
        raise UsageError(f"no veRL metric lines in {path} ({bad} unreadable); "
                         "expected JSON lines like {\"step\": 1, \"data\": {\"timing_s/gen\": ...}}")
    return rows


def import_verl(path: Path, run_dir: RunDir) -> RunDir:
    """Write a run directory from a veRL JSONL log. Returns the run directory."""
    rows = read_verl_jsonl(path)
    info = RunInfo(run_id=run_dir.root.name, framework="verl",
                   config={"source": str(path.resolve()), "adapter": "rlhf_kit.adapters.verl"})
    writer = RunWriter(run_dir, info)
    try:
        for step, raw in rows:
            metrics = map_metrics(raw, KEY_MAP, by_suffix=True,
                                  drop=("epoch", "training/epoch", "training/global_step"))
            epoch = int(as_number(raw.get("training/epoch", raw.get("epoch"))) or 0)
            writer.write_step(step, epoch, metrics, phases_from_times(metrics, step))
    finally:
        writer.close()
    return run_dir
