"""Seconds per PPO iteration and per phase for the Makefile's smoke, quick and full configurations.

Each configuration trains for a few iterations on this machine (the first is a warm-up and is
dropped) through the real runner, then reads the medians back from the run's own phases.jsonl,
so the numbers are the ones every training run logs.

    .venv/bin/python benchmarks/phase_times.py [--steps 4] [--configs smoke quick full] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlhf_core.config import parse_config  # noqa: E402
from rlhf_core.train import train  # noqa: E402
from rlhf_kit.events import TOP_LEVEL_PHASES  # noqa: E402
from rlhf_kit.runlog import load_run  # noqa: E402

# The Makefile's targets, minus their epoch counts (the bench runs a few iterations of each).
_RECIPE = ["--model_name", "small-gpt2", "--batch_size", "8", "--max_new_tokens", "8", "--reward_type", "length",
           "--temperature", "0.2", "--learning_rate", "2e-4", "--ppo_epochs", "4", "--target_kl", "15"]
CONFIGS = {
    "smoke": ["--batch_size", "2", "--max_new_tokens", "10"],
    "quick": _RECIPE,
    "full": _RECIPE,  # train_full runs the same iteration as train_quick, only more of them
}


def measure(name: str, steps: int) -> dict:
    """Train `steps` + 1 iterations of config `name`; medians of everything after the first."""
    with tempfile.TemporaryDirectory() as out:
        cfg = parse_config([*CONFIGS[name], "--epochs", "1", "--steps_per_epoch", str(steps + 1), "--output_dir", out,
                            "--progress", "false", "--tensorboard", "false", "--save_every", "1000"])
        with contextlib.redirect_stdout(io.StringIO()):
            run = load_run(train(cfg).root)
    rows = [r for r in run.steps if r["step"] > 1]
    phases = {p: statistics.median(r.get(f"time/{p}") or 0.0 for r in rows) for p in TOP_LEVEL_PHASES}
    step = statistics.median(r["step_seconds"] for r in rows)
    return {"config": name, "steps": len(rows), "step_seconds": step,
            "tokens_per_second": statistics.median(r["tokens_per_second"] for r in rows),
            "phase_seconds": {p: s for p, s in phases.items() if s > 0}}


def table(results: list[dict]) -> str:
    phases = [p for p in TOP_LEVEL_PHASES if any(p in r["phase_seconds"] for r in results)]
    head = f"{'phase (ms/step)':<16}" + "".join(f"{r['config']:>10}" for r in results)
    lines = [head, "-" * len(head)]
    for p in phases:
        lines.append(f"{p:<16}" + "".join(f"{1000 * r['phase_seconds'].get(p, 0):>10.1f}" for r in results))
    lines.append(f"{'step total':<16}" + "".join(f"{1000 * r['step_seconds']:>10.1f}" for r in results))
    lines.append(f"{'tokens/s':<16}" + "".join(f"{r['tokens_per_second']:>10.0f}" for r in results))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--json", action="store_true", help="one JSON line per config instead of the table")
    args = ap.parse_args()
    results = [measure(name, args.steps) for name in args.configs]
    if args.json:
        for r in results:
            print(json.dumps(r))
    else:
        print(table(results))


if __name__ == "__main__":
    main()
