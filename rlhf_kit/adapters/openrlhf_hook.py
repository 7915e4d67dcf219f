"""The Ray `worker_process_setup_hook` that puts the kit's hooks inside OpenRLHF's actors.

OpenRLHF's PPO loop runs in a remote actor (PPOTrainer), and training in others
(PolicyModelActor, one per rank), so patching in the driver does nothing. Ray runs
`setup()` at the start of every worker process; there it wraps OpenRLHF's own methods:

    trainer actor   SamplesGenerator.generate_samples        -> phase rollout (opens the step)
                    RemoteExperienceMaker.make_experience_batch -> phase make_experience
                    BasePPOTrainer.ppo_train                  -> phase update
                    BasePPOTrainer.broadcast_to_vllm          -> phase comm
                    BasePPOTrainer.save_logs_and_checkpoints  -> phase checkpoint, then the step's
                                                                 record (train.jsonl) and alerts
    policy ranks    ActorPPOTrainer.ppo_train                 -> phase update per rank (phases.jsonl)

Processes that never call these methods (vLLM engines, reward/reference actors) write nothing.

Example:
    rlhf-kit openrlhf -o runs/exp -- --actor.model_name_or_path ... (see docs/adapters.md)

Known limitations:
    - Verified on CPU against OpenRLHF 0.11.2's real classes with Ray, DeepSpeed and vLLM stubbed;
      not run on a GPU cluster.
    - Rank phases are appended to the same phases.jsonl from several processes (one short
      line per write, O_APPEND); on a shared network filesystem lines could interleave.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, Callable

from rlhf_kit.adapters.common import map_metrics, stability_monitor
from rlhf_kit.adapters.openrlhf import DROP, ENV_RUN_DIR, KEY_MAP
from rlhf_kit.events import RunInfo
from rlhf_kit.hooks import HookBus
from rlhf_kit.runlog import RunDir, RunLogHook

_MARK = "__rlhf_kit_wrapped__"


class _Process:
    """This process's bus, created on first use (most Ray workers never need one)."""

    def __init__(self, run_dir: RunDir):
        self.run_dir = run_dir
        self.bus: HookBus | None = None
        self.in_step = False
        self.last_step = 0  # last global_step written; the next step is last_step + 1

    def trainer_bus(self, trainer: Any) -> HookBus:
        """The trainer actor's bus: writes run.json, train.jsonl, alerts (rank 0 view)."""
        if self.bus is None:
            monitor = stability_monitor()
            self.bus = HookBus([RunLogHook(self.run_dir), *([monitor] if monitor else [])])
            args = getattr(trainer, "args", None)
            info = RunInfo(run_id=self.run_dir.root.name, framework="openrlhf",
                           config={"adapter": "rlhf_kit.adapters.openrlhf_hook", "args": _plain(args)},
                           world_size=_world_size(args))
            self.bus.run_start(info)
        return self.bus

    def rank_bus(self) -> HookBus:
        """A training rank's bus: phase records only, stamped with the rank."""
        if self.bus is None:
            self.bus = HookBus([RunLogHook(self.run_dir, write_steps=False)], rank=_rank())
        return self.bus


def _rank() -> int:
    try:
        import torch.distributed as dist

        return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    except ImportError:
        return 0


def _world_size(args: Any) -> int:
    try:
        return int(args.actor.num_nodes) * int(args.actor.num_gpus_per_node)
    except (AttributeError, TypeError, ValueError):
        return 1


def _plain(obj: Any, depth: int = 0) -> Any:
    """OpenRLHF's nested argparse namespace as JSON-able dicts (depth-limited)."""
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if depth < 4 and hasattr(obj, "__dict__"):
        return {k: _plain(v, depth + 1) for k, v in vars(obj).items() if not k.startswith("_")}
    if depth < 4 and isinstance(obj, (list, tuple)):
        return [_plain(v, depth + 1) for v in obj]
    return str(obj)


def _wrap(cls: type, name: str, make: Callable[[Callable], Callable]) -> None:
    """Replace cls.name by make(original), once."""
    original = cls.__dict__.get(name) or getattr(cls, name)
    if getattr(original, _MARK, False):
        return
    wrapped = functools.wraps(original)(make(original))
    setattr(wrapped, _MARK, True)
    setattr(cls, name, wrapped)


def install(run_dir: RunDir) -> _Process:
    """Wrap OpenRLHF's trainer and actor methods in this process. Returns the process state."""
    from openrlhf.trainer import ppo_trainer as pt
    from openrlhf.trainer.ppo_utils import experience_maker as em
    from openrlhf.trainer.ppo_utils import samples_generator as sg
    from openrlhf.trainer.ray import ppo_actor as pa

    proc = _Process(run_dir)

    def trainer_phase(phase: str, opens_step: bool = False):
        def make(fn: Callable) -> Callable:
            def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
                bus = proc.trainer_bus(getattr(self, "strategy", self))
                if opens_step and not proc.in_step:
                    bus.begin_step(proc.last_step + 1)
                    proc.in_step = True
                with bus.phase(phase):
                    return fn(self, *args, **kwargs)
            return wrapper
        return make

    def init_states(fn: Callable) -> Callable:
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            states = fn(self, *args, **kwargs)
            proc.last_step = int(states.get("global_step", 0) or 0)  # resumed runs continue numbering
            return states
        return wrapper

    def save_logs(fn: Callable) -> Callable:
        def wrapper(self: Any, global_step: int, logs_dict: dict | None = None, *args: Any, **kwargs: Any) -> Any:
            bus = proc.trainer_bus(self)
            if not proc.in_step:
                bus.begin_step(global_step)
            with bus.phase("checkpoint"):
                out = fn(self, global_step, logs_dict, *args, **kwargs)
            metrics = map_metrics(logs_dict or {}, KEY_MAP, drop=DROP)
            bus.end_step(global_step, 0, metrics)  # the bus's own phase times replace timing/*
            proc.in_step, proc.last_step = False, global_step
            return out
        return wrapper

    def rank_update(fn: Callable) -> Callable:
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            bus = proc.rank_bus()
            proc.last_step += 1
            bus.begin_step(proc.last_step)
            try:
                with bus.phase("update"):
                    return fn(self, *args, **kwargs)
            finally:
                bus.end_step(proc.last_step, 0, {})
        return wrapper

    _wrap(sg.SamplesGenerator, "generate_samples", trainer_phase("rollout", opens_step=True))
    _wrap(em.RemoteExperienceMaker, "make_experience_batch", trainer_phase("make_experience"))
    _wrap(pt.BasePPOTrainer, "ppo_train", trainer_phase("update"))
    _wrap(pt.BasePPOTrainer, "broadcast_to_vllm", trainer_phase("comm"))
    _wrap(pt.BasePPOTrainer, "init_checkpoint_states", init_states)
    _wrap(pt.BasePPOTrainer, "save_logs_and_checkpoints", save_logs)
    _wrap(pa.ActorPPOTrainer, "ppo_train", rank_update)
    return proc


def setup() -> None:
    """Ray's worker_process_setup_hook: install when the launcher named a run directory."""
    root = os.environ.get(ENV_RUN_DIR)
    if not root:
        return
    try:
        install(RunDir(Path(root)))
    except ImportError:  # a worker without OpenRLHF on its path has nothing to instrument
        return
