"""What the profiler costs: always-on phase timing (off vs on), the memory tracker and --trace.

Measured side by side in one process, alternating the two sides and repeating:

1. timing off vs on: the same seeded tiny-gpt2 run with HookBus(timing=False) and timing=True.
   Step times come from a stopwatch hook that both sides carry, so the only difference is the
   phase timers. Also reported: the cost of one empty `bus.phase()` entry in microseconds,
   times the entries per step, over the step time (a far less noisy estimate of the same ratio).
2. --trace and the op-by-op memory step: one run where step 3 counts activations, step 4 is the
   profiler's warm-up and step 5 is traced; their times over the median of the plain steps 2 and 6.

    .venv/bin/python benchmarks/profile_overhead.py [--rounds 3] [--steps 6] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlhf_core.config import parse_config  # noqa: E402
from rlhf_core.train import train  # noqa: E402
from rlhf_kit.hooks import HookBus  # noqa: E402
from rlhf_kit.runlog import load_run  # noqa: E402

FLAGS = ["--batch_size", "2", "--max_new_tokens", "10", "--progress", "false", "--tensorboard", "false",
         "--save_every", "1000"]


class Stopwatch:
    """Wall-clock seconds of each step, the same on both sides of the comparison."""

    def __init__(self) -> None:
        self.seconds: dict[int, float] = {}
        self._t = 0.0

    def on_step_start(self, step: int) -> None:
        self._t = time.perf_counter()

    def on_step_end(self, record: dict, phases: list) -> None:
        self.seconds[record["step"]] = time.perf_counter() - self._t


def _run(steps: int, timing: bool = True, hooks: tuple = ()) -> tuple[dict[int, float], int]:
    """Seconds of each step of one seeded run, and the phase entries in step 2."""
    watch = Stopwatch()
    with tempfile.TemporaryDirectory() as out, contextlib.redirect_stdout(io.StringIO()):
        cfg = parse_config([*FLAGS, "--epochs", "1", "--steps_per_epoch", str(steps), "--output_dir", out])
        run_dir = train(cfg, hooks=[watch, *hooks], timing=timing)
        entries = sum(p.count for p in load_run(run_dir.root).phases if p.step == 2)
    return watch.seconds, entries


def timing_overhead(rounds: int, steps: int) -> dict:
    """Median step seconds (steps 2..n-1: no warm-up, no final checkpoint) with timing off and on."""
    off, on, entries = [], [], 0
    for _ in range(rounds):
        for timing in (False, True):  # alternate: drift in machine load hits both sides alike
            secs, n = _run(steps, timing)
            (on if timing else off).extend(secs[s] for s in range(2, steps))
            entries = n
    per_entry = {t: _phase_entry_cost(t) for t in (False, True)}
    step = statistics.median(on)
    return {"step_s_off": statistics.median(off), "step_s_on": step,
            "ratio_on_off": step / statistics.median(off),
            "phase_entry_us_off": per_entry[False] * 1e6, "phase_entry_us_on": per_entry[True] * 1e6,
            "phase_entries_per_step": entries,
            "timer_share_of_step": (per_entry[True] - per_entry[False]) * entries / step}


def _phase_entry_cost(timing: bool, n: int = 20000) -> float:
    bus = HookBus([], timing=timing)
    bus.begin_step(1)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n):
            with bus.phase("forward"):
                pass
        best = min(best, (time.perf_counter() - t) / n)
    return best


def trace_overhead(rounds: int) -> dict:
    """Step time of the op-counted memory step and the traced step over the plain steps."""
    from rlhf_kit.profiler.memory import MemoryHook
    from rlhf_kit.profiler.trace import TraceHook

    mem, warm, traced = [], [], []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            hooks = (MemoryHook("cpu", track_steps={3}), TraceHook(tmp, wait=3, warmup=1, active=1))
            secs, _ = _run(7, True, hooks)
        plain = statistics.median([secs[2], secs[6]])
        mem.append(secs[3] / plain)
        warm.append(secs[4] / plain)
        traced.append(secs[5] / plain)
    return {"memory_step_ratio": statistics.median(mem), "trace_warmup_ratio": statistics.median(warm),
            "trace_active_ratio": statistics.median(traced)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--json", action="store_true", help="one JSON line instead of the text")
    args = p.parse_args()
    result = {**timing_overhead(args.rounds, args.steps), **trace_overhead(args.rounds)}
    if args.json:
        print(json.dumps(result))
        return
    print(f"profiler overhead, tiny-gpt2, batch 2, 10 new tokens, {args.rounds} alternating rounds")
    print(f"  phase timing off: {result['step_s_off'] * 1e3:8.2f} ms/step   on: {result['step_s_on'] * 1e3:8.2f} ms/step"
          f"   on/off = {result['ratio_on_off']:.3f}")
    print(f"  one phase entry: {result['phase_entry_us_off']:.2f} us (timing off), {result['phase_entry_us_on']:.2f} us (on);"
          f" {result['phase_entries_per_step']} entries/step -> timers cost {100 * result['timer_share_of_step']:.2g}% of a step")
    print(f"  op-counted memory step: {result['memory_step_ratio']:.2f}x a plain step")
    print(f"  --trace: profiler warm-up step {result['trace_warmup_ratio']:.2f}x, traced step {result['trace_active_ratio']:.2f}x a plain step")


if __name__ == "__main__":
    main()
