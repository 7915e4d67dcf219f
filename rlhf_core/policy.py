"""PolicyModel: a causal LM that samples responses and scores tokens (the seed's API).

Shapes: B sequences, P prompt tokens (left-padded), N response tokens, T = P + N, H hidden, V vocab.
Only module-name-free Hugging Face accessors are used (`base_model`, `get_output_embeddings`), so
GPT-2 and Llama-style models both work.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from rlhf_core.models import load_model


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding: the first real token is position 0.  (B, T) -> (B, T)"""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def gather_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[token]: (..., V), (...) -> (...). Computed in float32.

    logit[token] - logsumexp(logits) reads the vocabulary once and writes no (..., V) tensor, where
    log_softmax would materialise one only to pick a single entry per position. Its backward
    writes one (..., V) tensor, g * (onehot(token) - softmax), in place (`_TokenLogprob`), where
    autograd would build the softmax, a zero-filled scatter for the gather and their sum.
    """
    return _TokenLogprob.apply(logits.float(), tokens)


class _TokenLogprob(torch.autograd.Function):
    """log softmax(logits)[token] with a fused backward (tests/test_ppo_math.py checks the gradient)."""

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        lse = torch.logsumexp(logits, dim=-1)                                            # (...)
        ctx.save_for_backward(logits, tokens, lse)
        return logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - lse

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        logits, tokens, lse = ctx.saved_tensors
        g = grad.unsqueeze(-1)                                                           # (..., 1)
        out = torch.sub(logits, lse.unsqueeze(-1)).exp_().mul_(-g)                       # -g * softmax
        return out.scatter_add_(-1, tokens.unsqueeze(-1), g), None                       # + g at the token


def sample_tokens(logits: torch.Tensor, generator: torch.Generator | None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One token per row from softmax(logits): (B, V) -> tokens (B,), their log-probs (B,),
    logsumexp(logits) (B,) for reading other tokens' log-probs, and the entropy (B,).

    Inverse-CDF sampling: one uniform number per row against the cumulative probabilities. It draws
    from the same distribution as torch.multinomial, which (like the exponential race) spends a
    random number on every vocabulary entry: on CPU that was 12x slower for a 50257-word vocabulary
    (benchmarks/limits.py measures the rollout against raw `generate`).
    """
    logits = logits.float()
    lse = torch.logsumexp(logits, dim=-1, keepdim=True)                              # (B, 1)
    probs = torch.exp(logits - lse)                                                  # (B, V)
    entropy = lse.squeeze(-1) - torch.linalg.vecdot(probs, logits)                   # H = lse - E_p[z]
    cdf = probs.cumsum_(dim=-1)                                                      # (B, V)
    u = torch.rand(cdf.shape[0], 1, generator=generator, device=cdf.device) * cdf[:, -1:]
    tokens = torch.searchsorted(cdf, u, right=True).clamp_(max=cdf.shape[-1] - 1)    # (B, 1)
    return tokens.squeeze(-1), (logits.gather(-1, tokens) - lse).squeeze(-1), lse.squeeze(-1), entropy


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of softmax(logits) per position: (B, N, V) -> (B, N)."""
    logits = logits.float()
    logp = torch.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1)


@dataclass
class Scores:
    """What one scoring forward returns for the response tokens."""

    logprobs: torch.Tensor             # (B, N) log pi(a_t | s_t)
    entropy: torch.Tensor | None       # (B, N)
    hidden: torch.Tensor | None        # (B, N, H) trunk state that predicted a_t (value head input)


class PolicyModel(nn.Module):
    """A causal LM policy.

    Args:
        model_name: embedded preset ("tiny-gpt2", "small-gpt2"), local directory, or cached hub id.
        device: torch device string.
        model, tokenizer: an already-loaded model and tokenizer (then model_name is only a label).

    Example:
        policy = PolicyModel(model_name="tiny-gpt2", device="cpu")
        sequences, logprobs = policy.sample(prompt_ids, max_new_tokens=20)
    """

    def __init__(self, model_name: str = "tiny-gpt2", device: str = "cpu", model=None, tokenizer=None,
                 quiet: bool = False):
        super().__init__()
        if model is None:
            model, tokenizer = load_model(model_name, device, quiet=quiet)
        self.model_name = model_name
        self.model = model.to(device)
        self.tokenizer = tokenizer
        self.device = torch.device(device)
        self.eos_token_id = tokenizer.eos_token_id
        self.pad_token_id = tokenizer.pad_token_id

    # ---- generation ---------------------------------------------------------------
    def sample(self, prompt_ids: torch.Tensor, max_new_tokens: int = 15,
               attention_mask: torch.Tensor | None = None, temperature: float = 1.0,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample responses with a KV cache; after EOS a sequence emits EOS padding.

        Args:
            prompt_ids: (B, P) left-padded prompts. attention_mask: (B, P), 1 for real tokens.
            temperature: logits are divided by it; scoring must use the same value.
        Returns:
            sequences (B, P + N) prompt and response; logprobs (B, N) of the sampled tokens under the
            tempered distribution (EOS padding after the first EOS gets the log-prob it was forced to).
        """
        sequences, scores = self.sample_scored(prompt_ids, max_new_tokens, attention_mask, temperature, generator)
        return sequences, scores.logprobs

    def sample_scored(self, prompt_ids: torch.Tensor, max_new_tokens: int = 15,
                      attention_mask: torch.Tensor | None = None, temperature: float = 1.0,
                      generator: torch.Generator | None = None) -> tuple[torch.Tensor, "Scores"]:
        """`sample`, also returning the trunk state that predicted each response token.

        Returns:
            sequences (B, P + N); Scores with logprobs (B, N) and hidden (B, N, H): what a scoring
            forward over the sequences gives (`score(..., with_hidden=True)`) up to float rounding,
            up to the first EOS, without running that forward (tests/test_models_policy.py), and
            entropy (B, N) of each sampling distribution.
        """
        with torch.inference_mode():
            sequences, logprobs, entropy, hidden = self._sample(prompt_ids, max_new_tokens, attention_mask,
                                                                temperature, generator)
        # normal tensors: callers may use them under autograd
        return sequences.clone(), Scores(logprobs.clone(), entropy.clone(), hidden.clone())

    def _sample(self, prompt_ids: torch.Tensor, max_new_tokens: int, attention_mask: torch.Tensor | None,
                temperature: float, generator: torch.Generator | None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        trunk, head = self.model.base_model, self.model.get_output_embeddings()
        mask = torch.ones_like(prompt_ids) if attention_mask is None else attention_mask.to(prompt_ids.dtype)
        pos = position_ids(mask)
        out = trunk(input_ids=prompt_ids, attention_mask=mask, position_ids=pos, use_cache=True)
        past, state = out.past_key_values, out.last_hidden_state[:, -1]              # (B, H)
        done = torch.zeros(prompt_ids.shape[0], dtype=torch.bool, device=prompt_ids.device)
        tokens, logps, entropies, states = [], [], [], []
        for t in range(max_new_tokens):
            scaled = _tempered(head(state).float(), temperature)                         # (B, V)
            nxt, logp, lse, entropy = sample_tokens(scaled, generator)                   # (B,) each
            # finished rows emit EOS padding, with the log-prob EOS has there (no host sync needed)
            nxt = torch.where(done, torch.full_like(nxt, self.eos_token_id), nxt)
            logp = torch.where(done, scaled[:, self.eos_token_id] - lse, logp)
            tokens.append(nxt)
            logps.append(logp)
            entropies.append(entropy)
            states.append(state)
            done |= nxt == self.eos_token_id
            if t == max_new_tokens - 1:
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            pos = pos[:, -1:] + 1
            out = trunk(input_ids=nxt[:, None], attention_mask=mask, position_ids=pos,
                        past_key_values=past, use_cache=True)
            past, state = out.past_key_values, out.last_hidden_state[:, -1]
        response = torch.stack(tokens, dim=1)                                         # (B, N)
        return (torch.cat([prompt_ids, response], dim=1), torch.stack(logps, dim=1),
                torch.stack(entropies, dim=1), torch.stack(states, dim=1))            # ..., (B, N, H)

    # ---- scoring ------------------------------------------------------------------
    def score(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_start: int,
              temperature: float = 1.0, with_entropy: bool = False, with_hidden: bool = False,
              entropy_grad: bool = True) -> Scores:
        """One forward over the whole sequence; log-probs (and more) of the response tokens only.

        Args:
            input_ids, attention_mask: (B, T); the response occupies positions response_start..T-1.
        Returns:
            Scores over the N = T - response_start response positions.
        """
        hidden = trunk_hidden(self.model.base_model, input_ids, attention_mask)
        hidden = hidden[:, response_start - 1:-1]                                     # (B, N, H)
        logits = _tempered(self.model.get_output_embeddings()(hidden), temperature)   # (B, N, V)
        return Scores(
            logprobs=gather_logprobs(logits, input_ids[:, response_start:]),
            entropy=None if not with_entropy else entropy_from_logits(logits) if entropy_grad else _no_grad_entropy(logits),
            hidden=hidden if with_hidden else None,
        )

    def get_logprobs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                     temperature: float = 1.0) -> torch.Tensor:
        """log pi(x_t | x_<t) for every token after the first: (B, T) -> (B, T - 1)."""
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        return self.score(input_ids, mask, response_start=1, temperature=temperature).logprobs

    @torch.no_grad()
    def kl(self, input_ids: torch.Tensor, reference: "PolicyModel", attention_mask: torch.Tensor | None = None,
           response_start: int = 1) -> torch.Tensor:
        """k1 estimate of KL(self || reference) summed over tokens from response_start: (B, T) -> (B,)."""
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        own = self.score(input_ids, mask, response_start).logprobs
        ref = reference.score(input_ids, mask, response_start).logprobs
        return ((own - ref) * mask[:, response_start:]).sum(-1)

    # ---- copies and files ---------------------------------------------------------
    def frozen_copy(self) -> "PolicyModel":
        """A deep copy with requires_grad off: the reference model."""
        ref = copy.deepcopy(self)
        ref.requires_grad_(False)
        return ref

    def save(self, path: str) -> None:
        """Write model and tokenizer with save_pretrained (loadable by `PolicyModel(model_name=path)`)."""
        os.makedirs(path, exist_ok=True)
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)

    def load(self, path: str) -> None:
        """Load weights saved by `save` into this policy."""
        from transformers import AutoModelForCausalLM

        loaded = AutoModelForCausalLM.from_pretrained(path)
        self.model.load_state_dict(loaded.state_dict())


def _tempered(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """logits / temperature, without the (..., V) copy (and its backward) when it is 1."""
    return logits if temperature == 1.0 else logits / temperature


@torch.no_grad()
def _no_grad_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy as a statistic only: no autograd graph over the (B, N, V) softmax (ent_coef = 0)."""
    return entropy_from_logits(logits)


def trunk_hidden(trunk: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Last hidden states of a transformer trunk over whole sequences (no KV cache): (B, T) -> (B, T, H)."""
    return trunk(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids(attention_mask),
                 use_cache=False).last_hidden_state


class ValueHead(nn.Module):
    """V(s) from trunk hidden states: (B, N, H) -> (B, N). Starts at V = 0 (zero weight and bias)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.linear = nn.Linear(hidden, 1)
        nn.init.zeros_(self.linear.weight)  # V = 0 until learned: no noise larger than the reward spread
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden.float()).squeeze(-1)


class SeparateCritic(nn.Module):
    """A value model with its own trunk (a copy of the policy's at start), like TRL's PPO critic."""

    def __init__(self, policy: PolicyModel):
        super().__init__()
        self.trunk = copy.deepcopy(policy.model.base_model)
        self.trunk.requires_grad_(True)
        self.head = ValueHead(policy.model.config.get_text_config().hidden_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_start: int) -> torch.Tensor:
        """(B, T) -> values of the response positions (B, N)."""
        hidden = trunk_hidden(self.trunk, input_ids, attention_mask)
        return self.head(hidden[:, response_start - 1:-1])


__all__ = ["PolicyModel", "ValueHead", "SeparateCritic", "Scores", "position_ids", "gather_logprobs",
           "sample_tokens", "entropy_from_logits"]
