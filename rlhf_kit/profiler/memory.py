"""Memory per phase, written into PhaseRecord.memory by a hook.

On CUDA it reads the caching allocator's counters (allocated, reserved) and resets the peak
statistic at every phase start, so `peak` is the high-water mark *inside* the phase. These are
host-side counters: reading them does not synchronise the device.

On CPU there is no allocator to ask, so it reads the process RSS and the kernel's RSS high-water
mark (VmHWM, reset per phase through /proc/self/clear_refs, Linux only), and counts tensor bytes
by category:
    params       unique parameters of every module handed to on_setup, per role too (params_policy, ...)
    grads        .grad tensors, at their largest: at phase end and just before optimizer.step()
    optim        optimizer state tensors (AdamW's exp_avg, exp_avg_sq, step), after optimizer.step()
    activations  live bytes of tensors created by torch ops during the phase that are none of the
                 above; only on `track_steps`, where a TorchDispatchMode sees every op (slow)

All values are bytes. Example:
    hook = MemoryHook(device="cpu", track_steps={2})
    bus = HookBus([RunLogHook(run_dir), hook]); bus.setup({"policy": policy}, optimizer)
    ... phases run ...; phases.jsonl then has {"rss", "peak", "delta", "params", "grads", ...}

Known limitations:
    - `activations_peak` assumes the phase's gradients and optimizer state were alive at the
      moment of the peak (it subtracts them); inside `update` it can read low by that amount.
    - Tracked steps run every torch op through Python and are several times slower: the profile
      CLI leaves them out of the time table.
    - Without /proc (macOS), CPU `peak` is the larger of RSS at phase start and end.
"""

from __future__ import annotations

import os
import weakref
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _tensors(obj: Any) -> list[torch.Tensor]:
    return [t for t in tree_flatten(obj)[0] if isinstance(t, torch.Tensor)]


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


class LiveTensorBytes(TorchDispatchMode):
    """Counts bytes of storages that torch ops create while the mode is on, until they are freed.

    A storage counts once, when an op first returns it and it is not one of the op's inputs
    (views and in-place ops share their input's storage). A weakref callback subtracts it again
    when the storage dies.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self.counted: WeakIdKeyDictionary = WeakIdKeyDictionary()

    def _free(self, nbytes: int) -> None:
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage().data_ptr() for t in _tensors((args, kwargs)) if t.device.type != "meta"}
        for t in _tensors(out):
            if t.device.type == "meta":
                continue
            st = t.untyped_storage()
            if st in self.counted or st.data_ptr() in inputs:
                continue
            n = st.nbytes()
            self.counted[st] = n
            weakref.finalize(st, self._free, n)
            self.live += n
        self.peak = max(self.peak, self.live)
        return out

    def bytes_of(self, tensors: list[torch.Tensor]) -> int:
        """How many of the counted bytes belong to these tensors' storages."""
        seen, total = set(), 0
        for t in tensors:
            st = t.untyped_storage()
            if st in self.counted and id(st) not in seen:
                seen.add(id(st))
                total += self.counted[st]
        return total


def _rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:
        import resource  # fallback: lifetime peak, the best a portable stdlib call offers

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _rss_hwm() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_rss_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # "5" resets the peak RSS counter (Linux >= 4.0)
        return True
    except OSError:
        return False


class MemoryHook:
    """Adds memory numbers to every PhaseRecord (see the module docstring for the keys).

    Args:
        device: "cpu" or a CUDA device string (what the runner trains on).
        track_steps: steps on which CPU activations are counted op by op (slow; empty = never).
    """

    def __init__(self, device: str = "cpu", track_steps: Any = ()):
        self.cuda = str(device).startswith("cuda") and torch.cuda.is_available()
        self.track_steps = set(track_steps)
        self.modules: dict[str, torch.nn.Module] = {}
        self.optimizer: Any = None
        self._frames: list[dict] = []
        self._counter: LiveTensorBytes | None = None
        self._can_reset_hwm = False
        self._handles: list[Any] = []

    # ---- setup: what is a parameter, what is optimizer state ---------------------------
    def on_setup(self, modules: dict[str, Any], optimizer: Any) -> None:
        self.modules = {k: m for k, m in modules.items() if isinstance(m, torch.nn.Module)}
        self.optimizer = optimizer
        if optimizer is not None and hasattr(optimizer, "register_step_pre_hook"):
            # grads are largest right before the step and may be freed by zero_grad right after
            self._handles.append(optimizer.register_step_pre_hook(lambda *_: self._note_categories()))
            self._handles.append(optimizer.register_step_post_hook(lambda *_: self._note_categories()))

    def params(self) -> list[torch.nn.Parameter]:
        seen, out = set(), []
        for m in self.modules.values():
            for p in m.parameters():
                if id(p) not in seen:  # tied weights (GPT-2's wte / lm_head) count once
                    seen.add(id(p))
                    out.append(p)
        return out

    def grads(self) -> list[torch.Tensor]:
        return [p.grad for p in self.params() if p.grad is not None]

    def optim_tensors(self) -> list[torch.Tensor]:
        state = getattr(self.optimizer, "state", {}) or {}
        return [v for s in state.values() for v in s.values() if isinstance(v, torch.Tensor)]

    def categories(self) -> dict[str, int]:
        """Exact bytes by category right now: params (total and per role), grads, optim."""
        out = {"params": sum(_nbytes(p) for p in self.params())}
        for role, m in self.modules.items():
            out[f"params_{role}"] = sum(_nbytes(p) for p in m.parameters())
        out["grads"] = sum(_nbytes(g) for g in self.grads())
        out["optim"] = sum(_nbytes(t) for t in self.optim_tensors())
        return out

    def _note_categories(self) -> None:
        if not self._frames:
            return
        now = self.categories()
        for frame in self._frames:  # every open phase saw these bytes
            for k in ("grads", "optim"):
                frame[k] = max(frame.get(k, 0), now[k])

    # ---- steps -----------------------------------------------------------------------
    def on_step_start(self, step: int) -> None:
        if step in self.track_steps and not self.cuda:
            self._counter = LiveTensorBytes()
            self._counter.__enter__()

    def on_step_end(self, record: dict, phases: list) -> None:
        if self._counter is not None:
            self._counter.__exit__(None, None, None)
            self._counter = None

    # ---- phases ----------------------------------------------------------------------
    def _read(self) -> tuple[int, int]:
        """(current, peak since last reset) of the device's memory."""
        if self.cuda:
            return torch.cuda.memory_allocated(), torch.cuda.max_memory_allocated()
        rss = _rss()
        hwm = _rss_hwm() if self._can_reset_hwm else None
        return rss, max(rss, hwm or 0)

    def _reset_peak(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        else:
            self._can_reset_hwm = _reset_rss_hwm()

    def on_phase_start(self, name: str, step: int) -> None:
        if self._frames:  # fold the parent's peak so far before the child resets the statistic
            parent = self._frames[-1]
            parent["peak"] = max(parent["peak"], self._read()[1])
        self._reset_peak()
        current, _ = self._read()
        frame = {"start": current, "peak": current}
        if self._counter is not None:
            if self._frames:
                self._frames[-1]["tpeak"] = max(self._frames[-1].get("tpeak", 0), self._counter.peak)
            self._counter.peak = self._counter.live
            frame["tpeak"] = self._counter.live
        self._frames.append(frame)

    def on_phase_end(self, record: Any) -> None:
        if not self._frames:
            return
        frame = self._frames.pop()
        current, peak = self._read()
        frame["peak"] = max(frame["peak"], peak, current)
        if self._frames:
            self._frames[-1]["peak"] = max(self._frames[-1]["peak"], frame["peak"])
        mem = self.categories()
        mem["grads"] = max(mem["grads"], frame.get("grads", 0))
        mem["optim"] = max(mem["optim"], frame.get("optim", 0))
        mem.update(peak=frame["peak"], delta=current - frame["start"])
        mem["allocated" if self.cuda else "rss"] = current
        if self.cuda:
            mem["reserved"] = torch.cuda.memory_reserved()
        if self._counter is not None:
            self._add_activations(mem, frame)
        _merge(record.memory, mem)

    def _add_activations(self, mem: dict, frame: dict) -> None:
        c = self._counter
        tpeak = max(frame.get("tpeak", 0), c.peak)
        if self._frames:
            self._frames[-1]["tpeak"] = max(self._frames[-1].get("tpeak", 0), tpeak)
        owned = c.bytes_of(self.grads() + self.optim_tensors())
        mem["activations"] = max(0, c.live - owned)
        mem["activations_peak"] = max(0, tpeak - owned)

    def on_run_end(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def _merge(into: dict, new: dict) -> None:
    """Repeated entries of a phase in one step: peaks and categories take the max, deltas add up."""
    for k, v in new.items():
        if k == "delta":
            into[k] = into.get(k, 0) + v
        elif k in ("rss", "allocated", "reserved"):
            into[k] = v  # the latest reading
        else:
            into[k] = max(into.get(k, 0), v)
