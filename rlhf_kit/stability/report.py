"""The kit's text report of a run: metrics summary, alerts with causes, and the phase breakdown.

Standard library only (demo.py prints it with no dependencies installed). Functions return data
(`summarize_metrics`) or a string (`text_report`); printing is left to the caller.

Example:
    from rlhf_kit.runlog import load_run
    print(text_report(load_run("runs/run_20250101_120000"), explain=True))

Known limitations:
    The summary shows first/last/min/max only; curves live in the HTML report (`rlhf-kit report`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from rlhf_kit.events import METRICS, Alert
from rlhf_kit.runlog import Run
from rlhf_kit.stability.monitor import analyze_run, clean_steps, merge_alerts, severity_rank
from rlhf_kit.stability.rules import series
from rlhf_kit.stability.thresholds import Thresholds

# Time per phase has its own table (phase breakdown); the summary would repeat it.
_SKIP_GROUPS = ("time",)


@dataclass(frozen=True)
class MetricSummary:
    """One metric over a run: first, last, min and max of its finite values, with its meaning."""

    name: str
    group: str
    unit: str
    first: float
    last: float
    min: float
    max: float
    count: int
    meaning: str
    healthy: str


def summarize_metrics(steps: Sequence[dict]) -> list[MetricSummary]:
    """Every METRICS entry the run logged (in table order), summarised. Keys outside METRICS are left out."""
    steps = clean_steps(steps)
    out = []
    for m in METRICS:
        if m.group in _SKIP_GROUPS:
            continue
        values = series(steps, m.name)
        if values:
            out.append(MetricSummary(m.name, m.group, m.unit, values[0], values[-1], min(values),
                                     max(values), len(values), m.meaning, m.healthy))
    return out


def _fmt(x: float) -> str:
    return f"{x:.4g}" if x == x else "nan"


def format_metrics(rows: Sequence[MetricSummary], explain: bool = False) -> str:
    """The summary as an aligned table; `explain` adds each metric's meaning and healthy range."""
    width = max((len(r.name) for r in rows), default=10)
    lines = [f"  {'metric':<{width}}  {'first':>10}  {'last':>10}  {'min':>10}  {'max':>10}  unit"]
    group = None
    for r in rows:
        if r.group != group:
            group = r.group
            lines.append(f"  [{group}]")
        lines.append(f"  {r.name:<{width}}  {_fmt(r.first):>10}  {_fmt(r.last):>10}  {_fmt(r.min):>10}  "
                     f"{_fmt(r.max):>10}  {r.unit}")
        if explain:
            lines.append(f"  {'':<{width}}    {r.meaning}" + (f" Healthy: {r.healthy}." if r.healthy else ""))
    return "\n".join(lines)


def format_alerts(alerts: Sequence[Alert]) -> str:
    """Alerts, most severe first, each with its evidence, likely cause and what to try."""
    if not alerts:
        return "  no alerts: every rule stayed quiet"
    lines = []
    for a in sorted(alerts, key=lambda a: (-severity_rank(a.severity), a.step)):
        span = f"step {a.step}" if a.last_step <= a.step else f"steps {a.step}-{a.last_step}"
        evidence = ", ".join(f"{k}={_fmt(v) if isinstance(v, float) else v}" for k, v in a.evidence.items()
                             if v not in (None, ""))
        lines += [f"  [{a.severity.upper()}] {a.rule} at {span}: {a.message}",
                  f"      evidence: {evidence}",
                  f"      likely cause: {a.cause}",
                  f"      what to try: {a.what_to_try}"]
    return "\n".join(lines)


def format_phases(run: Run) -> str:
    """The profiler's phase table for the run (rlhf_kit.profiler.breakdown), or why there is none."""
    if not run.phases:
        return "  no phase records (logs/phases.jsonl is empty)"
    try:
        from rlhf_kit.profiler.breakdown import bottleneck, format_table, phase_breakdown
    except ImportError as e:  # the profiler package is optional for the read side
        return f"  phase breakdown unavailable: {e}"
    rows = phase_breakdown(run)
    lines = ["  " + line for line in format_table(rows).splitlines()]
    phase, advice = bottleneck(rows, run.info)
    lines += [f"  bottleneck: {advice}"] if phase else []
    from rlhf_kit.profiler.ranks import format_ranks, rank_breakdown, straggler

    per_rank = rank_breakdown(run)
    if per_rank:  # multi-rank run: where each rank's time goes, and who the others wait for
        lines += ["", "  Per rank (ms per step)"] + ["  " + l for l in format_ranks(per_rank, straggler(run)).splitlines()]
    return "\n".join(lines)


def run_alerts(run: Run, thresholds: Thresholds | None = None) -> list[Alert]:
    """The alerts to show for a run: those it recorded (episodes merged), else an offline analysis."""
    return merge_alerts(run.alerts) if run.alerts else analyze_run(run, thresholds)


def text_report(run: Run, explain: bool = False, alerts: Sequence[Alert] | None = None,
                thresholds: Thresholds | None = None) -> str:
    """The whole text report of one run.

    Args:
        run: a loaded run directory (runlog.load_run).
        explain: add each metric's meaning and healthy range under its row (the demo's teaching mode).
        alerts: alerts to show; default `run_alerts(run, thresholds)`.
        thresholds: used only when the alerts are computed here.
    Returns:
        Multi-line text, no trailing newline.
    """
    steps = clean_steps(run.steps)
    info = run.info
    head = f"Run {run.name}"
    if info is not None:
        head += f"  (framework {info.framework}, device {info.device}"
        if info.model.get("n_params"):
            head += f", {info.model['n_params']:,} parameters"
        head += ")"
    alerts = run_alerts(run, thresholds) if alerts is None else list(alerts)
    counts = {s: sum(a.severity == s for a in alerts) for s in ("critical", "warning", "info")}
    return "\n".join([
        head,
        f"{len(steps)} steps logged; alerts: " + ", ".join(f"{n} {s}" for s, n in counts.items()),
        "",
        "Metrics",
        format_metrics(summarize_metrics(steps), explain=explain),
        "",
        "Alerts",
        format_alerts(alerts),
        "",
        "Phase breakdown",
        format_phases(run),
    ])
