"""`rlhf-kit health`: the text report from the command line, exit codes, and one-line usage errors."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory):
    sys.path.insert(0, str(ROOT))
    import demo

    out = tmp_path_factory.mktemp("runs")
    return [demo.run_demo(cfg, str(out), quiet=True).root for _, cfg, _ in demo.RUNS]


def health(*args):
    return subprocess.run([sys.executable, "-m", "rlhf_kit.cli", "health", *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT)


def test_healthy_run_exits_0_and_unstable_run_fails_on_critical(demo_runs):
    healthy, unstable = demo_runs
    ok = health(healthy)
    assert ok.returncode == 0 and "no alerts" in ok.stdout and "Phase breakdown" in ok.stdout
    bad = health(unstable)
    assert bad.returncode == 1 and "[CRITICAL] entropy_collapse" in bad.stdout
    # both runs in one call: one report each
    both = health(healthy, unstable, "--fail-on", "warning")
    assert both.returncode == 1 and both.stdout.count("steps logged") == 2


def test_recompute_with_custom_thresholds(demo_runs):
    unstable = demo_runs[1]
    # a clip threshold no clip fraction can exceed silences that rule in the offline pass
    quiet = health(unstable, "--recompute", "--thresholds", '{"clip_high": 1.0}')
    assert "clip_fraction_high" not in quiet.stdout and "reward_hacking" in quiet.stdout
    assert "clip_fraction_high" in health(unstable, "--recompute").stdout


@pytest.mark.parametrize("args, needle", [
    (["/nonexistent/run"], "is not a run directory"),
    (["--thresholds", "{bad", "."], "--thresholds must be a JSON object"),
    (["--thresholds", '{"nope": 1}', "."], "unknown stability threshold(s) nope"),
    (["--fail-on", "loud", "."], "invalid choice"),
])
def test_bad_input_is_one_line_exit_2(args, needle, demo_runs):
    if args[-1] == ".":
        args = args[:-1] + [demo_runs[0]]
    proc = health(*args)
    assert proc.returncode == 2 and needle in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
