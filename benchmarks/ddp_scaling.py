"""Data-parallel PPO on this machine's CPU: one process vs `torchrun --nproc_per_node 2`, same global batch.

Both sides train the same configuration through the real CLI, alternating (1 process, 2 processes,
1 process, ...) so a busy machine slows both alike; medians come from the runs' own logs (first step
dropped as warm-up). One process runs with 2 torch threads (the cores the 2 ranks use together) and
with 1 (what each rank has). On CPU this measures the overhead of the data-parallel machinery (`comm`,
DDP's all-reduce inside `backward`), not GPU speed-up.

    .venv/bin/python benchmarks/ddp_scaling.py [--model_name small-gpt2] [--steps 4] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rlhf_kit.runlog import load_run  # noqa: E402

SHOWN = ("rollout", "advantages", "comm", "update", "backward")


SIDES = ((1, 2), (1, 1), (2, 1))  # (processes, torch threads per process)


def run_once(nproc: int, threads: int, flags: list[str], out: str, name: str) -> dict:
    """Train once; medians over steps after the first of rank 0's step time and the slowest rank's phases."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = ([sys.executable, "train.py"] if nproc == 1 else
           [str(Path(sys.executable).with_name("torchrun")), "--standalone", f"--nproc_per_node={nproc}", "train.py"])
    cmd += [*flags, "--threads", str(threads), "--output_dir", out, "--run_name", name]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stderr[-2000:]}")
    run = load_run(Path(out) / name)
    steps = [r for r in run.steps if r["step"] > 1]
    phases = {p: statistics.median(
        max((x.seconds for x in run.phases if x.name == p and x.step == s["step"]), default=0.0) for s in steps)
        for p in SHOWN}  # the slowest rank's time: the others wait for it at the next collective
    return {"step": statistics.median(r["step_seconds"] for r in steps), **phases}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model_name", default="tiny-gpt2")
    ap.add_argument("--batch_size", type=int, default=8)
    ap.add_argument("--max_new_tokens", type=int, default=10)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    flags = ["--model_name", args.model_name, "--batch_size", str(args.batch_size), "--max_new_tokens",
             str(args.max_new_tokens), "--epochs", "1", "--steps_per_epoch", str(args.steps + 1),
             "--save_every", "1000", "--device", "cpu", "--progress", "false", "--tensorboard", "false"]
    results: dict[tuple[int, int], list[dict]] = {side: [] for side in SIDES}
    with tempfile.TemporaryDirectory() as out:
        for i in range(args.rounds):
            for nproc, threads in SIDES:
                results[nproc, threads].append(run_once(nproc, threads, flags, out, f"n{nproc}t{threads}_{i}"))
    med = {side: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for side, rs in results.items()}
    print(f"{args.model_name}, global batch {args.batch_size}, {args.max_new_tokens} new tokens, "
          f"{os.cpu_count()} CPU cores, medians of {args.rounds} runs x {args.steps} steps")
    print(f"{'ms per step':<14}" + "".join(f"{f'{n} proc x {t} thr':>16}" for n, t in SIDES))
    for key in ("step", *SHOWN):
        print(f"{key:<14}" + "".join(f"{1000 * med[side][key]:>16.1f}" for side in SIDES))
    ddp = med[2, 1]
    print(f"2 ranks / 1 process x 1 thread, step time: {ddp['step'] / med[1, 1]['step']:.2f}; "
          f"comm share of the 2-rank step: {ddp['comm'] / ddp['step']:.1%}")


if __name__ == "__main__":
    main()
