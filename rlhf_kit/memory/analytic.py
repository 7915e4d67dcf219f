"""Closed-form bytes per category: the textbook estimate, to set beside the traced one.

Parameters are counted exactly (the model built on the meta device: no bytes). The rest are
formulas: the KV cache 2*L*B*T*n_kv*d; activations per layer per Korthikanti et al. 2022
("Reducing Activation Recomputation in Large Transformer Models"), s*b*h*(34 + 5*a*s/h) bytes
at 2-byte precision, without the dropout masks (dropout is off); logits B*T*V in the model
dtype plus the fp32 copy and log-softmax. It assumes everything of a category coexists at the
phase's peak, which the traced prediction does not assume; `distance` shows how far apart they are.
"""

from __future__ import annotations

from typing import Any

from rlhf_kit.memory.config import DTYPE_BYTES, MemoryConfig, config_dims


def count_params(hf_config: Any) -> tuple[int, int]:
    """(causal LM parameters, backbone-only parameters), counted on the meta device."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    with torch.device("meta"):
        lm = AutoModelForCausalLM.from_config(hf_config)
        backbone = AutoModel.from_config(hf_config)
    return (sum(p.numel() for p in lm.parameters()), sum(p.numel() for p in backbone.parameters()))


def optimizer_bytes_per_param(optimizer: str, dtype_bytes: int) -> float:
    """AdamW: two moments in the parameter dtype; SGD without momentum: none; 8-bit: 2 B + absmax."""
    return {"adamw": 2 * dtype_bytes, "sgd": 0, "adam8bit": 2 + 8 / 256}[optimizer]


def estimate(cfg: MemoryConfig) -> dict[str, dict[str, int]]:
    """Phase -> category -> bytes, summed over roles, by formula.

    Returns:
        {"rollout": {...}, "scoring": {...}, "update": {...}}, each with a "peak" key.
    """
    d = config_dims(cfg.hf_config)
    b = DTYPE_BYTES[cfg.dtype]
    n_lm, n_backbone = count_params(cfg.hf_config)
    h, L, V, a = d["hidden"], d["n_layer"], d["vocab"], d["n_head"]
    B, T, N = cfg.batch_size, cfg.seq_len, cfg.max_new_tokens
    n_scalar = n_backbone + h + 1
    lora = _lora_params(d, cfg.lora_rank) if cfg.lora_rank else 0
    trainable = (lora if cfg.lora_rank else n_lm) + (h + 1 if cfg.value_model == "head" else n_scalar)
    on_gpu = n_lm + (h + 1 if cfg.value_model == "head" else n_scalar) + lora
    if not cfg.lora_rank and "reference" not in cfg.offload:
        on_gpu += n_lm
    if cfg.reward_model == "model" and "reward" not in cfg.offload:
        on_gpu += n_scalar
    params = on_gpu * b
    kv = 2 * L * B * T * d["n_kv_head"] * d["head_dim"] * b
    optim = int(trainable * optimizer_bytes_per_param(cfg.optimizer, b))  # alive from the 2nd step on
    # prefill logits over the prompt, then log-softmax, probabilities and the sampler's buffer
    rollout = {"params": params, "optim": optim, "kv_cache": kv, "logits": B * cfg.prompt_length * V * b + 3 * B * V * 4}
    scoring = {"params": params, "optim": optim, "logits": B * N * V * b + 2 * B * N * V * 4,
               "activations": B * T * h * b}
    mb = cfg.micro
    act_layer = mb * T * h * (34 + 5 * a * T / h) * b / 2
    layers_kept = 1 if cfg.grad_checkpointing else L  # checkpointing keeps block inputs + one block
    act = act_layer * layers_kept + (mb * T * h * b * L if cfg.grad_checkpointing else 0)
    update = {"params": params, "grads": trainable * b,
              "optim": optim,
              "activations": int(act), "logits": mb * T * V * b + 2 * mb * N * V * 4}
    out = {"rollout": rollout, "scoring": scoring, "update": update}
    for cats in out.values():
        cats["peak"] = int(sum(cats.values()))
    return out


def _lora_params(d: dict, rank: int) -> int:
    """Rank-r adapters on q, k, v, o and the MLP matrices of every block."""
    h, inter, L = d["hidden"], d["intermediate"], d["n_layer"]
    q = d["n_head"] * d["head_dim"]
    kv = d["n_kv_head"] * d["head_dim"]
    mats = [(h, q), (h, kv), (h, kv), (q, h), (h, inter), (inter, h)] + ([(h, inter)] if d["gated"] else [])
    return L * sum(rank * (i + o) for i, o in mats)


def distance(analytic: dict[str, dict[str, int]], traced_peaks: dict[str, int]) -> dict[str, float]:
    """Relative distance of the analytic peak from the traced one, per phase: (analytic - traced) / traced."""
    return {p: (analytic[p]["peak"] - t) / t for p, t in traced_peaks.items() if p in analytic and t}


def flash_attention_gap(cfg: MemoryConfig) -> int:
    """Upper bound of the attention-score bytes a flash-attention kernel would not keep.

    Eager attention saves the (b, heads, T, T) probabilities of every layer for backward; flash
    attention keeps only a (b, heads, T) log-sum-exp. The traced update peak can exceed a GPU
    with flash attention by at most this much (it is smaller when `attn` is already "sdpa").
    """
    d = config_dims(cfg.hf_config)
    layers = 1 if cfg.grad_checkpointing else d["n_layer"]
    return int(layers * cfg.micro * d["n_head"] * cfg.seq_len ** 2 * DTYPE_BYTES[cfg.dtype])
