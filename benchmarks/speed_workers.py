"""One side of the TRL comparison, as a long-lived process: `python speed_workers.py SIDE 'CONFIG_JSON'`.

compare_trl.py starts one worker per side for a configuration; each builds its trainer once, then
runs blocks of iterations when told to (see `Driver`), so the parent can alternate the sides block
by block while only one of them computes at a time. Per iteration a worker records wall seconds,
process CPU seconds, and the work it observed doing:

    optimizer_steps   optimizer.step() calls, counted by torch's global optimizer step hook
    gen_tokens        generated tokens, read from the generated tensors themselves

so the parent can refuse to compare sides that did different work.

Sides (and the virtualenv they need):
    ours-head, ours-separate     rlhf_core PPOTrainer, value head / separate value model  (.venv)
    trl-ppo, trl-ppo-nogc        TRL 1.12 trl.experimental.ppo.PPOTrainer; -nogc stubs its two
                                 gc.collect() calls per update ("TRL at its best")       (.venv-bench)
    trl-grpo, trl-rloo           TRL's current GRPOTrainer / RLOOTrainer                   (.venv)

Known limitations:
    - TRL's PPO needs a reward *model*: it gets a sequence-classification GPT-2 of the same shape,
      one extra forward per iteration that our side (VADER on the decoded text) does not pay.
    - GRPO/RLOO stop a completion at EOS; random weights almost never sample it, and the observed
      mean completion length is reported so a short run would show.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]


def _setup(cfg: dict) -> Any:
    """Threads and the optimizer-step counter; returns torch."""
    import torch
    from torch.optim.optimizer import register_optimizer_step_post_hook

    torch.set_num_threads(int(cfg["threads"]))
    register_optimizer_step_post_hook(_count)  # fires for every optimizer in the process
    return torch


_STEPS = [0]


def _count(_opt: Any, _args: Any, _kwargs: Any) -> None:
    _STEPS[0] += 1


class Driver:
    """Runs iterations in blocks on the parent's command, so the parent can alternate the sides.

    Protocol (one line each way): the worker prints `READY` once built and `BLOCK {json}` after each
    block; the parent answers with the number of iterations to run next, or `stop`. Protocol lines
    go to the original stdout; everything the frameworks print is sent to stderr.
    """

    def __init__(self, side: str):
        self.side = side
        self.proto = os.fdopen(os.dup(1), "w")
        os.dup2(2, 1)  # library prints (TRL's log lines) must not interleave with the protocol
        self.rows: list[dict] = []
        self.pending = 0

    def wait(self, word: str = "READY") -> None:
        """Report, then block until the parent says how many iterations to run next."""
        self.proto.write(word + "\n")
        self.proto.flush()
        cmd = sys.stdin.readline().strip()
        if not cmd or cmd == "stop":
            self.proto.close()
            os._exit(0)  # TRL's train() loop has no other exit; nothing is left to save
        self.pending, self.rows = int(cmd), []
        self._start()

    def _start(self) -> None:
        self.t, self.c, self.s = time.perf_counter(), time.process_time(), _STEPS[0]

    def tick(self, gen_tokens: int, **extra: Any) -> None:
        """One iteration ended: record it; at the end of a block report and wait."""
        self.rows.append({"wall": time.perf_counter() - self.t, "cpu": time.process_time() - self.c,
                          "optimizer_steps": _STEPS[0] - self.s, "gen_tokens": gen_tokens, **extra})
        self.pending -= 1
        if self.pending <= 0:
            import torch

            block = {"side": self.side, "rows": self.rows, "torch": torch.__version__,
                     "threads": torch.get_num_threads(), **VERSIONS}
            self.wait("BLOCK " + json.dumps(block))
        else:
            self._start()


VERSIONS: dict[str, str] = {}


# ---- ours ---------------------------------------------------------------------------------
def run_ours(side: str, cfg: dict, drv: Driver) -> None:
    """rlhf_core's PPO iteration (`PPOTrainer.train_step`), timed per call, with its phase times."""
    sys.path.insert(0, str(ROOT))
    _setup(cfg)
    from rlhf_core.config import TrainConfig
    from rlhf_core.policy import PolicyModel
    from rlhf_core.ppo import PPOTrainer, set_seed
    from rlhf_core.reward import ToyRewardModel
    from rlhf_kit.hooks import HookBus

    tc = TrainConfig()
    tc.model.value_model = "head" if side == "ours-head" else "separate"
    tc.rollout.batch_size, tc.rollout.max_new_tokens = cfg["batch"], cfg["tokens"]
    tc.ppo.ppo_epochs, tc.run.seed = cfg["epochs"], cfg["seed"]
    set_seed(cfg["seed"])
    policy = PolicyModel(cfg["model_dir"], "cpu", quiet=True)
    trainer = PPOTrainer(policy, policy.frozen_copy(), ToyRewardModel("cpu", tokenizer=policy.tokenizer),
                         "cpu", config=tc)
    trainer.bus = bus = HookBus(device="cpu")
    drv.wait()
    for i in range(1, 10 ** 9):
        bus.begin_step(i)
        metrics = trainer.train_step(cfg["prompts"], cfg["tokens"])
        record = bus.end_step(i, 1, metrics)  # after the clock: the bus's own bookkeeping is not timed
        phases = {k[5:]: v for k, v in record.items() if k.startswith("time/")}
        drv.tick(int(trainer.last_rollout.response.numel()), phases=phases)


# ---- TRL 1.12 PPO -------------------------------------------------------------------------
def run_trl_ppo(side: str, cfg: dict, drv: Driver) -> None:
    """TRL's PPOTrainer on the same model directory, prompts, batch, lengths and PPO epochs."""
    _setup(cfg)
    import trl
    from datasets import Dataset
    from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer,
                              TrainerCallback)
    from trl.experimental.ppo import PPOConfig, PPOTrainer
    from trl.experimental.ppo import ppo_trainer as mod

    VERSIONS["trl"] = trl.__version__
    if side == "trl-ppo-nogc":
        import types

        mod.gc = types.SimpleNamespace(collect=lambda *a, **k: 0)  # the two full collections per update
    shapes: list[int] = []
    original = mod.batch_generation

    def recording(model, queries, *a, **k):  # observes the generated tensor, changes nothing
        out = original(model, queries, *a, **k)
        shapes.append(out[0].shape[0] * (out[0].shape[1] - queries.shape[1]))
        return out

    mod.batch_generation = recording
    path, b = cfg["model_dir"], cfg["batch"]
    tok = AutoTokenizer.from_pretrained(path)
    tok.pad_token, tok.padding_side = tok.eos_token, "left"
    policy = AutoModelForCausalLM.from_pretrained(path)
    ref = AutoModelForCausalLM.from_pretrained(path)
    value = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    reward = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    for m in (value, reward):
        m.config.pad_token_id = tok.pad_token_id
    data = Dataset.from_dict({"input_ids": [tok(p)["input_ids"] for p in cfg["prompts"]]})
    args = PPOConfig(
        output_dir=cfg["scratch"], per_device_train_batch_size=b, gradient_accumulation_steps=1,
        num_mini_batches=1, num_ppo_epochs=cfg["epochs"], response_length=cfg["tokens"],
        total_episodes=b * 10 ** 6, stop_token=None, missing_eos_penalty=None, kl_coef=0.1,
        learning_rate=1e-5, temperature=1.0, num_sample_generations=0, report_to=[], save_strategy="no",
        use_cpu=True, bf16=False, fp16=False, disable_tqdm=True, logging_steps=10 ** 6, seed=cfg["seed"],
        local_rollout_forward_batch_size=b, dataloader_num_workers=0)

    class Clock(TrainerCallback):
        def on_train_begin(self, *a, **k):
            drv.wait()

        def on_step_end(self, *a, **k):
            drv.tick(shapes[-1])

    trainer = PPOTrainer(args=args, processing_class=tok, model=policy, ref_model=ref, reward_model=reward,
                         train_dataset=data, value_model=value, eval_dataset=data, callbacks=[Clock()])
    trainer.train()


# ---- TRL's current GRPO / RLOO ------------------------------------------------------------
def _vader() -> Callable:
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    analyzer = SentimentIntensityAnalyzer()

    def sentiment(completions: list[str], **_: Any) -> list[float]:
        return [float(analyzer.polarity_scores(c)["compound"]) for c in completions]

    return sentiment


def run_trl_group(side: str, cfg: dict, drv: Driver) -> None:
    """GRPOTrainer / RLOOTrainer: B completions per generation (B/2 prompts x 2), PPO epochs as mu."""
    _setup(cfg)
    import trl
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    if side == "trl-grpo":
        from trl import GRPOConfig as Config, GRPOTrainer as Trainer
    else:
        from trl import RLOOConfig as Config, RLOOTrainer as Trainer
    VERSIONS["trl"] = trl.__version__
    path, b, e = cfg["model_dir"], cfg["batch"], cfg["epochs"]
    tok = AutoTokenizer.from_pretrained(path)
    tok.pad_token, tok.padding_side = tok.eos_token, "left"
    model = AutoModelForCausalLM.from_pretrained(path)
    data = Dataset.from_dict({"prompt": list(cfg["prompts"])})
    args = Config(output_dir=cfg["scratch"], max_steps=10 ** 6, per_device_train_batch_size=b,
                  num_generations=2, steps_per_generation=1, num_iterations=e,
                  max_completion_length=cfg["tokens"], learning_rate=1e-5, logging_steps=1, report_to=[],
                  save_strategy="no", use_cpu=True, bf16=False, disable_tqdm=True, seed=cfg["seed"],
                  dataloader_num_workers=0)
    lengths: list[float] = []

    class Clock(TrainerCallback):
        def on_train_begin(self, *a, **k):
            drv.wait()

        def on_log(self, _args, _state, _control, logs=None, **k):
            if logs and "completions/mean_length" in logs:
                lengths.append(float(logs["completions/mean_length"]))

        def on_step_end(self, _args, state, *a, **k):
            if state.global_step % e == 0:  # one generation and its e optimizer steps
                drv.tick(round(b * (lengths[-1] if lengths else cfg["tokens"])))

    trainer = Trainer(model=model, reward_funcs=_vader(), args=args, train_dataset=data,
                      processing_class=tok, callbacks=[Clock()])
    trainer.train()


SIDES = {"ours-head": run_ours, "ours-separate": run_ours, "trl-ppo": run_trl_ppo,
         "trl-ppo-nogc": run_trl_ppo, "trl-grpo": run_trl_group, "trl-rloo": run_trl_group}


def main(argv: list[str]) -> int:
    side, cfg = argv[0], json.loads(argv[1])
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    drv = Driver(side)
    SIDES[side](side, cfg, drv)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
