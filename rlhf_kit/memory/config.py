"""What the memory optimizer is asked about: a PPO setup, sizes, budgets and model configs.

`MemoryConfig` is one RLHF PPO setup (model, shapes, dtype, optimizer, and the memory-saving
switches the suggestions flip). `resolve_model` turns a model name into a Hugging Face config
without downloading or allocating weights. Torch is imported lazily: parsing flags is cheap.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable

from rlhf_kit.errors import UsageError

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
OPTIMIZERS = ("adamw", "sgd", "adam8bit")
VALUE_MODELS = ("head", "separate")
REWARD_MODELS = ("model", "none")
ATTN = ("sdpa", "eager")
ROLES = ("policy", "reference", "reward", "value")
CATEGORIES = ("params", "grads", "optim", "activations", "kv_cache", "logits", "temporaries")
MEM_PHASES = ("rollout", "scoring", "update")

# Public GPT-2 sizes (Radford et al. 2019; the Hugging Face configs), built locally from GPT2Config.
GPT2_SIZES: dict[str, dict[str, int]] = {
    "gpt2": dict(n_embd=768, n_layer=12, n_head=12),
    "gpt2-medium": dict(n_embd=1024, n_layer=24, n_head=16),
    "gpt2-large": dict(n_embd=1280, n_layer=36, n_head=20),
    "gpt2-xl": dict(n_embd=1600, n_layer=48, n_head=25),
}

# Usable accelerator memory by device name (the marketing size; the CUDA context takes ~0.5 GB more).
DEVICES: dict[str, float] = {
    "h100": 80e9, "h200": 141e9, "a100": 80e9, "a100-40gb": 40e9, "a10g": 24e9, "l4": 24e9,
    "4090": 24e9, "3090": 24e9, "v100": 16e9, "t4": 16e9, "mi300x": 192e9,
}
_UNITS = {"": 1, "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(text: str) -> int:
    """'24GB' -> 24_000_000_000 bytes; GiB/MiB are binary; a bare number is bytes.

    Raises:
        UsageError: not a positive size.
    """
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
    unit = m.group(2).lower() if m else ""
    if not m or unit not in _UNITS or float(m.group(1)) <= 0:
        raise UsageError(f"--budget '{text}' is not a size; use e.g. 24GB, 80GiB or 512MB")
    return int(float(m.group(1)) * _UNITS[unit])


def budget_for_device(name: str) -> int:
    key = name.lower().replace("nvidia-", "").replace("_", "-")
    if key not in DEVICES:
        raise UsageError(f"--device '{name}' is unknown; choose from {', '.join(DEVICES)} or give --budget")
    return int(DEVICES[key])


def human_bytes(n: float) -> str:
    """Bytes in decimal units, 3 significant figures: 1.23 GB, 456 MB, 7.8 kB."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"


@dataclass
class MemoryConfig:
    """One PPO setup whose memory is predicted. Every field is a knob a suggestion may turn.

    Attributes:
        model: model name as given (for display); `hf_config` is its resolved config.
        batch_size: rollout batch (sequences generated per step).
        prompt_length / max_new_tokens: tokens per sequence = prompt_length + max_new_tokens.
        mini_batch_size: sequences per optimizer step in the update (0 = batch_size).
        micro_batch_size: sequences per forward/backward inside a mini-batch (gradient
            accumulation; 0 = mini_batch_size).
        ppo_epochs: passes over the batch in the update (the peak repeats after 2).
        dtype: storage dtype of every model and of the optimizer state (plain torch, no fp32 master).
        value_model: "head" (on the policy) or "separate" (a critic: backbone + scalar head).
        reward_model: "model" (a neural scorer with the policy's backbone) or "none" (rule-based).
        optimizer: "adamw" | "sgd" | "adam8bit" (bitsandbytes-style blockwise 8-bit states).
        foreach: the optimizer's multi-tensor path (CUDA's default; temporaries over all params).
        fused: AdamW's fused kernel (the kit's runner uses it on CPU and CUDA; no temporaries).
        grad_checkpointing: recompute block activations in backward instead of keeping them.
        lora_rank: >0 trains rank-r adapters on every linear layer in the blocks; the reference is
            the base model without adapters, so no second copy is held.
        offload: roles kept off the accelerator ("cpu" or "gpu1"), e.g. {"reference": "cpu"}.
        attn: attention implementation ("sdpa" or "eager"); see docs/memory.md on flash attention.
        param_snapshot: the update holds a copy of the trainable weights (the kit's runner does,
            for the update-to-weight ratio; TRL and OpenRLHF do not).
    """

    model: str = "tiny-gpt2"
    batch_size: int = 8
    prompt_length: int = 16
    max_new_tokens: int = 32
    mini_batch_size: int = 0
    micro_batch_size: int = 0
    ppo_epochs: int = 2
    dtype: str = "fp32"
    value_model: str = "head"
    reward_model: str = "model"
    optimizer: str = "adamw"
    foreach: bool = False
    fused: bool = True
    grad_checkpointing: bool = False
    lora_rank: int = 0
    offload: dict = field(default_factory=dict)
    attn: str = "sdpa"
    param_snapshot: bool = True
    hf_config: Any = field(default=None, repr=False, compare=False)

    @property
    def seq_len(self) -> int:
        return self.prompt_length + self.max_new_tokens

    @property
    def mini(self) -> int:
        return self.mini_batch_size or self.batch_size

    @property
    def micro(self) -> int:
        return self.micro_batch_size or self.mini

    def replace(self, **changes: Any) -> "MemoryConfig":
        return replace(self, **changes)

    def validate(self) -> "MemoryConfig":
        for name in ("batch_size", "prompt_length", "max_new_tokens", "ppo_epochs"):
            if int(getattr(self, name)) <= 0:
                raise UsageError(f"--{name} must be a positive integer, got {getattr(self, name)}")
        for name in ("mini_batch_size", "micro_batch_size", "lora_rank"):
            if int(getattr(self, name)) < 0:
                raise UsageError(f"--{name} must be a positive integer (or 0 for the default), got {getattr(self, name)}")
        if self.mini > self.batch_size or self.batch_size % self.mini:
            raise UsageError(f"--mini_batch_size {self.mini} must divide --batch_size {self.batch_size}")
        if self.micro > self.mini or self.mini % self.micro:
            raise UsageError(f"--micro_batch_size {self.micro} must divide --mini_batch_size {self.mini}")
        for name, allowed in (("dtype", DTYPE_BYTES), ("value_model", VALUE_MODELS), ("optimizer", OPTIMIZERS),
                              ("reward_model", REWARD_MODELS), ("attn", ATTN)):
            if getattr(self, name) not in allowed:
                raise UsageError(f"--{name} '{getattr(self, name)}' is not one of {', '.join(allowed)}")
        n_pos = getattr(self.hf_config, "n_positions", None) or getattr(self.hf_config, "max_position_embeddings", 0)
        if n_pos and self.seq_len > n_pos:
            raise UsageError(f"prompt_length + max_new_tokens = {self.seq_len} exceeds the model's {n_pos} positions")
        return self

    def to_dict(self) -> dict:
        d = asdict(replace(self, hf_config=None))
        d.pop("hf_config")
        return d


# ---- models ----------------------------------------------------------------------------
def resolve_model(name: str, presets: Callable[[str], Any] | None = None) -> Any:
    """A Hugging Face config for `name`, without downloading or allocating weights.

    Args:
        name: a GPT-2 size (gpt2 .. gpt2-xl), a config.json file, a model directory, or a name
            `presets` knows (the runner's embedded presets, passed in by rlhf_kit/cli.py).
        presets: optional callable name -> config or None.
    Raises:
        UsageError: none of the above.
    """
    from transformers import AutoConfig, GPT2Config

    if name in GPT2_SIZES:
        return GPT2Config(vocab_size=50257, n_positions=1024, **GPT2_SIZES[name])
    if os.path.isfile(name):
        try:
            data = json.loads(open(name, encoding="utf-8").read())
            return AutoConfig.for_model(data.pop("model_type"), **data)
        except (ValueError, KeyError, TypeError) as e:
            raise UsageError(f"--model '{name}' is not a Hugging Face config.json ({e})") from None
    if os.path.isdir(name):
        if not os.path.exists(os.path.join(name, "config.json")):
            raise UsageError(f"--model '{name}' is a directory without a config.json")
        return AutoConfig.from_pretrained(name)
    found = presets(name) if presets else None
    if found is not None:
        return found
    raise UsageError(f"--model '{name}' is unknown; give {', '.join(GPT2_SIZES)}, an embedded preset, "
                     "a model directory or a config.json file")


def config_dims(cfg: Any) -> dict[str, Any]:
    """Family-neutral sizes of a GPT-2 or Llama-style config (for the analytic estimate)."""
    hidden = getattr(cfg, "n_embd", None) or cfg.hidden_size
    n_head = getattr(cfg, "n_head", None) or cfg.num_attention_heads
    n_kv = getattr(cfg, "num_key_value_heads", None) or n_head
    inter = getattr(cfg, "n_inner", None) or getattr(cfg, "intermediate_size", None) or 4 * hidden
    return dict(
        family=cfg.model_type, hidden=hidden, n_head=n_head, n_kv_head=n_kv,
        head_dim=getattr(cfg, "head_dim", None) or hidden // n_head,
        n_layer=getattr(cfg, "n_layer", None) or cfg.num_hidden_layers,
        vocab=cfg.vocab_size, intermediate=inter, gated=cfg.model_type != "gpt2",
        tied=bool(getattr(cfg, "tie_word_embeddings", True)),
        n_positions=getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", 0),
    )
