"""demo.py runs on the bare standard library and writes real run directories the kit can read."""

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bare_python(tmp_path: Path) -> str:
    """A fresh venv without pip or any site-packages: only the standard library is importable."""
    venv = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    return str(venv / "bin" / "python")


def _alerts(run: Path) -> list[dict]:
    path = run / "logs" / "alerts.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_demo_runs_with_the_standard_library_alone(tmp_path):
    py = _bare_python(tmp_path)
    # the venv really is bare: torch and numpy cannot be imported there
    probe = subprocess.run([py, "-I", "-c", "import torch"], capture_output=True, text=True)
    assert probe.returncode != 0 and "No module named 'torch'" in probe.stderr
    out_dir = tmp_path / "runs"
    t0 = time.perf_counter()
    # -I: no PYTHONPATH, no user site, no script-dir magic; demo.py finds rlhf_kit next to itself
    proc = subprocess.run([py, "-I", str(ROOT / "demo.py"), "--output_dir", str(out_dir)],
                          capture_output=True, text=True, cwd=tmp_path, timeout=60)
    seconds = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr
    print(f"demo.py took {seconds:.2f} s in a bare venv")  # measured, documented in docs/stability.md
    text = proc.stdout

    runs = sorted(p.name for p in out_dir.iterdir())
    assert runs == ["demo_healthy", "demo_unstable"]
    for name in runs:
        files = {p.name for p in (out_dir / name / "logs").iterdir()}
        assert {"train.jsonl", "phases.jsonl", "alerts.jsonl"} <= files
        assert json.loads((out_dir / name / "run.json").read_text())["framework"] == "demo"

    # healthy: nothing at warning level or above; unstable: the gaming is caught
    assert [a for a in _alerts(out_dir / "demo_healthy") if a["severity"] != "info"] == []
    rules = {a["rule"] for a in _alerts(out_dir / "demo_unstable")}
    assert {"reward_hacking", "entropy_collapse", "policy_update_too_large"} <= rules

    # the printed report: metrics summary with meanings, alerts with causes, the phase table
    assert text.count("Phase breakdown") == 2 and "bottleneck:" in text
    assert "likely cause:" in text and "what to try:" in text and "reward_hacking" in text
    assert "Healthy: small and bounded" in text  # the teaching mode explains each metric
    assert "alerts: 0 critical, 0 warning" in text  # the healthy run's header


def test_demo_report_reads_back_with_the_kit(tmp_path):
    """The run directories are ordinary ones: load_run + analyze_run agree with the live alerts."""
    sys.path.insert(0, str(ROOT))
    import demo
    from rlhf_kit.stability import analyze_run, merge_alerts
    from rlhf_kit.runlog import load_run

    rd = demo.run_demo(demo.RUNS[1][1], str(tmp_path), quiet=True)
    run = load_run(rd.root)
    assert len(run.steps) == demo.RUNS[1][1].steps and run.phases
    live = {(a.rule, a.step, a.severity) for a in merge_alerts(run.alerts)}
    offline = {(a.rule, a.step, a.severity) for a in analyze_run(run)}
    assert live == offline
