"""What every adapter shares: key mapping, phases from per-phase times, and the run writer.

An adapter turns a framework's metric dict into a kit record in three moves:

    metrics = map_metrics(raw, KEY_MAP)                 # their names -> ours, extras kept
    phases = phases_from_times(metrics, step)           # time/<phase> -> PhaseRecords
    writer.write_step(step, epoch, metrics, phases)     # train.jsonl, phases.jsonl, alerts.jsonl

Torch-free: the offline importers (`rlhf-kit import ...`) run on a laptop.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Iterable

from rlhf_kit.events import METRIC_BY_NAME, PHASE_PARENT, PhaseRecord, RunInfo, step_record
from rlhf_kit.hooks import HookBus
from rlhf_kit.runlog import RunDir, RunLogHook

# Per-phase times of several framework keys add up (veRL's update_actor + update_critic = update);
# every other target keeps the first framework key found, in KEY_MAP order.
_SUMMED_PREFIX = "time/"


def check_key_map(key_map: dict[str, str]) -> None:
    """Raise ValueError if a KEY_MAP target is not a declared metric (the schema is the contract)."""
    missing = sorted({t for t in key_map.values() if t not in METRIC_BY_NAME})
    if missing:
        raise ValueError(f"KEY_MAP targets not declared in events.METRICS: {', '.join(missing)}")


def as_number(value: Any) -> float | None:
    """A plain float from ints, floats, numpy/torch scalars; None for anything else."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    item = getattr(value, "item", None)  # numpy and 0-d torch scalars
    if callable(item):
        try:
            out = item()
        except (ValueError, RuntimeError):  # not a scalar
            return None
        return float(out) if isinstance(out, (int, float)) and not isinstance(out, bool) else None
    return None


def match_key(raw_key: str, framework_key: str, by_suffix: bool) -> bool:
    """True if `raw_key` is `framework_key`, or ends in `/framework_key` when matching by suffix."""
    return raw_key == framework_key or (by_suffix and raw_key.endswith("/" + framework_key))


def map_metrics(raw: dict[str, Any], key_map: dict[str, str], by_suffix: bool = False,
                drop: Iterable[str] = ()) -> dict[str, float]:
    """Rename a framework's metrics to ours.

    Args:
        raw: the framework's flat metric dict for one step.
        key_map: framework key -> our metric name (events.METRICS).
        by_suffix: match framework keys as suffixes after a "/" (veRL's prefixed keys).
        drop: raw keys to leave out entirely (bookkeeping such as "epoch" or "step").
    Returns:
        Our names for mapped keys (time/* summed over several sources, others first found
        wins), plus every other numeric key under its own name (unmapped keys, and sources
        that lost to an earlier one). Non-numeric values are
        dropped; non-finite ones are kept (step_record turns them into null).
    """
    out: dict[str, float] = {}
    used: set[str] = set()
    for fw_key, ours in key_map.items():
        for raw_key, value in raw.items():
            if raw_key in used or not match_key(raw_key, fw_key, by_suffix):
                continue
            v = as_number(value)
            if v is None:
                continue
            if ours.startswith(_SUMMED_PREFIX) and ours in out:
                out[ours] += v
            elif ours not in out:
                out[ours] = v
            else:
                continue  # a later source of a taken target stays under its own name below
            used.add(raw_key)
    skip = set(drop)
    for raw_key, value in raw.items():
        if raw_key in used or raw_key in skip:
            continue
        v = as_number(value)
        if v is not None and raw_key not in out:
            out[raw_key] = v
    return out


def phases_from_times(metrics: dict[str, float], step: int, rank: int = 0) -> list[PhaseRecord]:
    """One PhaseRecord per declared `time/<phase>` key with a finite value (count 1: the
    framework reports one total per step, not its entries)."""
    phases = []
    for key, value in metrics.items():
        if not key.startswith("time/") or key not in METRIC_BY_NAME:
            continue
        if not isinstance(value, float) or not math.isfinite(value):
            continue
        name = key[len("time/"):]
        phases.append(PhaseRecord(name=name, step=step, rank=rank, seconds=value, count=1,
                                  parent=PHASE_PARENT.get(name, "")))
    return phases


def stability_monitor() -> Any | None:
    """The kit's StabilityMonitor when that instrument is installed, else None.

    Adapters attach it so TRL/OpenRLHF/veRL runs get the same alerts as ours.
    """
    try:
        from rlhf_kit.stability import StabilityMonitor
    except ImportError:
        return None
    try:
        return StabilityMonitor()
    except Exception as e:  # a monitor that cannot start must not stop the import
        warnings.warn(f"stability monitor not attached: {e}", RuntimeWarning, stacklevel=2)
        return None


class RunWriter:
    """Writes already-measured steps into a run directory, the way HookBus.end_step does.

    Used where the framework measured the phase times itself (offline imports): no timing
    happens here, only records and alerts.

    Args:
        run_dir: target run directory (created).
        info: its RunInfo (framework set by the caller).
        monitors: extra hooks whose on_step_end may return alerts; None attaches the
            stability monitor when it is installed.
    """

    def __init__(self, run_dir: RunDir, info: RunInfo, monitors: list[Any] | None = None):
        self.log = RunLogHook(run_dir)
        if monitors is None:
            monitor = stability_monitor()
            monitors = [monitor] if monitor is not None else []
        self.hooks: list[Any] = [self.log, *monitors]
        self.bus = HookBus(self.hooks, timing=False)
        self.alerts = 0
        self.bus.run_start(info)

    def write_step(self, step: int, epoch: int, metrics: dict[str, float],
                   phases: list[PhaseRecord], timestamp: str | None = None) -> dict:
        """Emit one step: its record and phases to every hook, then any alerts.

        Args:
            timestamp: when the framework logged the step (ISO-8601); default now.
        Returns:
            The train.jsonl record.
        """
        record = step_record(step, epoch, metrics)
        if timestamp:
            record["timestamp"] = timestamp
        self.alerts += len(self.bus.emit_step(record, phases))
        return record

    def close(self) -> None:
        self.bus.run_end()
