"""The PPO step whose memory is traced: four models by role, one rollout, scoring and update.

It runs on fake tensors (prediction) or real ones (the accuracy benchmark) alike: nothing reads a
tensor's value, generation runs to `max_new_tokens` (the worst case), and every module is taken
from the Hugging Face config by its Auto class, so GPT-2 and Llama work without module names.

What it mirrors of a PPO runner (ours, TRL, OpenRLHF):
  rollout  sampling with a KV cache, one position of logits per step (as `generate` does)
  scoring  no-grad forwards with `use_cache=False`: policy log-probs (+ value head), reference
           log-probs, critic values, reward score; then KL-shaped rewards and GAE. (The kit's
           runner takes the old log-probs from sampling unless --rescore; the policy forward is
           kept here, as TRL and OpenRLHF run it, and it holds no more than the reference's.)
  update   ppo_epochs x mini-batches, each `micro` sequences per forward/backward (gradient
           accumulation), grad clipping, optimizer step, `zero_grad(set_to_none=True)`
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch import nn

from rlhf_kit.memory.config import MemoryConfig

TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class ScalarHeadModel(nn.Module):
    """A backbone (no LM head) with a scalar head: the critic or the reward model."""

    def __init__(self, backbone: nn.Module, hidden: int, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(hidden, 1, dtype=dtype)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, start: int) -> torch.Tensor:
        """(B, T) -> one value per response position (B, N) from position start-1 on."""
        h = self.backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        return self.head(h[:, start - 1:-1].float() if h.dtype == torch.float32 else h[:, start - 1:-1]).squeeze(-1)


class LoRA:
    """Rank-r adapters added to the output of every linear layer inside the transformer blocks.

    Generic on purpose: a forward hook on nn.Linear (Llama) or transformers' Conv1D (GPT-2) adds
    `(x @ A) @ B`; `enabled = False` gives the base model, which is what the reference becomes.
    """

    def __init__(self, lm: nn.Module, rank: int):
        self.enabled = True
        self.params: list[nn.Parameter] = []
        head = lm.get_output_embeddings()
        for module in lm.modules():
            dims = _linear_dims(module)
            if dims is None or module is head:
                continue
            a = nn.Parameter(torch.empty(dims[0], rank, dtype=module.weight.dtype).normal_(0, 0.02))
            b = nn.Parameter(torch.zeros(rank, dims[1], dtype=module.weight.dtype))
            module.register_forward_hook(lambda m, args, out, a=a, b=b: out + (args[0] @ a) @ b
                                         if self.enabled else out)
            self.params += [a, b]


def _linear_dims(module: nn.Module) -> tuple[int, int] | None:
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if type(module).__name__ == "Conv1D":  # GPT-2's transposed linear: weight (in, out)
        return tuple(module.weight.shape)
    return None


@dataclass
class Models:
    """The modules of one setup, by role; `policy_lm` is the causal LM that samples."""

    policy_lm: nn.Module
    v_head: nn.Module | None = None
    reference: nn.Module | None = None
    critic: nn.Module | None = None
    reward: nn.Module | None = None
    lora: LoRA | None = None
    extra: dict = field(default_factory=dict)

    def by_role(self) -> dict[str, nn.Module]:
        roles = {"policy": self.policy_lm, "reference": self.reference, "value": self.critic,
                 "reward": self.reward}
        return {r: m for r, m in roles.items() if m is not None}

    def trainable(self) -> list[tuple[str, nn.Parameter]]:
        """(role, parameter) pairs the optimizer updates."""
        if self.lora is not None:
            out = [("policy", p) for p in self.lora.params]
        else:
            out = [("policy", p) for p in self.policy_lm.parameters()]
        if self.v_head is not None:
            out += [("policy", p) for p in self.v_head.parameters()]
        if self.critic is not None:
            out += [("value", p) for p in self.critic.parameters()]
        return out


def build_models(cfg: MemoryConfig, init: bool = True) -> Models:
    """The setup's modules from `cfg.hf_config` (random weights; under FakeTensorMode, no bytes).

    Args:
        init: False skips weight initialisation (5x faster on fake tensors, whose values
            nobody reads); embeddings are tied again afterwards, as `from_config` would.
    """
    from contextlib import nullcontext

    from transformers import AutoModel, AutoModelForCausalLM
    from transformers.initialization import no_init_weights

    hf = _dropout_off(cfg.hf_config)
    dtype = TORCH_DTYPES[cfg.dtype]
    hidden = getattr(hf, "n_embd", None) or hf.hidden_size
    ctx = nullcontext if init else no_init_weights

    def lm() -> nn.Module:
        with ctx():
            model = AutoModelForCausalLM.from_config(hf, attn_implementation=cfg.attn, dtype=dtype)
        model.tie_weights()  # no_init_weights also skips tying: a second embedding would be counted
        return model

    def scalar() -> nn.Module:
        with ctx():
            backbone = AutoModel.from_config(hf, attn_implementation=cfg.attn, dtype=dtype)
        return ScalarHeadModel(backbone, hidden, dtype)

    m = Models(policy_lm=lm())
    if cfg.lora_rank:
        m.policy_lm.requires_grad_(False)
        m.lora = LoRA(m.policy_lm, cfg.lora_rank)
    else:
        m.reference = lm().requires_grad_(False).eval()
    if cfg.value_model == "head":
        m.v_head = nn.Linear(hidden, 1, dtype=dtype)
    else:
        m.critic = scalar()
    if cfg.reward_model == "model":
        m.reward = scalar().requires_grad_(False).eval()
    if cfg.grad_checkpointing:
        for module in (m.policy_lm, getattr(m.critic, "backbone", None)):
            if module is not None:
                module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return m


def _dropout_off(hf: Any) -> Any:
    """A copy of the config with dropout off, as PPO runners do (ours, TRL's defaults)."""
    hf = hf.__class__.from_dict(hf.to_dict())
    for key in ("resid_pdrop", "embd_pdrop", "attn_pdrop", "attention_dropout", "hidden_dropout", "dropout"):
        if hasattr(hf, key):
            setattr(hf, key, 0.0)
    return hf


def make_optimizer(cfg: MemoryConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=1e-5)  # no momentum: no state
    if cfg.optimizer == "adam8bit":
        return Adam8bitStates(params)
    if cfg.fused:
        return torch.optim.AdamW(params, lr=1e-5, fused=True)
    return torch.optim.AdamW(params, lr=1e-5, foreach=cfg.foreach)


class Adam8bitStates(torch.optim.Optimizer):
    """The memory of bitsandbytes' blockwise 8-bit Adam, not its maths.

    State per parameter: two uint8 tensors plus one fp32 absmax per 256-element block each;
    parameters under 4096 elements keep fp32 states (bitsandbytes' `min_8bit_size`). Its fused
    kernel dequantises block by block, so no full-size temporaries are allocated here either.
    """

    def __init__(self, params: Any, lr: float = 1e-5):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    if p.numel() < 4096:
                        state["exp_avg"] = torch.zeros_like(p, dtype=torch.float32)
                        state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
                    else:
                        blocks = math.ceil(p.numel() / 256)
                        state["exp_avg"] = torch.zeros_like(p, dtype=torch.uint8)
                        state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.uint8)
                        state["absmax1"] = torch.zeros(blocks, dtype=torch.float32, device=p.device)
                        state["absmax2"] = torch.zeros(blocks, dtype=torch.float32, device=p.device)
                p.add_(p.grad, alpha=-group["lr"])


def _splits(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, start + size)


def sample(lm: nn.Module, prompt: torch.Tensor, mask: torch.Tensor, new_tokens: int,
           jump: bool = True, mark: Any = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Sampling with a KV cache, always `new_tokens` long. Returns (B, P + N) ids and the (B, N, H)
    trunk states that predicted them (the kit's runner feeds them to the value head).

    With `jump`, the steps between the second and the last are skipped by growing every cache
    layer to the length it would have (same cat-and-free pattern as the cache's own update).
    Each decode step holds the same tensors as the one before, plus a longer cache, so the
    last step is the rollout's peak and skipping the middle changes no peak, only the time.
    `mark(name)`, if given, names the cache growth as a site of its own (tracker.mark).
    """
    seq, cache, step_ids = prompt, None, prompt
    head, states = lm.get_output_embeddings(), []
    for i in range(new_tokens):
        if jump and i == 2 and new_tokens > 3:
            if mark is not None:
                mark("grow cache")
            if _grow_cache(cache, new_tokens - 3):  # else not a DynamicCache: step through instead
                filler = torch.randint(0, 2, (seq.shape[0], new_tokens - 3), dtype=seq.dtype)
                seq, mask = torch.cat([seq, filler], dim=1), torch.cat([mask, torch.ones_like(filler)], dim=1)
                step_ids = seq[:, -1:]
                states += [torch.empty_like(states[-1]) for _ in range(new_tokens - 3)]  # each step's state
                i = new_tokens - 1
        if i >= new_tokens or seq.shape[1] >= prompt.shape[1] + new_tokens:
            break
        # the LM head on the last position only, as the kit's runner and generate() do
        out = lm.base_model(input_ids=step_ids, attention_mask=mask, past_key_values=cache, use_cache=True)
        cache, state = out.past_key_values, out.last_hidden_state[:, -1]  # (B, H), a view: keeps the output
        logp = torch.log_softmax(head(state).float(), dim=-1)  # (B, V); temperature 1: no copy
        step_ids = _multinomial(logp.exp())  # (B, 1)
        states.append(state)  # the value head's input, kept by the runner for the scoring phase
        seq = torch.cat([seq, step_ids], dim=1)
        mask = torch.cat([mask, torch.ones_like(step_ids)], dim=1)
        # out and logp stay alive into the next forward, as in a plain sampling loop
    return seq, torch.stack(states, dim=1)  # (B, T), (B, N, H)


def _multinomial(probs: torch.Tensor) -> torch.Tensor:
    """One sample per row, allocating what CPU `torch.multinomial` does inside its kernel.

    Its kernel draws q ~ Exp(1) into a (B, V) buffer, divides in place and takes the argmax;
    those buffers are invisible to a fake-tensor trace of the op itself, so they are spelled out.
    """
    q = torch.empty_like(probs).exponential_()  # (B, V)
    torch.div(probs, q, out=q)
    return q.argmax(dim=-1, keepdim=True)  # (B, 1)


def _grow_cache(cache: Any, n: int) -> bool:
    """Append `n` positions to each layer of a transformers DynamicCache; False if not one."""
    layers = getattr(cache, "layers", None)
    if not layers or not all(isinstance(getattr(l, "keys", None), torch.Tensor) for l in layers):
        return False
    for layer in layers:
        for name in ("keys", "values"):
            t = getattr(layer, name)  # (B, H_kv, T, D)
            setattr(layer, name, torch.cat([t, t.new_zeros(*t.shape[:2], n, t.shape[3])], dim=2))
    return True


def response_logprobs(lm: nn.Module, seq: torch.Tensor, mask: torch.Tensor, prompt_len: int,
                      v_head: nn.Module | None = None) -> tuple[torch.Tensor, Any]:
    """log pi(a_t|s_t) of the response tokens (B, N) and V(s_t) from the value head (or None).

    The LM head runs on the N response positions only (not all T), in fp32, at temperature 1
    (no copy), as the kit's runner does; the log-prob's backward writes one (B, N, V) tensor.
    No entropy: the runner logs the sampling pass's, and computes it here only with ent_coef > 0.
    """
    hidden = lm.base_model(input_ids=seq, attention_mask=mask, use_cache=False).last_hidden_state
    hidden = hidden[:, prompt_len - 1:-1]  # (B, N, H)
    logits = lm.get_output_embeddings()(hidden).float()  # (B, N, V)
    logp = _TokenLogprob.apply(logits, seq[:, prompt_len:])  # (B, N)
    values = v_head(hidden.float()).squeeze(-1) if v_head is not None else None  # (B, N)
    return logp, values


class _TokenLogprob(torch.autograd.Function):
    """The allocations of the runner's fused log-prob (rlhf_core.policy.gather_logprobs): forward
    saves the logits and logsumexp; backward builds g * (onehot - softmax) in one (B, N, V) tensor.
    (Mirrored, not imported: the instruments never import the runner.)"""

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        lse = torch.logsumexp(logits, dim=-1)
        ctx.save_for_backward(logits, tokens, lse)
        return logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - lse

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        logits, tokens, lse = ctx.saved_tensors
        g = grad.unsqueeze(-1)
        return torch.sub(logits, lse.unsqueeze(-1)).exp_().mul_(-g).scatter_add_(-1, tokens.unsqueeze(-1), g), None


def _warm_optimizer(optimizer: torch.optim.Optimizer, params: list[torch.Tensor]) -> None:
    """Create the optimizer state as a first iteration leaves it (zero gradients, lr 0)."""
    lrs = [g["lr"] for g in optimizer.param_groups]
    for g in optimizer.param_groups:
        g["lr"] = 0.0
    for p in params:
        p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    for g, lr in zip(optimizer.param_groups, lrs):
        g["lr"] = lr


def ppo_step(models: Models, optimizer: torch.optim.Optimizer, cfg: MemoryConfig, tracker: Any) -> None:
    """One PPO iteration, phase by phase, reporting phases to `tracker` (start_phase/end_phase).

    Shapes: B = batch_size, P = prompt_length, N = max_new_tokens, T = P + N.
    """
    B, P, N = cfg.batch_size, cfg.prompt_length, cfg.max_new_tokens
    vocab = models.policy_lm.get_input_embeddings().weight.shape[0]
    lm, lora = models.policy_lm, models.lora
    prompt = torch.randint(0, vocab, (B, P))  # (B, P)
    prompt_mask = torch.ones_like(prompt)

    # Steady state: from the second iteration on, the optimizer state is alive in every phase, and so
    # is the runner's copy of the trainable weights for the update-to-weight ratio (a buffer it keeps).
    _warm_optimizer(optimizer, [p for _, p in models.trainable()])
    snapshot = [p.detach().clone() for _, p in models.trainable()] if cfg.param_snapshot else []

    # step 1. rollout: sample N tokens per prompt
    tracker.start_phase("rollout")
    lm.eval()
    with torch.no_grad():
        seq, states = sample(lm, prompt, prompt_mask, N, mark=getattr(tracker, "mark", None))  # (B, T), (B, N, H)
    mask = torch.ones_like(seq)
    tracker.end_phase()

    # step 2. scoring: old log-probs and values, reference log-probs, reward, advantages
    tracker.start_phase("scoring")
    with torch.no_grad():
        old_logp, old_values = response_logprobs(lm, seq, mask, P, models.v_head)  # (B, N) each
        if lora is not None:
            lora.enabled = False  # the reference is the base model: no second copy
            ref_logp = response_logprobs(lm, seq, mask, P)[0]
            lora.enabled = True
        else:
            ref_logp = response_logprobs(models.reference, seq, mask, P)[0]
        if models.critic is not None:
            old_values = models.critic(seq, mask, P)  # (B, N)
        score = models.reward(seq, mask, P)[:, -1].float() if models.reward is not None else torch.zeros(B)
        rewards = -0.05 * (old_logp - ref_logp)  # (B, N) KL-shaped per-token rewards
        rewards[:, -1] += score
        returns = rewards.flip(1).cumsum(1).flip(1)  # (B, N) stands in for GAE: same shapes
        advantages = returns - old_values
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        del rewards, score, states
    tracker.end_phase()

    # step 3. update: ppo_epochs x mini-batches, micro-batches accumulate gradients
    tracker.start_phase("update")
    mark = getattr(tracker, "mark", lambda name: None)
    lm.train()
    if models.critic is not None:
        models.critic.train()
    trainable = [p for _, p in models.trainable()]
    # Two optimizer steps of up to two micro-batches each (the second accumulates into existing
    # gradients); every later step repeats the pattern.
    steps = [mb for _ in range(cfg.ppo_epochs) for mb in _splits(B, cfg.mini)][:2]
    for mb in steps:
        for mu in list(_splits(mb.stop - mb.start, cfg.micro))[:2]:
            idx = slice(mb.start + mu.start, mb.start + mu.stop)
            logp, values = response_logprobs(lm, seq[idx], mask[idx], P, models.v_head)
            if models.critic is not None:
                values = models.critic(seq[idx], mask[idx], P)
            ratio = torch.exp(logp - old_logp[idx])  # (b, N)
            adv = advantages[idx]
            pg = torch.max(-adv * ratio, -adv * ratio.clamp(0.8, 1.2)).mean()
            vf = 0.5 * ((values - returns[idx]) ** 2).mean()
            ((pg + 0.1 * vf) / (cfg.mini // cfg.micro)).backward()
            del logp, values, ratio, pg, vf
        mark("clip")
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        mark("optimizer step")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        mark("after the step")
        if hasattr(tracker, "label_optimizer"):
            tracker.label_optimizer(optimizer, {id(p): r for r, p in models.trainable()})
    del snapshot
    tracker.end_phase()
