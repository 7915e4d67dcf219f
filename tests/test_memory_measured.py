"""Measured mode on the kit's real runner: the prediction lands within 10% of the measured peak.

The measured side is the real run's tensors counted as they live (MemoryHook on the runner's
hooks); the predicted side is the fake-tensor trace of the same config, made at run end.
"""

import json

import pytest

train_mod = pytest.importorskip("rlhf_core.train")

from rlhf_kit.memory.config import MEM_PHASES  # noqa: E402
from rlhf_kit.memory.measure import MemoryHook  # noqa: E402


@pytest.mark.slow
@pytest.mark.parametrize("model, extra", [
    ("tiny-gpt2", ["--batch_size", "4", "--max_new_tokens", "6"]),
    ("small-gpt2", ["--batch_size", "2", "--max_new_tokens", "4", "--value_model", "separate"]),
])
def test_predicted_peak_per_phase_within_10_percent_of_measured(tmp_path, model, extra):
    cfg = train_mod.parse_config(["--model_name", model, "--epochs", "1", "--steps_per_epoch", "2",
                                  "--output_dir", str(tmp_path), *extra])
    run_dir = train_mod.train(cfg, hooks=[MemoryHook(output_dir=str(tmp_path))])
    data = json.loads(run_dir.memory_json.read_text())
    assert data["device"] == "cpu"
    assert set(data["measured_peak"]) == set(data["predicted_peak"]) == set(MEM_PHASES)
    for phase in MEM_PHASES:
        measured, predicted = data["measured_peak"][phase], data["predicted_peak"][phase]
        assert abs(predicted - measured) <= 0.10 * measured, (phase, predicted, measured, data["notes"])
    # categories were attributed, not lumped: parameters and optimizer state on the measured side
    assert data["measured"]["update"]["params"] > 0 and data["measured"]["update"]["optim"] > 0
    assert data["predicted"]["update"]["policy"]["params"] > 0
    expected_value = "separate" if "separate" in extra else "head"
    assert data["config"]["value_model"] == expected_value
