"""What the multi-rank instruments cost on a large synthetic DDP run directory.

    .venv/bin/python benchmarks/multirank_instruments.py [--ranks 8] [--steps 500]

The run is written through the real RunLogHook, one per rank (rank 0 also writes train.jsonl), with
10 phases per rank per step and rank 1 slower in rollout. Timed, each the best of --repeats:
load_run, the per-rank table + straggler figure, offline analyze_run (all rules + rank_straggler),
the dashboard's rank_view, and the live monitor's added cost per step on rank 0 (tailing phases.jsonl
and judging the newest complete step) against the same monitor without a phases log, alternated.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlhf_kit.dashboard.data import rank_view  # noqa: E402
from rlhf_kit.events import PhaseRecord, RunInfo, step_record  # noqa: E402
from rlhf_kit.profiler.ranks import rank_breakdown, straggler  # noqa: E402
from rlhf_kit.runlog import RunDir, RunLogHook, load_run  # noqa: E402
from rlhf_kit.stability import StabilityMonitor, analyze_run  # noqa: E402

PHASES = {"rollout": 0.4, "reward": 0.05, "old_logprobs": 0.05, "ref_logprobs": 0.05, "values": 0.02,
          "advantages": 0.01, "update": 0.3, "forward": 0.1, "backward": 0.15, "comm": 0.05}


def phases_of(step: int, rank: int) -> list[PhaseRecord]:
    out, t = [], 0.0
    for name, sec in PHASES.items():
        sec = sec + (0.2 if rank == 1 and name == "rollout" else 0.0)
        parent = "update" if name in ("forward", "backward") else ""
        out.append(PhaseRecord(name=name, step=step, rank=rank, start=t, seconds=sec, count=1, parent=parent))
        t += 0.0 if parent else sec
    return out


def write_run(root: Path, ranks: int, steps: int) -> RunDir:
    rd = RunDir(root)
    hooks = [RunLogHook(rd, write_steps=(r == 0)) for r in range(ranks)]
    hooks[0].on_run_start(RunInfo(run_id=root.name, world_size=ranks))
    for step in range(1, steps + 1):
        for r, hook in enumerate(hooks):
            hook.on_step_end(step_record(step, 0, {"step_seconds": 1.2, "reward_mean": 0.1}, rank=r), phases_of(step, r))
    for hook in hooks:
        hook.on_run_end()
    return rd


def best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def live_cost(tmp: Path, steps: int) -> tuple[float, float]:
    """Seconds per step of on_step_end on rank 0: with the phases log tailed (2 ranks) vs without."""
    rd = RunDir(tmp / "live")
    writers = [RunLogHook(rd, write_steps=(r == 0)) for r in range(2)]
    with_tail, without = StabilityMonitor(phases_log=rd.phases_log), StabilityMonitor()
    for m in (with_tail, without):
        m.on_run_start(RunInfo(run_id="live", world_size=2 if m is with_tail else 1))
    spent = {id(with_tail): 0.0, id(without): 0.0}
    for step in range(1, steps + 1):
        for r, w in enumerate(writers):
            w.on_step_end(step_record(step, 0, {"reward_mean": 0.1}, rank=r), phases_of(step, r))
        order = (with_tail, without) if step % 2 else (without, with_tail)  # alternate who goes first
        for m in order:
            t = time.perf_counter()
            m.on_step_end(step_record(step, 0, {"reward_mean": 0.1}), phases_of(step, 0))
            spent[id(m)] += time.perf_counter() - t
    return spent[id(with_tail)] / steps, spent[id(without)] / steps


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ranks", type=int, default=8)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rd = write_run(Path(tmp) / "ddp", args.ranks, args.steps)
        run = load_run(rd.root)
        n = len(run.phases)
        rows = [
            ("load_run", best(lambda: load_run(rd.root), args.repeats)),
            ("rank_breakdown + straggler", best(lambda: (rank_breakdown(run), straggler(run)), args.repeats)),
            ("analyze_run (all rules)", best(lambda: analyze_run(run), args.repeats)),
            ("rank_view (report, 200 steps)", best(lambda: rank_view(run.phases), args.repeats)),
        ]
        s = straggler(run)
        print(f"{args.ranks} ranks x {args.steps} steps = {n:,} phase records "
              f"(straggler found: rank {s.slow_rank}, {s.ratio:.2f}x, {s.phase})\n")
        for name, sec in rows:
            print(f"  {name:<32} {1000 * sec:9.1f} ms")
        tail, plain = live_cost(Path(tmp), args.steps)
        print(f"\n  live monitor on rank 0, per step: {1e6 * tail:.0f} us with the phases log tailed (2 ranks), "
              f"{1e6 * plain:.0f} us without; added {1e6 * (tail - plain):.0f} us per step")
    return 0


if __name__ == "__main__":
    sys.exit(main())
