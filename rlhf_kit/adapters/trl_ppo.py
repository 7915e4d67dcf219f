"""TRL <= 1.12 PPOTrainer: phases from timing its module-level helpers.

That trainer (trl.experimental.ppo, removed after TRL 1.12) has no ProfilingContext blocks; its
loop calls `batch_generation`, `forward` and `get_reward` from its own module namespace, so
RLHFKitCallback wraps those names there while it is active (only if the user already imported
the module: this file never imports TRL). Tested on TRL 1.12.0 (tests/test_adapters_trl_ppo.py).

    batch_generation          -> rollout
    forward without grad      -> ref_logprobs (the reference pass during the rollout)
    forward with grad         -> forward (inside update, which it opens)
    get_reward(value model)   -> values
    get_reward(other model)   -> reward
"""

from __future__ import annotations

import sys
from typing import Any

# TRL <= 1.12 PPOTrainer has no profiling contexts: its module-level helpers are timed instead.
PPO_MODULES = ("trl.experimental.ppo.ppo_trainer", "trl.trainer.ppo_trainer")
_PPO_ORIGINAL: dict[str, Any] = {}


def _ppo_phase(name: str, args: tuple, active: list) -> str:
    """Our phase for one call of a PPO helper: which model it ran tells what it computed."""
    if name == "batch_generation":
        return "rollout"
    if name == "forward":  # no_grad during the rollout (reference pass), with grad in the update
        import torch

        return "forward" if torch.is_grad_enabled() else "ref_logprobs"
    model = args[0] if args else None  # get_reward(value_model | reward_model, ...)
    return "values" if any(model is cb._value_model for cb in active if cb._value_model is not None) else "reward"


def wrap_ppo(active: list) -> None:
    """Time batch_generation / forward / get_reward of an already-imported PPO trainer module.

    Args:
        active: the live RLHFKitCallbacks (the list itself: wrappers read it at call time).
    """
    module = next((sys.modules[m] for m in PPO_MODULES if hasattr(sys.modules.get(m), "batch_generation")), None)
    if module is None or _PPO_ORIGINAL:
        return
    for name in ("batch_generation", "forward", "get_reward"):
        original = getattr(module, name)
        _PPO_ORIGINAL[name] = (module, original)

        def wrapper(*args: Any, __name: str = name, __fn: Any = original, **kwargs: Any) -> Any:
            phase = _ppo_phase(__name, args, active)
            callbacks = [c for c in active if c.bus is not None]
            for c in callbacks:
                if phase == "forward":
                    c._enter("update")  # PPO's update starts with its first training forward
                c._enter(phase)
            try:
                return __fn(*args, **kwargs)
            finally:
                for c in callbacks:
                    c._leave(phase)
        setattr(module, name, wrapper)


def unwrap_ppo(active: list) -> None:
    """Restore the PPO helpers once no callback is active."""
    if active:
        return
    for name, (module, original) in _PPO_ORIGINAL.items():
        setattr(module, name, original)
    _PPO_ORIGINAL.clear()
