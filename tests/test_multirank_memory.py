"""`rlhf-kit memory --gpus N`: placement plans traced on fake tensors, ZeRO stages by formula."""

import json
import subprocess
import sys


from rlhf_kit.memory.config import MemoryConfig
from rlhf_kit.memory.placement import plans, role_params, zero_model_states
from rlhf_kit.memory.predict import predict


def _cfg(**kw):
    from transformers import GPT2Config

    # a 2-layer, 64-wide GPT-2 (vocab 1000): traced in well under a second
    hf = GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=1000, n_positions=64)
    return MemoryConfig(model="test", batch_size=4, prompt_length=8, max_new_tokens=8, hf_config=hf, **kw).validate()


def test_zero_formulas_by_hand():
    # 1e9 trainable parameters on 8 GPUs (ZeRO paper, mixed-precision Adam, 2 + 2 + 12 bytes):
    assert zero_model_states(10**9, True, 1, 8) == 4 * 10**9 + 12 * 10**9 // 8   # 5.5e9
    assert zero_model_states(10**9, True, 2, 8) == 3_750_000_000                   # 2e9 + 14e9/8
    assert zero_model_states(10**9, True, 3, 8) == 2 * 10**9                       # 16e9/8
    assert zero_model_states(10**9, False, 2, 8) == 2 * 10**9                      # frozen: bf16 weights
    assert zero_model_states(10**9, False, 3, 8) == 250_000_000                    # ... sharded by ZeRO-3


def test_one_gpu_replicated_is_the_single_device_prediction():
    cfg = _cfg()
    (rep,) = [p for p in plans(cfg, 1) if p.name == "replicated"]
    assert rep.peak == predict(cfg).peak and rep.per_gpu_batch == 4 and rep.source == "traced"


def test_plans_on_four_gpus():
    cfg = _cfg(value_model="separate")
    by = {p.name: p for p in plans(cfg, 4)}
    single = predict(cfg)
    rep = by["replicated"]
    assert rep.per_gpu_batch == 1 and rep.gpus[0].count == 4
    assert rep.peak < single.peak  # same model states, a quarter of the activations
    # 3 trainer GPUs cannot split a batch of 4: reported, not silently dropped
    assert by["frozen apart"].gpus == [] and "does not split" in by["frozen apart"].note
    each = by["each apart"]
    trainers, ref, rew = each.gpus
    assert (trainers.count, trainers.roles, ref.roles, rew.roles) == (2, ["policy", "value"], ["reference"], ["reward"])
    assert each.per_gpu_batch == 2
    params = role_params(single)
    b = 4  # fp32
    assert ref.peak >= params["reference"][0] * b and rew.peak >= params["reward"][0] * b
    # ZeRO rows: the same non-model-state bytes as the replicated trace, model states by formula
    z1, z2, z3 = by["zero-1"], by["zero-2"], by["zero-3"]
    assert z1.source == z2.source == z3.source == "formula"
    assert z3.peak < z2.peak < z1.peak
    rp = role_params(predict(cfg.replace(batch_size=1, mini_batch_size=1)))
    trainable = sum(n for n, tr in rp.values() if tr)
    frozen = sum(n for n, tr in rp.values() if not tr)
    # zero-1 -> zero-3: trainable 4 + 12/4 = 7 -> 16/4 = 4 bytes/param; frozen 2 -> 2/4 bytes/param
    assert z1.phases["update"] - z3.phases["update"] == (3 * trainable) + (2 * frozen - 2 * frozen // 4)


def _run(*args):
    return subprocess.run([sys.executable, "-m", "rlhf_kit.cli", "memory", *args], capture_output=True, text=True,
                          timeout=300)


def test_cli_gpus(tmp_path):
    out = tmp_path / "m.json"
    r = _run("--model", "tiny-gpt2", "--batch_size", "4", "--max_new_tokens", "6", "--gpus", "2",
             "--budget", "1GB", "--json", str(out))
    assert r.returncode == 0, r.stderr
    assert "placement on 2 GPUs" in r.stdout and "not measurements" in r.stdout
    for name in ("replicated", "frozen apart", "zero-1", "zero-2", "zero-3"):
        assert any(l.startswith(name) for l in r.stdout.splitlines()), name
    data = json.loads(out.read_text())
    assert [p["name"] for p in data["placement"]][:2] == ["replicated", "frozen apart"]
    assert all(p["peak"] > 0 for p in data["placement"] if p["gpus"])
    bad = _run("--model", "tiny-gpt2", "--batch_size", "4", "--gpus", "3")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "divisible by --gpus 3" in bad.stderr
    zero = _run("--gpus", "0")
    assert zero.returncode == 2 and "--gpus" in zero.stderr
