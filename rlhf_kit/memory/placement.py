"""Placement across N GPUs: which model goes where, and the peak each GPU must hold.

Plans (`plans(cfg, gpus)`):
    replicated      policy, value, reference and reward on every GPU; data parallel, each GPU
                    runs batch_size / N sequences (DDP, as `torchrun` runs the kit's runner).
    frozen apart    reference and reward share one GPU and score for the others; policy and
                    value replicated on the other N - 1 (needs N >= 2).
    each apart      reference on one GPU, reward on another, policy and value on N - 2 (N >= 3).
    zero-1/2/3      replicated, but the model states (parameters, gradients, optimizer states)
                    partitioned over the N GPUs by DeepSpeed ZeRO's stage.

The first three are TRACED: the same fake-tensor PPO step as `predict`, on the per-GPU batch.
The ZeRO rows are FORMULAS, not measurements: the model-state bytes per GPU from the ZeRO paper
(Rajbhandari et al. 2020, "ZeRO: Memory Optimizations Toward Training Trillion Parameter Models",
Sec. 5; the numbers DeepSpeed publishes) for mixed-precision Adam, Psi parameters, N GPUs:
    no ZeRO (DDP)  (2 + 2 + 12) Psi           fp16/bf16 weights 2, gradients 2, fp32 master + Adam 12
    ZeRO-1         (2 + 2) Psi + 12 Psi / N   optimizer states partitioned
    ZeRO-2         2 Psi + (2 + 12) Psi / N   ... and gradients
    ZeRO-3         (2 + 2 + 12) Psi / N       ... and parameters
Frozen models (reference, reward) hold weights only: 2 Psi, or 2 Psi / N under ZeRO-3. The other
bytes of the step (activations, KV cache, logits, temporaries) come from the traced replicated
plan and are added per phase.

Example:
    cfg = MemoryConfig(model="gpt2-xl", batch_size=16, hf_config=resolve_model("gpt2-xl")).validate()
    for plan in plans(cfg, gpus=4):
        print(plan.name, human_bytes(plan.peak))

Known limitations:
    The ZeRO model states are always resident in the formula; real ZeRO-3 also gathers the layer in
    use (and whole weights for generation in TRL/OpenRLHF), which the formula leaves out. A frozen-
    model GPU is assumed to score the trainers' batches one at a time. Communication buffers
    (DDP buckets, NCCL) and the CUDA context are not included.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from rlhf_kit.errors import UsageError
from rlhf_kit.memory.config import MemoryConfig

MODEL_STATES = ("params", "grads", "optim")
ZERO_BYTES_PER_PARAM = {  # stage -> (replicated bytes, partitioned bytes) per trainable parameter
    0: (16, 0), 1: (4, 12), 2: (2, 14), 3: (0, 16)}


@dataclass
class GpuLoad:
    """One kind of GPU in a plan: how many of them, which roles they hold, their peak bytes."""

    count: int
    roles: list[str]
    peak: int
    phase: str


@dataclass
class Plan:
    """A placement of the PPO models on `gpus` GPUs.

    Attributes:
        name: short name ("replicated", "frozen apart", "each apart", "zero-1" ...).
        gpus: the GPU kinds (trainers first); every GPU of a kind holds `peak` bytes at most.
        source: "traced" (fake-tensor step) or "formula" (ZeRO model states by the paper's formula).
        per_gpu_batch: sequences each trainer GPU generates and trains on per step.
        note: what the plan assumes.
    """

    name: str
    gpus: list[GpuLoad]
    source: str
    per_gpu_batch: int
    note: str = ""
    phases: dict[str, int] = field(default_factory=dict)

    @property
    def peak(self) -> int:
        """The per-GPU peak: the most any one GPU of the plan holds (0 for a plan not possible)."""
        return max((g.peak for g in self.gpus), default=0)

    def to_dict(self) -> dict:
        return {**asdict(self), "peak": self.peak}


def per_rank(cfg: MemoryConfig, trainers: int) -> MemoryConfig | None:
    """The config one of `trainers` data-parallel GPUs runs, None if the batch does not split evenly."""
    if cfg.batch_size % trainers:
        return None
    batch = cfg.batch_size // trainers
    mini = cfg.mini // trainers if cfg.mini % trainers == 0 and cfg.mini >= trainers else batch
    micro = cfg.micro_batch_size if cfg.micro_batch_size and mini % cfg.micro_batch_size == 0 else 0
    return cfg.replace(batch_size=batch, mini_batch_size=mini, micro_batch_size=micro)


def plans(cfg: MemoryConfig, gpus: int, predict_fn=None) -> list[Plan]:
    """Every placement plan for `gpus` GPUs (plans whose batch does not split evenly are left out).

    Args:
        cfg: the whole (global) setup; batch_size is the global batch.
        gpus: number of GPUs, >= 1.
        predict_fn: the tracer (default predict.predict); tests may pass the same function.
    Returns:
        list[Plan]: traced plans, then the ZeRO stages 1-3 by formula.
    Raises:
        UsageError: gpus < 1, or batch_size not divisible by gpus.
    """
    if gpus < 1:
        raise UsageError(f"--gpus must be a positive integer, got {gpus}")
    rank_cfg = per_rank(cfg, gpus)
    if rank_cfg is None:
        raise UsageError(f"--batch_size {cfg.batch_size} must be divisible by --gpus {gpus} (each GPU runs an equal share)")
    if predict_fn is None:
        from rlhf_kit.memory.predict import predict as predict_fn
    frozen = ["reference"] + (["reward"] if cfg.reward_model == "model" else [])
    trainer_roles = ["policy"] + (["value"] if cfg.value_model == "separate" else [])
    base = predict_fn(rank_cfg)
    out = [Plan("replicated", [GpuLoad(gpus, trainer_roles + frozen, base.peak, base.peak_phase)], "traced",
                rank_cfg.batch_size, "DDP: every GPU holds every model", dict(base.peaks))]
    apart = [("frozen apart", {r: "gpu1" for r in frozen}, [frozen])]
    if len(frozen) == 2:
        apart.append(("each apart", {"reference": "gpu1", "reward": "gpu2"}, [["reference"], ["reward"]]))
    for name, offload, groups in apart:
        trainers = gpus - len(groups)
        sub = per_rank(cfg, trainers) if trainers >= 1 else None
        if sub is None:
            why = (f"needs at least {len(groups) + 1} GPUs" if trainers < 1 else
                   f"batch_size {cfg.batch_size} does not split over {trainers} trainer GPUs")
            out.append(Plan(name, [], "traced", 0, f"not possible: {why}"))
            continue
        pred = predict_fn(sub.replace(offload=offload))
        loads = [GpuLoad(trainers, trainer_roles, pred.peak, pred.peak_phase)]
        for i, roles in enumerate(groups, 1):
            there = pred.offloaded.get(f"gpu{i}", {})
            phase = max(there, key=there.get) if there else "-"
            loads.append(GpuLoad(1, roles, there.get(phase, 0), phase))
        out.append(Plan(name, loads, "traced", sub.batch_size,
                        f"{' and '.join(frozen)} scored on their own GPU(s), one trainer batch at a time",
                        dict(pred.peaks)))
    out += [zero_plan(stage, base, gpus, rank_cfg.batch_size, trainer_roles + frozen) for stage in (1, 2, 3)]
    return out


def role_params(pred) -> dict[str, tuple[int, bool]]:
    """role -> (parameter count, trainable) from a traced prediction's update phase."""
    from rlhf_kit.memory.config import DTYPE_BYTES

    b = DTYPE_BYTES[pred.config.get("dtype", "fp32")]
    update = pred.phases.get("update") or next(iter(pred.phases.values()))
    return {role: (cats.get("params", 0) // b, bool(cats.get("optim") or cats.get("grads")))
            for role, cats in update.items() if cats.get("params")}


def zero_model_states(n_params: int, trainable: bool, stage: int, gpus: int) -> int:
    """Model-state bytes per GPU of one model by the ZeRO paper's formula (mixed-precision Adam).

    Example: 1e9 trainable parameters on 8 GPUs, ZeRO-2: 2 * 1e9 + 14 * 1e9 / 8 = 3.75e9 bytes.
    """
    if not trainable:
        return 2 * n_params // (gpus if stage == 3 else 1)
    replicated, partitioned = ZERO_BYTES_PER_PARAM[stage]
    return replicated * n_params + partitioned * n_params // gpus


def zero_plan(stage: int, base, gpus: int, batch: int, roles: list[str]) -> Plan:
    """The replicated plan with model states replaced by ZeRO-`stage`'s formula, phase by phase."""
    params = role_params(base)
    states = sum(zero_model_states(n, tr, stage, gpus) for n, tr in params.values())
    phases = {}
    for phase, by_role in base.phases.items():
        other = sum(v for cats in by_role.values() for c, v in cats.items() if c not in MODEL_STATES)
        phases[phase] = other + states
    top = max(phases, key=phases.get)
    return Plan(f"zero-{stage}", [GpuLoad(gpus, roles, phases[top], top)], "formula", batch,
                "model states by the ZeRO paper's formula (mixed-precision Adam, 16 bytes per trainable "
                "parameter before partitioning), not measured; activations traced", phases)


def format_plans(plan_list: list[Plan], budget: int | None, human) -> list[str]:
    """Text lines: one row per plan and GPU kind, with the per-GPU peak and a verdict against budget."""
    lines = [f"{'plan':<13} {'source':<8} {'GPUs':>4}  {'per-GPU batch':>13}  {'holds':<32} {'peak':>9}  at",
             "-" * 92]
    for p in plan_list:
        if not p.gpus:
            lines.append(f"{p.name:<13} {p.source:<8} {p.note}")
        for i, g in enumerate(p.gpus):
            fits = "" if budget is None else ("  fits" if g.peak <= budget else "  over")
            lines.append(f"{p.name if i == 0 else '':<13} {p.source if i == 0 else '':<8} {g.count:>4}  "
                         f"{p.per_gpu_batch if i == 0 else '':>13}  {'+'.join(g.roles):<32} "
                         f"{human(g.peak):>9}  {g.phase}{fits}")
    lines.append("zero-N rows: model states by DeepSpeed ZeRO's published formulas, not measurements.")
    return lines
