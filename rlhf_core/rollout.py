"""Experience collection: generate -> score -> log-probs / reference log-probs / values => Rollout.

Every step runs inside its RLHF phase (`bus.phase`) so the instruments see where time and memory go.
Scoring passes run under `torch.inference_mode()` with `use_cache=False`: no autograd graph and no KV
cache is built for tokens that are only scored. The old log-probs and the value head's inputs are
taken from the sampling pass, which computed them already; `rescore=True` recomputes them with a
full forward instead (as TRL does), equal up to float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from rlhf_core.advantages import response_mask
from rlhf_core.policy import PolicyModel


@dataclass
class Rollout:
    """One batch of experience. B sequences, P prompt positions (left-padded), N response tokens."""

    sequences: torch.Tensor        # (B, P + N) prompt then response token ids
    attention_mask: torch.Tensor   # (B, P + N) 1 on real prompt tokens and on response tokens up to EOS
    response_start: int            # P
    mask: torch.Tensor             # (B, N) 1 on response tokens up to and including the first EOS
    logprobs: torch.Tensor         # (B, N) log pi_old(a|s)
    ref_logprobs: torch.Tensor     # (B, N) log pi_ref(a|s)
    values: torch.Tensor           # (B, N) V_old(s)
    scores: torch.Tensor           # (B,)   task reward of each response
    texts: list[str] = field(default_factory=list)
    advantages: torch.Tensor | None = None  # (B, N) filled by the advantages step
    returns: torch.Tensor | None = None     # (B, N)
    entropy: torch.Tensor | None = None     # (B, N) of the sampling policy's next-token distributions

    @property
    def response(self) -> torch.Tensor:
        return self.sequences[:, self.response_start:]                        # (B, N)

    def select(self, idx: torch.Tensor) -> "Rollout":
        """The mini-batch of sequences `idx` (texts are not carried)."""
        pick = lambda t: None if t is None else t[idx]  # noqa: E731
        return Rollout(self.sequences[idx], self.attention_mask[idx], self.response_start, self.mask[idx],
                       self.logprobs[idx], self.ref_logprobs[idx], self.values[idx], self.scores[idx],
                       [], pick(self.advantages), pick(self.returns), pick(self.entropy))


def sum_t2(attention_mask: torch.Tensor) -> int:
    """Sum over sequences of (real length)^2: the attention term of the FLOP count."""
    return int((attention_mask.sum(1) ** 2).sum())  # CPU-GPU sync: once per phase, for FLOP accounting


def collect(policy: PolicyModel, reference: PolicyModel, value_fn: Callable[[Any, Rollout], torch.Tensor],
            score_fn: Callable[[list[str]], torch.Tensor], prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
            max_new_tokens: int, temperature: float, generator: torch.Generator, phase: Callable,
            critic_forward: bool = False, rescore: bool = False) -> Rollout:
    """Run the five experience phases and return the Rollout.

    Args:
        value_fn: (policy Scores with hidden states, partial Rollout) -> values (B, N).
        score_fn: decoded responses -> task rewards (B,).
        phase: the HookBus.phase context manager.
        critic_forward: the value function runs its own trunk (counted as forward work).
        rescore: run the old_logprobs forward; otherwise the old log-probs and the trunk states
            for the value head come from the sampling pass (the phase then times nothing).
    """
    batch, start = prompt_ids.shape
    with phase("rollout", work={"mode": "gen", "tokens": batch * max_new_tokens,
                                "sum_t2": batch * (start + max_new_tokens) ** 2}):
        sequences, own = policy.sample_scored(prompt_ids, max_new_tokens, prompt_mask, temperature, generator)
        mask = response_mask(sequences[:, start:], policy.eos_token_id)                 # (B, N)
        attention_mask = torch.cat([prompt_mask.to(mask.dtype), mask], dim=1).long()     # (B, T)
    with phase("reward"):
        texts = policy.tokenizer.batch_decode(sequences[:, start:], skip_special_tokens=True)
        scores = score_fn(texts)                                                          # (B,)
    work = {"mode": "fwd", "tokens": int(attention_mask.numel()), "sum_t2": sum_t2(attention_mask)}
    partial = Rollout(sequences, attention_mask, start, mask, None, None, None, scores, texts)
    with torch.inference_mode():
        if rescore:
            with phase("old_logprobs", work=work):
                own = policy.score(sequences, attention_mask, start, temperature, with_entropy=True,
                                   with_hidden=True, entropy_grad=False)
        with phase("ref_logprobs", work=work):
            ref = reference.score(sequences, attention_mask, start, temperature)
        with phase("values", work=work if critic_forward else None):
            values = value_fn(own, partial)
    # clones leave inference mode, so the loss may use these as constants under autograd
    partial.logprobs, partial.ref_logprobs, partial.values = own.logprobs.clone(), ref.logprobs.clone(), values.clone()
    partial.entropy = own.entropy.clone()
    return partial
