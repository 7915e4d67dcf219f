"""`rlhf-kit dashboard [RUNS_DIR]`: a live local web page over a directory of runs.

Standard library only (http.server). The page polls `/api/run/NAME?since=N`, which answers
with the steps after the N-th only: each run's logs are read incrementally (JsonlTail), so an
update costs in proportion to what was appended, not to the run's length.

Example:
    serve("runs", host="127.0.0.1", port=8050)      # then open http://127.0.0.1:8050/

Known limitations:
    - Runs without logs/alerts.jsonl are judged live by a StabilityMonitor fed each new step
      once; a resumed run that re-logs steps is judged in log order (analyze_run dedupes).
    - Phase breakdown tables (profiler) are shown in the report, not on the live page.
    - No authentication: it binds 127.0.0.1 unless --host says otherwise; keep it there.
"""

from __future__ import annotations

import json
import threading
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from rlhf_kit.dashboard.data import (RANK_STEPS_LIVE, alert_dicts, columns, finite, merged, profile_files,
                                     rank_view, schema)
from rlhf_kit.dashboard.html import page, plotly_js, static_text
from rlhf_kit.events import PhaseRecord
from rlhf_kit.runlog import JsonlTail, RunDir, find_runs, read_json


def new_monitor():
    """The stability rules as a live monitor, or None when the stability package is absent."""
    try:
        from rlhf_kit.stability import StabilityMonitor
    except ImportError:
        return None
    return StabilityMonitor()


class RunCache:
    """What the server has read of one run so far; grows as the logs grow.

    A log that shrinks or disappears (run deleted, directory rewritten) starts a new
    generation: the page then drops what it has and takes the run afresh.
    """

    def __init__(self, rd: RunDir):
        self.rd = rd
        self.lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self.gen = uuid.uuid4().hex[:8]
        self.train, self.alerts_tail = JsonlTail(self.rd.train_log), JsonlTail(self.rd.alerts_log)
        self.phases_tail = JsonlTail(self.rd.phases_log)
        self.phases: list[PhaseRecord] = []  # every rank's, for the per-rank view (last steps only)
        self.steps: list[dict] = []
        self.alerts: list[dict] = []
        self.monitor = new_monitor()  # judges each new step once: offline alerts stay incremental

    def _shrunk(self, tail: JsonlTail) -> bool:
        try:
            return tail.path.stat().st_size < tail.offset
        except OSError:
            return tail.offset > 0

    def refresh(self) -> None:
        """Read what was appended since the last call (only complete lines)."""
        if self._shrunk(self.train) or self._shrunk(self.alerts_tail) or self._shrunk(self.phases_tail):
            self._reset()
        self._read_phases()
        new = self.train.read_new()
        self.steps.extend(new)
        self.alerts.extend(self.alerts_tail.read_new())
        if self.monitor is not None and not self.alerts:  # recorded alerts win; skip the work
            for rec in new:
                if not rec.get("rank", 0):  # the rules judge rank 0's metrics
                    self.monitor.observe(rec)

    def _read_phases(self) -> None:
        """Append new phase records, keeping only the steps the live per-rank view shows."""
        self.phases.extend(PhaseRecord.from_dict(d) for d in self.phases_tail.read_new())
        steps = sorted({p.step for p in self.phases})
        if len(steps) > 2 * RANK_STEPS_LIVE:  # trim in batches, not on every poll
            keep = steps[-RANK_STEPS_LIVE]
            self.phases = [p for p in self.phases if p.step >= keep]

    def _json(self, path: Path) -> dict:
        try:
            return read_json(path)
        except (OSError, ValueError):  # missing, or being replaced right now
            return {}

    def update(self, since: int, gen: str) -> dict:
        """The page's update: steps after the `since`-th, and the run's small parts whole."""
        with self.lock:
            self.refresh()
            reset = gen != self.gen
            new = self.steps if reset else self.steps[since:]
            alerts, source = merged(self.alerts), "recorded" if self.alerts else "none"
            if not alerts and self.monitor is not None and self.monitor.alerts:
                alerts, source = alert_dicts(self.monitor.alerts), "offline"
            info = self._json(self.rd.run_json)
            profile = profile_files(self.rd)
            name = self.rd.root.name
            profile["href"] = {rel: f"/files/{name}/{rel}" for kind in ("flamegraphs", "traces", "other")
                               for rel in profile[kind]}
            return {"name": name, "gen": self.gen, "reset": reset, "exists": True, "info": info,
                    "steps": columns(new), "alerts": alerts, "alerts_source": source,
                    "memory": self._json(self.rd.memory_json), "profile": profile, "breakdown": {"rows": [], "bottleneck": ""},
                    "ranks": rank_view(self.phases, RANK_STEPS_LIVE)}


class Dashboard:
    """The server's state: the runs directory and one RunCache per run shown."""

    def __init__(self, runs_dir: Path):
        self.root = Path(runs_dir).resolve()
        self.caches: dict[str, RunCache] = {}
        self.lock = threading.Lock()
        self.page = page(f"RLHF dashboard: {self.root}", schema(), None, live=True).encode()

    def runs(self) -> dict[str, RunDir]:
        return {rd.root.name: rd for rd in find_runs(self.root)}

    def run_list(self) -> list[dict]:
        out = []
        for name, rd in self.runs().items():
            info = {}
            try:
                info = read_json(rd.run_json) if rd.run_json.exists() else {}
            except (OSError, ValueError):
                pass
            with self.lock:
                cache = self.caches.get(name)
            steps = len(cache.steps) if cache else None
            out.append({"name": name, "framework": info.get("framework", "?"), "created": info.get("created", ""),
                        "steps": steps if steps is not None else "?"})
        return out

    def cache(self, name: str) -> RunCache | None:
        rd = self.runs().get(name)
        if rd is None:
            return None
        with self.lock:
            cache = self.caches.get(name)
            if cache is None or cache.rd.root != rd.root:
                cache = self.caches[name] = RunCache(rd)
            return cache

    def safe_file(self, rel: str) -> Path | None:
        """A regular file inside the runs directory, or None (`..`, absolute, symlink out)."""
        if not rel or rel.startswith(("/", "\\")) or "\\" in rel or "\x00" in rel:
            return None
        parts = rel.split("/")
        if any(p in ("..", ".") for p in parts) or ":" in parts[0]:
            return None
        path = (self.root / rel)
        if self.root.name == parts[0] and RunDir(self.root).exists():  # RUNS_DIR is itself a run
            path = self.root / "/".join(parts[1:])
        try:
            real = path.resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        if not real.is_relative_to(self.root) or not real.is_file():
            return None
        return real


_TYPES = {".svg": "image/svg+xml", ".json": "application/json", ".html": "text/html; charset=utf-8",
          ".txt": "text/plain; charset=utf-8", ".gz": "application/gzip", ".folded": "text/plain; charset=utf-8"}


class Handler(BaseHTTPRequestHandler):
    """GET only. Routes: /, /static/*.js, /api/runs, /api/run/NAME, /files/NAME/REL."""

    dashboard: Dashboard  # set on the subclass made by make_server
    server_version = "rlhf-kit-dashboard"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 -- keep the console quiet
        pass

    def _send(self, body: bytes, ctype: str, status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, data: object, status: int = 200) -> None:
        try:
            text = json.dumps(data, allow_nan=False, separators=(",", ":"), default=str)
        except ValueError:  # NaN/Inf written by some other tool: send null, the browser's JSON has no NaN
            text = json.dumps(finite(data), allow_nan=False, separators=(",", ":"), default=str)
        self._send(text.encode(), "application/json", status)

    def _not_found(self) -> None:
        self._json({"error": "not found"}, HTTPStatus.NOT_FOUND)

    def do_GET(self) -> None:  # noqa: N802 -- http.server's name
        url = urlsplit(self.path)
        path, query = url.path, parse_qs(url.query)
        try:
            if path in ("/", "/index.html"):
                self._send(self.dashboard.page, "text/html; charset=utf-8")
            elif path == "/static/plotly.min.js":
                self._send(plotly_js().encode(), "application/javascript")
            elif path in ("/static/view.js", "/static/live.js"):
                self._send(static_text(path.rsplit("/", 1)[1]).encode(), "application/javascript")
            elif path == "/api/runs":
                self._json(self.dashboard.run_list())
            elif path.startswith("/api/run/"):
                self._api_run(unquote(path[len("/api/run/"):]), query)
            elif path.startswith("/files/"):
                real = self.dashboard.safe_file(unquote(path[len("/files/"):]))
                if real is None:
                    return self._not_found()
                suffix = real.suffix if real.suffix in _TYPES else ""
                self._send(real.read_bytes(), _TYPES.get(suffix, "application/octet-stream"))
            else:
                self._not_found()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the browser went away mid-answer
        except FileNotFoundError:
            self._not_found()  # a run deleted while we read it

    def _api_run(self, name: str, query: dict) -> None:
        cache = self.dashboard.cache(name) if "/" not in name and name not in ("", ".", "..") else None
        if cache is None:
            return self._not_found()
        try:
            since = max(0, int(query.get("since", ["0"])[0]))
        except ValueError:
            since = 0
        self._json(cache.update(since, query.get("gen", [""])[0]))


def make_server(runs_dir: str | Path, host: str = "127.0.0.1", port: int = 8050) -> ThreadingHTTPServer:
    """A ready (not yet serving) server; port 0 picks a free one (see server.server_address)."""
    handler = type("DashboardHandler", (Handler,), {"dashboard": Dashboard(Path(runs_dir))})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server
