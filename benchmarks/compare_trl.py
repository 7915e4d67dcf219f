"""Our PPO iteration against TRL's, side by side, on the same work (`make bench-trl`).

    .venv/bin/python benchmarks/compare_trl.py --quick          # tiny-gpt2, batch 4, 15 tokens, 1 epoch
    .venv/bin/python benchmarks/compare_trl.py                  # the full grid (long on 2 shared cores)
    .venv/bin/python benchmarks/compare_trl.py --models small-gpt2 --batches 8 --tokens 53 --epochs 4

Per configuration one worker process per side is started (benchmarks/speed_workers.py); TRL 1.12's
PPOTrainer runs in .venv-bench (the only TRL that still ships PPO), everything else in .venv. Every
worker loads the same model directory (built by rlhf_core.models), gets the same prompts, batch size,
response length, PPO epochs (one optimizer step per epoch: the whole batch is one mini-batch) and
thread count. After a warm-up block per side, the sides run blocks of iterations in turn, the order
rotating each repeat, so load from other processes on the machine falls on all sides alike.

Output: one JSON line per configuration (median wall and CPU seconds per iteration per side,
generated tokens/s, the work each side was seen doing, speed-ups), then a readable table.
A configuration whose PPO sides did different work (optimizer steps or generated tokens per
iteration) is marked `"equal_work": false` and gets no speed-up.

Known limitations:
    - TRL's PPO scores with a reward model (a GPT-2 sequence classifier of the same shape): one
      forward per iteration that ours, scoring text with VADER, does not do.
    - GRPO/RLOO are different algorithms (no value model; groups of 2 completions per prompt);
      they are compared per iteration of B completions and PPO epochs = their num_iterations.
    - Wall times on a shared machine include waiting for a core; CPU seconds do not, so both are given.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORKER = ROOT / "benchmarks" / "speed_workers.py"
PPO_SIDES = ("ours-head", "ours-separate", "trl-ppo", "trl-ppo-nogc")
ALL_SIDES = PPO_SIDES + ("trl-grpo", "trl-rloo")
# (name, numerator side, denominator side): speed-up = numerator s/it / denominator s/it
RATIOS = (("separate_vs_trl", "trl-ppo", "ours-separate"), ("head_vs_trl", "trl-ppo", "ours-head"),
          ("separate_vs_trl_nogc", "trl-ppo-nogc", "ours-separate"), ("head_vs_trl_nogc", "trl-ppo-nogc", "ours-head"),
          ("head_vs_grpo", "trl-grpo", "ours-head"), ("head_vs_rloo", "trl-rloo", "ours-head"))


def python_for(side: str) -> Path:
    """TRL 1.12 PPO lives in .venv-bench; the rest in the project's .venv."""
    return ROOT / (".venv-bench" if side.startswith("trl-ppo") else ".venv") / "bin" / "python"


class Worker:
    """One side's process: send a block size, read back its iterations."""

    def __init__(self, side: str, cfg: dict, log_dir: Path):
        self.side = side
        self.log = open(log_dir / f"{side}.log", "w")
        self.proc = subprocess.Popen([str(python_for(side)), str(WORKER), side, json.dumps(cfg)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.log_path = log_dir / f"{side}.log"

    def _read(self) -> str:
        line = self.proc.stdout.readline()
        if not line:
            tail = self.log_path.read_text()[-1500:]
            raise RuntimeError(f"worker {self.side} died:\n{tail}")
        return line.strip()

    def ready(self) -> None:
        word = self._read()
        if word != "READY":
            raise RuntimeError(f"worker {self.side} said {word!r} instead of READY")

    def block(self, n: int) -> dict:
        self.proc.stdin.write(f"{n}\n")
        self.proc.stdin.flush()
        line = self._read()
        if not line.startswith("BLOCK "):
            raise RuntimeError(f"worker {self.side} said {line[:200]!r}")
        return json.loads(line[6:])

    def stop(self) -> None:
        try:
            self.proc.stdin.write("stop\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        self.proc.wait(timeout=60)
        self.log.close()


def measure(cfg: dict, sides: list[str], repeats: int, iters: int, warmup: int, log_dir: Path) -> dict:
    """Run the sides of one configuration in alternation. Returns side -> list of iteration rows."""
    workers = [Worker(s, cfg, log_dir) for s in sides]
    rows: dict[str, list[dict]] = {s: [] for s in sides}
    meta: dict[str, dict] = {}
    try:
        for w in workers:
            w.ready()
        for w in workers:
            w.block(warmup)  # first iterations pay lazy initialisation: not counted
        for r in range(repeats):
            k = r % len(workers)
            order = workers[k:] + workers[:k]  # rotate, so no side always runs right after another
            for w in order:
                block = w.block(iters)
                rows[w.side].extend(block.pop("rows"))
                meta[w.side] = block
    finally:
        for w in workers:
            if w.proc.poll() is None:
                w.stop()
    return {"rows": rows, "meta": meta}


def summarise(cfg: dict, measured: dict) -> dict:
    """The configuration's JSON line: medians per side, the work seen, and the speed-ups."""
    sides = {}
    for side, rows in measured["rows"].items():
        wall = statistics.median(r["wall"] for r in rows)
        cpu = statistics.median(r["cpu"] for r in rows)
        tokens = statistics.median(r["gen_tokens"] for r in rows)
        entry = {"median_s": round(wall, 4), "median_cpu_s": round(cpu, 4), "iterations": len(rows),
                 "gen_tokens_per_s": round(tokens / wall, 1),
                 "optimizer_steps": sorted({r["optimizer_steps"] for r in rows}),
                 "gen_tokens": sorted({r["gen_tokens"] for r in rows})}
        if rows and "phases" in rows[0]:
            names = rows[0]["phases"]
            entry["phases_median_s"] = {p: round(statistics.median(r["phases"].get(p, 0.0) for r in rows), 4)
                                        for p in names}
        meta = measured["meta"].get(side, {})
        entry["versions"] = {k: meta[k] for k in ("torch", "trl") if k in meta}
        entry["threads"] = meta.get("threads")
        sides[side] = entry
    ppo = [sides[s] for s in PPO_SIDES if s in sides]
    equal = len({(tuple(e["optimizer_steps"]), tuple(e["gen_tokens"])) for e in ppo}) <= 1
    out = {"model": cfg["model"], "batch": cfg["batch"], "max_new_tokens": cfg["tokens"],
           "ppo_epochs": cfg["epochs"], "threads": cfg["threads"], "equal_work": equal, "sides": sides,
           "speedup": {}, "speedup_cpu": {}}
    for name, slow, fast in RATIOS:
        if slow in sides and fast in sides and (equal or not slow.startswith("trl-ppo")):
            out["speedup"][name] = round(sides[slow]["median_s"] / sides[fast]["median_s"], 2)
            out["speedup_cpu"][name] = round(sides[slow]["median_cpu_s"] / sides[fast]["median_cpu_s"], 2)
    return out


def table(lines: list[dict], sides: list[str]) -> str:
    """Markdown table: s/iteration per side (wall median), then the speed-ups (wall, CPU in brackets)."""
    short = {"ours-head": "ours head", "ours-separate": "ours sep", "trl-ppo": "TRL PPO",
             "trl-ppo-nogc": "TRL PPO no-gc", "trl-grpo": "TRL GRPO", "trl-rloo": "TRL RLOO"}
    ratios = [n for n, a, b in RATIOS if a in sides and b in sides]
    head = ["model", "B", "N", "ep"] + [f"{short[s]} s/it" for s in sides] + ["ours tok/s"] + ratios
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for ln in lines:
        first = "ours-head" if "ours-head" in ln["sides"] else next(iter(ln["sides"]))
        cells = [ln["model"], ln["batch"], ln["max_new_tokens"], ln["ppo_epochs"]]
        cells += [f"{ln['sides'][s]['median_s']:.3f}" for s in sides]
        cells.append(f"{ln['sides'][first]['gen_tokens_per_s']:.0f}")
        cells += [f"{ln['speedup'][r]:.2f}x ({ln['speedup_cpu'][r]:.2f}x)" if r in ln["speedup"] else "n/a"
                  for r in ratios]
        out.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(out)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny-gpt2, batch 4, 15 tokens, 1 epoch, 3 repeats")
    p.add_argument("--models", nargs="+", default=["tiny-gpt2", "small-gpt2"])
    p.add_argument("--batches", nargs="+", type=int, default=[4, 8])
    p.add_argument("--tokens", nargs="+", type=int, default=[15, 53])
    p.add_argument("--epochs", nargs="+", type=int, default=[1, 4])
    p.add_argument("--sides", nargs="+", default=list(ALL_SIDES), choices=ALL_SIDES)
    p.add_argument("--repeats", type=int, default=3, help="rounds of alternation")
    p.add_argument("--iters", type=int, default=2, help="timed iterations per side per round")
    p.add_argument("--warmup", type=int, default=1, help="untimed iterations per side first")
    p.add_argument("--threads", type=int, default=1, help="torch threads on every side")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jsonl", default="", help="also append the JSON lines to this file")
    a = p.parse_args(argv)
    if a.quick:
        a.models, a.batches, a.tokens, a.epochs, a.repeats = ["tiny-gpt2"], [4], [15], [1], 3
    for side in a.sides:
        if not python_for(side).exists():
            p.error(f"{python_for(side)} is missing; `make bench-trl` creates .venv-bench (TRL 1.12) and .venv")
    return a


def main(argv: list[str] | None = None) -> int:
    from rlhf_core.models import resolve
    from rlhf_core.train import PROMPTS

    a = parse(argv)
    scratch = Path(tempfile.mkdtemp(prefix="bench-trl-"))
    lines = []
    for model, batch, tokens, epochs in itertools.product(a.models, a.batches, a.tokens, a.epochs):
        cfg = {"model": model, "model_dir": resolve(model)[0], "batch": batch, "tokens": tokens,
               "epochs": epochs, "seed": a.seed, "threads": a.threads, "scratch": str(scratch / "out"),
               "prompts": [PROMPTS[i % len(PROMPTS)] for i in range(batch)]}
        line = summarise(cfg, measure(cfg, list(a.sides), a.repeats, a.iters, a.warmup, scratch))
        print(json.dumps(line), flush=True)
        if a.jsonl:
            with open(a.jsonl, "a") as f:
                f.write(json.dumps(line) + "\n")
        lines.append(line)
    print()
    print(table(lines, list(a.sides)))
    print(f"\n{a.threads} torch thread(s) per side; s/it = median wall seconds per PPO iteration; "
          "speed-ups are wall (CPU seconds in brackets); worker logs in " + str(scratch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
