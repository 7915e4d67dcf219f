"""`rlhf-kit report RUN_DIR [RUN_DIR ...] -o report.html`: one self-contained HTML file.

Example:
    from rlhf_kit.dashboard.report import write_report
    write_report(["runs/run_a", "runs/run_b"], "report.html")   # overlays the two runs

Known limitations:
    - Flame graphs are embedded as images, so their own click-to-zoom script does not run;
      the link next to each opens the original SVG. Traces are linked, not embedded (they
      are often tens of MB): the links are relative to the report, so keep the report next
      to the runs or open the trace from the run directory in ui.perfetto.dev.
    - Many runs overlaid on one chart share colours per metric and differ by line dash.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Sequence

from rlhf_kit.dashboard.data import run_view, schema
from rlhf_kit.dashboard.html import page
from rlhf_kit.errors import UsageError
from rlhf_kit.runlog import RunDir, load_run

# Flame graphs larger than this are linked instead of embedded, to keep the report openable.
MAX_EMBED_BYTES = 5 * 1024 * 1024


def check_run_dirs(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """The paths as run directories, or a UsageError naming the first that is not one."""
    if not paths:
        raise UsageError("give at least one run directory (one containing run.json or logs/train.jsonl)")
    out = []
    for p in paths:
        path = Path(p)
        if not path.is_dir():
            raise UsageError(f"run directory '{p}' does not exist")
        if not RunDir(path).exists():
            raise UsageError(f"'{p}' is not a run directory: it has neither run.json nor logs/train.jsonl")
        out.append(path)
    return out


def _link_profile(view: dict, run_root: Path, out_dir: Path) -> None:
    """Give each profile file a link relative to the report, and embed small flame graphs."""
    prof = view["profile"]
    prof["href"], prof["embed"] = {}, {}
    for kind in ("flamegraphs", "traces", "other"):
        for rel in prof[kind]:
            prof["href"][rel] = Path(os.path.relpath(run_root / rel, out_dir)).as_posix()
    for rel in prof["flamegraphs"]:
        f = run_root / rel
        if f.stat().st_size <= MAX_EMBED_BYTES:
            prof["embed"][rel] = "data:image/svg+xml;base64," + base64.b64encode(f.read_bytes()).decode("ascii")


def build_report(paths: Sequence[str | os.PathLike], out_dir: Path, analyze: bool = True) -> str:
    """The report HTML for the given run directories.

    Args:
        paths: run directories; several are overlaid on the same charts.
        out_dir: where the report will be written (profile links are made relative to it).
        analyze: run the stability rules offline for runs that recorded no alerts.
    Returns:
        The HTML text (self-contained: Plotly and the data are inlined).
    """
    views = []
    for path in check_run_dirs(paths):
        view = run_view(load_run(path), analyze=analyze)
        _link_profile(view, path.resolve(), out_dir.resolve())
        views.append(view)
    title = "RLHF run report: " + ", ".join(v["name"] for v in views)
    return page(title, schema(), views, live=False)


def write_report(paths: Sequence[str | os.PathLike], out: str | os.PathLike, analyze: bool = True) -> Path:
    """Render the report and write it atomically to `out`. Returns the path written."""
    out_path = Path(out)
    if out_path.is_dir():
        raise UsageError(f"-o '{out}' is a directory; give a file name such as report.html")
    if not out_path.parent.exists():
        raise UsageError(f"cannot write '{out}': directory '{out_path.parent}' does not exist")
    text = build_report(paths, out_path.parent, analyze=analyze)
    tmp = out_path.with_name(out_path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out_path)
    return out_path
