"""`rlhf-kit memory`: will this PPO setup fit, and what to change so that it does.

Prints a verdict line, then per phase a table (rows: roles; columns: categories) of the bytes
alive at that phase's predicted peak, the analytic estimate's distance, and with `--suggest`
(or when it does not fit) the suggestions, each re-predicted, ranked by memory saved.
"""

from __future__ import annotations

import json
import resource
from functools import partial
from typing import Any, Callable, Sequence

from rlhf_kit.errors import OneLineParser, UsageError
from rlhf_kit.memory.config import (ATTN, CATEGORIES, DTYPE_BYTES, OPTIMIZERS, REWARD_MODELS, ROLES,
                                    VALUE_MODELS, MemoryConfig, budget_for_device, human_bytes,
                                    parse_size, resolve_model)


def _positive(name: str, zero_ok: bool = False) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = -1
        if value < 0 or (value == 0 and not zero_ok):
            raise UsageError(f"--{name} must be a positive integer, got '{text}'")
        return value
    return parse


def build_parser() -> OneLineParser:
    p = OneLineParser(prog="rlhf-kit memory", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="tiny-gpt2", help="preset, gpt2..gpt2-xl, a model directory or a config.json")
    for name, default in (("batch_size", 8), ("prompt_length", 16), ("max_new_tokens", 32), ("ppo_epochs", 2)):
        p.add_argument(f"--{name}", type=_positive(name), default=default)
    for name in ("mini_batch_size", "micro_batch_size", "lora_rank"):
        p.add_argument(f"--{name}", type=_positive(name, zero_ok=True), default=0, help="0: default")
    p.add_argument("--dtype", choices=tuple(DTYPE_BYTES), default="fp32")
    p.add_argument("--value_model", choices=VALUE_MODELS, default="head")
    p.add_argument("--reward_model", choices=REWARD_MODELS, default="model",
                   help="'model': a neural reward model with the policy's backbone; 'none': rule-based")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw")
    p.add_argument("--attn", choices=ATTN, default="sdpa")
    p.add_argument("--grad_checkpointing", action="store_true")
    p.add_argument("--budget", help="accelerator memory, e.g. 24GB or 80GiB")
    p.add_argument("--device", help="a device name whose memory is the budget (h100, a100, 4090, ...), or cpu")
    p.add_argument("--gpus", type=_positive("gpus"), default=0,
                   help="plan placement over N GPUs (replicated, frozen models apart, ZeRO 1-3); per-GPU peaks")
    p.add_argument("--suggest", action="store_true", help="list suggestions even when it fits")
    p.add_argument("--full", action="store_true",
                   help="trace every block of a deep model instead of a 2- and a 3-block copy (slower, same bytes)")
    p.add_argument("--json", help="also write the prediction and suggestions to this JSON file")
    return p


def config_from_args(args: Any, presets: Callable[[str], Any] | None) -> tuple[MemoryConfig, int | None]:
    """The MemoryConfig and the budget in bytes (None without one)."""
    budget = parse_size(args.budget) if args.budget else None
    on_cpu = (args.device or "").lower() == "cpu"
    if args.device and not on_cpu and budget is None:
        budget = budget_for_device(args.device)
    cfg = MemoryConfig(
        model=args.model, batch_size=args.batch_size, prompt_length=args.prompt_length,
        max_new_tokens=args.max_new_tokens, mini_batch_size=args.mini_batch_size,
        micro_batch_size=args.micro_batch_size, ppo_epochs=args.ppo_epochs, dtype=args.dtype,
        value_model=args.value_model, reward_model=args.reward_model, optimizer=args.optimizer,
        foreach=not on_cpu,  # torch's default on CUDA: the multi-tensor optimizer path
        grad_checkpointing=args.grad_checkpointing, lora_rank=args.lora_rank, attn=args.attn,
        hf_config=resolve_model(args.model, presets))
    return cfg.validate(), budget


def verdict(peak: int, phase: str, budget: int | None) -> str:
    where = f"peak {human_bytes(peak)} in {phase}"
    if budget is None:
        return f"PREDICTED: {where} (give --budget or --device for a verdict)"
    if peak <= budget:
        return f"FITS: {where}, {human_bytes(budget - peak)} to spare of {human_bytes(budget)}"
    return (f"DOES NOT FIT: {where} exceeds {human_bytes(budget)} by {human_bytes(peak - budget)} "
            f"({100 * (peak - budget) / budget:.0f}% over)")


def phase_table(name: str, roles: dict[str, dict[str, int]], peak: int) -> list[str]:
    """One phase's table: roles x categories at the phase's peak, in human units."""
    cols = ["role", *CATEGORIES, "total"]
    rows = []
    for role in [*ROLES, *(r for r in roles if r not in ROLES)]:
        if role not in roles:
            continue
        cats = roles[role]
        rows.append([role, *(human_bytes(cats[c]) if cats.get(c) else "-" for c in CATEGORIES),
                     human_bytes(sum(cats.values()))])
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    return [f"{name}: peak {human_bytes(peak)}", fmt.format(*cols), *(fmt.format(*r) for r in rows), ""]


def main(argv: Sequence[str] | None = None, presets: Callable[[str], Any] | None = None) -> int:
    """Entry point; `presets` (name -> HF config or None) is passed in by rlhf_kit/cli.py."""
    from rlhf_kit.memory.analytic import distance, estimate, flash_attention_gap
    from rlhf_kit.memory.predict import predict
    from rlhf_kit.memory.suggest import suggest

    args = build_parser().parse_args(argv)
    cfg, budget = config_from_args(args, presets)
    run = partial(predict, full=args.full)
    pred = run(cfg)
    lines = [verdict(pred.peak, pred.peak_phase, budget), ""]
    for phase, roles in pred.phases.items():
        lines += phase_table(phase, roles, pred.peaks[phase])
    analytic = estimate(cfg)
    dist = distance(analytic, pred.peaks)
    lines.append("analytic estimate: " + ", ".join(
        f"{p} {human_bytes(analytic[p]['peak'])} ({100 * d:+.0f}% vs traced)" for p, d in dist.items()))
    lines.append(f"{pred.method} in {pred.seconds:.1f} s on fake tensors; allocator overhead and the CUDA context "
                 f"(~0.5 GB) not included; flash attention could lower the update peak by at most "
                 f"{human_bytes(flash_attention_gap(cfg))}")
    suggestions = []
    if args.suggest or (budget is not None and pred.peak > budget):
        suggestions = suggest(cfg, pred, budget, run=run)
        lines += ["", "suggestions (each applied and re-predicted, ranked by memory saved):"]
        for i, s in enumerate(suggestions, 1):
            fit = "" if s.fits is None else ("  fits" if s.fits else "  still over")
            lines.append(f"{i:>2}. {s.title}: peak {human_bytes(s.peak)} (saves {human_bytes(s.saved)}){fit}"
                         f" -- {s.note}")
    placement = []
    if args.gpus:
        from rlhf_kit.memory.placement import format_plans, plans

        placement = plans(cfg, args.gpus, predict_fn=run)
        lines += ["", f"placement on {args.gpus} GPUs (global batch {cfg.batch_size}; peak per GPU):"]
        lines += format_plans(placement, budget, human_bytes)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    lines.append(f"\nreal memory used by this prediction: {human_bytes(rss)} (max RSS)")
    print("\n".join(lines))
    if args.json:
        data = {**pred.to_dict(), "budget": budget, "analytic": analytic,
                "suggestions": [s.to_dict() for s in suggestions],
                "placement": [p.to_dict() for p in placement]}
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
    return 0


if __name__ == "__main__":
    from rlhf_kit.errors import run_main

    run_main(main, prog="rlhf-kit memory")
