"""Data-parallel PPO on PyTorch's own distributed engine: `torchrun --nproc_per_node N train.py [flags]`.

Each rank runs the whole PPO iteration on its share of the global batch (--batch_size / N prompts,
drawn from a rank-derived seed), and the ranks meet only where the maths needs every sequence:

    rollout      local (own prompts, own sampling stream; the models are identical on every rank)
    advantages   local KL shaping and GAE, then `comm`: global mean/variance for whitening
    comm         per-mini-batch global token counts, so each rank's token-mean loss is rescaled to
                 the token mean over the whole (global) mini-batch
    update       DDP: gradients are averaged by DistributedDataParallel's reducer *during* backward
                 (bucketed all-reduce overlapping the backward pass, so its time is inside `backward`)
    comm         per-sequence statistics gathered for exact reward/KL/length means and stds; the
                 per-mini-batch loss statistics averaged (min/max for *_min/*_max)

With these, one update over N ranks equals one single-process update over the concatenated batch,
up to float rounding (tests/test_ddp_invariant.py checks it). Rank 0 writes train.jsonl, alerts,
TensorBoard and checkpoints; every rank appends its phase records (with `rank`) to logs/phases.jsonl.

Example:
    torchrun --nproc_per_node 2 train.py --batch_size 4 --epochs 1 --steps_per_epoch 2 --device cpu

Known limitations:
    - Resume is exact (same as an uninterrupted run) only with the same world size; with another
      world size the weights, optimizer, KL coefficient and step continue exactly, but each rank's
      sampling stream restarts from a seed derived from (seed, rank, step): a different, equally
      valid sample, deterministic for that world size.
    - The checkpoint's RNG gather is a collective inside the `checkpoint` phase, not in `comm`.
    - Reward and loss statistics other than the gathered per-sequence ones are averages of per-rank
      values (each rank's token mean weighs equally), not token means over the global batch.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterator, TypeVar

import torch
from torch import nn

from rlhf_core.config import TrainConfig
from rlhf_core.policy import Scores
from rlhf_core.ppo import PPOTrainer, score_for_update
from rlhf_core.rollout import Rollout
from rlhf_kit.errors import UsageError

T = TypeVar("T")
RANK_STRIDE = 1_000_003  # rank r samples from seed + r * RANK_STRIDE; rank 0 keeps the plain seed
STEP_STRIDE = 7_919      # resume under another world size: the stream also moves with the step


def rank_seed(seed: int, rank: int, step: int = 0) -> int:
    """The sampling/prompt seed of `rank` (rank 0, step 0: `seed` itself, so one process is unchanged)."""
    return seed + rank * RANK_STRIDE + step * STEP_STRIDE


@dataclass
class DistContext:
    """Where this process sits in the job. The default is the single-process run.

    Attributes:
        rank, world_size, local_rank: from torchrun's RANK, WORLD_SIZE, LOCAL_RANK.
        device: this rank's device ("cpu", or "cuda:LOCAL_RANK" under torchrun).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def local_batch(self, global_batch: int) -> int:
        return global_batch // self.world_size

    def barrier(self) -> None:
        if self.enabled:
            torch.distributed.barrier()

    def from_main(self, fn: Callable[[], T]) -> T:
        """Run `fn` on rank 0 only and hand its result to every rank; a UsageError there is raised everywhere."""
        if not self.enabled:
            return fn()
        payload: list[Any] = [None]
        if self.is_main:
            try:
                payload = [("ok", fn())]
            except UsageError as e:  # the other ranks must not hang waiting for a result
                payload = [("error", str(e))]
        torch.distributed.broadcast_object_list(payload, src=0)
        kind, value = payload[0]
        if kind == "error":
            raise UsageError(value)
        return value

    @contextlib.contextmanager
    def quiet_unless_main(self) -> Iterator[None]:
        """Console output from rank 0 only (stderr stays open on every rank: errors must be seen)."""
        if self.is_main:
            yield
            return
        with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
            yield

    def close(self) -> None:
        if self.enabled and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def init_distributed(cfg: TrainConfig, device: str) -> DistContext:
    """Join the torchrun job if there is one (WORLD_SIZE > 1); otherwise the single-process context.

    Args:
        cfg: the run configuration; --batch_size and --mini_batch_size are global and must split evenly.
        device: the resolved --device ("cpu", "cuda", "cuda:N").
    Returns:
        The DistContext; under torchrun the process group is initialised (gloo on CPU, nccl on CUDA).
    Raises:
        UsageError: the world size does not divide the batch, or a fixed cuda:N was asked for.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(device=device)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    batch, mini = cfg.rollout.batch_size, cfg.ppo.mini_batch_size
    if batch % world:
        raise UsageError(f"--batch_size {batch} is the global batch and must be divisible by the world size "
                         f"{world}; use a multiple of {world}")
    if mini % world:
        raise UsageError(f"--mini_batch_size {mini} is global and must be divisible by the world size {world} "
                         f"(or 0 for the whole batch)")
    backend = "gloo"
    if device.startswith("cuda"):
        if ":" in device:
            raise UsageError(f"--device {device}: under torchrun each rank uses cuda:LOCAL_RANK; pass --device cuda or auto")
        if local >= torch.cuda.device_count():
            raise UsageError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} CUDA device(s) here")
        device, backend = f"cuda:{local}", "nccl"
        torch.cuda.set_device(local)
    torch.distributed.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistContext(rank=rank, world_size=world, local_rank=local, device=device)


class UpdateForward(nn.Module):
    """The update's forward as one module, so DistributedDataParallel sees (and all-reduces) every
    parameter it trains: the policy and the value function. (The trainer otherwise calls submodules
    directly, which would bypass DDP's gradient reducer.)

    forward(sequences (B, T), attention_mask (B, T), response_start P) ->
        log-probs (B, N), entropy (B, N) or None (only with an entropy bonus), values (B, N).
    """

    def __init__(self, policy: nn.Module, value_model: nn.Module, temperature: float, with_entropy: bool = False):
        super().__init__()
        self.policy = policy
        self.value_model = value_model
        self.temperature = temperature
        self.with_entropy = with_entropy

    def forward(self, sequences: torch.Tensor, attention_mask: torch.Tensor, response_start: int):
        s, values = score_for_update(self.policy, self.value_model, sequences, attention_mask, response_start,
                                     self.temperature, self.with_entropy)
        return s.logprobs, s.entropy, values


def all_gather_cat(x: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Every rank's `x` (same shape on all ranks), concatenated in rank order along `dim`."""
    parts = [torch.empty_like(x) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=dim)


def global_masked_moments(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and Bessel-corrected variance of the masked entries of `x` over all ranks (two passes,
    float64 sums, like advantages.masked_var on the concatenated batch). x, mask: (B, N)."""
    first = torch.stack([mask.sum(), (x * mask).sum()]).double()
    torch.distributed.all_reduce(first)
    n, mean = first[0], first[1] / first[0].clamp(min=1)
    second = ((x.double() - mean) ** 2 * mask).sum()
    torch.distributed.all_reduce(second)
    return mean.to(x.dtype), (second / (n - 1).clamp(min=1)).to(x.dtype)


UPD_MIN = ("ratio_min",)
UPD_MAX = ("ratio_max", "nonfinite", "skipped")  # a skip or a non-finite value anywhere counts once


def reduce_update_stats(upd: dict[str, torch.Tensor], world_size: int) -> dict[str, torch.Tensor]:
    """Per-mini-batch update statistics (name -> (M,)) reduced over ranks: mean, or min/max where named.

    One all-reduce per reduction kind: the tensors are packed into one flat vector each.
    """
    out: dict[str, torch.Tensor] = {}
    groups = {torch.distributed.ReduceOp.MIN: [k for k in upd if k in UPD_MIN],
              torch.distributed.ReduceOp.MAX: [k for k in upd if k in UPD_MAX],
              torch.distributed.ReduceOp.SUM: [k for k in upd if k not in UPD_MIN + UPD_MAX]}
    for op, keys in groups.items():
        if not keys:
            continue
        flat = torch.cat([upd[k].float().reshape(-1) for k in keys])
        torch.distributed.all_reduce(flat, op=op)
        if op == torch.distributed.ReduceOp.SUM:
            flat = flat / world_size
        for k, piece in zip(keys, flat.split([upd[k].numel() for k in keys])):
            out[k] = piece.reshape(upd[k].shape)
    return out


class DDPPPOTrainer(PPOTrainer):
    """PPOTrainer for one rank of a data-parallel job. Same API; `train_step` takes this rank's prompts.

    Args: as PPOTrainer, plus `dist`, this process's DistContext (initialised process group).

    Every rank builds the same models from the same seed; DDP also broadcasts rank 0's weights once.
    The mini-batch shuffle generator keeps the shared seed on every rank, so all ranks cut their local
    batches at the same local positions and can compute each global mini-batch's token count up front.
    """

    def __init__(self, *args: Any, dist: DistContext, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.dist = dist
        self.rank, self.world_size = dist.rank, dist.world_size
        self.generator.manual_seed(rank_seed(self.cfg.run.seed, self.rank))
        cuda = self.device.type == "cuda"
        self.ddp = nn.parallel.DistributedDataParallel(
            UpdateForward(self.policy, self.value_model, self.cfg.rollout.temperature, self.cfg.ppo.ent_coef > 0),
            device_ids=[self.device.index] if cuda else None)
        self._plan: deque[tuple[float, float]] = deque()
        self._scale = 1.0

    # ---- the iteration ----------------------------------------------------------------
    def train_step(self, prompts: Any, max_new_tokens: int | None = None) -> dict[str, float]:
        """One data-parallel PPO iteration on this rank's `prompts`; returns globally reduced metrics."""
        n_new = max_new_tokens or self.cfg.rollout.max_new_tokens
        self.step += 1
        r = self.make_rollout(prompts, n_new)
        kl, upd = self.learn(r)
        with self.bus.phase("comm"):
            g_r, g_kl, g_upd = self._gather_stats(r, kl, upd)
        with self.bus.phase("log"):
            metrics = self._metrics(g_r, g_kl, g_upd)
        self.kl_ctl.update(metrics["kl_mean"], len(prompts) * self.world_size)
        self.last_rollout = r
        return metrics

    def learn(self, r: Rollout) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Advantages with global whitening, then the DDP update. Returns (local KL stats, local update stats)."""
        with self.bus.phase("advantages"):
            kl = self.compute_advantages(r, whiten=False)
        whiten = self.cfg.ppo.whiten_advantages
        with self.bus.phase("comm"):
            moments = global_masked_moments(r.advantages, r.mask) if whiten else None
            self._plan = self._plan_token_scales(r)
        if moments is not None:
            with self.bus.phase("advantages"):  # a second entry: the phase's time adds up
                mean, var = moments
                r.advantages = (r.advantages - mean) * torch.rsqrt(var + 1e-8) * r.mask
        with self.bus.phase("update"):
            upd = self.update(r)
        return kl, upd

    def _plan_token_scales(self, r: Rollout) -> deque[tuple[float, float]]:
        """(local token count, loss scale) of each coming mini-batch, in the order update() visits them.

        The losses are token means over a mini-batch; DDP averages gradients over ranks. Scaling the
        local loss by W * n_local / n_global makes that average the token mean over the global mini-batch.
        The permutations are drawn from a copy of the shuffle state, exactly as update() will draw them.
        """
        counts = all_gather_cat(r.mask.sum(1)[None], dim=0).cpu()                # (W, B_local)
        batch = counts.shape[1]
        mb = self.cfg.mini_batch // self.world_size
        state = self.shuffle.get_state()
        perms = [torch.randperm(batch, generator=self.shuffle) for _ in range(self.cfg.ppo.ppo_epochs)]
        self.shuffle.set_state(state)
        plan: deque[tuple[float, float]] = deque()
        for perm in perms:
            for i in range(0, batch, mb):
                idx = perm[i:i + mb]
                local, total = float(counts[self.rank, idx].sum()), float(counts[:, idx].sum())
                plan.append((local, self.world_size * max(local, 1.0) / max(total, 1.0)))
        return plan

    def _score_update(self, mb: Rollout) -> tuple[Scores, torch.Tensor]:
        logprobs, entropy, values = self.ddp(mb.sequences, mb.attention_mask, mb.response_start)
        return Scores(logprobs, entropy, None), values

    def _losses(self, mb: Rollout) -> dict[str, torch.Tensor]:
        stats = super()._losses(mb)
        expected, self._scale = self._plan.popleft()
        if float(mb.mask.sum()) != expected:  # the planned order must be the one update() drew
            raise RuntimeError("data-parallel loss scaling: mini-batch order differs from the planned one")
        stats["loss"] = stats["loss"] * self._scale
        return stats

    def _optimizer_step(self, loss: torch.Tensor) -> dict[str, torch.Tensor]:
        out = super()._optimizer_step(loss)
        out["total_loss"] = out["total_loss"] / self._scale  # log this rank's unscaled loss
        return out

    def _gather_stats(self, r: Rollout, kl: dict[str, torch.Tensor], upd: dict[str, torch.Tensor]):
        """The global batch's per-sequence tensors (for exact means/stds) and the reduced update stats."""
        block = all_gather_cat(torch.stack([r.mask, r.returns, r.values, r.response.float(), r.entropy]).float(),
                               dim=1)
        vecs = all_gather_cat(torch.stack([r.scores.float(), kl["k1_sum"], kl["k3_sum"]]), dim=1)
        mask, returns, values, response, entropy = block                         # (W*B, N) each
        g = Rollout(sequences=response.long(), attention_mask=mask.long(), response_start=0, mask=mask,
                    logprobs=None, ref_logprobs=None, values=values, scores=vecs[0], returns=returns,
                    entropy=entropy)
        return g, {"k1_sum": vecs[1], "k3_sum": vecs[2]}, reduce_update_stats(upd, self.world_size)

    # ---- checkpoints ----------------------------------------------------------------------
    def save_checkpoint(self, path: str, extra: dict | None = None) -> None:
        """Collective: every rank's RNG streams go to rank 0, which alone writes the file."""
        mine = {"torch": torch.get_rng_state(), "generator": self.generator.get_state()}
        states: list[Any] = [None] * self.world_size
        torch.distributed.all_gather_object(states, mine)
        if self.dist.is_main:
            super().save_checkpoint(path, {"world_size": self.world_size, "rank_rng": states, **(extra or {})})
        self.dist.barrier()  # no rank runs ahead of a checkpoint it may be asked to resume from

    def load_checkpoint(self, path: str) -> dict[str, Any]:
        """Restore; this rank's own RNG streams when the world size matches, else fresh rank-derived ones."""
        state = super().load_checkpoint(path)
        ranks = state.get("rank_rng")
        if ranks and state.get("world_size") == self.world_size:
            torch.set_rng_state(ranks[self.rank]["torch"].cpu())
            self.generator.set_state(ranks[self.rank]["generator"].cpu())
        else:
            seed = rank_seed(self.cfg.run.seed, self.rank, self.step)
            torch.manual_seed(seed)
            self.generator.manual_seed(seed)
        return state


def make_trainer(dist: DistContext, *args: Any, **kwargs: Any) -> PPOTrainer:
    """PPOTrainer for one process, DDPPPOTrainer under torchrun (same arguments)."""
    return DDPPPOTrainer(*args, dist=dist, **kwargs) if dist.enabled else PPOTrainer(*args, **kwargs)


__all__ = ["DistContext", "init_distributed", "rank_seed", "DDPPPOTrainer", "UpdateForward", "make_trainer",
           "global_masked_moments", "reduce_update_stats", "all_gather_cat"]
