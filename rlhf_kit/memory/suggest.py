"""Suggestions that make a setup fit: each one applied to the config and predicted again.

No number here is guessed: every suggestion's peak comes from `predict` on the changed config.
They are ranked by memory saved on the accelerator.

Example:
    base = predict(cfg)
    for s in suggest(cfg, base, budget=80e9):
        print(s.title, s.peak, s.saved)

Known limitations:
    The largest batch that fits is searched in multiples of the mini-batch you set (all batches
    when you set none); with a budget far above the setup, 12 probes may end the search first
    (the suggestion then says "at least"). The 8-bit
    optimizer and offloading need bitsandbytes / a second device in the real run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from rlhf_kit.memory.config import MemoryConfig, human_bytes
from rlhf_kit.memory.predict import Prediction, predict


@dataclass
class Suggestion:
    """One change, applied and re-predicted.

    Attributes:
        title: what to change, in a few words.
        changes: the MemoryConfig fields changed, with their new values.
        peak: predicted peak on the accelerator afterwards (bytes).
        saved: base peak - peak (bytes; negative means it costs memory).
        fits: peak <= budget (None without a budget).
        note: what it costs or needs.
    """

    title: str
    changes: dict
    peak: int
    saved: int
    fits: bool | None = None
    note: str = ""
    prediction: Prediction | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        return {"title": self.title, "changes": self.changes, "peak": self.peak, "saved": self.saved,
                "fits": self.fits, "note": self.note}


def candidate_changes(cfg: MemoryConfig) -> list[tuple[str, dict, str]]:
    """(title, changes, note) for every suggestion that applies to `cfg`."""
    out: list[tuple[str, dict, str]] = []
    if cfg.micro > 1:
        micro = max(1, cfg.micro // 4)
        out.append((f"micro-batches of {micro} with gradient accumulation", {"micro_batch_size": micro},
                    "same mini-batch per optimizer step; more, smaller forward/backward passes"))
    if not cfg.grad_checkpointing:
        out.append(("gradient checkpointing", {"grad_checkpointing": True},
                    "recomputes each block's forward in backward: about 30% more update time"))
    if cfg.dtype == "fp32":
        out.append(("bf16 weights and optimizer state", {"dtype": "bf16"},
                    "plain bf16 training; with fp32 master weights add 12 bytes per trainable parameter"))
    if cfg.value_model == "separate":
        out.append(("value head on the policy instead of a separate critic", {"value_model": "head"},
                    "one shared backbone: the critic no longer learns separately"))
    offload = {r: "cpu" for r in ("reference", "reward")
               if (r != "reward" or cfg.reward_model == "model") and (r != "reference" or not cfg.lora_rank)}
    if offload and not cfg.offload:
        out.append((f"offload {' and '.join(offload)} to CPU (or a second GPU)", {"offload": offload},
                    "their forwards run on the CPU (slow) or on another device"))
    if not cfg.lora_rank:
        out.append(("LoRA rank 16 (reference = base model without adapters)", {"lora_rank": 16},
                    "trains adapters only; no second copy of the policy is held"))
    if cfg.optimizer == "adamw":
        out.append(("8-bit Adam (bitsandbytes)", {"optimizer": "adam8bit"}, "needs bitsandbytes on CUDA"))
    return out


def largest_batch(cfg: MemoryConfig, base: Prediction, budget: int, max_probes: int = 12,
                  run: Callable[[MemoryConfig], Prediction] = predict) -> Suggestion | None:
    """The largest batch whose traced peak fits `budget`, searched exactly.

    Batches are multiples of the mini-batch (or micro-batch) the user set, so the update keeps
    its shape. The search brackets the answer (growing or halving), then interpolates between
    the largest batch that fits and the smallest that does not (peak is close to affine in the
    batch, so this takes a few probes) until they are one step apart. Every probe is traced.
    """
    step = cfg.mini_batch_size or cfg.micro_batch_size or 1
    probed: dict[int, Prediction] = {cfg.batch_size // step: base}

    def peak(k: int) -> int:
        if k not in probed:
            probed[k] = run(cfg.replace(batch_size=k * step).validate())
        return probed[k].peak

    k0 = cfg.batch_size // step
    lo, hi = (k0, None) if base.peak <= budget else (None, k0)
    for _ in range(max_probes):
        if lo is None:  # nothing fits yet: halve
            if hi == 1:
                return None
            k = max(1, hi // 2)
        elif hi is None:  # everything fits so far: aim where the line through the last two hits the budget
            below = sorted(probed)[-2:]
            k = lo * 2
            if len(below) == 2 and peak(below[1]) > peak(below[0]):
                slope = (peak(below[1]) - peak(below[0])) / (below[1] - below[0])
                k = min(lo * 8, max(lo + 1, int(lo + (budget - peak(lo)) / slope) + 1))
        elif hi - lo <= 1:
            break
        else:  # interpolate between the two, strictly inside
            guess = lo + (budget - peak(lo)) * (hi - lo) // max(1, peak(hi) - peak(lo))
            k = min(hi - 1, max(lo + 1, guess))
        if peak(k) <= budget:
            lo = k
        else:
            hi = k
    if lo is None or lo == k0:
        return None
    exact = hi is not None and hi - lo == 1
    note = (f"the largest that fits: {hi * step} needs {human_bytes(peak(hi))}" if exact else
            f"at least; {len(probed) - 1} probes did not find where it stops fitting")
    pred = probed[lo]
    return Suggestion(f"batch size {lo * step}", {"batch_size": lo * step}, pred.peak, base.peak - pred.peak,
                      True, note, pred)


def suggest(cfg: MemoryConfig, base: Prediction, budget: int | None = None,
            run: Callable[[MemoryConfig], Prediction] = predict) -> list[Suggestion]:
    """Every applicable suggestion, applied and re-predicted, ranked by memory saved."""
    out = []
    for title, changes, note in candidate_changes(cfg):
        pred = run(cfg.replace(**changes).validate())
        s = Suggestion(title, changes, pred.peak, base.peak - pred.peak,
                       None if budget is None else pred.peak <= budget, note, pred)
        if "offload" in changes:
            elsewhere = max((max(p.values()) for p in pred.offloaded.values()), default=0)
            s.note += f"; {human_bytes(elsewhere)} peak there"
        out.append(s)
    out.sort(key=lambda s: s.saved, reverse=True)
    if budget is not None:
        batch = largest_batch(cfg, base, budget, run=run)
        if batch is not None:
            out.insert(0, batch)
    return out
