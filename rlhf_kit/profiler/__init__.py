"""The profiler: where the time and memory of an RLHF step go, by phase.

Modules (import what you need; only `memory`, `trace` and `calibrate` import torch):
    breakdown  phase table, bottleneck advice, run comparison (standard library only)
    flops      analytic FLOPs from RunInfo.model and PhaseRecord.work (standard library only)
    peaks      peak FLOP/s table for known GPUs and the cached CPU calibration
    memory     MemoryHook: memory per phase (CUDA stats, or RSS + tensor bytes by category)
    trace      TraceHook: torch.profiler over chosen steps, Chrome trace, folded stacks, flame graph
    cli        `rlhf-kit profile` and `rlhf-kit calibrate`
"""
