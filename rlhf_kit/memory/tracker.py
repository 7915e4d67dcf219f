"""A lean byte counter: which tensor storages are alive, whose they are, and the peak per phase.

`ByteTracker` is a `TorchDispatchMode`. Every op's output storage that it has not seen is added
to the live set; an output that aliases an input (views, in-place ops, `out=`) shares a storage
already counted, so it is skipped: parameters are never counted twice. A `weakref.finalize` on
each storage takes its bytes off again when the storage dies, so the counter follows what is
alive *when*, instead of adding params + grads + optimizer state + activations as if they all
coexisted. It works the same on fake tensors (prediction) and real ones (measurement).

Each storage carries a label (role, category, device). Labels start from the context (the role
whose module is running, "temporaries") and are corrected when we learn more: a parameter's
`.grad` becomes "grads", optimizer state "optim", tensors autograd saves "activations", a
model's output logits "logits" and its cache "kv_cache". A peak snapshot keeps references to
the labels, so a correction made after the peak still shows in the peak's breakdown.

Example:
    tracker = ByteTracker()
    tracker.add_module("policy", policy)
    with tracker:
        tracker.start_phase("update"); loss.backward(); tracker.end_phase()
    tracker.phase_peaks["update"].by_role_category()

Peak sites (for depth extrapolation, `ByteTracker(sites=True)`): besides the peak of each phase,
the tracker keeps the peak of every *site*, a stretch of the step named by what runs then, never
by when: (n-th top-level model call in the phase, forward or backward, position among the
transformer blocks: before them, in the first, in a middle one, in the last, after them). Every
block of a stack holds the same bytes, so at a fixed site the bytes alive are affine in the
number of blocks, and a middle block's bytes lie between the first's and the last's. That is
what lets `predict` trace a 2- and a 3-block copy of a deep model and extrapolate site by site.

Known limitations:
    Bytes are storage bytes as PyTorch asks for them; the CUDA caching allocator rounds to 512 B
    blocks and keeps freed blocks reserved, so `torch.cuda.memory_reserved` is higher. Tensors
    created before the tracker saw them are unknown unless registered (`add_module`, `label`).
    Backward temporaries are attributed to the role whose forward was last entered.
"""

from __future__ import annotations

import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

MAIN = "gpu"  # the device whose peak the verdict is about; offloaded roles live elsewhere


@dataclass
class Rec:
    """Label and size of one live storage (mutable: labels are corrected after the fact)."""

    role: str
    cat: str
    nbytes: int
    device: str = MAIN


@dataclass
class Peak:
    """The highest live total on one device during one phase, and what was alive then."""

    bytes: int = 0
    alive: list[Rec] = field(default_factory=list)

    def by_role_category(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for r in self.alive:
            cats = out.setdefault(r.role, {})
            cats[r.cat] = cats.get(r.cat, 0) + r.nbytes
        return out


class ByteTracker(TorchDispatchMode):
    """Counts live storage bytes by role, category and device; keeps the peak of each phase.

    Args:
        placement: role -> device name for roles not on the main device ("cpu", "gpu1").
    """

    def __init__(self, placement: dict[str, str] | None = None, sites: bool = False):
        super().__init__()
        self.sites = sites
        self.site_peaks: dict[str, dict[tuple, Peak]] = {}  # phase key -> site -> peak
        self._site: tuple = (0, "out", "")
        self._site_peak: dict[tuple, Peak] = {}  # (device, site) -> peak, this phase
        self._site_dirty: set[tuple] = set()
        self._calls = 0
        self._blocks: set[int] = set()
        self.placement = dict(placement or {})
        self.live: dict[int, Rec] = {}
        self.totals: dict[str, int] = {}
        self.role = "policy"
        self.cat = "temporaries"
        self.phase: str | None = None
        self.phase_peaks: dict[str, Peak] = {}
        self._peak: dict[str, Peak] = {}
        self._dirty: set[str] = set()
        self._saved_hooks: Any = None

    # ---- bookkeeping -------------------------------------------------------------------
    def device_of(self, role: str) -> str:
        return self.placement.get(role, MAIN)

    def label(self, t: torch.Tensor, role: str | None = None, cat: str | None = None,
              only_from: str | None = None) -> Rec:
        """Track `t`'s storage (if new) and set its label; `only_from` relabels only that category."""
        st = t.untyped_storage()
        key = id(st)
        rec = self.live.get(key)
        if rec is None:
            rec = Rec(role or self.role, cat or self.cat, st.nbytes(), self.device_of(role or self.role))
            self.live[key] = rec
            self._add(rec.device, rec.nbytes)
            weakref.finalize(st, self._free, key)
            return rec
        if only_from is not None and rec.cat != only_from:
            return rec
        if role is not None and role != rec.role:
            dev = self.device_of(role)
            if dev != rec.device:
                self._snapshot_if_dirty(rec.device)
                self._add(rec.device, -rec.nbytes)
                rec.device = dev
                self._add(dev, rec.nbytes)
            rec.role = role
        if cat is not None:
            rec.cat = cat
        return rec

    def _add(self, device: str, n: int) -> None:
        total = self.totals.get(device, 0) + n
        self.totals[device] = total
        peak = self._peak.get(device)
        if peak is not None and total > peak.bytes:
            peak.bytes = total
            self._dirty.add(device)
        if self.sites and self.phase is not None:
            key = (device, self._site)
            site = self._site_peak.setdefault(key, Peak())
            if total > site.bytes:
                site.bytes = total
                self._site_dirty.add(key)

    def _alive_on(self, device: str) -> list[Rec]:
        return [r for r in list(self.live.values()) if r.device == device]

    def _snapshot_if_dirty(self, device: str) -> None:
        # Taken lazily, just before the first free after a rise: one copy per local maximum.
        if device in self._dirty:
            self._dirty.discard(device)
            self._peak[device].alive = self._alive_on(device)
        for key in [k for k in self._site_dirty if k[0] == device]:
            self._site_dirty.discard(key)
            self._site_peak[key].alive = self._alive_on(device)

    def _free(self, key: int) -> None:
        rec = self.live.pop(key, None)
        if rec is None:
            return
        self.live[key] = rec  # still alive in the snapshot we may take now
        self._snapshot_if_dirty(rec.device)
        del self.live[key]
        self._add(rec.device, -rec.nbytes)

    def total(self, device: str = MAIN) -> int:
        return self.totals.get(device, 0)

    def add_module(self, role: str, module: torch.nn.Module, cat: str = "params") -> None:
        """Register a module's parameters and buffers, and switch the role while it runs."""
        for t in list(module.parameters()) + list(module.buffers()):
            self.label(t, role, cat)
        # Runners call inner models directly (policy.model(...), model.base_model(...)): hook the
        # module and every Hugging Face model inside it, so the role is known whichever runs.
        targets = [module] + [m for m in module.modules() if m is not module and hasattr(m, "config")]
        self._handles = getattr(self, "_handles", [])
        for m in targets:
            self._handles += [m.register_forward_pre_hook(lambda m, a, _r=role: self._enter_role(_r)),
                              m.register_forward_hook(lambda m, a, out: self._exit_role(out))]

    def detach(self) -> None:
        """Remove the module hooks `add_module` registered (measured mode on live models)."""
        for h in getattr(self, "_handles", []):
            h.remove()
        self._handles = []

    def _enter_role(self, role: str) -> None:
        self._role_stack = getattr(self, "_role_stack", []) + [self.role]
        self.role = role
        if len(self._role_stack) == 1 and not _in_backward_pass():  # a top-level model call
            self._calls += 1
            self._move_to((self._calls, "forward", "before"))

    def _exit_role(self, out: Any) -> None:
        logits = getattr(out, "logits", None)
        if isinstance(logits, torch.Tensor):
            self.label(logits, cat="logits", only_from="temporaries")
        for t in cache_tensors(getattr(out, "past_key_values", None)):
            self.label(t, cat="kv_cache")
        self.role = self._role_stack.pop() if getattr(self, "_role_stack", None) else self.role
        if not getattr(self, "_role_stack", None) and not _in_backward_pass():
            self._move_to((self._calls, "out", ""))

    # ---- sites -------------------------------------------------------------------------
    def _move_to(self, site: tuple) -> None:
        if not self.sites or site == self._site:
            return
        for device in {k[0] for k in self._site_dirty}:
            self._snapshot_if_dirty(device)
        self._site = site
        self._open_site()

    def _open_site(self) -> None:
        # A site's peak starts from what is alive when it is entered (as a phase's does).
        for device, total in self.totals.items():
            if (device, self._site) not in self._site_peak:
                self._site_peak[(device, self._site)] = Peak(total, self._alive_on(device))

    def mark(self, name: str) -> None:
        """Start a new site named by the program (the optimizer step, growing the cache, ...).

        Two moments whose bytes grow at different rates with depth must not share a site, or the
        one that is the peak at 2-3 blocks may not be the peak at 48: the runner marks them apart.
        """
        self._move_to((self._calls, name, ""))

    def add_blocks(self, blocks: Any) -> None:
        """Follow the position among `blocks` (a model's stack of identical layers), both ways.

        Forward: block pre-hooks. Backward: a gradient hook on each block's output fires when
        backward reaches that block, and one on the first block's input when it has left the
        stack. Hooks fired by gradient checkpointing's recomputation are ignored (still backward).
        """
        n = len(blocks)
        for k, block in enumerate(blocks):
            if id(block) in self._blocks:
                continue
            self._blocks.add(id(block))
            where = "first" if k == 0 else "last" if k == n - 1 else "middle"
            self._handles = getattr(self, "_handles", [])
            self._handles += [
                block.register_forward_pre_hook(
                    lambda m, args, kwargs, _w=where, _k=k: self._block_enter(_w, _k, args, kwargs),
                    with_kwargs=True),
                block.register_forward_hook(lambda m, args, out, _w=where: self._block_exit(_w, out))]

    def _block_enter(self, where: str, k: int, args: Any, kwargs: Any) -> None:
        if _in_backward_pass():
            return
        self._move_to((self._calls, "forward", where))
        hidden = args[0] if args else kwargs.get("hidden_states")
        if k == 0 and isinstance(hidden, torch.Tensor) and hidden.requires_grad:
            calls = self._calls
            hidden.register_hook(lambda g: self._backward_at(calls, "before"))

    def _block_exit(self, where: str, out: Any) -> None:
        if _in_backward_pass():
            return
        hidden = next((t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)), None)
        if hidden is not None and hidden.requires_grad:
            calls = self._calls
            hidden.register_hook(lambda g: self._backward_at(calls, where))

    def _backward_at(self, calls: int, where: str) -> None:
        self._move_to((calls, "backward", where))

    @contextmanager
    def context(self, role: str | None = None, cat: str | None = None) -> Iterator[None]:
        old = (self.role, self.cat)
        self.role, self.cat = role or self.role, cat or self.cat
        try:
            yield
        finally:
            self.role, self.cat = old

    def grad_hook(self, role: str) -> Any:
        """A post-accumulate-grad hook that labels the parameter's `.grad` as "grads" of `role`."""
        def hook(p: torch.Tensor) -> None:
            self.label(p.grad, role, "grads")
        return hook

    def label_optimizer(self, optimizer: Any, owner: dict[int, str]) -> None:
        """Label optimizer state as "optim" under the role owning each parameter (by id)."""
        for p, state in optimizer.state.items():
            for v in state.values():
                if isinstance(v, torch.Tensor) and v.dim() > 0:
                    self.label(v, owner.get(id(p), "policy"), "optim")

    # ---- phases ------------------------------------------------------------------------
    def start_phase(self, name: str) -> None:
        """Reset the peak: it starts from what is alive now."""
        self.phase = name
        alive = list(self.live.values())
        self._peak = {d: Peak(t, [r for r in alive if r.device == d]) for d, t in self.totals.items()}
        self._peak.setdefault(MAIN, Peak())
        self._dirty = set()
        self._calls = 0
        self._site, self._site_peak, self._site_dirty = (0, "out", ""), {}, set()
        if self.sites:
            self._open_site()

    def end_phase(self) -> dict[str, Peak]:
        """Close the phase; its peaks (per device) are merged into `phase_peaks` by max."""
        for d in list(self._dirty) + [k[0] for k in self._site_dirty]:
            self._snapshot_if_dirty(d)
        name, self.phase = self.phase, None
        for d, peak in self._peak.items():
            key = name if d == MAIN else f"{name}@{d}"
            if key not in self.phase_peaks or peak.bytes > self.phase_peaks[key].bytes:
                self.phase_peaks[key] = peak
        for (d, site), peak in self._site_peak.items():
            sites = self.site_peaks.setdefault(name if d == MAIN else f"{name}@{d}", {})
            if site not in sites or peak.bytes > sites[site].bytes:
                sites[site] = peak
        self._site_peak = {}
        peaks, self._peak = self._peak, {}
        return peaks

    # ---- the dispatch hook -------------------------------------------------------------
    def __enter__(self) -> "ByteTracker":
        self._saved_hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._saved_hooks.__enter__()
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        super().__exit__(*exc)
        self._saved_hooks.__exit__(*exc)

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        # Saved for backward: an activation, unless it is a parameter, logits or cache.
        if isinstance(t, torch.Tensor) and t.device.type != "meta":
            self.label(t, cat="activations", only_from="temporaries")
        return t

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                self.label(t)
        return out


def _in_backward_pass() -> bool:
    """True while autograd runs a backward (module hooks then come from checkpoint recomputation)."""
    return torch._C._current_graph_task_id() != -1


def cache_tensors(cache: Any) -> list[torch.Tensor]:
    """The key/value tensors of a transformers cache (DynamicCache layers, legacy tuples)."""
    if cache is None:
        return []
    layers = getattr(cache, "layers", None)
    if layers is not None:
        out = []
        for layer in layers:
            out += [t for t in (getattr(layer, "keys", None), getattr(layer, "values", None))
                    if isinstance(t, torch.Tensor)]
        return out
    return [t for t in tree_flatten(cache)[0] if isinstance(t, torch.Tensor)]
