"""`rlhf-kit memory` end to end: the real CLI, its verdict, tables, suggestions and bad input."""

import json
import subprocess
import sys

import pytest


def run(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "rlhf_kit.cli", "memory", *args],
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("args, words", [
    (["--model", "no-such-model"], "no-such-model"),
    (["--batch_size", "0"], "--batch_size"),
    (["--max_new_tokens", "-4"], "--max_new_tokens"),
    (["--budget", "lots"], "lots"),
    (["--device", "toaster"], "toaster"),
    (["--batch_size", "6", "--mini_batch_size", "4"], "divide"),
])
def test_bad_input_is_one_line_and_exit_2(args, words):
    r = run(*args)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in r.stderr


def test_does_not_fit_prints_verdict_tables_and_re_predicted_suggestions(tmp_path):
    out = tmp_path / "pred.json"
    r = run("--model", "tiny-gpt2", "--batch_size", "4", "--prompt_length", "8", "--max_new_tokens", "6",
            "--value_model", "separate", "--budget", "1MB", "--json", str(out))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("DOES NOT FIT: peak") and "exceeds 1 MB" in lines[0]
    for phase in ("rollout", "scoring", "update"):
        assert any(l.startswith(f"{phase}: peak") for l in lines)
    header = next(l for l in lines if l.startswith("role"))
    for col in ("params", "grads", "optim", "activations", "kv_cache", "logits", "temporaries"):
        assert col in header
    assert any(l.startswith("value ") for l in lines) and "suggestions" in r.stdout
    data = json.loads(out.read_text())
    peaks = [s["peak"] for s in data["suggestions"]]
    saved = [s["saved"] for s in data["suggestions"]]
    base = max(data["predicted_peak"].values())
    assert all(p == base - s for p, s in zip(peaks, saved))
    titles = " ".join(s["title"] for s in data["suggestions"])
    assert "value head" in titles and "LoRA" in titles and "checkpointing" in titles
    # ranked by memory saved (the largest-batch line, when present, leads)
    ranked = [s["saved"] for s in data["suggestions"] if not s["title"].startswith("batch size")]
    assert ranked == sorted(ranked, reverse=True)
