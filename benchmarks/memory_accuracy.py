"""Predicted vs measured peak memory per phase, on the kit's real runner on CPU.

For each config: a 2-step training run with MemoryHook (measured: tracked tensor bytes of the
real run) and the fake-tensor prediction of the same config; prints a markdown table with the
relative error. Before that: the wall time and max RSS of the acceptance command (gpt2-xl with
--suggest, in a child process), and the depth extrapolation against full traces (gpt2-xl's
setup, and gpt2 under every suggestion). Run: .venv/bin/python benchmarks/memory_accuracy.py
(a few minutes on 2 cores).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time

CONFIGS = [
    ("tiny-gpt2", ["--batch_size", "4", "--max_new_tokens", "8"]),
    ("tiny-gpt2", ["--batch_size", "8", "--max_new_tokens", "16", "--value_model", "separate"]),
    ("tiny-gpt2", ["--batch_size", "8", "--max_new_tokens", "8", "--mini_batch_size", "2", "--ppo_epochs", "2"]),
    ("small-gpt2", ["--batch_size", "2", "--max_new_tokens", "8"]),
    ("small-gpt2", ["--batch_size", "4", "--max_new_tokens", "8", "--value_model", "separate"]),
    ("small-gpt2", ["--batch_size", "4", "--max_new_tokens", "16", "--mini_batch_size", "2"]),
]


def measure(model: str, flags: list[str]) -> dict:
    from rlhf_core.train import parse_config, train
    from rlhf_kit.memory.measure import MemoryHook

    out = tempfile.mkdtemp(prefix="memacc-")
    cfg = parse_config(["--model_name", model, "--epochs", "1", "--steps_per_epoch", "2", "--output_dir", out, *flags])
    run_dir = train(cfg, hooks=[MemoryHook(output_dir=out)])
    return json.loads(run_dir.memory_json.read_text())


XL_COMMAND = ["memory", "--model", "gpt2-xl", "--batch_size", "8", "--max_new_tokens", "64",
              "--budget", "80GB", "--suggest"]


def xl_command() -> str:
    """Wall time and max RSS of `rlhf-kit memory ... --suggest` on gpt2-xl, in a child process."""
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "rlhf_kit.cli", *XL_COMMAND], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(r.stderr)
    # the first child: RUSAGE_CHILDREN's max RSS is this one's
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6
    verdict = r.stdout.splitlines()[0]
    n = sum(1 for line in r.stdout.splitlines() if line[:3].strip().rstrip(".").isdigit())
    return f"`rlhf-kit {' '.join(XL_COMMAND)}`: {wall:.1f} s wall, max RSS {rss:.2f} GB, {n} suggestions; {verdict}"


def extrapolation_rows() -> list[str]:
    """Depth-extrapolated vs fully traced peaks, per phase: gpt2-xl's setup, gpt2 per suggestion."""
    from rlhf_kit.memory.config import MemoryConfig, resolve_model
    from rlhf_kit.memory.predict import predict
    from rlhf_kit.memory.suggest import candidate_changes

    rows = ["| model | change | extrapolated (s) | full trace (s) | rollout | scoring | update |", "|---|---|---|---|---|---|---|"]
    xl = MemoryConfig(model="gpt2-xl", batch_size=8, max_new_tokens=64, hf_config=resolve_model("gpt2-xl")).validate()
    small = MemoryConfig(model="gpt2", batch_size=4, max_new_tokens=64, value_model="separate", micro_batch_size=2,
                         hf_config=resolve_model("gpt2")).validate()
    cases = [(xl, "none", {})] + [(small, "none", {})] + [(small, t, c) for t, c, _ in candidate_changes(small)]
    for base, title, changes in cases:
        cfg = base.replace(**changes).validate()
        fast, full = predict(cfg), predict(cfg, full=True)
        diffs = [f"{fast.peaks[p] - full.peaks[p]:+d} B" for p in full.peaks]
        rows.append(f"| {cfg.model} | {title} | {fast.seconds:.1f} | {full.seconds:.1f} | {' | '.join(diffs)} |")
    return rows


def main() -> None:
    # first: Linux keeps ru_maxrss across exec, so a child started after the runs would report ours
    xl = xl_command()
    print(xl)
    print()
    print("\n".join(extrapolation_rows()))
    print()
    rows = ["| model | flags | phase | predicted | measured | error |", "|---|---|---|---|---|---|"]
    for model, flags in CONFIGS:
        data = measure(model, flags)
        for phase, m in data["measured_peak"].items():
            p = data["predicted_peak"][phase]
            rows.append(f"| {model} | `{' '.join(flags)}` | {phase} | {p / 1e6:.2f} MB | {m / 1e6:.2f} MB "
                        f"| {100 * (p - m) / m:+.2f}% |")
    print("\n".join(rows))
    print(f"(benchmark process max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB)")


if __name__ == "__main__":
    main()
