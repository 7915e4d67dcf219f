"""torch.profiler over chosen steps, with every phase labelled `rlhf/<phase>`, and its exports.

`TraceHook` drives torch.profiler's own wait/warmup/active schedule from the hooks: the
profiler starts at the first step and advances at every step end; each phase entry opens a
`record_function("rlhf/<phase>")` range that the matching phase end closes. When the active
window ends it writes into the run's profile/ directory:

    trace_<step>.json      Chrome trace: open in https://ui.perfetto.dev (or chrome://tracing)
    stacks_<step>.txt      folded stacks (frame;frame;op microseconds), self CPU time
    flame_<step>.svg       flame graph of those stacks (pyinferno), open in a browser
    speedscope_<step>.json the same stacks for https://www.speedscope.app

Example:
    hook = TraceHook(run_dir.profile, wait=2, warmup=1, active=1)   # traces step 4
    train(config, hooks=[hook]); print(hook.files)

Known limitations:
    - The folded stacks are built from the Chrome trace's nested host events (Python frames,
      `rlhf/` ranges, aten ops), not with `prof.export_stacks`: that needs the verbose
      experimental config, and in torch 2.13 it then fails (UnicodeDecodeError while parsing
      event names) as soon as a record_function range wraps a Hugging Face model.
    - with_stack=True makes the traced steps several times slower, so the profile CLI keeps
      them out of the time table.
    - On CUDA, the stacks hold host time only; kernel time is in the trace.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

PHASE_PREFIX = "rlhf/"


class TraceHook:
    """Runs torch.profiler on a window of steps and exports trace, stacks and flame graph.

    Args:
        out_dir: where files go (RunDir.profile), or a function RunInfo -> that path.
        wait, warmup, active: torch.profiler.schedule arguments, counted in steps from the first.
        cuda: also record CUDA kernels.
    Attributes:
        files: {"trace": path, "stacks": path, "flamegraph": path or None, "speedscope": path},
               filled when the active window ends; "flamegraph_error" says why one is missing.
    """

    def __init__(self, out_dir: Any, wait: int = 1, warmup: int = 1, active: int = 1, cuda: bool = False):
        self._out_dir = out_dir  # a path, or RunInfo -> path when the run directory is not known yet
        self.out_dir = Path(out_dir) if not callable(out_dir) else None
        self.wait, self.warmup, self.active = wait, warmup, active
        self.cuda = cuda
        self.files: dict[str, Any] = {}
        self._prof: Any = None
        self._done = False
        self._ranges: list[Any] = []
        self._step = 0

    @property
    def traced_steps(self) -> int:
        return self.wait + self.warmup + self.active

    def on_run_start(self, info: Any) -> None:
        if callable(self._out_dir):
            self.out_dir = Path(self._out_dir(info))

    def on_step_start(self, step: int) -> None:
        self._step = step
        if self._prof is None and not self._done:
            acts = [torch.profiler.ProfilerActivity.CPU]
            if self.cuda:
                acts.append(torch.profiler.ProfilerActivity.CUDA)
            self._prof = torch.profiler.profile(
                activities=acts,
                schedule=torch.profiler.schedule(wait=self.wait, warmup=self.warmup, active=self.active, repeat=1),
                on_trace_ready=self._export,
                with_stack=True,  # Python frames: what the folded stacks and the flame graph are made of
            )
            self._prof.start()

    def on_phase_start(self, name: str, step: int) -> None:
        if self._prof is not None:
            rf = torch.autograd.profiler.record_function(PHASE_PREFIX + name)
            rf.__enter__()
            self._ranges.append(rf)

    def on_phase_end(self, record: Any) -> None:
        if self._ranges:  # closes the range the matching on_phase_start opened (phases nest)
            self._ranges.pop().__exit__(None, None, None)

    def on_step_end(self, record: dict, phases: list) -> None:
        if self._prof is None:
            return
        self._prof.step()
        if self._done:
            self._stop()

    def on_run_end(self) -> None:
        self._stop()

    def _stop(self) -> None:
        if self._prof is not None:
            prof, self._prof = self._prof, None
            prof.stop()
            self._done = True

    # ---- exports ---------------------------------------------------------------------
    def _export(self, prof: Any) -> None:
        self._done = True
        self.out_dir.mkdir(parents=True, exist_ok=True)
        tag = f"step{self._step}"
        trace = self.out_dir / f"trace_{tag}.json"
        prof.export_chrome_trace(str(trace))
        stacks = self.out_dir / f"stacks_{tag}.txt"
        lines = fold_chrome_trace(json.loads(trace.read_text()))
        stacks.write_text("".join(line + "\n" for line in lines))
        speedscope = self.out_dir / f"speedscope_{tag}.json"
        speedscope.write_text(json.dumps(folded_to_speedscope(lines, f"rlhf-kit {tag}")))
        self.files = {"trace": str(trace), "stacks": str(stacks), "speedscope": str(speedscope), "flamegraph": None}
        try:
            svg = self.out_dir / f"flame_{tag}.svg"
            svg.write_text(flamegraph_svg(lines, f"rlhf-kit {tag} (self CPU time)"))
            self.files["flamegraph"] = str(svg)
        except (ImportError, ValueError, RuntimeError) as e:
            self.files["flamegraph_error"] = str(e)


HOST_CATEGORIES = ("python_function", "cpu_op", "user_annotation")


def fold_chrome_trace(trace: dict, categories: tuple[str, ...] = HOST_CATEGORIES) -> list[str]:
    """Folded stacks (`outer;inner;leaf self_microseconds`) from a Chrome trace's nested events.

    Events of one thread nest by time: an event that starts before its predecessor ends is its
    child. Each event's self time (its duration minus its children's) goes to its full stack.
    Args:
        trace: the parsed JSON of prof.export_chrome_trace.
        categories: event categories that take part ("cpu_op", "python_function", ...).
    Returns:
        One line per distinct stack, heaviest first; integer microseconds, zero-time stacks dropped.
    """
    by_thread: dict[tuple, list[dict]] = {}
    for e in trace.get("traceEvents", []):
        if e.get("ph") == "X" and e.get("cat") in categories and "dur" in e:
            by_thread.setdefault((e.get("pid"), e.get("tid")), []).append(e)
    # idle helper threads (tqdm's monitor, TensorBoard's writer) would fill the graph with waits:
    # keep the threads that ran a phase or a profiler step
    busy = [evs for evs in by_thread.values()
            if any(str(e["name"]).startswith((PHASE_PREFIX, "ProfilerStep")) for e in evs)]
    weights: dict[str, float] = {}
    for events in busy or by_thread.values():
        events.sort(key=lambda e: (float(e["ts"]), -float(e["dur"])))
        stack: list[list] = []  # [name, start, end, time covered by children]
        for e in events:
            ts, dur = float(e["ts"]), float(e["dur"])
            while stack and stack[-1][2] <= ts:
                _close(stack, weights)
            if stack:
                stack[-1][3] += dur
            stack.append([str(e["name"]).replace(";", ":").replace("\n", " "), ts, ts + dur, 0.0])
        while stack:
            _close(stack, weights)
    lines = [(w, k) for k, w in weights.items() if int(w) > 0]
    return [f"{k} {int(w)}" for w, k in sorted(lines, reverse=True)]


def _close(stack: list[list], weights: dict[str, float]) -> None:
    """Pop the innermost open event and credit its self time to its whole stack."""
    key = ";".join(frame[0] for frame in stack)
    _, start, end, children = stack.pop()
    weights[key] = weights.get(key, 0.0) + max(0.0, end - start - children)


def read_folded(path: str | Path) -> list[str]:
    """Non-empty `frames value` lines of a folded-stacks file, with integer values."""
    out = []
    for line in Path(path).read_text().splitlines():
        stack, _, value = line.rpartition(" ")
        if stack and value:
            try:
                out.append(f"{stack} {int(float(value))}")
            except ValueError:
                continue
    return out


def folded_to_speedscope(lines: list[str], name: str) -> dict:
    """Folded stacks as a speedscope "sampled" profile (one weighted sample per line).

    Returns:
        A dict following https://www.speedscope.app/file-format-schema.json.
    """
    frames: list[dict] = []
    index: dict[str, int] = {}
    samples, weights = [], []
    for line in lines:
        stack, _, value = line.rpartition(" ")
        ids = []
        for frame in stack.split(";"):
            if frame not in index:
                index[frame] = len(frames)
                frames.append({"name": frame})
            ids.append(index[frame])
        samples.append(ids)
        weights.append(int(value))
    return {
        "$schema": "https://www.speedscope.app/file-format-schema.json",
        "shared": {"frames": frames},
        "profiles": [{"type": "sampled", "name": name, "unit": "microseconds", "startValue": 0,
                      "endValue": sum(weights), "samples": samples, "weights": weights}],
        "name": name, "exporter": "rlhf-kit",
    }


def flamegraph_svg(lines: list[str], title: str) -> str:
    """Render folded stacks as an SVG flame graph with pyinferno (inferno's renderer).

    Raises:
        ImportError: pyinferno is not installed (`pip install pyinferno`).
        ValueError: there are no stacks to draw.
    """
    if not lines:
        raise ValueError("no stacks recorded (empty folded-stacks file)")
    from pyinferno import flamegraph_from_lines

    return flamegraph_from_lines(lines, title=title)
