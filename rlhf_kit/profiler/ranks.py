"""Multi-rank runs: per-rank phase times, and the straggler that the others wait for.

In a data-parallel (DDP) run every rank writes its own PhaseRecords (with `rank`) to
logs/phases.jsonl; only rank 0 writes train.jsonl. A rank's wall-clock step time says little:
the gradient all-reduce makes every rank wait for the slowest one, so all step times come out
equal. What differs is where the time goes. A rank's BUSY time is the sum of its top-level phases
except `comm`; a fast rank spends the difference waiting inside `comm`. The straggler figure is
therefore the slowest rank's busy time divided by the median busy time over all ranks, and the
phase that makes the difference is the one where the slowest rank exceeds the median of the other
ranks by the most milliseconds.

Standard library only, like breakdown.py: the report, dashboard and stability rules use it.

Example:
    >>> from rlhf_kit.runlog import load_run
    >>> run = load_run("runs/ddp_run")
    >>> s = straggler(run)              # None for a single-rank run
    >>> print(format_ranks(rank_breakdown(run), s))

Known limitations:
    - Busy time counts only what the runner put in phases; time outside every phase (`other`) is
      not attributed to a rank. The gradient all-reduce of DDP runs inside `backward` (overlapped
      buckets; the kit's runner does this too), so a rank slow in the update makes the others wait
      in `backward`, not in `comm`, and the figure understates that straggler.
    - On CUDA, phase seconds are GPU time while `start` is host time, so timelines are approximate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import median
from typing import Any, Iterable

from rlhf_kit.events import PHASE_PARENT, PhaseRecord
from rlhf_kit.profiler.breakdown import _kept_steps, _phase_order

COMM = "comm"


def by_step_rank(phases: Iterable[PhaseRecord]) -> dict[int, dict[int, dict[str, float]]]:
    """Phase seconds as step -> rank -> phase -> seconds (a re-logged phase: the last record wins).

    Args:
        phases: PhaseRecords of any ranks and steps.
    """
    out: dict[int, dict[int, dict[str, float]]] = {}
    for p in phases:
        out.setdefault(int(p.step), {}).setdefault(int(p.rank), {})[p.name] = float(p.seconds)
    return out


def busy_seconds(phase_seconds: dict[str, float]) -> float:
    """Seconds a rank computed in one step: its top-level phases except `comm` (the waiting)."""
    return sum(s for name, s in phase_seconds.items() if name != COMM and name not in PHASE_PARENT)


@dataclass
class StepStraggler:
    """The slowest rank of one step.

    Attributes:
        step: the iteration.
        busy: rank -> busy seconds (see module docstring).
        slow_rank: the rank with the most busy seconds.
        ratio: busy[slow_rank] / median(busy over all ranks); 1.0 when balanced.
        share: busy[slow_rank] / median(busy over the OTHER ranks) - 1 (what the stability rule uses).
        phase: the phase where slow_rank exceeds the others' median by the most seconds.
        phase_excess: those seconds.
        excess: busy[slow_rank] - median(busy over the other ranks), seconds.
    """

    step: int
    busy: dict[int, float]
    slow_rank: int
    ratio: float
    share: float
    phase: str
    phase_excess: float
    excess: float = 0.0


def step_straggler(step: int, ranks: dict[int, dict[str, float]]) -> StepStraggler | None:
    """The straggler figures of one step, None with fewer than two ranks or no busy time."""
    if len(ranks) < 2:
        return None
    busy = {r: busy_seconds(ph) for r, ph in ranks.items()}
    slow = max(sorted(busy), key=lambda r: busy[r])
    med_all = median(busy.values())
    med_others = median(v for r, v in busy.items() if r != slow)
    if med_all <= 0 or med_others <= 0:
        return None
    phase, excess = _excess_phase(slow, ranks)
    return StepStraggler(step=step, busy=busy, slow_rank=slow, ratio=busy[slow] / med_all,
                         share=busy[slow] / med_others - 1.0, phase=phase, phase_excess=excess,
                         excess=busy[slow] - med_others)


def _excess_phase(slow: int, ranks: dict[int, dict[str, float]]) -> tuple[str, float]:
    """The top-level, non-comm phase where `slow` exceeds the median of the other ranks the most."""
    best, best_excess = "", 0.0
    for name in _phase_order(set(ranks[slow])):
        if name == COMM or name in PHASE_PARENT:
            continue
        others = [ph.get(name, 0.0) for r, ph in ranks.items() if r != slow]
        excess = ranks[slow][name] - median(others)
        if excess > best_excess:
            best, best_excess = name, excess
    return best, best_excess


def world_size(phases: Iterable[PhaseRecord]) -> int:
    """Number of distinct ranks that wrote phase records."""
    return len({int(p.rank) for p in phases})


def step_stragglers(phases: list[PhaseRecord]) -> dict[int, StepStraggler]:
    """Straggler figures per step, for steps where every rank of the run has written its records.

    A step missing a rank (that rank is still running it, or crashed) gets no figure: judging it
    on the ranks that finished first would make the missing straggler invisible.
    """
    world = world_size(phases)
    if world < 2:  # the common single-process run: skip building the table
        return {}
    out = {}
    for step, ranks in sorted(by_step_rank(phases).items()):
        if len(ranks) == world:
            s = step_straggler(step, ranks)
            if s is not None:
                out[step] = s
    return out


# ---- averaged over a run -----------------------------------------------------------------
@dataclass
class RankRow:
    """One phase across ranks: per-rank mean ms per step, then min / median / max over ranks.

    Attributes:
        name, parent: the phase and its enclosing phase ("" for top level).
        min_ms, median_ms, max_ms: over ranks of each rank's mean ms per step.
        slow_rank: the rank with max_ms.
        per_rank: rank -> mean ms per step.
    """

    name: str
    parent: str
    min_ms: float
    median_ms: float
    max_ms: float
    slow_rank: int
    per_rank: dict[int, float] = field(default_factory=dict)


@dataclass
class Straggler:
    """The straggler figure of a run, averaged over its kept steps.

    Attributes:
        world: number of ranks.  steps: how many steps were averaged.
        busy_ms: rank -> mean busy ms per step.
        slow_rank, ratio, phase, phase_excess_ms: as StepStraggler, on the means.
        comm_wait_ms: mean `comm` ms per step of the other ranks (the time they spent waiting), or
            None when the runner logs no comm phase.
        slowest_each_step: on how many of the steps slow_rank was the slowest.
    """

    world: int
    steps: int
    busy_ms: dict[int, float]
    slow_rank: int
    ratio: float
    phase: str
    phase_excess_ms: float
    comm_wait_ms: float | None
    slowest_each_step: int


def _rank_means(run: Any, skip_steps: Any) -> tuple[dict[int, dict[str, float]], int, dict]:
    """rank -> phase -> mean seconds per step over the kept steps that every rank completed."""
    table = by_step_rank(run.phases)
    world = world_size(run.phases)
    kept = {r.get("step") for r in _kept_steps(run, skip_steps)}
    steps = [s for s, ranks in table.items() if len(ranks) == world and (not kept or s in kept)]
    means: dict[int, dict[str, float]] = {}
    for s in steps:
        for rank, ph in table[s].items():
            acc = means.setdefault(rank, {})
            for name, sec in ph.items():
                acc[name] = acc.get(name, 0.0) + sec / len(steps)
    return means, len(steps), {s: table[s] for s in steps}


def rank_breakdown(run: Any, skip_steps: Any = None) -> list[RankRow]:
    """Per-phase min / median / max over ranks of mean ms per step ([] for a single-rank run).

    Args:
        run: a runlog.Run.
        skip_steps: steps to leave out; None reads profile/profile.json like phase_breakdown.
    """
    means, n, _ = _rank_means(run, skip_steps)
    if len(means) < 2 or not n:
        return []
    names = _phase_order({name for ph in means.values() for name in ph})
    rows = []
    for name in names:
        per = {r: 1000.0 * ph.get(name, 0.0) for r, ph in sorted(means.items())}
        slow = max(per, key=lambda r: per[r])
        rows.append(RankRow(name=name, parent=PHASE_PARENT.get(name, ""), min_ms=min(per.values()),
                            median_ms=median(per.values()), max_ms=per[slow], slow_rank=slow, per_rank=per))
    return rows


def straggler(run: Any, skip_steps: Any = None) -> Straggler | None:
    """The run's straggler figure from per-rank mean busy time; None for a single-rank run."""
    means, n, steps = _rank_means(run, skip_steps)
    if len(means) < 2 or not n:
        return None
    fig = step_straggler(0, means)
    if fig is None:
        return None
    others = [ph[COMM] for r, ph in means.items() if r != fig.slow_rank and COMM in ph]
    each = [step_straggler(s, ranks) for s, ranks in steps.items()]
    return Straggler(world=len(means), steps=n, busy_ms={r: 1000.0 * v for r, v in sorted(fig.busy.items())},
                     slow_rank=fig.slow_rank, ratio=fig.ratio, phase=fig.phase,
                     phase_excess_ms=1000.0 * fig.phase_excess,
                     comm_wait_ms=1000.0 * median(others) if others else None,
                     slowest_each_step=sum(1 for e in each if e and e.slow_rank == fig.slow_rank))


def format_ranks(rows: list[RankRow], strag: Straggler | None) -> str:
    """The per-rank table (ms per step) and the straggler sentence, as fixed-width text."""
    if not rows:
        return "single rank: no per-rank table"
    ranks = sorted(rows[0].per_rank)
    head = ("phase", "min", "median", "max", "slowest", *(f"rank {r}" for r in ranks))
    body = [(("  " if r.parent else "") + r.name, f"{r.min_ms:,.2f}", f"{r.median_ms:,.2f}", f"{r.max_ms:,.2f}",
             str(r.slow_rank) if r.max_ms > r.min_ms else "-", *(f"{r.per_rank[k]:,.2f}" for k in ranks)) for r in rows]
    widths = [max(len(head[i]), *(len(b[i]) for b in body)) for i in range(len(head))]
    fmt = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    lines = [fmt(head), "  ".join("-" * w for w in widths), *map(fmt, body)]
    if strag is not None:
        lines += ["", straggler_sentence(strag)]
    return "\n".join(lines)


def straggler_sentence(s: Straggler) -> str:
    """One or two sentences naming the straggler, its ratio and the phase that makes the difference."""
    text = (f"Straggler: rank {s.slow_rank} is busy {s.busy_ms[s.slow_rank]:,.2f} ms per step, "
            f"{s.ratio:.2f}x the median rank (slowest on {s.slowest_each_step} of {s.steps} steps)")
    if s.phase:
        text += f"; {s.phase} makes the difference (+{s.phase_excess_ms:,.2f} ms over the other ranks' median)"
    if s.comm_wait_ms is not None:
        text += f". The other ranks wait {s.comm_wait_ms:,.2f} ms per step in comm"
    return text + "."
