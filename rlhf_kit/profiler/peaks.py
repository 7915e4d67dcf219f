"""Peak FLOP/s for MFU: a table for known GPUs, and a measured, cached peak for CPUs.

MFU = achieved FLOP/s / peak FLOP/s. GPU peaks are the vendor's dense (no sparsity) tensor-core
numbers; by convention MFU is quoted against the bf16 peak even for fp32 runs, which then show a
low MFU. A CPU has no such datasheet number, so `rlhf-kit calibrate` times a square fp32 matmul on
the machine itself and caches the result in $RLHF_KIT_CACHE (default ~/.cache/rlhf_kit).

Lookup is standard library only; only `calibrate()` imports torch.

Example:
    >>> lookup_peak("cuda", "NVIDIA H100 80GB HBM3")
    (989000000000000.0, 'table: H100 SXM bf16')

Known limitations:
    - A CPU run analysed on another machine has no peak unless the run directory recorded one
      (`rlhf-kit profile` writes it to profile/profile.json).
    - The calibrated peak is what torch's matmul reaches, not the hardware's theoretical peak,
      so CPU MFU reads high compared with a GPU's.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

from rlhf_kit.runlog import cache_dir

# (substring of torch.cuda.get_device_name, label, bf16/fp16 dense TFLOP/s, fp32 dense TFLOP/s)
# Most specific names first: "H100 PCIe" must match before "H100".
GPU_PEAKS: tuple[tuple[str, str, float, float], ...] = (
    ("H100 PCIe", "H100 PCIe", 756.0, 51.0),
    ("H100", "H100 SXM", 989.0, 67.0),
    ("H200", "H200", 989.0, 67.0),
    ("GH200", "GH200", 989.0, 67.0),
    ("B200", "B200", 2250.0, 80.0),
    ("A100", "A100", 312.0, 19.5),
    ("L40S", "L40S", 362.0, 91.6),
    ("L4", "L4", 121.0, 30.3),
    ("A10", "A10", 125.0, 31.2),
    ("V100", "V100 (fp16)", 125.0, 15.7),
    ("T4", "T4 (fp16)", 65.0, 8.1),
    ("4090", "RTX 4090", 165.0, 82.6),
    ("3090", "RTX 3090", 71.0, 35.6),
)


def cache_file() -> Path:
    return cache_dir() / "peak_flops.json"


def cpu_key() -> str:
    """Identifies this CPU for the cache: model name and logical core count."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"cpu|{name}|cores={os.cpu_count()}"


def read_cache() -> dict:
    try:
        return json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return {}


def gpu_peak(device_name: str, dtype: str = "bf16") -> tuple[float, str] | None:
    """Table peak in FLOP/s for a CUDA device name, or None if the GPU is not in the table."""
    for pattern, label, half, single in GPU_PEAKS:
        if pattern.lower() in (device_name or "").lower():
            tflops = single if dtype in ("fp32", "float32") else half
            return tflops * 1e12, f"table: {label} {'fp32' if dtype in ('fp32', 'float32') else 'bf16'}"
    return None


def lookup_peak(device: str, device_name: str = "", dtype: str = "bf16") -> tuple[float | None, str]:
    """Peak FLOP/s for MFU and where it came from.

    Args:
        device: "cpu" or "cuda[:n]".
        device_name: e.g. torch.cuda.get_device_name(); ignored on CPU.
        dtype: "bf16" (the MFU convention) or "fp32".
    Returns:
        (FLOP/s or None, a short source note such as "table: A100 bf16" or "calibrated ...").
    """
    if str(device).startswith("cuda"):
        found = gpu_peak(device_name, dtype)
        return found if found else (None, f"unknown GPU '{device_name}': pass --peak_tflops")
    entry = read_cache().get(cpu_key())
    if entry and entry.get("flops"):
        return float(entry["flops"]), f"calibrated {entry.get('measured', '')} (rlhf-kit calibrate)"
    return None, "not calibrated: run `rlhf-kit calibrate`"


def calibrate(size: int = 1024, repeats: int = 5, save: bool = True) -> dict:
    """Measure this CPU's fp32 matmul FLOP/s with torch and cache it.

    Args:
        size: n of the n x n matmul (2 n^3 FLOPs each).
        repeats: timed matmuls after one warm-up; the fastest counts (least disturbed by others).
        save: write the result into the cache file.
    Returns:
        {"key", "flops", "size", "threads", "measured", "seconds"}.
    """
    import torch

    a = torch.randn(size, size)
    b = torch.randn(size, size)
    torch.mm(a, b)  # warm-up: thread pool start, page faults
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    result = {"key": cpu_key(), "flops": 2.0 * size ** 3 / best, "size": size,
              "threads": torch.get_num_threads(), "measured": time.strftime("%Y-%m-%d"), "seconds": best}
    if save:
        data = read_cache()
        data[result["key"]] = result
        path = cache_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        os.replace(tmp, path)
    return result


def mfu(flops: float, seconds: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation: (flops / seconds) / peak, None when anything is unknown or zero."""
    if not peak or not seconds or seconds <= 0 or flops is None:
        return None
    return flops / seconds / peak
