"""TRL: a `transformers.TrainerCallback` that writes the kit's run directory from a TRL run.

    from rlhf_kit.adapters.trl import RLHFKitCallback
    trainer = GRPOTrainer(model=..., reward_funcs=..., args=GRPOConfig(logging_steps=1), ...)
    trainer.add_callback(RLHFKitCallback(output_dir="runs"))
    trainer.train()          # -> runs/trl_<time>/{run.json, logs/*.jsonl, tb/}
    # rlhf-kit report runs/trl_<time>

Metrics: `on_log` renames TRL's keys through KEY_MAP (below); other numeric keys are kept under
their own names. Phases: TRL times its blocks with `trl.extras.profiling.ProfilingContext` (it
reports them only to wandb/mlflow/trackio); while a callback is active, ProfilingContext's enter
and exit also open and close the kit's phase, and TRL's own durations are kept in the record as
`profiling/<Trainer>.<block>`. Generation -> rollout, `_calculate_rewards` -> reward, policy and
reference log-prob passes during scoring -> old_logprobs / ref_logprobs, `compute_loss` -> forward,
`sync_weights` -> comm. `update` runs from the end of input preparation to the step's end
(loss, backward, clipping, optimizer); `optimizer` is on_pre_optimizer_step..on_optimizer_step.
Grad norm: Trainer logs it; when a step's logs lack it, a step pre-hook on the optimizer
supplies the norm the optimizer is about to apply (after any clipping).

Known limitations:
    - Tested: GRPO on TRL 1.16, PPOTrainer on TRL 1.12 (no profiling contexts there: its
      helpers are timed instead, see trl_ppo.py). RLOO (GRPO's keys and contexts) was run by
      hand only.
    - Only the main process writes; other ranks' phases are not recorded.
    - backward has no phase of its own (TRL does not time it): it is inside `update`.
    - With PEFT and no separate reference model, a reference pass that runs without an earlier
      old-log-prob pass in the same step is recorded as old_logprobs.
"""

from __future__ import annotations

import sys
import threading
import time
from contextlib import AbstractContextManager
from typing import Any

try:
    from transformers import TrainerCallback
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("rlhf_kit.adapters.trl needs transformers and TRL: "
                      "pip install 'rlhf-systems-kit[trl]' (or pip install trl)") from e

from rlhf_kit.adapters.common import check_key_map, map_metrics, stability_monitor
from rlhf_kit.adapters.trl_ppo import unwrap_ppo, wrap_ppo
from rlhf_kit.events import RunInfo
from rlhf_kit.hooks import HookBus
from rlhf_kit.runlog import RunDir, RunLogHook, unique_run_dir

KEY_MAP: dict[str, str] = {
    # GRPOTrainer / RLOOTrainer (TRL 1.x)
    "reward": "reward_mean",
    "reward_std": "reward_std",
    "kl": "kl_token_mean",
    "entropy": "entropy",
    "clip_ratio/region_mean": "clip_fraction",
    "policy_loss": "policy_loss",
    "completions/mean_length": "response_length_mean",
    "completions/clipped_ratio": "truncated_fraction",
    # transformers.Trainer
    "loss": "total_loss",
    "grad_norm": "grad_norm",
    "learning_rate": "learning_rate",
    # PPOTrainer (TRL <= 1.12)
    "objective/kl": "kl_mean",
    "objective/scores": "reward_mean",
    "objective/non_score_reward": "non_score_reward",
    "policy/entropy_avg": "entropy",
    "policy/approxkl_avg": "approx_kl",
    "policy/clipfrac_avg": "clip_fraction",
    "loss/policy_avg": "policy_loss",
    "loss/value_avg": "value_loss",
    "val/clipfrac_avg": "value_clip_fraction",
    "val/ratio": "ratio_mean",
    "lr": "learning_rate",
}
check_key_map(KEY_MAP)
DROP = ("epoch", "step", "total_flos", "train_runtime", "train_samples_per_second",
        "train_steps_per_second", "train_loss", "episode")

# ProfilingContext names, after the "<TrainerClass>." prefix, -> our phase.
PHASE_OF: dict[str, str] = {
    "transformers.generate": "rollout",
    "transformers.generate_batch": "rollout",
    "vLLM.generate": "rollout",
    "sync_weights": "comm",
    "_calculate_rewards": "reward",
    "compute_loss": "forward",
}
LOGPROBS = "_get_per_token_logps_and_entropies"
PREPARE = "_prepare_inputs"

_ACTIVE: list["RLHFKitCallback"] = []  # callbacks that receive ProfilingContext events
_ORIGINAL: dict[str, Any] = {}
_STACK = threading.local()


def _stack() -> list:
    if not hasattr(_STACK, "items"):
        _STACK.items = []
    return _STACK.items


def _install_profiling_capture() -> bool:
    """Wrap ProfilingContext.__enter__/__exit__/_log_metrics once; False when TRL is absent."""
    try:
        from trl.extras.profiling import ProfilingContext
    except ImportError:
        return False
    if _ORIGINAL:
        return True
    for name in ("__enter__", "__exit__", "_log_metrics"):
        _ORIGINAL[name] = getattr(ProfilingContext, name)

    def enter(ctx: Any) -> Any:
        out = _ORIGINAL["__enter__"](ctx)
        caller = sys._getframe(1)  # profiling_decorator's wrapper: its args name the model used
        _stack().append(ctx)
        for cb in list(_ACTIVE):
            cb._context_enter(ctx, caller)
        return out

    def log_metrics(ctx: Any, duration: float) -> None:
        ctx._rlhf_kit_seconds = duration  # TRL's own measurement, kept next to ours
        return _ORIGINAL["_log_metrics"](ctx, duration)

    def exit_(ctx: Any, *exc: Any) -> Any:
        out = _ORIGINAL["__exit__"](ctx, *exc)
        stack = _stack()
        if stack and stack[-1] is ctx:
            stack.pop()
        for cb in list(_ACTIVE):
            cb._context_exit(ctx)
        return out

    ProfilingContext.__enter__, ProfilingContext.__exit__ = enter, exit_
    ProfilingContext._log_metrics = log_metrics
    return True


def _uninstall_profiling_capture() -> None:
    if _ACTIVE or not _ORIGINAL:
        return
    from trl.extras.profiling import ProfilingContext

    for name, fn in _ORIGINAL.items():
        setattr(ProfilingContext, name, fn)
    _ORIGINAL.clear()


def _short(ctx: Any) -> str:
    """"GRPOTrainer.transformers.generate" -> "transformers.generate"."""
    return ctx.name.split(".", 1)[1] if "." in ctx.name else ctx.name


def model_facts(model: Any) -> dict:
    """RunInfo.model from a Hugging Face model's config (empty when it has none)."""
    c = getattr(model, "config", None)
    if c is None:
        return {}
    hidden = getattr(c, "n_embd", None) or getattr(c, "hidden_size", 0)
    n_head = getattr(c, "n_head", None) or getattr(c, "num_attention_heads", 0)
    return {
        "family": "gpt2" if getattr(c, "model_type", "") == "gpt2" else "llama",
        "n_layer": getattr(c, "n_layer", None) or getattr(c, "num_hidden_layers", 0),
        "hidden": hidden, "n_head": n_head, "vocab": getattr(c, "vocab_size", 0),
        "n_positions": getattr(c, "n_positions", None) or getattr(c, "max_position_embeddings", 0),
        "intermediate": getattr(c, "n_inner", None) or getattr(c, "intermediate_size", None) or 4 * hidden,
        "tied": bool(getattr(c, "tie_word_embeddings", True)),
        "n_params": sum(p.numel() for p in model.parameters()),
        # the keys the profiler's FLOP model reads for Llama-style models (GQA, gated MLP)
        "n_kv_head": getattr(c, "num_key_value_heads", None) or n_head,
        "head_dim": getattr(c, "head_dim", None) or (hidden // n_head if n_head else 0),
        "gated_mlp": getattr(c, "model_type", "") != "gpt2",
        "model_type": getattr(c, "model_type", ""),
    }


def _versions() -> dict:
    out = {}
    for name in ("torch", "transformers", "trl", "accelerate"):
        mod = sys.modules.get(name)
        if mod is not None:
            out[name] = getattr(mod, "__version__", "")
    return out


class RLHFKitCallback(TrainerCallback):
    """Streams a TRL (or any transformers Trainer) run into a kit run directory.

    Args:
        output_dir: parent of the run directory (default "runs").
        run_name: run directory name (default trl_<YYYYmmdd_HHMMSS>; _2, _3... if taken).
        hooks: extra kit instruments to attach next to the run log, e.g. a torch.profiler window
            driven by the step ends: `TraceHook(lambda info: Path("runs") / info.run_id / "profile")`
            (rlhf_kit.profiler.trace).
        monitor: attach the stability monitor when installed (alerts.jsonl).
        tensorboard: also write the kit's TensorBoard scalars under <run>/tb.

    Attributes:
        run_dir: the RunDir, set at on_train_begin.

    Example:
        trainer.add_callback(RLHFKitCallback())   # then: rlhf-kit report runs/<run>
    """

    def __init__(self, output_dir: str = "runs", run_name: str | None = None, hooks: list | None = None,
                 monitor: bool = True, tensorboard: bool = True):
        self.output_dir, self.run_name = output_dir, run_name
        self.extra_hooks, self.monitor, self.tensorboard = list(hooks or []), monitor, tensorboard
        self.run_dir: RunDir | None = None
        self.bus: HookBus | None = None
        self._open: dict[str, AbstractContextManager] = {}  # phases entered and not yet left
        self._ctx_phase: dict[int, str] = {}  # id(ProfilingContext) -> phase it opened
        self._pending: int | None = None  # step ended, waiting for its on_log
        self._trl_seconds: dict[str, float] = {}
        self._old_seen = False
        self._grad_norm: Any = None
        self._handles: list[Any] = []
        self._state: Any = None  # transformers TrainerState (one object for the whole run)
        self._step_open = False
        self._early_logs: dict | None = None  # TRL <= 1.12 PPO logs before on_step_end
        self._value_model: Any = None

    # ---- phases ------------------------------------------------------------------------
    def _begin(self) -> None:
        """Open the next step (on_step_begin, or the first phase of a loop that never calls it)."""
        if self.bus is not None and not self._step_open:
            self._flush()  # a step that logged nothing (logging_steps > 1) is still written
            self._trl_seconds, self._grad_norm, self._early_logs = {}, None, None
            self.bus.begin_step(self._state.global_step + 1)
            self._step_open = True

    def _enter(self, name: str) -> None:
        self._begin()
        if self.bus is not None and name not in self._open:
            cm = self.bus.phase(name)
            cm.__enter__()
            self._open[name] = cm

    def _leave(self, name: str) -> None:
        cm = self._open.pop(name, None)
        if cm is not None:
            cm.__exit__(None, None, None)

    def _logprob_phase(self, caller: Any) -> str | None:
        """old_logprobs or ref_logprobs for a log-prob pass during scoring; None inside the loss."""
        names = [_short(c) for c in _stack()[:-1]]
        if "compute_loss" in names:
            return None
        local = caller.f_locals
        args, trainer = local.get("args") or (), local.get("self")
        model = args[0] if args else (local.get("kwargs") or {}).get("model")
        ref = getattr(trainer, "ref_model", None)
        if (ref is not None and model is ref) or self._old_seen:
            return "ref_logprobs"
        self._old_seen = True
        return "old_logprobs"

    def _context_enter(self, ctx: Any, caller: Any) -> None:
        if self.bus is None:
            return
        name = _short(ctx)
        if name == PREPARE:
            self._leave("update")  # the previous micro-batch's loss/backward ends here
            self._old_seen = False
            return
        outer = [self._ctx_phase.get(id(c)) for c in _stack()[:-1]]
        if any(outer):
            return  # nested inside a phase already open (reward functions inside _calculate_rewards)
        phase = self._logprob_phase(caller) if name == LOGPROBS else PHASE_OF.get(name)
        if phase:
            self._ctx_phase[id(ctx)] = phase
            self._enter(phase)

    def _context_exit(self, ctx: Any) -> None:
        if self.bus is None:
            return
        seconds = getattr(ctx, "_rlhf_kit_seconds", None)
        if seconds is not None:
            key = f"profiling/{ctx.name}"
            self._trl_seconds[key] = self._trl_seconds.get(key, 0.0) + seconds
        phase = self._ctx_phase.pop(id(ctx), None)
        if phase:
            self._leave(phase)
        if _short(ctx) == PREPARE:
            self._enter("update")

    # ---- grad norm ---------------------------------------------------------------------
    def _attach_grad_norm(self, optimizer: Any) -> None:
        import torch

        def pre_step(opt: Any, args: Any, kwargs: Any) -> None:
            norms = [p.grad.detach().norm(2) for g in opt.param_groups for p in g["params"] if p.grad is not None]
            # stays a tensor: read once at step end (one sync per step, not per optimizer call)
            self._grad_norm = torch.linalg.vector_norm(torch.stack(norms)) if norms else None

        def enter_optimizer(opt: Any, args: Any, kwargs: Any) -> None:
            self._enter("update")
            self._enter("optimizer")

        def leave_optimizer(opt: Any, args: Any, kwargs: Any) -> None:
            self._leave("optimizer")

        inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps the torch optimizer
        if hasattr(inner, "register_step_pre_hook"):
            # PPO (TRL <= 1.12) calls optimizer.step() itself, without Trainer's optimizer callbacks
            self._handles = [inner.register_step_pre_hook(pre_step), inner.register_step_pre_hook(enter_optimizer),
                             inner.register_step_post_hook(leave_optimizer)]

    # ---- TrainerCallback events --------------------------------------------------------
    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None,
                       optimizer: Any = None, **kwargs: Any) -> None:
        if not state.is_world_process_zero:
            return
        name = self.run_name or time.strftime("trl_%Y%m%d_%H%M%S")
        self.run_dir = unique_run_dir(self.output_dir, name)
        hooks: list[Any] = [RunLogHook(self.run_dir)]
        if self.tensorboard:
            from rlhf_kit.runlog import TensorBoardHook

            hooks.append(TensorBoardHook(self.run_dir.tb))
        monitor = stability_monitor() if self.monitor else None
        hooks += ([monitor] if monitor is not None else []) + self.extra_hooks
        device = str(getattr(args, "device", "cpu"))
        self.bus = HookBus(hooks, device=device)
        config = {k: v for k, v in args.to_dict().items() if isinstance(v, (str, int, float, bool, type(None)))}
        info = RunInfo(run_id=self.run_dir.root.name, framework="trl", config={"trainer_args": config},
                       model=model_facts(model), device=device, versions=_versions(),
                       world_size=getattr(args, "world_size", 1))
        self.bus.run_start(info)
        self.bus.setup({"policy": model} if model is not None else {}, optimizer)
        self._state = state
        self._value_model = getattr(getattr(model, "module", model), "value_model", None)
        if optimizer is not None:
            self._attach_grad_norm(optimizer)
        if _install_profiling_capture():
            _ACTIVE.append(self)
        wrap_ppo(_ACTIVE)

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bus is not None:
            self._step_open = False  # the Trainer says a new step starts here
            self._begin()

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._enter("update")
        self._enter("optimizer")

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._leave("optimizer")

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bus is None:
            return
        self._begin()  # a step with no phase at all still gets its record
        for name in reversed(list(self._open)):  # innermost first: instruments' ranges nest
            self._leave(name)
        self._pending, self._step_open = state.global_step, False
        if self._early_logs is not None:  # PPO logged before ending the step
            self._flush(self._early_logs, epoch=state.epoch)

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        if self.bus is None:
            return
        if self._pending is not None:  # Trainer: on_step_end, then on_log
            self._flush(logs or {}, epoch=state.epoch)
        elif self._step_open:  # PPO (TRL <= 1.12): self.log(metrics), then on_step_end
            self._early_logs = dict(logs or {})

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bus is None:
            return
        self._flush()
        if self in _ACTIVE:
            _ACTIVE.remove(self)
        _uninstall_profiling_capture()
        for handle in self._handles:
            handle.remove()
        unwrap_ppo(_ACTIVE)
        self.bus.run_end()
        self.bus = None

    def _flush(self, logs: dict | None = None, epoch: float | None = None) -> None:
        """Write the pending step with these logs (none when the step logged nothing)."""
        if self._pending is None or self.bus is None:
            return
        metrics = map_metrics(logs or {}, KEY_MAP, drop=DROP)
        if "grad_norm" not in metrics and self._grad_norm is not None:
            metrics["grad_norm"] = float(self._grad_norm)  # CPU-GPU sync, once per step
        metrics.update(self._trl_seconds)
        self.bus.end_step(self._pending, int(epoch or 0), metrics)
        self._pending = None
