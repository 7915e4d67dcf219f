"""Predict the memory of a PPO setup without allocating it: fake tensors, a real step, a counter.

The models are built under `FakeTensorMode` (shapes and dtypes, no data), one PPO iteration of
`program.ppo_step` runs on them, and `ByteTracker` counts the bytes alive at every moment. The
result is the peak per phase on the accelerator, broken down by role and category at that peak.

Example:
    cfg = MemoryConfig(model="gpt2-xl", batch_size=8, max_new_tokens=64,
                       hf_config=resolve_model("gpt2-xl")).validate()
    pred = predict(cfg)
    pred.peaks["update"], pred.phases["update"]["policy"]["grads"]

Known limitations:
    Attention runs the CPU kernels of the chosen `attn` implementation; on a GPU with flash
    attention the attention scores are never materialised (see `analytic.flash_attention_gap`).
    Allocator overhead (CUDA caching allocator rounding, fragmentation, the CUDA context of
    ~0.5 GB) is not included. The step is the kit's generic PPO step, not a particular
    framework's code.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from rlhf_kit.memory.config import MEM_PHASES, MemoryConfig
from rlhf_kit.memory.tracker import MAIN


@dataclass
class Prediction:
    """Predicted bytes of one setup.

    Attributes:
        phases: phase -> role -> category -> bytes alive at that phase's peak (main device).
        peaks: phase -> peak bytes on the main device.
        offloaded: device -> phase -> peak bytes there (roles moved off the main device).
        seconds: wall-clock seconds the prediction took.
    """

    config: dict
    phases: dict[str, dict[str, dict[str, int]]]
    peaks: dict[str, int]
    offloaded: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def peak(self) -> int:
        return max(self.peaks.values())

    @property
    def peak_phase(self) -> str:
        return max(self.peaks, key=self.peaks.get)

    def to_dict(self) -> dict:
        return {"config": self.config, "predicted": self.phases, "predicted_peak": self.peaks,
                "offloaded": self.offloaded, "seconds": round(self.seconds, 2)}


def trace_step(cfg: MemoryConfig, fake: bool = True) -> Any:
    """Run one PPO step of `cfg` under a ByteTracker; returns the tracker (fake or real tensors)."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    from rlhf_kit.memory.program import build_models, make_optimizer, ppo_step
    from rlhf_kit.memory.tracker import ByteTracker

    tracker = ByteTracker(placement=cfg.offload)
    mode = FakeTensorMode() if fake else torch.random.fork_rng()
    with mode:
        torch.manual_seed(0)
        models = build_models(cfg, init=not fake)
        trainable = models.trainable()
        optimizer = make_optimizer(cfg, [p for _, p in trainable])
        for role, module in models.by_role().items():
            tracker.add_module(role, module)
        for role, p in trainable:
            tracker.label(p, role, "params")
            p.register_post_accumulate_grad_hook(tracker.grad_hook(role))
        with tracker:
            ppo_step(models, optimizer, cfg, tracker)
        tracker.detach()
    return tracker


def predict(cfg: MemoryConfig) -> Prediction:
    """Trace one PPO step of `cfg` on fake tensors. Peak RAM stays small: fake tensors hold no data."""
    t0 = time.perf_counter()
    tracker = trace_step(cfg, fake=True)
    phases, peaks, offloaded = {}, {}, {}
    for key, peak in tracker.phase_peaks.items():
        phase, _, device = key.partition("@")
        if device and device != MAIN:
            offloaded.setdefault(device, {})[phase] = peak.bytes
        else:
            phases[phase] = peak.by_role_category()
            peaks[phase] = peak.bytes
    ordered = {p: phases[p] for p in MEM_PHASES if p in phases}
    return Prediction(cfg.to_dict(), ordered, {p: peaks[p] for p in ordered}, offloaded,
                      time.perf_counter() - t0)
