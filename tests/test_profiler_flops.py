"""FLOP formula against torch's own FlopCounterMode, for GPT-2 and Llama shapes."""

import pytest

from rlhf_kit.profiler.flops import ModelSpec, forward_flops, gpt2_train_flops, phase_flops

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402


def _counted(model, ids, backward: bool) -> int:
    """FLOPs torch counts for one forward (and backward) of `model` on `ids`."""
    with FlopCounterMode(display=False) as counter:
        out = model(input_ids=ids, use_cache=False)
        if backward:
            out.logits.float().sum().backward()
    return counter.get_total_flops()


def _gpt2(n_layer=2, n_embd=64, n_head=4, vocab=500):
    cfg = transformers.GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head, vocab_size=vocab,
                                  n_positions=64, attn_implementation="eager")
    return transformers.GPT2LMHeadModel(cfg)


def _llama(tied: bool):
    cfg = transformers.LlamaConfig(hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                   vocab_size=500, max_position_embeddings=64,
                                   tie_word_embeddings=tied, attn_implementation="eager")
    return transformers.LlamaForCausalLM(cfg)


@pytest.mark.parametrize("backward", [False, True])
def test_gpt2_formula_matches_flop_counter(backward):
    torch.manual_seed(0)
    model = _gpt2()
    ids = torch.randint(0, 500, (3, 12))  # 3 sequences of 12 tokens: tokens 36, sum_t2 = 3*144
    spec = ModelSpec.from_info({"family": "gpt2", "n_layer": 2, "hidden": 64, "n_head": 4, "vocab": 500})
    work = {"mode": "fwd_bwd" if backward else "fwd", "tokens": 36, "sum_t2": 3 * 144}
    ours = phase_flops(spec, work)
    theirs = _counted(model, ids, backward)
    assert abs(ours - theirs) / theirs < 0.01, (ours, theirs)


def test_gpt2_closed_form_is_three_forwards():
    # 6*36*(12*2*64^2 + 500*64) + 12*2*64*432 = 6*36*130304 + 663552 = 28145664 + 663552
    assert gpt2_train_flops(2, 64, 500, 36, 432) == 28_809_216
    spec = ModelSpec.from_info({"n_layer": 2, "hidden": 64, "n_head": 4, "vocab": 500})
    assert 3 * forward_flops(spec, 36, 432) == pytest.approx(28_809_216)


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("backward", [False, True])
def test_llama_formula_matches_flop_counter(tied, backward):
    torch.manual_seed(0)
    model = _llama(tied)
    ids = torch.randint(0, 500, (2, 10))
    spec = ModelSpec.from_info({"family": "llama", "n_layer": 2, "hidden": 64, "n_head": 4, "n_kv_head": 2,
                                "head_dim": 16, "intermediate": 160, "vocab": 500, "tied": tied})
    assert spec.gated and spec.kv_width == 32
    ours = phase_flops(spec, {"mode": "fwd_bwd" if backward else "fwd", "tokens": 20, "sum_t2": 200})
    theirs = _counted(model, ids, backward)
    assert abs(ours - theirs) / theirs < 0.01, (ours, theirs)


def test_generation_attention_is_causal_half():
    spec = ModelSpec.from_info({"n_layer": 1, "hidden": 8, "n_head": 2, "vocab": 10})
    full = phase_flops(spec, {"mode": "fwd", "tokens": 4, "sum_t2": 16})
    gen = phase_flops(spec, {"mode": "gen", "tokens": 4, "sum_t2": 16})
    # attention part of the forward: 4 * 1 * 8 * 16 = 512; generation counts half of it
    assert full - gen == 256


def test_unknown_work_gives_none():
    spec = ModelSpec.from_info({"n_layer": 1, "hidden": 8, "n_head": 2, "vocab": 10})
    assert phase_flops(spec, {}) is None
    assert phase_flops(spec, {"mode": "fwd", "tokens": 0}) is None
