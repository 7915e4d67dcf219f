"""Shared test setup: one model cache for the whole session, and a helper to run the real CLIs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Embedded models are built once per checkout, not once per test.
os.environ.setdefault("RLHF_KIT_CACHE", str(ROOT / ".cache" / "rlhf_kit"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Flags for a training run that takes a few seconds on the tiny model.
TINY = ["--batch_size", "2", "--max_new_tokens", "6", "--progress", "false", "--tensorboard", "false"]


def run_cli(*args: str, cwd: Path = ROOT, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python <args>` (e.g. run_cli("train.py", "--epochs", "1")) and capture its output."""
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """One finished tiny-gpt2 training run directory (2 epochs x 2 steps), shared read-only by tests."""
    out = tmp_path_factory.mktemp("runs")
    res = run_cli("train.py", "--epochs", "2", "--steps_per_epoch", "2", *TINY, "--output_dir", str(out),
                  "--run_name", "tiny")
    assert res.returncode == 0, res.stderr
    return out / "tiny"
