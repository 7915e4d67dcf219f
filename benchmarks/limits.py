"""How close our PPO loop runs to the work it cannot avoid (`make bench-limits`).

    .venv/bin/python benchmarks/limits.py                       # tiny-gpt2 and small-gpt2, batch 4, 15 tokens
    .venv/bin/python benchmarks/limits.py --models small-gpt2 --batches 8 --tokens 53 --repeats 5

For the same model, prompts, batch and lengths it times, alternating, R times each:
    generate   Hugging Face `model.generate` alone: KV cache on, pure sampling (temperature 1, top_k 0,
               top_p 1: the distribution our sampler draws from; tests/test_speed_equivalence.py checks it)
    update     one forward/backward/AdamW step of the trained parameters (policy + value head) on
               the tokens of one of our rollouts
    ours       one `PPOTrainer.train_step` (value head, 1 PPO epoch, one mini-batch), with its phases
and reports the medians and three ratios:
    rollout_vs_generate     our `rollout` phase / raw generate          (target <= 1.0)
    iteration_vs_floor      our iteration / (our rollout + update)       (target <= 1.3)
    update_mfu              update FLOP/s (rlhf_kit.profiler.flops, forward x 3) / matmul peak measured
                            now with the same threads (rlhf_kit.profiler.peaks.calibrate)

Known limitations:
    - `generate` stops early if every sequence samples EOS; the generated length is reported.
    - On a shared machine every number includes waiting for a core; medians over alternated
      repeats spread that evenly but do not remove it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def sampling_kwargs(max_new_tokens: int, eos_id: int) -> dict:
    """`generate` arguments that sample exactly like PolicyModel.sample at temperature 1 (no warpers)."""
    return dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=max_new_tokens,
                use_cache=True, pad_token_id=eos_id)


def update_step(policy, head, optimizer, sequences, attention_mask, start: int) -> None:
    """One forward/backward/AdamW step of the trained parameters on these tokens (B, T)."""
    s = policy.score(sequences, attention_mask, start, with_entropy=True, with_hidden=True)
    loss = -s.logprobs.mean() + head(s.hidden).pow(2).mean() - 0.0 * s.entropy.mean()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def measure(model: str, batch: int, tokens: int, repeats: int, seed: int) -> dict:
    """Alternate generate / update / our iteration `repeats` times; return the medians and ratios."""
    import torch

    from rlhf_core.config import TrainConfig
    from rlhf_core.models import model_spec
    from rlhf_core.policy import PolicyModel
    from rlhf_core.ppo import PPOTrainer, set_seed
    from rlhf_core.reward import ToyRewardModel
    from rlhf_core.train import PROMPTS
    from rlhf_kit.hooks import HookBus
    from rlhf_kit.profiler.flops import ModelSpec, forward_flops

    set_seed(seed)
    cfg = TrainConfig()
    cfg.rollout.batch_size, cfg.rollout.max_new_tokens, cfg.run.seed = batch, tokens, seed
    policy = PolicyModel(model, "cpu", quiet=True)
    trainer = PPOTrainer(policy, policy.frozen_copy(), ToyRewardModel("cpu", tokenizer=policy.tokenizer),
                         "cpu", config=cfg)
    trainer.bus = bus = HookBus(device="cpu")
    # A separate copy for the update floor, so timing it does not change the trained policy.
    floor = PolicyModel(model, "cpu", quiet=True)
    head = type(trainer.value_model)(floor.model.config.get_text_config().hidden_size)
    opt = torch.optim.AdamW([*floor.parameters(), *head.parameters()], lr=1e-5, eps=1e-5)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(batch)]
    enc = policy.tokenizer(prompts, return_tensors="pt", padding=True)
    gen_kw = sampling_kwargs(tokens, policy.eos_token_id)
    rows = []
    for i in range(repeats + 1):  # the first round warms every path up and is dropped
        row = {}
        t = time.perf_counter()
        with torch.inference_mode():
            out = policy.model.generate(input_ids=enc.input_ids, attention_mask=enc.attention_mask, **gen_kw)
        row["generate"] = time.perf_counter() - t
        row["generated"] = int(out.shape[1] - enc.input_ids.shape[1])
        bus.begin_step(i + 1)
        t = time.perf_counter()
        metrics = trainer.train_step(prompts, tokens)
        row["iteration"] = time.perf_counter() - t
        row["rollout"] = bus.end_step(i + 1, 1, metrics)["time/rollout"]
        r = trainer.last_rollout
        t = time.perf_counter()
        update_step(floor, head, opt, r.sequences, r.attention_mask, r.response_start)
        row["update"] = time.perf_counter() - t
        rows.append(row)
    rows = rows[1:]
    med = {k: statistics.median(r[k] for r in rows) for k in ("generate", "rollout", "iteration", "update")}
    spec = ModelSpec.from_info(model_spec(policy.model))
    r = trainer.last_rollout
    n_tok = int(r.attention_mask.numel())
    update_flops = 3.0 * forward_flops(spec, n_tok, n_tok * r.sequences.shape[1] // batch)
    return {"model": model, "batch": batch, "max_new_tokens": tokens, "repeats": repeats,
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "generated_tokens": min(r["generated"] for r in rows),
            **{f"{k}_s": round(v, 4) for k, v in med.items()},
            "rollout_vs_generate": round(med["rollout"] / med["generate"], 3),
            "iteration_vs_floor": round(med["iteration"] / (med["rollout"] + med["update"]), 3),
            "update_flops_per_s": update_flops / med["update"]}


def table(lines: list[dict]) -> str:
    head = ["model", "B", "N", "generate s", "our rollout s", "update s", "our iteration s",
            "rollout/generate", "iteration/(rollout+update)", "update MFU"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for ln in lines:
        cells = [ln["model"], ln["batch"], ln["max_new_tokens"], f"{ln['generate_s']:.3f}",
                 f"{ln['rollout_s']:.3f}", f"{ln['update_s']:.3f}", f"{ln['iteration_s']:.3f}",
                 f"{ln['rollout_vs_generate']:.2f}", f"{ln['iteration_vs_floor']:.2f}", f"{ln['update_mfu']:.1%}"]
        out.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["tiny-gpt2", "small-gpt2"])
    p.add_argument("--batches", nargs="+", type=int, default=[4])
    p.add_argument("--tokens", nargs="+", type=int, default=[15])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch threads (the TRL comparison uses the same)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="tiny-gpt2 only, 3 repeats")
    a = p.parse_args(argv)
    if a.quick:
        a.models, a.repeats = ["tiny-gpt2"], 3
    import torch

    from rlhf_kit.profiler.peaks import calibrate

    torch.set_num_threads(a.threads)
    lines = []
    for model, batch, tokens in itertools.product(a.models, a.batches, a.tokens):
        line = measure(model, batch, tokens, a.repeats, a.seed)
        peak = max(calibrate(size=512, repeats=5, save=False)["flops"] for _ in range(2))  # after, same threads
        line["matmul_peak_flops_per_s"] = peak
        line["update_mfu"] = round(line["update_flops_per_s"] / peak, 4)
        print(json.dumps(line), flush=True)
        lines.append(line)
    print()
    print(table(lines))
    print(f"\n{a.threads} torch thread(s); medians of {a.repeats} alternated repeats; MFU against a "
          "fp32 matmul peak measured in this process")
    return 0


if __name__ == "__main__":
    sys.exit(main())
