"""`rlhf-kit profile` and `rlhf-kit calibrate`.

    rlhf-kit profile [train flags] [--steps N] [--trace] [--trace_steps K] [--peak_tflops X]
    rlhf-kit profile --compare RUN_A RUN_B
    rlhf-kit calibrate [--size N] [--repeats R]

`profile` runs a short training (one epoch of N steps) with the memory hook and, with --trace,
torch.profiler, then prints the phase table, the bottleneck and where the files are. Step 1
(warm-up), the step whose activations are counted op by op and the traced steps are slowed by
their instruments and are left out of the table; profile/profile.json records which.
The runner comes in as an argument (rlhf_kit/cli.py passes rlhf_core.train), so this module
never imports rlhf_core.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from rlhf_kit.errors import OneLineParser, UsageError
from rlhf_kit.profiler import breakdown as bd
from rlhf_kit.runlog import RunDir, load_run, write_json_atomic

MiB = 2 ** 20


def _parser() -> OneLineParser:
    p = OneLineParser(prog="rlhf-kit profile", add_help=False,
                      description="Short training under the profiler; every train flag is accepted too.")
    p.add_argument("--steps", type=int, default=6, help="PPO steps to run (one epoch); default 6")
    p.add_argument("--trace", action="store_true", help="torch.profiler trace, flame graph and speedscope file")
    p.add_argument("--trace_steps", type=int, default=1, help="steps in the trace's active window; default 1")
    p.add_argument("--peak_tflops", type=float, default=None, help="peak TFLOP/s for MFU (default: table or calibration)")
    p.add_argument("--compare", nargs=2, metavar=("RUN_A", "RUN_B"), help="compare two run directories phase by phase")
    p.add_argument("-h", "--help", action="store_true")
    return p


def plan_steps(steps: int, trace: bool, trace_steps: int) -> dict:
    """Which steps carry which instrument.

    Returns:
        {"memory_step": int | None, "trace": (wait, warmup, active) | None, "skip_steps": [...]}:
        step 1 is warm-up, the memory step is 2, the trace takes the last 1 + trace_steps steps.
    """
    if steps < 1:
        raise UsageError(f"--steps must be a positive integer, got {steps}")
    if trace and trace_steps < 1:
        raise UsageError(f"--trace_steps must be a positive integer, got {trace_steps}")
    if trace and steps < trace_steps + 2:
        raise UsageError(f"--trace needs --steps of at least --trace_steps + 2 = {trace_steps + 2} "
                         f"(one warm-up step, one profiler warm-up step), got {steps}")
    skip = {1}
    memory_step = 2 if steps >= 3 else None
    if memory_step:
        skip.add(memory_step)
    window = None
    if trace:
        window = (steps - trace_steps - 1, 1, trace_steps)
        skip.update(range(steps - trace_steps, steps + 1))
    return {"memory_step": memory_step, "trace": window, "skip_steps": sorted(skip)}


def main(argv: Sequence[str] | None = None, runner: Any = None) -> int:
    """Entry point of `rlhf-kit profile`; `runner` is rlhf_core.train (parse_config, train)."""
    args, rest = _parser().parse_known_args(list(argv or []))
    if args.help:
        print(_parser().format_help().rstrip() + "\n\nTrain flags: see `rlhf-kit train --help`.")
        return 0
    if args.compare:
        return compare_main(*args.compare)
    if runner is None:
        raise UsageError("profile needs the training runner; run it as `rlhf-kit profile`")
    plan = plan_steps(args.steps, args.trace, args.trace_steps)
    cfg = runner.parse_config([*rest, "--epochs", "1", "--steps_per_epoch", str(args.steps)])
    device = runner.resolve_device(cfg.run.device) if hasattr(runner, "resolve_device") else "cpu"

    from rlhf_kit.profiler.memory import MemoryHook  # torch only from here on

    hooks: list[Any] = [MemoryHook(device, track_steps={plan["memory_step"]} - {None})]
    tracer = None
    if plan["trace"]:
        from rlhf_kit.profiler.trace import TraceHook

        wait, warmup, active = plan["trace"]
        tracer = TraceHook(lambda info: Path(cfg.run.output_dir) / info.run_id / "profile",
                           wait=wait, warmup=warmup, active=active, cuda=str(device).startswith("cuda"))
        hooks.append(tracer)
    run_dir = runner.train(cfg, hooks=hooks)
    peak, source = _peak(args.peak_tflops, device, load_run(run_dir.root))
    meta = {"skip_steps": plan["skip_steps"], "memory_step": plan["memory_step"], "trace": plan["trace"],
            "peak_flops": peak, "peak_source": source, "files": tracer.files if tracer else {}}
    write_json_atomic(run_dir.profile / "profile.json", meta)
    print("\n" + report(load_run(run_dir.root)))
    return 0


def _peak(peak_tflops: float | None, device: str, run: Any) -> tuple[float | None, str]:
    if peak_tflops:
        return peak_tflops * 1e12, "--peak_tflops"
    peak, source = bd.run_peak(run)
    if peak is None and not str(device).startswith("cuda"):
        from rlhf_kit.profiler.peaks import calibrate

        print("Calibrating this CPU's matmul peak for MFU (once; cached, see `rlhf-kit calibrate`)...")
        result = calibrate()
        peak, source = result["flops"], f"calibrated now, {result['threads']} threads"
    return peak, source


def report(run: Any) -> str:
    """The text `profile` prints: table, coverage, bottleneck, update memory, files to open."""
    rows = bd.phase_breakdown(run)
    if not rows:
        return f"{run.name}: no timed steps in {run.dir.train_log}"
    meta = bd.profile_meta(run)
    kept = [s.get("step") for s in run.steps if s.get("step_seconds") and s.get("step") not in meta.get("skip_steps", ())]
    other = next(r for r in rows if r.name == bd.OTHER)
    lines = [f"Phase breakdown of {run.name} (mean over steps {kept or 'all'}; "
             f"peak {_tflops(meta.get('peak_flops'))} from {meta.get('peak_source', 'lookup')})", "",
             bd.format_table(rows), "",
             f"Phases cover {100 - other.pct:.1f}% of the step; the remaining {other.ms:.2f} ms is `other`."]
    phase, advice = bd.bottleneck(rows, run.info)
    lines += ["", f"Bottleneck: {phase}. {advice}"]
    lines += rank_lines(run)
    mem = update_memory(run, meta.get("memory_step"))
    if mem:
        cats = ", ".join(f"{k} {mem[k] / MiB:,.2f}" for k in ("params", "grads", "optim", "activations_peak") if k in mem)
        lines += ["", f"Memory in update (MiB): {cats}" + (f" (activations counted on step {meta['memory_step']})"
                                                            if meta.get("memory_step") else "")]
    files = meta.get("files") or {}
    if files.get("trace"):
        lines += ["", "Trace files:",
                  f"  {files['trace']}  -> open in https://ui.perfetto.dev (ranges rlhf/<phase>)",
                  f"  {files.get('flamegraph') or 'no flame graph: ' + files.get('flamegraph_error', '?')}  -> open in a browser",
                  f"  {files['speedscope']}  -> drop on https://www.speedscope.app",
                  f"  {files['stacks']}  -> folded stacks for flamegraph.pl / inferno"]
    return "\n".join(lines)


def rank_lines(run: Any) -> list[str]:
    """The per-rank table and straggler sentence of a multi-rank run ([] for one rank)."""
    from rlhf_kit.profiler import ranks

    rows = ranks.rank_breakdown(run)
    if not rows:
        return []
    return ["", "Per rank (ms per step; a fast rank's waiting shows up in comm):", "",
            ranks.format_ranks(rows, ranks.straggler(run))]


def update_memory(run: Any, step: int | None) -> dict | None:
    """The update phase's memory record: from the op-counted step when there is one, else the last."""
    updates = [p for p in run.phases if p.name == "update" and p.memory]
    chosen = [p for p in updates if p.step == step] or updates[-1:]
    return chosen[0].memory if chosen else None


def _tflops(peak: float | None) -> str:
    return "unknown" if not peak else f"{peak / 1e12:.3f} TFLOP/s"


def compare_main(path_a: str, path_b: str) -> int:
    """Print the phase-by-phase comparison of two run directories."""
    runs = []
    for path in (path_a, path_b):
        if not RunDir(Path(path)).exists():
            raise UsageError(f"--compare: '{path}' is not a run directory (no run.json or logs/train.jsonl)")
        runs.append(load_run(path))
    if not all(bd.phase_breakdown(r) for r in runs):
        raise UsageError("--compare: both runs need timed steps (step_seconds in logs/train.jsonl)")
    rows = bd.compare_runs(*runs)
    print(f"B = {runs[1].name} against A = {runs[0].name}\n")
    print(bd.format_compare(rows, "A", "B"))
    changed = [r for r in rows if r.ratio and r.verdict not in ("same",) and r.name != "step" and r.delta_ms]
    if changed:
        worst = max(changed, key=lambda r: abs(r.delta_ms))
        print(f"\nLargest change: {worst.name} {worst.verdict} ({worst.delta_ms:+.2f} ms per step).")
    return 0


def calibrate_main(argv: Sequence[str] | None = None) -> int:
    """`rlhf-kit calibrate`: measure and cache this CPU's matmul peak."""
    p = OneLineParser(prog="rlhf-kit calibrate", description="Measure this machine's fp32 matmul FLOP/s for MFU.")
    p.add_argument("--size", type=int, default=1024, help="n of the n x n matmul; default 1024")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats, the fastest counts; default 5")
    args = p.parse_args(list(argv or []))
    if args.size < 16 or args.repeats < 1:
        raise UsageError(f"--size must be >= 16 and --repeats >= 1, got {args.size} and {args.repeats}")
    from rlhf_kit.profiler.peaks import cache_file, calibrate

    r = calibrate(args.size, args.repeats)
    print(f"{r['key']}: {r['flops'] / 1e9:,.1f} GFLOP/s (fp32 matmul n={r['size']}, {r['threads']} threads), "
          f"cached in {cache_file()}")
    return 0
