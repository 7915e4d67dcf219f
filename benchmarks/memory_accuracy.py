"""Predicted vs measured peak memory per phase, on the kit's real runner on CPU.

For each config: a 2-step training run with MemoryHook (measured: tracked tensor bytes of the
real run) and the fake-tensor prediction of the same config; prints a markdown table with the
relative error, and the time and RSS of a gpt2-xl prediction. Run: .venv/bin/python
benchmarks/memory_accuracy.py  (a few minutes on 2 cores).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile

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


def xl_prediction() -> str:
    """Time and max RSS of `rlhf-kit memory` on gpt2-xl (without suggestions), in a fresh process."""
    code = ("import time, resource; from rlhf_kit.memory.config import MemoryConfig, resolve_model; "
            "from rlhf_kit.memory.predict import predict; t = time.process_time(); "
            "p = predict(MemoryConfig(model='gpt2-xl', batch_size=8, max_new_tokens=64, foreach=True, "
            "hf_config=resolve_model('gpt2-xl')).validate()); "
            "print(p.seconds, time.process_time() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, "
            "p.peak / 1e9)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    wall, cpu, rss_gb, peak_gb = (float(x) for x in r.stdout.split()[-4:])
    return (f"gpt2-xl (batch 8, 64 new tokens), prediction: {wall:.1f} s wall, {cpu:.1f} s CPU, "
            f"max RSS {rss_gb:.2f} GB, predicted peak {peak_gb:.1f} GB")


def main() -> None:
    # first: Linux keeps ru_maxrss across exec, so a child started after the runs would report ours
    xl = xl_prediction()
    rows = ["| model | flags | phase | predicted | measured | error |", "|---|---|---|---|---|---|"]
    for model, flags in CONFIGS:
        data = measure(model, flags)
        for phase, m in data["measured_peak"].items():
            p = data["predicted_peak"][phase]
            rows.append(f"| {model} | `{' '.join(flags)}` | {phase} | {p / 1e6:.2f} MB | {m / 1e6:.2f} MB "
                        f"| {100 * (p - m) / m:+.2f}% |")
    print("\n".join(rows))
    print()
    print(xl)
    print(f"(benchmark process max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB)")


if __name__ == "__main__":
    main()
