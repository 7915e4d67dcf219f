"""TrainConfig: every knob of a run, once. The CLI (`train.py`, `rlhf-kit train`) is generated from it.

Each field carries its help text; flags keep the seed's names (`--batch_size`, `--kl_coef`, ...).
Validation lives in `TrainConfig.validate`, which raises UsageError naming the bad value.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any, Sequence

from rlhf_kit.errors import OneLineParser, UsageError

REWARD_TYPES = ("sentiment", "preference", "length")
VALUE_MODELS = ("head", "separate")


def _f(default: Any, help: str, **checks: Any) -> Any:
    """A config field with its help text and validation rules (positive=True, choices=(...))."""
    return field(default=default, metadata={"help": help, **checks})


@dataclass
class ModelConfig:
    model_name: str = _f("tiny-gpt2", "embedded preset (tiny-gpt2, small-gpt2), smollm2-135m (a real "
                         "pretrained Llama, needs requirements-real.txt), a local Hugging Face "
                         "model directory, or a hub id already in the local cache")
    value_model: str = _f("head", "value function: a head on the policy trunk, or a separate copy",
                          choices=VALUE_MODELS)


@dataclass
class RolloutConfig:
    batch_size: int = _f(4, "prompts per PPO iteration", positive=True)
    max_new_tokens: int = _f(15, "tokens generated per response", positive=True)
    temperature: float = _f(1.0, "sampling temperature, also used when scoring log-probs", positive=True)
    reward_type: str = _f("sentiment", "toy reward", choices=REWARD_TYPES)
    rescore: bool = _f(False, "recompute the old log-probs and value-head inputs with a full forward after "
                       "sampling instead of taking them from the sampling pass (equal up to float rounding; "
                       "one forward more)")


@dataclass
class PPOConfig:
    learning_rate: float = _f(1e-5, "AdamW learning rate", positive=True)
    kl_coef: float = _f(0.1, "initial KL penalty coefficient (per token, folded into rewards)", nonneg=True)
    target_kl: float = _f(0.0, "adaptive KL controller target (summed KL per response); 0 keeps kl_coef fixed", nonneg=True)
    kl_horizon: int = _f(10000, "adaptive KL controller horizon, in samples", positive=True)
    ppo_epochs: int = _f(1, "passes over each rollout batch", positive=True)
    mini_batch_size: int = _f(0, "sequences per optimizer step; 0 means the whole batch", nonneg=True)
    gamma: float = _f(1.0, "discount factor", unit=True)
    lam: float = _f(0.95, "GAE lambda", unit=True)
    clip_range: float = _f(0.2, "PPO ratio clip epsilon", positive=True)
    clip_range_value: float = _f(0.2, "value clip epsilon around the old values", positive=True)
    vf_coef: float = _f(0.1, "value loss weight", nonneg=True)
    ent_coef: float = _f(0.0, "entropy bonus weight", nonneg=True)
    max_grad_norm: float = _f(1.0, "gradient clipping threshold (global L2 norm)", positive=True)
    whiten_advantages: bool = _f(True, "normalise advantages to zero mean, unit variance per batch")


@dataclass
class RunConfig:
    epochs: int = _f(3, "training epochs", positive=True)
    steps_per_epoch: int = _f(8, "PPO iterations per epoch", positive=True)
    seed: int = _f(42, "random seed; CPU runs with the same seed are identical")
    device: str = _f("auto", "auto, cpu, cuda or cuda:N")
    output_dir: str = _f("runs", "where run directories are created")
    run_name: str = _f("", "run directory name; default run_<date>_<time>")
    resume: str = _f("", "checkpoint path, a run directory, or 'latest' (newest run in output_dir)")
    save_every: int = _f(0, "checkpoint every N iterations; 0 saves at each epoch end", nonneg=True)
    tensorboard: bool = _f(True, "write TensorBoard scalars")
    progress: bool = _f(True, "show a progress bar")
    threads: int = _f(0, "torch CPU threads; 0 keeps torch's default", nonneg=True)
    memory: bool = _f(False, "measure memory per phase and category on the first 2 steps and write "
                      "memory.json beside the prediction for the same config (slows those steps)")
    sample_prompts: int = _f(0, "print greedy completions of the first N fixed prompts before and after "
                             "training, and save them to samples.json; 0 prints none", nonneg=True)


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def sections(self) -> list[Any]:
        return [self.model, self.rollout, self.ppo, self.run]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        cfg = cls()
        for section in cfg.sections():
            name = _section_name(cfg, section)
            for k, v in data.get(name, {}).items():
                if hasattr(section, k):
                    setattr(section, k, v)
        return cfg

    @property
    def mini_batch(self) -> int:
        """Sequences per optimizer step (the derived value, computed in one place)."""
        return self.ppo.mini_batch_size or self.rollout.batch_size

    def validate(self) -> "TrainConfig":
        for section in self.sections():
            for f in dataclasses.fields(section):
                _check(f, getattr(section, f.name))
        if self.ppo.mini_batch_size > self.rollout.batch_size:
            raise UsageError(f"--mini_batch_size {self.ppo.mini_batch_size} is larger than --batch_size "
                             f"{self.rollout.batch_size}; use a value from 1 to {self.rollout.batch_size} (0 = whole batch)")
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", self.run.device):
            raise UsageError(f"unknown --device '{self.run.device}'; allowed: auto, cpu, cuda, cuda:N")
        return self


def _section_name(cfg: TrainConfig, section: Any) -> str:
    return next(f.name for f in dataclasses.fields(cfg) if getattr(cfg, f.name) is section)


def _check(f: dataclasses.Field, value: Any) -> None:
    flag = f"--{f.name}"
    meta = f.metadata
    if "choices" in meta and value not in meta["choices"]:
        raise UsageError(f"unknown {flag} '{value}'; allowed: {', '.join(meta['choices'])}")
    if meta.get("positive") and not value > 0:
        raise UsageError(f"{flag} must be greater than 0, got {value}")
    if meta.get("nonneg") and value < 0:
        raise UsageError(f"{flag} must be 0 or more, got {value}")
    if meta.get("unit") and not 0 <= value <= 1:
        raise UsageError(f"{flag} must be between 0 and 1, got {value}")


def boolean(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


def build_parser(prog: str = "train.py") -> OneLineParser:
    """An argparse parser with one flag per config field, grouped by section."""
    parser = OneLineParser(prog=prog, description="PPO on a GPT-2 policy with the RLHF Systems Kit's instruments.")
    cfg = TrainConfig()
    for section in cfg.sections():
        group = parser.add_argument_group(_section_name(cfg, section))
        for f in dataclasses.fields(section):
            kind = {"bool": boolean, "int": int, "float": float}.get(str(f.type), str)
            group.add_argument(f"--{f.name}", type=kind, default=f.default, help=f"{f.metadata['help']} (default: {f.default})")
    return parser


def parse_config(argv: Sequence[str] | None = None, prog: str = "train.py") -> TrainConfig:
    """Flags -> a validated TrainConfig. Raises UsageError on any bad value."""
    args = vars(build_parser(prog).parse_args(argv))
    cfg = TrainConfig()
    for section in cfg.sections():
        for f in dataclasses.fields(section):
            setattr(section, f.name, args[f.name])
    return cfg.validate()
