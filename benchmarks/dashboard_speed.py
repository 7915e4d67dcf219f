"""How fast the dashboard renders a long run: the report and the live update request.

Targets: a 10,000-step run directory renders to HTML in under 3 s; the live page's update
request (the poll after one new step) stays under 100 ms.

    .venv/bin/python benchmarks/dashboard_speed.py [--steps 10000] [--repeats 3]

The run directory is synthetic but written through the real RunLogHook: every METRICS key of
the loss/reward/kl/policy/value/grad/rollout/health groups per step, time/<phase> for the
top-level phases, and one PhaseRecord per phase per step.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlhf_kit.dashboard.report import write_report  # noqa: E402
from rlhf_kit.dashboard.server import make_server  # noqa: E402
from rlhf_kit.events import METRICS, TOP_LEVEL_PHASES, Alert, PhaseRecord, step_record  # noqa: E402
from rlhf_kit.runlog import RunDir, RunLogHook  # noqa: E402

PHASES = [p for p in TOP_LEVEL_PHASES if p not in ("comm", "checkpoint")]
VALUE_METRICS = [m.name for m in METRICS if m.group not in ("time", "throughput")]


def step_of(step: int) -> tuple[dict, list[PhaseRecord]]:
    """A plausible record: smooth curves with a little wobble, phases adding to the step time."""
    metrics = {name: math.sin(step / 500 + i) + 0.01 * (step % 7) for i, name in enumerate(VALUE_METRICS)}
    phases = [PhaseRecord(name=p, step=step, seconds=0.01 * (i + 1), count=1, start=step * 0.5)
              for i, p in enumerate(PHASES)]
    metrics.update({f"time/{p.name}": p.seconds for p in phases})
    metrics["step_seconds"] = sum(p.seconds for p in phases) * 1.05
    return step_record(step, step // 100, metrics), phases


def write_run(root: Path, steps: int, alerts: bool) -> tuple[RunDir, RunLogHook]:
    rd = RunDir(root)
    hook = RunLogHook(rd)
    from rlhf_kit.events import RunInfo

    hook.on_run_start(RunInfo(run_id=root.name, config={"ppo": {"learning_rate": 1e-5}}))
    for s in range(steps):
        hook.on_step_end(*step_of(s))
        if alerts and s % 1000 == 999:
            hook.on_alert(Alert(rule="kl_spike", severity="warning", step=s, message="synthetic",
                                evidence={"kl_mean": 1.0}))
    return rd, hook


def time_report(rd: RunDir, out: Path, repeats: int) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU seconds of each render. On a shared machine the CPU time of this
    process is the steadier number: wall time also counts waiting for other jobs' cores."""
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        write_report([rd.root], out)
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return wall, cpu


def time_updates(runs_dir: Path, name: str, hook: RunLogHook, start: int, n: int) -> tuple[float, list[float]]:
    """Seconds of the first full load, and of `n` polls that each follow one appended step."""
    server = make_server(runs_dir, port=0)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=60)

    def get(path: str) -> dict:
        conn.request("GET", path)
        return json.loads(conn.getresponse().read())

    t = time.perf_counter()
    first = get(f"/api/run/{name}?since=0&gen=")
    full = time.perf_counter() - t
    seen, gen, polls = len(first["steps"]["step"]), first["gen"], []
    for s in range(start, start + n):
        hook.on_step_end(*step_of(s))
        t = time.perf_counter()
        upd = get(f"/api/run/{name}?since={seen}&gen={gen}")
        polls.append(time.perf_counter() - t)
        seen += len(upd["steps"]["step"])
    conn.close()
    server.shutdown()
    server.server_close()
    return full, polls


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--polls", type=int, default=20)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(f"load average {load:.1f} on {os.cpu_count()} cores (wall times grow with it)")
        print(f"{args.steps} steps, {len(VALUE_METRICS) + len(PHASES) + 1} metrics per step, "
              f"{len(PHASES)} phases per step")
        for label, alerts in (("alerts recorded", True), ("no alerts.jsonl (offline rules)", False)):
            runs = tmp / label.split()[0]
            t = time.perf_counter()
            rd, hook = write_run(runs / "run_big", args.steps, alerts)
            print(f"[{label}] wrote run dir in {time.perf_counter() - t:.2f} s "
                  f"(train.jsonl {rd.train_log.stat().st_size / 1e6:.1f} MB)")
            rep, cpu = time_report(rd, tmp / "report.html", args.repeats)
            size = (tmp / "report.html").stat().st_size / 1e6
            print(f"  report render: median {statistics.median(rep):.2f} s wall (min {min(rep):.2f}), "
                  f"{statistics.median(cpu):.2f} s CPU, {size:.1f} MB  target < 3 s")
            full, polls = time_updates(runs, "run_big", hook, args.steps, args.polls)
            print(f"  live: first full load {full * 1000:.0f} ms; update after one new step: median "
                  f"{statistics.median(polls) * 1000:.1f} ms, max {max(polls) * 1000:.1f} ms  target < 100 ms")
            hook.on_run_end()
    return 0


if __name__ == "__main__":
    sys.exit(main())
