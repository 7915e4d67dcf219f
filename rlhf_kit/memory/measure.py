"""Measured mode: the peak per phase and category of a real run, written beside the prediction.

`MemoryHook` listens on the runner's hooks. On CPU it counts tracked tensor bytes with the same
`ByteTracker` the prediction uses (RSS is no truth: glibc keeps freed memory, it ran 1.2-3.6x
the live tensors here); on CUDA it reads `torch.cuda.max_memory_allocated` per phase and keeps
the tracker's categories beside it. At the end of the run it predicts the same config on fake
tensors and writes `memory.json`:

    {"config": {...}, "predicted": {phase: {role: {category: bytes}}}, "predicted_peak": {phase: bytes},
     "measured_peak": {phase: bytes}, "measured": {phase: {category: bytes}}, "device": "cpu"|"cuda",
     "notes": [str]}

The runner's phases map onto three: rollout; scoring (reward, old_logprobs, ref_logprobs, values,
advantages); update (with forward, backward, optimizer inside). Others are not measured.

Example:
    hook = MemoryHook(run_dir, steps=2)
    bus = HookBus([RunLogHook(run_dir), hook]); ...   # memory.json appears at bus.run_end()

Known limitations:
    Measuring routes every op through Python: steps measured run several times slower, so only
    the first `steps` steps are measured, and phase times of those steps are not representative.
    Tensors allocated before `on_setup` that are not module parameters/buffers are not counted.
    The prediction needs the policy's Hugging Face config (`module.config`); without it, none.
"""

from __future__ import annotations

from typing import Any

from rlhf_kit.memory.config import MEM_PHASES
from rlhf_kit.runlog import RunDir, write_json_atomic

PHASE_TO_MEM = {"rollout": "rollout", "reward": "scoring", "old_logprobs": "scoring",
                "ref_logprobs": "scoring", "values": "scoring", "advantages": "scoring",
                "update": "update"}


class MemoryHook:
    """Records measured memory per phase for the first `steps` steps; writes memory.json at run end.

    Args:
        run_dir: the run directory (memory.json goes to its root); None: `output_dir`/<run_id>,
            known at `on_run_start` (how a runner's `unique_run_dir` names it).
        output_dir: where the runner creates run directories, when `run_dir` is None.
        steps: how many steps to measure (the second one has the optimizer state alive).
        predict: False skips the prediction (memory.json then has only the measured side).
    """

    def __init__(self, run_dir: RunDir | None = None, output_dir: str = "runs", steps: int = 2,
                 predict: bool = True):
        from rlhf_kit.memory.tracker import ByteTracker

        self.run_dir = run_dir
        self.output_dir = output_dir
        self.steps = steps
        self.do_predict = predict
        self.tracker = ByteTracker()
        self.info_config: dict = {}
        self.modules: dict[str, Any] = {}
        self.prompt_length = 0
        self.measured_steps = 0
        self.active = False
        self.current: str | None = None
        self.cuda_peaks: dict[str, int] = {}
        self.device = "cpu"
        self._handles: list[Any] = []
        self._prefill_seen = False

    # ---- hooks -------------------------------------------------------------------------
    def on_run_start(self, info: Any) -> None:
        self.info_config = dict(info.config or {})
        if self.run_dir is None:
            from pathlib import Path

            self.run_dir = RunDir(Path(self.output_dir) / info.run_id)

    def on_setup(self, modules: dict[str, Any], optimizer: Any) -> None:
        self.modules = {r: m for r, m in modules.items() if m is not None}
        self.optimizer = optimizer
        owner = {}
        for role, module in self.modules.items():
            self.tracker.add_module(role, module)
            for p in module.parameters():
                owner[id(p)] = role
                if p.requires_grad:
                    self._handles.append(p.register_post_accumulate_grad_hook(self.tracker.grad_hook(role)))
        self.owner = owner
        policy = self.modules.get("policy")
        if policy is not None:
            p = next(policy.parameters())
            self.device = "cuda" if p.is_cuda else "cpu"
            # the prompt length is only known from the first rollout forward: (B, P) input ids
            for m in policy.modules():
                if hasattr(m, "config"):
                    self._handles.append(m.register_forward_pre_hook(self._see_prompt, with_kwargs=True))

    def _see_prompt(self, module: Any, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        # the first forward of each measured rollout is the prefill: its length is the prompt's
        # (the longest one is kept: prompts are padded per batch, so it varies by step)
        if self.active and self.current == "rollout" and not self._prefill_seen and hasattr(ids, "shape"):
            self._prefill_seen = True
            self.prompt_length = max(self.prompt_length, int(ids.shape[-1]))

    def on_step_start(self, step: int) -> None:
        if self.measured_steps < self.steps:
            self.active = True
            self.tracker.__enter__()

    def on_phase_start(self, name: str, step: int) -> None:
        if not self.active or name not in PHASE_TO_MEM:
            return
        phase = PHASE_TO_MEM[name]
        if phase != self.current:
            self._close()
            self.current = phase
            self._prefill_seen = False
            self.tracker.start_phase(phase)
            if self.device == "cuda":
                import torch

                torch.cuda.reset_peak_memory_stats()  # per-phase peak; costs no synchronisation

    def on_phase_end(self, record: Any) -> None:
        if self.active and self.current and record.name in PHASE_TO_MEM:
            record.memory["tracked"] = self.tracker.total()

    def _close(self) -> None:
        if self.current is None:
            return
        if self.optimizer is not None and self.current == "update":
            self.tracker.label_optimizer(self.optimizer, self.owner)
        self.tracker.end_phase()
        if self.device == "cuda":
            import torch

            peak = int(torch.cuda.max_memory_allocated())
            self.cuda_peaks[self.current] = max(self.cuda_peaks.get(self.current, 0), peak)
        self.current = None

    def on_step_end(self, record: dict, phases: list) -> None:
        if not self.active:
            return None
        self._close()
        self.tracker.__exit__(None, None, None)
        self.active = False
        self.measured_steps += 1
        return None

    def on_run_end(self) -> None:
        if self.active:
            self.on_step_end({}, [])
        for h in self._handles:
            h.remove()
        self.tracker.detach()
        write_json_atomic(self.run_dir.memory_json, self.result())

    # ---- the result --------------------------------------------------------------------
    def measured(self) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
        """(peak per phase, category -> bytes at that peak summed over roles)."""
        peaks, cats = {}, {}
        for phase in MEM_PHASES:
            peak = self.tracker.phase_peaks.get(phase)
            if peak is None:
                continue
            peaks[phase] = self.cuda_peaks.get(phase, peak.bytes)
            by_cat: dict[str, int] = {}
            for r in peak.alive:
                by_cat[r.cat] = by_cat.get(r.cat, 0) + r.nbytes
            cats[phase] = by_cat
        return peaks, cats

    def result(self) -> dict:
        peaks, cats = self.measured()
        notes = [f"measured over the first {self.measured_steps} step(s) on {self.device}: "
                 + ("torch.cuda.max_memory_allocated per phase" if self.device == "cuda"
                    else "tracked tensor bytes (ByteTracker), not RSS")]
        out = {"config": {}, "predicted": {}, "predicted_peak": {}, "measured_peak": peaks,
               "measured": cats, "device": self.device, "notes": notes}
        if self.do_predict:
            try:
                cfg = self.memory_config()
            except (AttributeError, KeyError, TypeError, ValueError) as e:
                notes.append(f"no prediction: {e}")
                return out
            from rlhf_kit.memory.predict import predict

            pred = predict(cfg)
            out.update(config=pred.config, predicted=pred.phases, predicted_peak=pred.peaks)
            for phase, m in peaks.items():
                if phase in pred.peaks and m:
                    notes.append(f"{phase}: predicted {pred.peaks[phase]} B vs measured {m} B "
                                 f"({100 * (pred.peaks[phase] - m) / m:+.1f}%)")
        return out

    def memory_config(self) -> Any:
        """The MemoryConfig of this run, from RunInfo.config and the modules handed to on_setup."""
        from rlhf_kit.memory.config import MemoryConfig

        c = self.info_config
        sect = lambda name: c.get(name, c)  # nested (rlhf_core) or flat (adapters)
        rollout, ppo, model = sect("rollout"), sect("ppo"), sect("model")
        policy = self.modules["policy"]
        hf = getattr(policy, "config", None) or next(m.config for m in policy.modules() if hasattr(m, "config"))
        dtype = {"torch.float32": "fp32", "torch.bfloat16": "bf16", "torch.float16": "fp16"}[
            str(next(policy.parameters()).dtype)]
        return MemoryConfig(
            model=str(model.get("model_name", getattr(hf, "_name_or_path", ""))),
            batch_size=int(rollout["batch_size"]), prompt_length=self.prompt_length or 1,
            max_new_tokens=int(rollout["max_new_tokens"]),
            mini_batch_size=int(ppo.get("mini_batch_size") or 0),
            ppo_epochs=int(ppo.get("ppo_epochs", 1)), dtype=dtype,
            # a separate critic has its own Hugging Face trunk; a value head is a bare Linear
            value_model="separate" if any(hasattr(x, "config") for x in self.modules.get("value", torch_nn()).modules())
            else "head",
            reward_model="model" if "reward" in self.modules else "none",
            foreach=self.device == "cuda", hf_config=hf).validate()


def torch_nn() -> Any:
    """An empty module (no value role: no critic)."""
    import torch

    return torch.nn.Module()
