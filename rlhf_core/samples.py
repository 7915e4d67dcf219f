"""Sample completions for fixed prompts, before and after training: what RLHF did to the text.

Greedy decoding, so the same weights always give the same text and a change between "before" and
"after" is the policy's doing, not the sampler's. It draws no random numbers, so a run with samples
trains exactly as one without.

Example:
    before = greedy_completions(policy.model, policy.tokenizer, PROMPTS[:3], max_new_tokens=15)
    ... train ...
    after = greedy_completions(policy.model, policy.tokenizer, PROMPTS[:3], max_new_tokens=15)
    print(format_samples(PROMPTS[:3], before, after))

Known limitations:
    - Greedy text of a small model repeats itself; it shows the mode of the policy, not its spread.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence


def greedy_completions(model: Any, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int) -> list[str]:
    """The greedy continuation of each prompt, decoded without special tokens.

    Args:
        model: a Hugging Face causal LM (GPT-2 or Llama); it is left in the train/eval mode it had.
        prompts: texts, decoded one at a time so no padding can change a completion.
    Returns:
        one string per prompt: the generated text only (the prompt is not repeated).
    """
    import torch

    out = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt").input_ids.to(model.device)   # (1, P)
        with torch.inference_mode():
            seq = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id)
        out.append(tokenizer.decode(seq[0, ids.shape[1]:], skip_special_tokens=True))
    return out


def format_samples(prompts: Sequence[str], before: Sequence[str], after: Sequence[str] | None = None) -> str:
    """A plain-text table: each prompt with its completion before (and after) training."""
    lines = []
    for i, prompt in enumerate(prompts):
        lines.append(f"  [{i + 1}] {prompt!r}")
        lines.append(f"      before: {prompt + before[i]!r}")
        if after is not None:
            lines.append(f"      after:  {prompt + after[i]!r}")
    return "\n".join(lines)


def write_samples(path: Path, prompts: Sequence[str], before: Sequence[str], after: Sequence[str]) -> None:
    """samples.json in the run directory: [{prompt, before, after}], for docs and comparisons."""
    rows = [{"prompt": p, "before": b, "after": a} for p, b, a in zip(prompts, before, after)]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rows, indent=1, ensure_ascii=False) + "\n")
    tmp.replace(path)  # written whole or not at all


__all__ = ["greedy_completions", "format_samples", "write_samples"]
