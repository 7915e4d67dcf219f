"""Phase table, MFU arithmetic, bottleneck advice and run comparison on hand-built run directories."""

import json

import pytest

from rlhf_kit.events import PhaseRecord, RunInfo, step_record
from rlhf_kit.profiler import breakdown as bd
from rlhf_kit.profiler import peaks
from rlhf_kit.runlog import RunDir, RunLogHook, load_run

# n_layer 2, hidden 64, n_head 4, vocab 100 -> matmul weights per token:
# 2*(4*64*64 + 2*64*256) + 64*100 = 104704; one forward of 10 tokens with sum_t2 100:
# 2*104704*10 + 4*2*64*100 = 2094080 + 51200 = 2145280 FLOPs; fwd_bwd = 3x = 6435840.
MODEL = {"family": "gpt2", "n_layer": 2, "hidden": 64, "n_head": 4, "vocab": 100, "n_params": 1_000_000}
UPDATE_WORK = {"mode": "fwd_bwd", "tokens": 10, "sum_t2": 100}


def _write_run(path, phase_seconds, steps=2, skip=None):
    """A run directory whose steps all take 1 s, split as `phase_seconds` says."""
    hook = RunLogHook(RunDir(path))
    hook.on_run_start(RunInfo(run_id=path.name, model=MODEL, device="cpu"))
    for step in range(1, steps + 1):
        phases = []
        for name, sec in phase_seconds.items():
            parent = "update" if name in ("forward", "backward", "optimizer") else ""
            work = UPDATE_WORK if name == "update" else ({"mode": "gen", "tokens": 100} if name == "rollout" else {})
            mem = {"peak": 2**20 * step, "delta": 2**19} if name == "rollout" else {}
            phases.append(PhaseRecord(name=name, step=step, seconds=sec, count=1, parent=parent,
                                      work=dict(work), memory=mem))
        covered = sum(s for n, s in phase_seconds.items() if n not in ("forward", "backward", "optimizer"))
        hook.on_step_end(step_record(step, 0, {**{f"time/{n}": s for n, s in phase_seconds.items()},
                                                "step_seconds": 1.0 if step != skip else 9.0}), phases)
        assert covered <= 1.0
    hook.on_run_end()
    return load_run(path)


BASE = {"rollout": 0.5, "update": 0.3, "forward": 0.1, "backward": 0.15, "optimizer": 0.04, "log": 0.1}


def test_rows_percentages_and_other(tmp_path):
    rows = bd.phase_breakdown(_write_run(tmp_path / "a", BASE), peak=1e9)
    by = {r.name: r for r in rows}
    assert [r.name for r in rows] == ["rollout", "update", "forward", "backward", "optimizer", "log", "other"]
    assert by["rollout"].pct == pytest.approx(50.0)
    assert by["other"].ms == pytest.approx(100.0)  # 1000 ms step - (500 + 300 + 100)
    assert bd.step_ms(rows) == pytest.approx(1000.0)  # top-level rows + other add up to the step
    assert by["forward"].parent == "update"
    assert by["rollout"].tokens_per_s == pytest.approx(200.0)  # 100 tokens / 0.5 s
    assert by["rollout"].peak_bytes == 2 * 2**20 and by["rollout"].delta_bytes == 2**19


def test_mfu_arithmetic(tmp_path):
    rows = {r.name: r for r in bd.phase_breakdown(_write_run(tmp_path / "a", BASE), peak=1e9)}
    # update: 6435840 FLOPs in 0.3 s = 21.4528 MFLOP/s; against a 1 GFLOP/s peak MFU = 0.0214528
    assert rows["update"].gflops_per_s == pytest.approx(0.0214528)
    assert rows["update"].mfu == pytest.approx(0.0214528)
    # forward child: a third of the update's FLOPs (2145280) in 0.1 s -> 0.0214528 GFLOP/s
    assert rows["forward"].gflops_per_s == pytest.approx(0.0214528)
    # backward child: two thirds (4290560) in 0.15 s -> 0.028603733 GFLOP/s
    assert rows["backward"].gflops_per_s == pytest.approx(0.0286037333)
    assert rows["log"].mfu is None and rows["optimizer"].gflops_per_s is None
    assert peaks.mfu(1e12, 2.0, 1e12) == 0.5 and peaks.mfu(1.0, 0.0, 1e12) is None


def test_profile_json_supplies_peak_and_skips_steps(tmp_path):
    run = _write_run(tmp_path / "a", BASE, steps=3, skip=1)
    run.dir.profile.mkdir(parents=True, exist_ok=True)
    (run.dir.profile / "profile.json").write_text(json.dumps({"skip_steps": [1], "peak_flops": 2e9}))
    rows = {r.name: r for r in bd.phase_breakdown(run)}
    assert rows["other"].ms == pytest.approx(100.0)  # the 9 s warm-up step is left out
    assert rows["update"].mfu == pytest.approx(0.0214528 / 2)
    with_warmup = {r.name: r for r in bd.phase_breakdown(run, skip_steps=())}
    assert with_warmup["other"].ms == pytest.approx((100 + 100 + 8100) / 3)


def test_gpu_peak_table():
    assert peaks.gpu_peak("NVIDIA H100 80GB HBM3")[0] == 989e12
    assert peaks.gpu_peak("NVIDIA H100 PCIe")[0] == 756e12
    assert peaks.gpu_peak("NVIDIA A100-SXM4-40GB")[0] == 312e12
    assert peaks.gpu_peak("NVIDIA A100-SXM4-40GB", "fp32")[0] == 19.5e12
    assert peaks.lookup_peak("cuda:0", "Some Future GPU")[0] is None


def test_calibrate_caches_and_lookup_reads_it(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.setenv("RLHF_KIT_CACHE", str(tmp_path))
    assert peaks.lookup_peak("cpu")[0] is None
    result = peaks.calibrate(size=128, repeats=2)
    assert result["flops"] > 1e6  # any CPU does 2*128^3 FLOPs in well under 4 s
    assert peaks.lookup_peak("cpu")[0] == result["flops"]
    assert json.loads((tmp_path / "peak_flops.json").read_text())[peaks.cpu_key()]["size"] == 128


def test_bottleneck_generation_and_optimizer(tmp_path):
    run = _write_run(tmp_path / "a", BASE)
    phase, advice = bd.bottleneck(bd.phase_breakdown(run), run.info)
    assert phase == "rollout" and "batch" in advice and "50%" in advice
    opt_heavy = {"rollout": 0.1, "update": 0.7, "forward": 0.1, "backward": 0.1, "optimizer": 0.5}
    run2 = _write_run(tmp_path / "b", opt_heavy)
    phase, advice = bd.bottleneck(bd.phase_breakdown(run2), run2.info)
    assert phase == "optimizer" and "AdamW" in advice and "inside update" in advice
    host = {"rollout": 0.1, "update": 0.1}
    assert bd.bottleneck(bd.phase_breakdown(_write_run(tmp_path / "c", host)))[0] == "other"


def test_compare_runs_names_the_slower_phase(tmp_path):
    a = _write_run(tmp_path / "a", BASE)
    slower = dict(BASE, rollout=0.6)  # rollout +20 %, the step still 1 s so `other` shrinks
    rows = {r.name: r for r in bd.compare_runs(a, _write_run(tmp_path / "b", slower))}
    assert rows["rollout"].verdict == "+20% slower" and rows["rollout"].delta_ms == pytest.approx(100.0)
    assert rows["update"].verdict == "same"
    assert rows["other"].verdict == "-100% faster"
    text = bd.format_compare(list(rows.values()), "a", "b")
    assert "rollout" in text and "+20% slower" in text


def test_format_table_lists_every_row(tmp_path):
    rows = bd.phase_breakdown(_write_run(tmp_path / "a", BASE), peak=1e9)
    text = bd.format_table(rows)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["phase", "ms/step", "%"]
    for name in ("rollout", "  forward", "other", "step (sum)"):
        assert any(l.startswith(name) for l in lines), name
    assert "1,000.00" in lines[-1]


def test_empty_run_gives_empty_table(tmp_path):
    RunDir(tmp_path / "e").create()
    assert bd.phase_breakdown(load_run(tmp_path / "e")) == []
    assert bd.bottleneck([]) == ("", "")


def test_read_side_imports_no_torch():
    import subprocess
    import sys

    code = ("import sys, rlhf_kit.profiler.breakdown, rlhf_kit.profiler.flops, rlhf_kit.profiler.peaks; "
            "bad = [m for m in ('torch', 'numpy') if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_update_without_work_sums_its_children(tmp_path):
    # the runner declares work on forward ("fwd") and backward ("bwd"), none on update itself:
    # forward 2145280 + backward 2*2145280 = 6435840 FLOPs in the update's 0.3 s
    hook = RunLogHook(RunDir(tmp_path / "r"))
    hook.on_run_start(RunInfo(run_id="r", model=MODEL))
    fwd = {"mode": "fwd", "tokens": 10, "sum_t2": 100}
    phases = [PhaseRecord("update", 1, seconds=0.3, count=1),
              PhaseRecord("forward", 1, seconds=0.1, count=1, parent="update", work=fwd),
              PhaseRecord("backward", 1, seconds=0.15, count=1, parent="update", work=dict(fwd, mode="bwd"))]
    hook.on_step_end(step_record(1, 0, {"time/update": 0.3, "step_seconds": 0.5}), phases)
    hook.on_run_end()
    rows = {r.name: r for r in bd.phase_breakdown(load_run(tmp_path / "r"), peak=1e9)}
    assert rows["update"].gflops_per_s == pytest.approx(0.0214528)
    assert rows["update"].tokens_per_s == pytest.approx(10 / 0.3)
    assert rows["backward"].gflops_per_s == pytest.approx(0.0286037333)
