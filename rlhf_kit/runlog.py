"""The run directory: its one layout, a crash-safe JSONL writer and a tolerant reader.

    runs/<run_id>/
      run.json              RunInfo
      logs/train.jsonl      one record per PPO iteration
      logs/phases.jsonl     one PhaseRecord per phase per step per rank
      logs/alerts.jsonl     Alerts
      memory.json           predicted and measured memory (memory optimizer)
      tb/                   TensorBoard scalars, tagged group/name from events.METRICS
      profile/              traces, folded stacks, flame graphs
      checkpoints/          step_<n>.pt and latest.pt

Records are appended and flushed one by one, so a run killed with SIGKILL leaves every
finished step readable; the reader skips a torn last line with a warning.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

from rlhf_kit.events import METRIC_BY_NAME, Alert, PhaseRecord, RunInfo


class TornLineWarning(UserWarning):
    """A JSONL line could not be parsed (usually the last one, cut by a crash)."""


@dataclass(frozen=True)
class RunDir:
    """Paths of one run directory. Creating the object touches nothing on disk."""

    root: Path

    @property
    def run_json(self) -> Path: return self.root / "run.json"
    @property
    def logs(self) -> Path: return self.root / "logs"
    @property
    def train_log(self) -> Path: return self.logs / "train.jsonl"
    @property
    def phases_log(self) -> Path: return self.logs / "phases.jsonl"
    @property
    def alerts_log(self) -> Path: return self.logs / "alerts.jsonl"
    @property
    def memory_json(self) -> Path: return self.root / "memory.json"
    @property
    def tb(self) -> Path: return self.root / "tb"
    @property
    def profile(self) -> Path: return self.root / "profile"
    @property
    def checkpoints(self) -> Path: return self.root / "checkpoints"

    def create(self) -> "RunDir":
        for d in (self.logs, self.tb, self.checkpoints):
            d.mkdir(parents=True, exist_ok=True)
        return self

    def exists(self) -> bool:
        return self.run_json.exists() or self.train_log.exists()


def cache_dir() -> Path:
    """Where the kit keeps what it builds or measures once (models, calibrations):
    $RLHF_KIT_CACHE, else $XDG_CACHE_HOME/rlhf_kit (~/.cache/rlhf_kit)."""
    root = os.environ.get("RLHF_KIT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "rlhf_kit")
    return Path(root)


def new_run_id(prefix: str = "run") -> str:
    """`run_YYYYmmdd_HHMMSS`, the seed's naming."""
    return f"{prefix}_{datetime.now():%Y%m%d_%H%M%S}"


def unique_run_dir(output_dir: str | os.PathLike, run_id: str | None = None) -> RunDir:
    """A run directory under `output_dir` that does not exist yet (suffix _2, _3, ... if taken)."""
    base = Path(output_dir) / (run_id or new_run_id())
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}_{n}")
    return RunDir(path)


def find_runs(runs_dir: str | os.PathLike) -> list[RunDir]:
    """Run directories directly under `runs_dir` (or `runs_dir` itself if it is one), newest first."""
    root = Path(runs_dir)
    if RunDir(root).exists():
        return [RunDir(root)]
    if not root.is_dir():
        return []
    runs = [RunDir(p) for p in root.iterdir() if p.is_dir() and RunDir(p).exists()]
    return sorted(runs, key=lambda r: r.root.stat().st_mtime, reverse=True)


# ---- JSON ------------------------------------------------------------------------------
def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary file and rename it into place: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


class JsonlWriter:
    """Appends one JSON object per line, flushed at once (survives SIGKILL of the writer)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        self._f.write(json.dumps(record, allow_nan=False, default=str) + "\n")
        self._f.flush()  # to the OS: a killed process loses nothing already written

    def close(self) -> None:
        self._f.close()


def parse_jsonl_lines(lines: list[str], source: str) -> list[dict]:
    """Parse JSONL lines, skipping (with a TornLineWarning) any that do not parse."""
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            where = "last line" if i == len(lines) - 1 else f"line {i + 1}"
            warnings.warn(f"{source}: skipped unreadable {where} (torn write?)", TornLineWarning, stacklevel=2)
    return out


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """All records of a JSONL file ([] if it does not exist); torn lines are skipped."""
    p = Path(path)
    if not p.exists():
        return []
    with open(p, encoding="utf-8", errors="replace") as f:
        return parse_jsonl_lines(f.read().split("\n"), str(p))


class JsonlTail:
    """Incremental reader for a growing JSONL file (live dashboard, live monitors).

    Only complete lines are consumed: a line still being written is left for the next call.
    A file that disappears or shrinks (run deleted or rewritten) resets the reader.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.offset = 0

    def read_new(self) -> list[dict]:
        try:
            size = self.path.stat().st_size
            if size < self.offset:
                self.offset = 0
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except (FileNotFoundError, NotADirectoryError):
            self.offset = 0
            return []
        end = chunk.rfind(b"\n")
        if end < 0:
            return []
        self.offset += end + 1
        return parse_jsonl_lines(chunk[:end].decode("utf-8", "replace").split("\n"), str(self.path))


# ---- reading a whole run ---------------------------------------------------------------
@dataclass
class Run:
    """Everything in one run directory, parsed. Missing files give empty lists / None."""

    dir: RunDir
    info: RunInfo | None
    steps: list[dict]
    phases: list[PhaseRecord]
    alerts: list[Alert]
    memory: dict | None

    @property
    def name(self) -> str:
        return self.dir.root.name


def load_run(path: str | os.PathLike) -> Run:
    """Read a run directory written by any framework's runner or adapter."""
    rd = RunDir(Path(path))
    info = RunInfo.from_dict(read_json(rd.run_json)) if rd.run_json.exists() else None
    memory = read_json(rd.memory_json) if rd.memory_json.exists() else None
    return Run(
        dir=rd,
        info=info,
        steps=read_jsonl(rd.train_log),
        phases=[PhaseRecord.from_dict(d) for d in read_jsonl(rd.phases_log)],
        alerts=[Alert.from_dict(d) for d in read_jsonl(rd.alerts_log)],
        memory=memory,
    )


def iter_metric(steps: list[dict], key: str) -> Iterator[tuple[int, float]]:
    """(step, value) pairs of one metric, skipping records without a finite value."""
    for rec in steps:
        v = rec.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            yield rec.get("step", 0), float(v)


# ---- writing hooks ---------------------------------------------------------------------
class RunLogHook:
    """Writes run.json, train.jsonl, phases.jsonl and alerts.jsonl as events arrive.

    Args:
        run_dir: where to write; created if missing. Existing logs are appended to (resume).
        write_steps: False on ranks other than 0, which write only their phase records.
    """

    def __init__(self, run_dir: RunDir, write_steps: bool = True):
        self.run_dir = run_dir.create()
        self.write_steps = write_steps
        self.train = JsonlWriter(run_dir.train_log) if write_steps else None
        self.phases = JsonlWriter(run_dir.phases_log)
        self.alerts = JsonlWriter(run_dir.alerts_log) if write_steps else None

    def on_run_start(self, info: RunInfo) -> None:
        if self.write_steps:
            write_json_atomic(self.run_dir.run_json, info.to_dict())

    def on_step_end(self, record: dict, phases: list[PhaseRecord]) -> None:
        for p in phases:
            self.phases.write(p.to_dict())
        if self.train is not None:
            self.train.write(record)

    def on_alert(self, alert: Alert) -> None:
        if self.alerts is not None:
            self.alerts.write(alert.to_dict())

    def on_run_end(self) -> None:
        for w in (self.train, self.phases, self.alerts):
            if w is not None:
                w.close()


class TensorBoardHook:
    """Writes every numeric metric of each step as a TensorBoard scalar tagged `group/name`.

    Keys outside events.METRICS (framework extras) go under `other/`.
    """

    def __init__(self, log_dir: Path, purge_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter  # write side only; readers stay torch-free

        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step, flush_secs=5)

    def on_step_end(self, record: dict, phases: list[PhaseRecord]) -> None:
        step = record.get("step", 0)
        for key, value in record.items():
            if key in ("step", "epoch", "rank", "timestamp") or not isinstance(value, (int, float)):
                continue
            m = METRIC_BY_NAME.get(key)
            self.writer.add_scalar(m.tag if m else f"other/{key}", value, step)

    def on_run_end(self) -> None:
        self.writer.close()
