"""What the report and the live page show, as plain JSON-able data: one function of the run dir.

The HTML report embeds `run_view(...)` output; the live server sends the same shapes in
increments. Everything here is standard library only: no torch, numpy or plotly, so a run
directory copied off a GPU box renders on a laptop.

Shapes:
    schema()   {"metrics": [{name, unit, group, meaning, healthy}], "groups": [...],
                "phases": [...top-level...], "children": {child: parent}}
    columns    {"step": [s0, s1, ...], "<metric>": [v0, v1, ...]}: one list per key, aligned
               with "step", None where a record lacks the key (columnar: 10x smaller than records)
    run_view() {"name", "info", "steps": columns, "alerts": [dict], "alerts_source",
                "memory", "profile": {"flamegraphs", "traces", "other"},
                "breakdown": {"rows": [dict], "bottleneck": str}, "ranks": rank_view()}
    rank_view() {} for one rank; else {"world", "ranks", "phases": [names], "parents": {child: parent},
                "steps": [s...], "rows": [[step, rank, phase index, start, seconds], ...],
                "straggler": {"<step>": {"rank", "ratio", "share", "phase", "busy": {"<rank>": s}}}}
                where start is seconds since that rank's first phase of that step.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Iterable

from rlhf_kit.events import GROUPS, METRICS, PHASE_PARENT, PHASES, TOP_LEVEL_PHASES, Alert, clean_number
from rlhf_kit.runlog import Run, RunDir

# Keys of a step record that are bookkeeping, not metrics to chart.
_NOT_METRICS = ("timestamp", "rank")
_INF = float("inf")


def schema() -> dict:
    """The METRICS table as data: chart groups, titles and legends all come from here."""
    return {
        "metrics": [dataclasses.asdict(m) for m in METRICS],
        "groups": list(GROUPS),
        "phases": list(TOP_LEVEL_PHASES),
        "children": dict(PHASE_PARENT),
    }


def columns(records: Iterable[dict]) -> dict[str, list]:
    """Step records to aligned columns, keeping only numeric values (None elsewhere).

    Args:
        records: train.jsonl dicts, in step order.
    Returns:
        {"step": [...], key: [...]} with every list as long as "step", None where a record
        lacks the key or holds no finite number.
    """
    records = list(records)
    keys = [k for k in dict.fromkeys(k for rec in records for k in rec)
            if k not in _NOT_METRICS and k != "step"]
    cols: dict[str, list] = {"step": [rec.get("step", i) for i, rec in enumerate(records)]}
    for key in keys:
        # One comprehension per key, checks inlined: this loop is most of a 10,000-step render.
        # `-inf < v < inf` is False for NaN too; type() is exact, so bools are dropped.
        cols[key] = [v if ((t := type(v)) is float and -_INF < v < _INF) or t is int else None
                     for v in [rec.get(key) for rec in records]]
    return cols


def finite(obj: Any) -> Any:
    """`obj` with every NaN/Inf float replaced by None, recursively (JSON cannot carry them).

    Only used when plain encoding failed: a run directory written by other tools may hold them.
    """
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return clean_number(obj)


def alert_dicts(alerts: Iterable[Any]) -> list[dict]:
    """Alerts (events.Alert, another dataclass, or dicts) as plain dicts."""
    out = []
    for a in alerts:
        if isinstance(a, dict):
            out.append(a)
        elif hasattr(a, "to_dict"):
            out.append(a.to_dict())
        elif dataclasses.is_dataclass(a):
            out.append(dataclasses.asdict(a))
    return out


def merged(alerts: list[dict]) -> list[dict]:
    """alerts.jsonl lines collapsed to one per episode (stability.merge_alerts), as dicts.

    The monitor writes a second line with the same (rule, step) when an episode escalates;
    the page shows the episode once. Without the stability package the lines pass as they are.
    """
    try:
        from rlhf_kit.stability import merge_alerts
    except ImportError:
        return alerts
    return alert_dicts(merge_alerts([Alert.from_dict(a) for a in alerts]))


def offline_alerts(run: Run) -> list[dict]:
    """Alerts from the stability rules run after the fact, [] when the rules are unavailable.

    Used when a run recorded no alerts (a TRL run without the monitor, an old run). The
    stability package is optional to the dashboard: a missing or failing analyzer must not
    stop the report from rendering, so its errors turn into a warning.
    """
    try:
        from rlhf_kit.stability import analyze_run
    except ImportError:
        return []
    try:
        return alert_dicts(analyze_run(run))
    except Exception as e:  # noqa: BLE001 -- a broken rule must not take the report down
        warnings.warn(f"offline stability analysis failed: {e}", RuntimeWarning, stacklevel=2)
        return []


def breakdown(run: Run) -> dict:
    """The profiler's per-phase table and its bottleneck advice; empty when unavailable.

    Returns:
        {"rows": [PhaseRow as dict, without the per-category memory dict], "bottleneck": str}
    """
    try:
        from rlhf_kit.profiler.breakdown import bottleneck, phase_breakdown
    except ImportError:
        return {"rows": [], "bottleneck": ""}
    try:
        rows = phase_breakdown(run)
        _, advice = bottleneck(rows, run.info)
    except Exception as e:  # noqa: BLE001 -- same reason as offline_alerts
        warnings.warn(f"phase breakdown failed: {e}", RuntimeWarning, stacklevel=2)
        return {"rows": [], "bottleneck": ""}
    dicts = [{k: v for k, v in d.items() if k != "memory"} for d in alert_dicts(rows)]
    return {"rows": dicts, "bottleneck": advice}


# Steps of per-rank phases a view carries: the report keeps more, the live page polls every second.
RANK_STEPS_REPORT = 200
RANK_STEPS_LIVE = 30


def rank_view(phases: list, max_steps: int = RANK_STEPS_REPORT) -> dict:
    """Per-rank phase timelines of the last `max_steps` steps of a multi-rank run ({} for one rank).

    Each rank's bars start at its own first phase of the step: ranks' clocks are not synchronised
    (PhaseRecord.start counts from each process's own run start), so only durations and order within
    a rank are compared, which is what shows a straggler.
    Args:
        phases: PhaseRecords of every rank (runlog.Run.phases).
    """
    ranks = sorted({int(p.rank) for p in phases})
    if len(ranks) < 2:
        return {}
    by_step: dict[int, list] = {}
    for p in phases:
        by_step.setdefault(int(p.step), []).append(p)
    steps = sorted(by_step)[-max_steps:]
    names = [n for n in PHASES if any(p.name == n for s in steps for p in by_step[s])]
    names += sorted({p.name for s in steps for p in by_step[s]} - set(names))
    rows = []
    for s in steps:
        t0 = {}
        for p in by_step[s]:
            t0[p.rank] = min(t0.get(p.rank, p.start), p.start)
        rows += [[s, int(p.rank), names.index(p.name), round(p.start - t0[p.rank], 6), round(p.seconds, 6)]
                 for p in by_step[s]]
    return {"world": len(ranks), "ranks": ranks, "phases": names, "parents": dict(PHASE_PARENT),
            "steps": steps, "rows": rows, "straggler": _stragglers([p for s in steps for p in by_step[s]])}


def _stragglers(phases: list) -> dict:
    """Per-step straggler figures from the profiler, {} when it is unavailable."""
    try:
        from rlhf_kit.profiler.ranks import step_stragglers
    except ImportError:
        return {}
    return {str(s): {"rank": f.slow_rank, "ratio": round(f.ratio, 4), "share": round(f.share, 4), "phase": f.phase,
                     "busy": {str(r): round(v, 6) for r, v in f.busy.items()}}
            for s, f in step_stragglers(phases).items()}


def profile_files(rd: RunDir) -> dict[str, list[str]]:
    """Files under profile/, relative to the run directory, sorted by kind.

    Returns:
        {"flamegraphs": ["profile/x.svg"], "traces": ["profile/trace_0.json"], "other": [...]}
    """
    out: dict[str, list[str]] = {"flamegraphs": [], "traces": [], "other": []}
    if not rd.profile.is_dir():
        return out
    for p in sorted(rd.profile.rglob("*")):
        if not p.is_file() or p.is_symlink():
            continue
        rel = p.relative_to(rd.root).as_posix()
        name = p.name
        if name.endswith(".svg"):
            out["flamegraphs"].append(rel)
        elif name.endswith((".json", ".json.gz", ".pt.trace.json")) and "trace" in name:
            out["traces"].append(rel)
        else:
            out["other"].append(rel)
    return out


def run_view(run: Run, analyze: bool = True) -> dict:
    """Everything the page shows about one run.

    Args:
        run: a loaded run directory (runlog.load_run).
        analyze: run the stability rules offline when the run recorded no alerts.
    Returns:
        See the module docstring; "alerts_source" is "recorded", "offline" or "none".
    """
    alerts = merged(alert_dicts(run.alerts))
    source = "recorded" if alerts else "none"
    if not alerts and analyze and run.steps:
        alerts = offline_alerts(run)
        source = "offline" if alerts else "none"
    return {
        "name": run.name,
        "info": run.info.to_dict() if run.info else {},
        "steps": columns(run.steps),
        "alerts": alerts,
        "alerts_source": source,
        "memory": run.memory or {},
        "profile": profile_files(run.dir),
        "breakdown": breakdown(run),
        "ranks": rank_view(run.phases),
    }
