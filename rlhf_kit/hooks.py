"""The only doors between a runner and the instruments: hooks, and a `phase()` context manager.

A runner (ours, or an adapter inside TRL/OpenRLHF) owns one `HookBus`:

    bus = HookBus([RunLogHook(run_dir), my_profiler_hook], device="cuda")
    bus.run_start(info)
    bus.setup({"policy": policy, "reference": ref}, optimizer)
    for step in ...:
        bus.begin_step(step)
        with bus.phase("rollout", work={"mode": "gen", "tokens": n}):
            ...
        metrics = bus.end_step(step, epoch, metrics)   # adds time/<phase>, emits records
    bus.run_end()

Timing is always on and cheap: `time.perf_counter` on CPU; on CUDA a pair of CUDA events per
phase entry, read once at `end_step` (one synchronisation per step instead of one per phase).
Hooks implement any subset of the `Hook` methods; missing ones are skipped.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Any, Iterator, Protocol, runtime_checkable

from rlhf_kit.events import PHASE_PARENT, TOP_LEVEL_PHASES, Alert, PhaseRecord, RunInfo, step_record


@runtime_checkable
class Hook(Protocol):
    """What an instrument may listen to. Every method is optional."""

    def on_run_start(self, info: RunInfo) -> None: ...
    def on_setup(self, modules: dict[str, Any], optimizer: Any) -> None:
        """Called once with the torch modules by role ("policy", "reference", "value",
        "reward") and the optimizer, so memory instruments can put bytes in categories."""
    def on_step_start(self, step: int) -> None: ...
    def on_phase_start(self, name: str, step: int) -> None: ...
    def on_phase_end(self, record: PhaseRecord) -> None:
        """Called live when a phase exits; `record.seconds` may still be 0 on CUDA.
        Memory instruments add their numbers to `record.memory` here."""
    def on_step_end(self, record: dict, phases: list[PhaseRecord]) -> list[Alert] | None:
        """The step's train.jsonl record and its phase records. A monitor may return alerts:
        the bus then passes each one to every hook's `on_alert`."""
    def on_alert(self, alert: Alert) -> None: ...
    def on_run_end(self) -> None: ...


class _CudaSpan:
    """Start/end CUDA events of one phase entry; elapsed time is read later, once per step."""

    def __init__(self, torch_cuda: Any):
        self.start = torch_cuda.Event(enable_timing=True)
        self.end = torch_cuda.Event(enable_timing=True)
        self.start.record()

    def stop(self) -> None:
        self.end.record()

    def seconds(self) -> float:
        return self.start.elapsed_time(self.end) / 1000.0  # needs both events complete


class HookBus:
    """Dispatches run events to hooks and times phases.

    Args:
        hooks: instruments to notify, in order.
        device: "cpu" or a CUDA device string; CUDA uses events instead of the host clock.
        rank: this process's rank, stamped on every phase record.
        timing: False turns phase timing off (for the overhead benchmark); records still flow.
    """

    def __init__(self, hooks: list[Any] | None = None, device: str = "cpu", rank: int = 0,
                 timing: bool = True):
        self.hooks: list[Any] = list(hooks or [])
        self.rank = rank
        self.timing = timing
        self._cuda = None
        if timing and str(device).startswith("cuda"):
            import torch  # only the CUDA path needs torch

            self._cuda = torch.cuda
        self._t0 = time.perf_counter()
        self._step = 0
        self._step_start = 0.0
        self._records: dict[str, PhaseRecord] = {}
        self._spans: list[tuple[PhaseRecord, Any]] = []
        self._step_span: Any = None
        self._hook_seconds = 0.0  # time inside phase hooks this step (host clock)

    # ---- hook dispatch -------------------------------------------------------------
    def add(self, hook: Any) -> None:
        self.hooks.append(hook)

    def _emit(self, method: str, *args: Any) -> None:
        for hook in self.hooks:
            fn = getattr(hook, method, None)
            if fn is not None:
                fn(*args)

    def run_start(self, info: RunInfo) -> None:
        self._t0 = time.perf_counter()
        self._emit("on_run_start", info)

    def setup(self, modules: dict[str, Any], optimizer: Any) -> None:
        self._emit("on_setup", modules, optimizer)

    def alert(self, alert: Alert) -> None:
        self._emit("on_alert", alert)

    def run_end(self) -> None:
        self._emit("on_run_end")

    # ---- steps and phases ----------------------------------------------------------
    def begin_step(self, step: int) -> None:
        """Start timing iteration `step`; phases entered until `end_step` belong to it."""
        self._step = step
        self._records = {}
        self._spans = []
        self._emit("on_step_start", step)  # before the clock starts: an instrument's own work (a
        self._step_start = time.perf_counter()  # profiler's schedule step) is not the step's
        self._hook_seconds = 0.0
        self._step_span = _CudaSpan(self._cuda) if self._cuda else None

    @contextmanager
    def phase(self, name: str, work: dict | None = None) -> Iterator[PhaseRecord]:
        """Time one entry of phase `name` within the current step.

        Args:
            name: a phase from events.PHASES (or a framework-specific name).
            work: optional FLOP description, see PhaseRecord.work; repeated entries add up.
        Yields:
            The step's PhaseRecord for this name (aggregated over entries).
        """
        rec = self._records.get(name)
        if rec is None:
            rec = PhaseRecord(name=name, step=self._step, rank=self.rank,
                              start=time.perf_counter() - self._t0, parent=PHASE_PARENT.get(name, ""))
            self._records[name] = rec
        if work:
            for key, value in work.items():
                rec.work[key] = rec.work.get(key, 0) + value if isinstance(value, (int, float)) else value
        self._timed_emit("on_phase_start", name, self._step)
        span = _CudaSpan(self._cuda) if self._cuda else None
        hooks_before = self._hook_seconds
        t = time.perf_counter()
        try:
            yield rec
        finally:
            rec.count += 1
            if span is not None:
                span.stop()
                self._spans.append((rec, span))
            elif self.timing:  # without the instruments' own time inside (nested phases' hooks)
                rec.seconds += time.perf_counter() - t - (self._hook_seconds - hooks_before)
            self._timed_emit("on_phase_end", rec)

    def _timed_emit(self, method: str, *args: Any) -> None:
        """Dispatch a phase event, adding the time the hooks take to `_hook_seconds`: instrument work
        (memory counters, trace labels) is reported as `instrument_seconds`, not as the step's."""
        if not self.timing:  # the timing-off baseline of the overhead benchmark reads no clock
            self._emit(method, *args)
            return
        t = time.perf_counter()
        self._emit(method, *args)
        self._hook_seconds += time.perf_counter() - t

    def end_step(self, step: int, epoch: int, metrics: dict[str, float]) -> dict:
        """Close the step: resolve timings, add `time/<phase>` and `step_seconds`, notify hooks.

        Returns:
            The train.jsonl record (a new dict; `metrics` is not modified).
        """
        step_seconds = time.perf_counter() - self._step_start - self._hook_seconds
        if self._cuda is not None:
            self._step_span.stop()
            self._step_span.end.synchronize()  # the one CPU-GPU sync per step
            for rec, span in self._spans:
                rec.seconds += span.seconds()
            step_seconds = self._step_span.seconds()
        phases = list(self._records.values())
        timed = {f"time/{r.name}": r.seconds for r in phases} if self.timing else {}
        if self.timing:
            timed["step_seconds"] = step_seconds
            timed.update(throughput(phases, step_seconds))
            if self._hook_seconds > 0.0005:  # only when an instrument did measurable work
                timed["instrument_seconds"] = self._hook_seconds
        record = step_record(step, epoch, {**metrics, **timed}, rank=self.rank)
        self.emit_step(record, phases)
        return record

    def emit_step(self, record: dict, phases: list[PhaseRecord]) -> list[Alert]:
        """Hand a finished step to every hook, then every alert the hooks returned to every hook.
        `end_step` calls it; so do writers of steps measured elsewhere (offline imports)."""
        alerts: list[Alert] = []
        for hook in self.hooks:
            fn = getattr(hook, "on_step_end", None)
            if fn is not None:
                alerts.extend(fn(record, phases) or ())
        for alert in alerts:
            self.alert(alert)
        return alerts


def throughput(phases: list[PhaseRecord], step_seconds: float) -> dict[str, float]:
    """Generated tokens per second of the step and of the generation phases alone."""
    gen = [r for r in phases if r.work.get("mode") == "gen"]
    tokens = sum(r.work.get("tokens", 0) for r in gen)
    gen_seconds = sum(r.seconds for r in gen)
    if not tokens or step_seconds <= 0:
        return {}
    out = {"tokens_per_second": tokens / step_seconds}
    if gen_seconds > 0:
        out["rollout_tokens_per_second"] = tokens / gen_seconds
    return out


def other_seconds(record: dict) -> float:
    """Step time not covered by any top-level phase (the `other` row of the profiler table)."""
    covered = sum(record.get(f"time/{p}") or 0.0 for p in TOP_LEVEL_PHASES)
    return max(0.0, (record.get("step_seconds") or 0.0) - covered)
