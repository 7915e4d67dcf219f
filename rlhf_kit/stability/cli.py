"""`rlhf-kit health RUN_DIR [RUN_DIR ...]`: the text report of finished or running runs.

Exit code 0 when no alert reaches --fail-on (default: critical), 1 when one does, 2 on bad input,
so CI can gate on run health.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from rlhf_kit.errors import OneLineParser, UsageError
from rlhf_kit.events import SEVERITIES
from rlhf_kit.runlog import RunDir, load_run
from rlhf_kit.stability.monitor import analyze_run, severity_rank
from rlhf_kit.stability.report import run_alerts, text_report
from rlhf_kit.stability.thresholds import Thresholds


def _parser() -> OneLineParser:
    p = OneLineParser(prog="rlhf-kit health", description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories to check")
    p.add_argument("--explain", action="store_true", help="explain every metric under its row")
    p.add_argument("--recompute", action="store_true",
                   help="ignore logs/alerts.jsonl and rerun the rules over train.jsonl")
    p.add_argument("--thresholds", default="",
                   help='JSON object overriding rule thresholds, e.g. \'{"kl_spike_min": 5}\'')
    p.add_argument("--fail-on", default="critical", choices=SEVERITIES,
                   help="exit 1 when an alert of this severity or worse is found")
    return p


def _thresholds(text: str) -> Thresholds:
    if not text:
        return Thresholds()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"--thresholds must be a JSON object, got {text!r} ({e.msg})") from None
    if not isinstance(data, dict):
        raise UsageError(f"--thresholds must be a JSON object, got {text!r}")
    return Thresholds.from_dict(data)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    thresholds = _thresholds(args.thresholds)
    for path in args.runs:
        if not RunDir(Path(path)).exists():
            raise UsageError(f"{path} is not a run directory (no run.json or logs/train.jsonl)")
    worst = -1
    for i, path in enumerate(args.runs):
        run = load_run(path)
        alerts = analyze_run(run, thresholds) if args.recompute else run_alerts(run, thresholds)
        print(("\n" if i else "") + text_report(run, explain=args.explain, alerts=alerts))
        worst = max([worst] + [severity_rank(a.severity) for a in alerts])
    return 1 if worst >= severity_rank(args.fail_on) else 0
