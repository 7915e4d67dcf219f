"""The stability monitor: runs the rules live as a Hook, and offline over any run directory.

Live, `StabilityMonitor.on_step_end` returns the alerts that are NEW this step; the HookBus hands
each to every hook's `on_alert`, so RunLogHook appends it to logs/alerts.jsonl and the console
prints it. Offline, `analyze_run(run)` replays train.jsonl through the same monitor.

How a rule that keeps firing is recorded (alerts.jsonl is append-only):
    * An EPISODE starts when a rule fires while not already active: one line, step = last_step = now.
    * While the condition keeps holding (or comes back within `rearm_steps` clear steps) the
      episode's `last_step` is updated in memory (`monitor.alerts`); nothing is written.
    * If the severity escalates (warning -> critical) one more line is written with the SAME `step`
      (the episode's first step), the new severity, evidence and the current `last_step`.
    * After `rearm_steps` clear steps the episode closes; firing again later starts a new episode.
  So lines with equal (rule, step) are one episode and the later line supersedes the earlier one:
  `merge_alerts` collapses them. The exact extent of every episode (final last_step) comes from
  `analyze_run`, which replays the whole log.

Example:
    bus = HookBus([RunLogHook(run_dir), StabilityMonitor()])        # live
    alerts = analyze_run(load_run("runs/run_20250101_120000"))      # offline, any framework

Multi-rank runs (the `rank_straggler` rule): attach the monitor on rank 0 only. It needs every
rank's phase records; it takes those passed to on_step_end (a runner may gather them) and, when
the run has world_size > 1, tails logs/phases.jsonl, where every rank appends its own (the path
comes from `phases_log`, else from RunInfo.config["run"]["output_dir"] / run_id). Each step
record is judged with the straggler figures of the newest step that ALL ranks have finished
(`straggler_step`, usually the step before: the other ranks may still be logging this one).
Offline, `analyze_run` attaches each step's own figures from the whole phases log.

Known limitations:
    Multi-rank runs: attach the monitor on rank 0 only (its records are rank 0's metrics). On resume
    the monitor starts empty, so its start-of-run baselines are those of the resumed segment, while
    `analyze_run` sees the whole log and may differ for the baseline rules.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

from rlhf_kit.events import SEVERITIES, Alert, PhaseRecord, RunInfo
from rlhf_kit.profiler.ranks import StepStraggler, step_straggler, step_stragglers
from rlhf_kit.runlog import JsonlTail, Run, load_run
from rlhf_kit.stability.rules import RULES, Check, evaluate
from rlhf_kit.stability.thresholds import Thresholds


def severity_rank(severity: str) -> int:
    """0 for info, 1 warning, 2 critical (unknown severities rank as info)."""
    return SEVERITIES.index(severity) if severity in SEVERITIES else 0


@dataclass
class _Episode:
    alert: Alert     # the monitor's own copy; last_step moves forward in place
    clear: int = 0   # consecutive steps the condition has not held


class StabilityMonitor:
    """A Hook that judges every step record with the stability rules.

    Args:
        thresholds: rule thresholds (defaults documented in thresholds.py and docs/stability.md).
        rules: the rule functions to run (default: all of rules.RULES).
        phases_log: multi-rank runs: the logs/phases.jsonl every rank appends to (see module doc).

    Attributes:
        alerts: one Alert per episode so far, first step order, `last_step` kept current.
    """

    def __init__(self, thresholds: Thresholds | None = None, rules: Sequence[Check] = RULES,
                 phases_log: str | os.PathLike | None = None):
        self.t = thresholds or Thresholds()
        self.rules = tuple(rules)
        self.records: list[dict] = []
        self.active: dict[str, _Episode] = {}
        self.alerts: list[Alert] = []
        self.phases_log = phases_log
        self._ranks = _RankBuffer(1, None)

    # ---- Hook methods ----------------------------------------------------------------
    def on_run_start(self, info: RunInfo) -> None:
        self.records, self.active, self.alerts = [], {}, []
        world = int(info.world_size or 1)
        path = self.phases_log or (_phases_log_of(info) if world > 1 else None)
        self._ranks = _RankBuffer(world, JsonlTail(path) if path else None)

    def on_step_end(self, record: dict, phases: list[PhaseRecord]) -> list[Alert]:
        # only rank 0 judges stragglers: another rank's monitor would re-read the whole phases log for nothing
        fig = None if record.get("rank", 0) else self._ranks.newest(phases)
        return self.observe(with_straggler(record, fig))

    # ---- the logic -------------------------------------------------------------------
    def _remember(self, record: dict) -> None:
        """Keep the run's first baseline_steps records and the last `history` ones (bounded memory)."""
        self.records.append(record)
        if len(self.records) > self.t.baseline_steps + self.t.history:
            del self.records[self.t.baseline_steps]

    def observe(self, record: dict) -> list[Alert]:
        """Judge one step record. Returns alerts to emit now: new episodes and escalations (copies)."""
        self._remember(record)
        emit: list[Alert] = []
        fired = evaluate(self.records, self.t, self.rules)
        for alert in fired:
            ep = self.active.get(alert.rule)
            if ep is None:
                self.active[alert.rule] = _Episode(alert)
                self.alerts.append(alert)
                emit.append(replace(alert, evidence=dict(alert.evidence)))
                continue
            ep.clear, ep.alert.last_step = 0, alert.step
            if severity_rank(alert.severity) > severity_rank(ep.alert.severity):
                ep.alert.severity, ep.alert.message = alert.severity, alert.message
                ep.alert.evidence = alert.evidence
                emit.append(replace(ep.alert, evidence=dict(alert.evidence)))
        held = {a.rule for a in fired}
        for rule in [r for r in self.active if r not in held]:
            self.active[rule].clear += 1
            if self.active[rule].clear >= self.t.rearm_steps:
                del self.active[rule]
        return emit


class _RankBuffer:
    """Every rank's phase seconds of the steps not judged yet: step -> rank -> phase -> seconds."""

    def __init__(self, world: int, tail: JsonlTail | None):
        self.world, self.tail = world, tail
        self.steps: dict[int, dict[int, dict[str, float]]] = {}
        self.judged = -1

    def newest(self, phases: Sequence[PhaseRecord]) -> StepStraggler | None:
        """Straggler figures of the newest step that every rank finished since the last call, or None."""
        new = list(phases) + [PhaseRecord.from_dict(d) for d in (self.tail.read_new() if self.tail else ())]
        for p in new:
            if p.step > self.judged:
                self.steps.setdefault(int(p.step), {}).setdefault(int(p.rank), {})[p.name] = float(p.seconds)
        world = max([self.world] + [len(r) for r in self.steps.values()])
        done = [s for s, ranks in self.steps.items() if len(ranks) >= world]
        if world < 2 or not done:
            return None
        self.judged = max(done)
        ranks = self.steps[self.judged]
        self.steps = {s: r for s, r in self.steps.items() if s > self.judged}  # bounded: a dead rank stalls nothing
        return step_straggler(self.judged, ranks)


def _phases_log_of(info: RunInfo) -> Path | None:
    """logs/phases.jsonl of a run from its RunInfo, when the config names the output directory."""
    out = (info.config.get("run") or {}).get("output_dir") if isinstance(info.config, dict) else None
    return Path(out) / info.run_id / "logs" / "phases.jsonl" if out else None


def with_straggler(record: dict, fig: StepStraggler | None) -> dict:
    """A copy of `record` with the `straggler_*` keys the rank_straggler rule reads (record if fig is None)."""
    if fig is None:
        return record
    return {**record, "straggler_step": fig.step, "straggler_rank": fig.slow_rank,
            "straggler_share": fig.share, "straggler_ratio": fig.ratio, "straggler_phase": fig.phase,
            "straggler_excess_seconds": fig.excess}


def merge_alerts(alerts: Sequence[Alert]) -> list[Alert]:
    """Collapse alerts.jsonl lines of one episode (same rule and first step): the later line wins,
    last_step and severity never go backwards. Order: first appearance."""
    merged: dict[tuple[str, int], Alert] = {}
    for a in alerts:
        key = (a.rule, a.step)
        old = merged.get(key)
        if old is None:
            merged[key] = replace(a)
            continue
        severity = a.severity if severity_rank(a.severity) >= severity_rank(old.severity) else old.severity
        merged[key] = replace(a, severity=severity, last_step=max(a.last_step, old.last_step))
    return list(merged.values())


def clean_steps(steps: Sequence[dict]) -> list[dict]:
    """Rank-0 step records in step order, one per step (a resumed run's re-logged steps: last wins)."""
    by_step: dict[int, dict] = {}
    for i, rec in enumerate(steps):
        if rec.get("rank", 0):
            continue
        step = rec.get("step")
        by_step[int(step) if isinstance(step, (int, float)) else i] = rec
    return [by_step[s] for s in sorted(by_step)]


def analyze_steps(steps: Sequence[dict], thresholds: Thresholds | None = None,
                  phases: Sequence[PhaseRecord] = ()) -> list[Alert]:
    """Replay step records through a fresh monitor. Returns one Alert per episode, final last_step.

    Args:
        phases: every rank's phase records; with two or more ranks each step is judged with its own
            straggler figures (rank_straggler).
    """
    monitor = StabilityMonitor(thresholds)
    figs = step_stragglers(list(phases)) if phases else {}
    for rec in clean_steps(steps):
        monitor.observe(with_straggler(rec, figs.get(rec.get("step"))))
    return monitor.alerts


def analyze_run(run: Run | str | os.PathLike, thresholds: Thresholds | None = None) -> list[Alert]:
    """Offline stability analysis of a run directory from any framework (torch-free).

    Args:
        run: a loaded `runlog.Run`, or the path of a run directory.
        thresholds: rule thresholds; default Thresholds().
    Returns:
        One Alert per episode, ordered by first step (ties: rule order).
    """
    if not isinstance(run, Run):
        run = load_run(run)
    return analyze_steps(run.steps, thresholds, run.phases)
