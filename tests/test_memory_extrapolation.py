"""Deep models are traced as a 2- and a 3-block copy and extrapolated site by site (predict.py).

Each case compares the extrapolation with the full trace of every block, to the byte, per phase
and per role and category. The small vocabulary makes the blocks, not the embedding, dominate,
so that moments whose bytes grow at different rates with depth (the backward's end and the
optimizer step, a prefill and the last decode step) trade places as the peak between 2-3 blocks
and the full depth: the case extrapolation gets wrong when two such moments share a site.
"""

import pytest
from transformers import GPT2Config, LlamaConfig

from rlhf_kit.memory.config import MemoryConfig
from rlhf_kit.memory.predict import predict
from rlhf_kit.memory.suggest import largest_batch

GPT2 = GPT2Config(vocab_size=512, n_positions=256, n_embd=64, n_layer=6, n_head=4, bos_token_id=0, eos_token_id=0)
LLAMA = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=176, num_hidden_layers=7,
                    num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
                    max_position_embeddings=256)


def _cfg(hf, **kw):
    base = dict(model="test", batch_size=4, prompt_length=8, max_new_tokens=24, hf_config=hf)
    return MemoryConfig(**{**base, **kw}).validate()


CASES = [
    ("gpt2", {}),
    ("gpt2", {"foreach": True, "fused": False}),  # optimizer temporaries over all blocks
    ("gpt2", {"value_model": "separate", "micro_batch_size": 2, "foreach": True, "fused": False}),
    ("gpt2", {"grad_checkpointing": True}),
    ("gpt2", {"lora_rank": 4, "dtype": "bf16"}),
    ("gpt2", {"offload": {"reference": "cpu", "reward": "cpu"}, "optimizer": "adam8bit"}),
    ("llama", {}),
    ("llama", {"value_model": "separate", "grad_checkpointing": True, "attn": "eager"}),
]


@pytest.mark.parametrize("family,changes", CASES, ids=[f"{f}-{'-'.join(c) or 'base'}" for f, c in CASES])
def test_extrapolated_prediction_equals_the_full_trace(family, changes):
    cfg = _cfg(GPT2 if family == "gpt2" else LLAMA, **changes)
    fast, full = predict(cfg), predict(cfg, full=True)
    assert fast.method.startswith("traced at 2 and 3 blocks") and full.method == "traced"
    assert fast.peaks == full.peaks
    assert fast.phases == full.phases
    assert fast.offloaded == full.offloaded


def test_shallow_models_are_traced_whole():
    shallow = GPT2Config(vocab_size=512, n_positions=256, n_embd=64, n_layer=3, n_head=4, bos_token_id=0)
    assert predict(_cfg(shallow)).method == "traced"


def test_largest_batch_is_exact():
    cfg = _cfg(GPT2)
    base = predict(cfg)
    budget = int(base.peak * 1.9)
    found = largest_batch(cfg, base, budget)
    batch = found.changes["batch_size"]
    assert batch > cfg.batch_size and found.peak <= budget
    assert predict(cfg.replace(batch_size=batch)).peak == found.peak
    assert predict(cfg.replace(batch_size=batch + 1)).peak > budget
    # too small a budget for the current batch: the search goes down, in multiples of the mini-batch
    mini = cfg.replace(batch_size=8, mini_batch_size=2).validate()
    budget = predict(mini.replace(batch_size=4)).peak  # 4 fits exactly; 6 holds more rollout bytes
    found = largest_batch(mini, predict(mini), budget)
    assert found.changes == {"batch_size": 4} and found.peak == budget
