"""`rlhf-kit profile` end to end on the embedded tiny-gpt2, through the real CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlhf_kit.runlog import find_runs, load_run

pytestmark = pytest.mark.slow


def _kit(*args, env_dir, check=True):
    env = dict(os.environ, RLHF_KIT_CACHE=str(env_dir / "cache"))
    proc = subprocess.run([sys.executable, "-m", "rlhf_kit.cli", *args], capture_output=True, text=True,
                          env=env, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("profile")
    proc = _kit("profile", "--steps", "4", "--trace", "--batch_size", "2", "--max_new_tokens", "5",
                "--output_dir", str(tmp / "runs"), env_dir=tmp)
    (run_dir,) = find_runs(tmp / "runs")
    return proc.stdout, load_run(run_dir.root), tmp


def test_table_rows_and_step_coverage(traced):
    out, run, _ = traced
    table = out[out.index("Phase breakdown"):]
    for phase in ("rollout", "reward", "ref_logprobs", "values", "advantages", "update",
                  "  forward", "  backward", "  optimizer", "other", "step (sum)"):
        assert f"\n{phase} " in table, phase
    assert "\nold_logprobs " not in table  # taken while sampling (--rescore times that forward)
    assert "Bottleneck:" in out and "MFU %" in out
    for rec in run.steps:  # top-level phases never exceed the measured step; `other` is the rest
        covered = sum(v for k, v in rec.items() if k.startswith("time/") and k[5:] not in ("forward", "backward", "optimizer"))
        assert covered <= rec["step_seconds"] * 1.05
    meta = json.loads((run.dir.profile / "profile.json").read_text())
    assert meta["skip_steps"] == [1, 2, 3, 4] and meta["peak_flops"] > 0  # calibrated on the spot


def test_trace_has_every_phase_and_flame_graph_names_modules(traced):
    out, run, _ = traced
    files = json.loads((run.dir.profile / "profile.json").read_text())["files"]
    events = json.loads(Path(files["trace"]).read_text())["traceEvents"]
    ranges = {e["name"] for e in events if str(e.get("name", "")).startswith("rlhf/")}
    traced_phases = {p.name for p in run.phases if p.step == 4}
    assert {f"rlhf/{p}" for p in traced_phases} <= ranges and "rlhf/checkpoint" in ranges
    svg = Path(files["flamegraph"]).read_text()
    assert svg.startswith("<?xml") and "GPT2Block" in svg and "rlhf/rollout" in svg
    speed = json.loads(Path(files["speedscope"]).read_text())
    assert speed["profiles"][0]["type"] == "sampled" and speed["shared"]["frames"]
    assert "ui.perfetto.dev" in out


def test_update_memory_matches_parameter_counts(traced):
    _, run, _ = traced
    upd = next(p for p in run.phases if p.step == 2 and p.name == "update").memory
    trainable = upd["params_policy"] + upd["params_value"]  # tiny-gpt2 + value head, all trainable
    assert upd["params"] == trainable + upd["params_reference"]
    assert upd["grads"] == trainable
    # AdamW's two moments per element plus one 4-byte step tensor per parameter tensor
    extra = upd["optim"] - 2 * trainable
    assert extra > 0 and extra % 4 == 0 and extra // 4 < 100
    assert upd["activations_peak"] > 0


def test_compare_and_bad_input(traced):
    _, run, tmp = traced
    same = _kit("profile", "--compare", str(run.dir.root), str(run.dir.root), env_dir=tmp)
    assert "rollout" in same.stdout and "slower" not in same.stdout
    for args in (["--compare", str(tmp / "nope"), str(run.dir.root)], ["--steps", "0"],
                 ["--steps", "2", "--trace"], ["--batch_size", "0"]):
        bad = _kit("profile", *args, "--output_dir", str(tmp / "bad"), env_dir=tmp, check=False)
        assert bad.returncode == 2 and "Traceback" not in bad.stderr, (args, bad.stderr)
        assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def test_calibrate_command(tmp_path):
    proc = _kit("calibrate", "--size", "128", "--repeats", "2", env_dir=tmp_path)
    assert "GFLOP/s" in proc.stdout and (tmp_path / "cache" / "peak_flops.json").exists()
