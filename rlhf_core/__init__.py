"""The kit's own RLHF runner: PPO on a GPT-2 (or Llama) policy with a frozen reference, a toy reward
and a value function. Public API (the seed's): PolicyModel, ToyRewardModel, PPOTrainer, set_seed.

Imports are lazy so `import rlhf_core` costs nothing until a class is used.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "PolicyModel": "rlhf_core.policy",
    "ToyRewardModel": "rlhf_core.reward",
    "PPOTrainer": "rlhf_core.ppo",
    "set_seed": "rlhf_core.ppo",
    "TrainConfig": "rlhf_core.config",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(name)
