"""`make bench`: every benchmark of the kit, one after the other, each printing its own table.

Speed and memory numbers live here, never in timed tests. Each benchmark measures its comparisons
side by side in one run (alternating sides where two are compared), so the ratios hold on a busy
machine even when the absolute seconds do not. `make bench-trl` (the TRL comparison) is separate:
it builds its own virtualenv.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = [
    ("seconds per step and per phase: smoke, quick and full configs", ["phase_times.py"]),
    ("profiler overhead: phase timing off vs on, memory tracking and --trace", ["profile_overhead.py"]),
    ("dashboard: 10,000-step report render and live update request", ["dashboard_speed.py"]),
    ("memory optimizer: predicted vs measured peaks", ["memory_accuracy.py"]),
    ("multi-rank instruments: per-rank table, straggler rule, rank view, live tail cost", ["multirank_instruments.py"]),
    ("data-parallel PPO on torchrun: 1 process vs 2 ranks, comm share", ["ddp_scaling.py"]),
]


def main() -> int:
    failed = []
    for title, cmd in BENCHMARKS:
        print(f"\n=== {title} ({cmd[0]})", flush=True)
        if subprocess.run([sys.executable, str(HERE / cmd[0]), *cmd[1:]]).returncode != 0:
            failed.append(cmd[0])
    if failed:
        print(f"\nbenchmarks that failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
