"""Where a step's time and memory go, phase by phase, from a run directory alone.

Standard library only: demo.py, the HTML report and the dashboard import it on machines
without torch. Everything here is a pure function of `runlog.Run`; printing is left to callers.

Example:
    >>> from rlhf_kit.runlog import load_run
    >>> run = load_run("runs/run_20250101_120000")
    >>> rows = phase_breakdown(run)
    >>> print(format_table(rows))
    >>> phase, advice = bottleneck(rows, run.info)

Known limitations:
    - Step and phase times are means over the kept steps; steps listed in profile/profile.json
      under "skip_steps" (warm-up, or steps slowed by a memory tracker or torch.profiler) are left out.
    - GFLOP/s and MFU need PhaseRecord.work and RunInfo.model; rows without them show "-".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from rlhf_kit.events import PHASE_PARENT, PHASES, RunInfo
from rlhf_kit.hooks import other_seconds
from rlhf_kit.profiler.flops import ModelSpec, phase_flops
from rlhf_kit.profiler.peaks import lookup_peak, mfu

OTHER = "other"
# Share of the parent's fwd_bwd FLOPs that a child without its own work did (backward = 2x forward).
CHILD_FLOP_SHARE = {"forward": 1.0 / 3.0, "backward": 2.0 / 3.0}


@dataclass
class PhaseRow:
    """One line of the phase table, averaged per step.

    Attributes:
        name: phase name, or "other" for step time outside every top-level phase.
        parent: enclosing phase ("" for top level).
        ms: milliseconds per step.  pct: share of the step time, in percent.
        count: entries per step (a child runs once per mini-batch).
        tokens_per_s, gflops_per_s, mfu: throughput; None when the phase did no declared work.
        peak_bytes: highest memory seen inside the phase (CUDA peak allocated, CPU peak RSS).
        delta_bytes: mean change of memory over the phase per step.
        memory: the last record's full memory dict (categories: params, grads, optim, ...).
    """

    name: str
    parent: str
    ms: float
    pct: float
    count: float = 0.0
    tokens_per_s: float | None = None
    gflops_per_s: float | None = None
    mfu: float | None = None
    peak_bytes: float | None = None
    delta_bytes: float | None = None
    memory: dict | None = None


def profile_meta(run: Any) -> dict:
    """profile/profile.json written by `rlhf-kit profile` ({} if absent or unreadable)."""
    try:
        return json.loads((run.dir.profile / "profile.json").read_text())
    except (OSError, ValueError):
        return {}


def _model_spec(info: RunInfo | None) -> ModelSpec | None:
    try:
        return ModelSpec.from_info(info.model) if info and info.model else None
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return None


def run_peak(run: Any, peak: float | None = None) -> tuple[float | None, str]:
    """Peak FLOP/s for a run's MFU: the argument, else the one the profile recorded, else lookup."""
    if peak:
        return peak, "given"
    meta = profile_meta(run)
    if meta.get("peak_flops"):
        return float(meta["peak_flops"]), meta.get("peak_source", "profile.json")
    if run.info is None:
        return None, "no run.json"
    return lookup_peak(run.info.device, run.info.device_name)


def _kept_steps(run: Any, skip_steps: Any) -> list[dict]:
    skip = set(profile_meta(run).get("skip_steps", ())) if skip_steps is None else set(skip_steps)
    timed = [r for r in run.steps if r.get("step_seconds") and not r.get("rank")]
    kept = [r for r in timed if r.get("step") not in skip]
    return kept or timed  # never drop everything: a 1-step run still gets a table


def _phase_order(names: set[str]) -> list[str]:
    known = [p for p in PHASES if p in names]
    return known + sorted(names - set(known))


def phase_breakdown(run: Any, rank: int | None = None, skip_steps: Any = None,
                    peak: float | None = None) -> list[PhaseRow]:
    """Per-phase table of one run, in PHASES order (children after their parent), plus `other`.

    Args:
        run: a runlog.Run (load_run(path)).
        rank: only this rank's phase records; None averages over all ranks.
        skip_steps: steps to leave out; None reads profile/profile.json's "skip_steps".
        peak: peak FLOP/s for MFU; None looks it up (see run_peak).
    Returns:
        list[PhaseRow]; [] when the run has no timed steps.
    """
    steps = _kept_steps(run, skip_steps)
    if not steps:
        return []
    step_ids = {r.get("step") for r in steps}
    recs = [p for p in run.phases if p.step in step_ids and (rank is None or p.rank == rank)]
    n_ranks = max(1, len({p.rank for p in recs}))
    per = len(steps) * n_ranks
    step_ms = 1000.0 * sum(r["step_seconds"] for r in steps) / len(steps)
    spec = _model_spec(run.info)
    peak_flops, _ = run_peak(run, peak)

    by_name: dict[str, list] = {}
    for p in recs:
        by_name.setdefault(p.name, []).append(p)
    totals = {n: _totals(ps, spec) for n, ps in by_name.items()}
    for name, t in totals.items():  # a parent without declared work did its children's work
        kids = [totals[k] for k, ps in by_name.items() if (ps[0].parent or PHASE_PARENT.get(k)) == name]
        if t["flops"] is None and any(k["flops"] is not None for k in kids):
            t["flops"] = sum(k["flops"] or 0.0 for k in kids)
            t["tokens"] = max(k["tokens"] for k in kids)
    rows = []
    for name in _phase_order(set(by_name)):
        t = totals[name]
        parent = by_name[name][0].parent or PHASE_PARENT.get(name, "")
        flops, tokens = t["flops"], t["tokens"]
        if flops is None and parent in totals and name in CHILD_FLOP_SHARE:
            pf = totals[parent]
            if pf["mode"] == "fwd_bwd" and pf["flops"] is not None:
                flops, tokens = pf["flops"] * CHILD_FLOP_SHARE[name], pf["tokens"]
        sec = t["seconds"]
        rows.append(PhaseRow(
            name=name, parent=parent, ms=1000.0 * sec / per, pct=100.0 * 1000.0 * sec / per / step_ms,
            count=t["count"] / per,
            tokens_per_s=tokens / sec if tokens and sec > 0 else None,
            gflops_per_s=flops / sec / 1e9 if flops is not None and sec > 0 else None,
            mfu=mfu(flops, sec, peak_flops) if flops is not None else None,
            peak_bytes=t["peak"], delta_bytes=t["delta"] / per if t["delta"] is not None else None,
            memory=t["memory"],
        ))
    other_ms = 1000.0 * sum(other_seconds(r) for r in steps) / len(steps)
    rows.append(PhaseRow(name=OTHER, parent="", ms=other_ms, pct=100.0 * other_ms / step_ms))
    return rows


def _totals(records: list, spec: ModelSpec | None) -> dict:
    """Sums over one phase's records: seconds, entries, tokens, FLOPs, peak and delta memory."""
    out = {"seconds": 0.0, "count": 0, "tokens": 0, "flops": None, "mode": None,
           "peak": None, "delta": None, "memory": None}
    for p in records:
        out["seconds"] += p.seconds
        out["count"] += p.count
        if p.work:
            out["mode"] = p.work.get("mode")
            out["tokens"] += int(p.work.get("tokens") or 0)
            f = phase_flops(spec, p.work) if spec else None
            if f is not None:
                out["flops"] = (out["flops"] or 0.0) + f
        mem = p.memory or {}
        if mem.get("peak") is not None:
            out["peak"] = max(out["peak"] or 0, mem["peak"])
        if mem.get("delta") is not None:
            out["delta"] = (out["delta"] or 0) + mem["delta"]
        if mem:
            out["memory"] = mem
    return out


def step_ms(rows: list[PhaseRow]) -> float:
    """Step time implied by a table: top-level phases plus `other`."""
    return sum(r.ms for r in rows if not r.parent)


# ---- formatting ------------------------------------------------------------------------
def _num(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def _mib(v: float | None) -> str:
    return "-" if v is None else f"{v / 2**20:,.1f}"


def format_table(rows: list[PhaseRow]) -> str:
    """The phase table as fixed-width text (children indented under `update`)."""
    head = ("phase", "ms/step", "% step", "tokens/s", "GFLOP/s", "MFU %", "peak MiB", "delta MiB")
    lines = []
    for r in rows:
        lines.append((
            ("  " if r.parent else "") + r.name, f"{r.ms:,.2f}", f"{r.pct:.1f}",
            _num(r.tokens_per_s, ",.0f"), _num(r.gflops_per_s, ",.2f"),
            _num(None if r.mfu is None else 100 * r.mfu, ".2f"), _mib(r.peak_bytes), _mib(r.delta_bytes),
        ))
    total = step_ms(rows)
    lines.append(("step (sum)", f"{total:,.2f}", "100.0" if total else "-", "", "", "", "", ""))
    widths = [max(len(head[i]), *(len(l[i]) for l in lines)) for i in range(len(head))]
    fmt = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    rule = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(head), rule, *map(fmt, lines[:-1]), rule, fmt(lines[-1])])


# ---- advice ----------------------------------------------------------------------------
ADVICE: dict[str, str] = {
    "rollout": "Generation dominates: raise the batch size (decoding is memory-bound, so more sequences per "
               "step cost little extra), keep the KV cache on, and at scale move rollouts to a vLLM-style engine.",
    "optimizer": "The optimizer step dominates, typical of a tiny model: use a fused/foreach AdamW, larger "
                 "mini-batches (fewer optimizer steps per token) or fewer PPO epochs.",
    "forward": "The training forward dominates: larger mini-batches, bf16 autocast on GPU, torch.compile.",
    "backward": "The backward pass dominates: bf16 autocast on GPU, larger mini-batches; if memory-bound, "
                "activation checkpointing trades recompute for memory.",
    "update": "The PPO update dominates: fewer PPO epochs or larger mini-batches, bf16 autocast on GPU.",
    "old_logprobs": "Scoring passes dominate: run them under inference_mode with use_cache=False, score policy, "
                    "reference and value in fewer passes, or take old log-probs from the generation pass.",
    "reward": "The reward model dominates: score the whole batch at once, keep it on the accelerator, "
              "or use a smaller reward model.",
    "advantages": "Advantage computation dominates: vectorise GAE over the batch (no per-token Python loop).",
    "checkpoint": "Checkpointing dominates: save less often, or write checkpoints asynchronously.",
    "log": "Logging dominates: log every N steps and batch the .item() calls (each one syncs the device).",
    "comm": "Communication dominates: larger per-rank batches, gradient accumulation, or overlap the all-reduce.",
    OTHER: "The host is the bottleneck: time outside every phase (Python bookkeeping, tokenisation, "
           "device syncs). Run `rlhf-kit profile --trace` and look for gaps between the rlhf/ ranges.",
}
ADVICE["ref_logprobs"] = ADVICE["values"] = ADVICE["old_logprobs"]


def bottleneck(rows: list[PhaseRow], info: RunInfo | None = None) -> tuple[str, str]:
    """The phase to look at first and what to try for it.

    The largest top-level row wins; when it is `update`, its largest child names the cause.
    Args:
        rows: phase_breakdown() output.
        info: the run's RunInfo (the model size refines the advice), may be None.
    Returns:
        (phase name, one or two sentences of advice); ("", "") for an empty table.
    """
    top = [r for r in rows if not r.parent]
    if not top:
        return "", ""
    worst = max(top, key=lambda r: r.ms)
    name = worst.name
    if name == "update":
        kids = [r for r in rows if r.parent == "update"]
        if kids and max(kids, key=lambda r: r.ms).ms > 0.4 * worst.ms:
            name = max(kids, key=lambda r: r.ms).name
    advice = f"{name} takes {worst.pct:.0f}% of the step" + ("" if name == worst.name else " (inside update)")
    advice += ". " + ADVICE.get(name, "Look at this phase in the trace (`--trace`).")
    n_params = (info.model or {}).get("n_params") if info else None
    if n_params and n_params < 5e6 and name in ("rollout", "optimizer", OTHER):
        advice += f" At {n_params / 1e6:.2f}M parameters the matmuls are tiny, so per-op overhead, not FLOPs, sets the pace."
    return name, advice


# ---- comparing two runs ----------------------------------------------------------------
@dataclass
class CompareRow:
    """One phase in two runs. ratio = ms_b / ms_a (above 1: B is slower)."""

    name: str
    parent: str
    ms_a: float | None
    ms_b: float | None
    delta_ms: float | None
    ratio: float | None
    verdict: str


def compare_runs(run_a: Any, run_b: Any, threshold: float = 0.05) -> list[CompareRow]:
    """Phase-by-phase comparison of run B against run A, plus the whole step.

    Args:
        threshold: relative change below which a phase counts as "same".
    Returns:
        list[CompareRow] in table order, the last one named "step".
    """
    a = {r.name: r for r in phase_breakdown(run_a)}
    b = {r.name: r for r in phase_breakdown(run_b)}
    names = _phase_order((set(a) | set(b)) - {OTHER}) + [OTHER]
    rows = [_compare(n, (a.get(n) or b.get(n)).parent, a.get(n) and a[n].ms, b.get(n) and b[n].ms, threshold)
            for n in names if n in a or n in b]
    rows.append(_compare("step", "", step_ms(list(a.values())), step_ms(list(b.values())), threshold))
    return rows


def _compare(name: str, parent: str, ms_a: float | None, ms_b: float | None, threshold: float) -> CompareRow:
    if ms_a is None or ms_b is None:
        return CompareRow(name, parent, ms_a, ms_b, None, None, "only in A" if ms_b is None else "only in B")
    ratio = ms_b / ms_a if ms_a > 0 else None
    if ratio is None or abs(ratio - 1.0) < threshold:
        verdict = "same"
    else:
        verdict = f"{(ratio - 1) * 100:+.0f}% " + ("slower" if ratio > 1 else "faster")
    return CompareRow(name, parent, ms_a, ms_b, ms_b - ms_a, ratio, verdict)


def format_compare(rows: list[CompareRow], name_a: str = "A", name_b: str = "B") -> str:
    """The comparison as fixed-width text."""
    head = ("phase", f"{name_a} ms", f"{name_b} ms", "delta ms", "B/A", "verdict")
    body = [(("  " if r.parent else "") + r.name, _num(r.ms_a, ",.2f"), _num(r.ms_b, ",.2f"),
             _num(r.delta_ms, "+,.2f"), _num(r.ratio, ".2f"), r.verdict) for r in rows]
    widths = [max(len(head[i]), *(len(l[i]) for l in body)) for i in range(len(head))]
    fmt = lambda cells: "  ".join(c.ljust(w) if i in (0, 5) else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([fmt(head), "  ".join("-" * w for w in widths), *map(fmt, body)])
