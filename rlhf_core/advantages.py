"""The PPO maths as pure tensor functions. B sequences, N response tokens; masks are 1 on real tokens.

Follows the details published RLHF PPO work settled on (Ziegler et al. 2019; "The N Implementation
Details of RLHF with PPO"; TRL's PPO before its removal; OpenRLHF): the KL penalty is folded into
per-token rewards, the task score lands on the last real response token, GAE runs over response
tokens only, advantages are whitened per batch, and both policy and value losses are clipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    return (x * mask).sum() if dim is None else (x * mask).sum(dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of x over positions where mask is 1 (over all, or along `dim`)."""
    return masked_sum(x, mask, dim) / (mask.sum() if dim is None else mask.sum(dim)).clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Unbiased variance of the masked entries (Bessel-corrected, like torch.var)."""
    mean = masked_mean(x, mask)
    n = mask.sum()
    return masked_sum((x - mean) ** 2, mask) / (n - 1).clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over the masked entries; entries outside the mask become 0."""
    return (x - masked_mean(x, mask)) * torch.rsqrt(masked_var(x, mask) + eps) * mask


def response_mask(response: torch.Tensor, eos_id: int) -> torch.Tensor:
    """1 on response tokens up to and including the first EOS, 0 after it.  (B, N) -> (B, N)"""
    is_eos = (response == eos_id).long()
    after_eos = (is_eos.cumsum(1) - is_eos) > 0      # strictly after the first EOS
    return (~after_eos).to(torch.float32)


def kl_estimators(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-token k1 and per-sequence sums of k1 and k3 for KL(pi || pi_ref).

    k1 = log pi - log pi_ref (unbiased, can be negative); k3 = (r - 1) - log r with r = pi_ref/pi
    (unbiased, never negative). Returns k1 (B, N), k1 summed (B,), k3 summed (B,).
    """
    k1 = (logprobs - ref_logprobs) * mask                                     # (B, N)
    log_r = (ref_logprobs - logprobs) * mask                                  # (B, N)
    k3 = (torch.exp(log_r) - 1 - log_r) * mask                                # (B, N)
    return k1, k1.sum(1), k3.sum(1)


def shaped_rewards(score: torch.Tensor, k1: torch.Tensor, mask: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """Per-token rewards: -kl_coef * k1 everywhere, plus the task score on the last real token.

    Args: score (B,), k1 (B, N), mask (B, N).  Returns: (B, N).
    """
    rewards = -kl_coef * k1                                                   # (B, N)
    last = (mask.sum(1).long() - 1).clamp(min=0)                              # (B,) index of last real token
    return rewards.scatter_add(1, last[:, None], score[:, None].to(rewards.dtype)) * mask


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over response tokens; the episode ends at the last real token.

    delta_t = r_t + gamma * V_{t+1} - V_t,  A_t = delta_t + gamma * lam * A_{t+1}.
    Args: rewards, values, mask: (B, N). Returns: advantages (B, N), returns = advantages + values (B, N).
    """
    values = values * mask
    n = rewards.shape[1]
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])                                    # (B,)
    for t in reversed(range(n)):
        next_value = values[:, t + 1] if t + 1 < n else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        last = (delta + gamma * lam * last) * mask[:, t]
        advantages[:, t] = last
    return advantages, (advantages + values) * mask


@dataclass
class PolicyLoss:
    loss: torch.Tensor          # scalar
    clip_fraction: torch.Tensor  # scalar, share of tokens whose ratio left [1-eps, 1+eps]
    approx_kl: torch.Tensor     # scalar, k3 KL(pi_old || pi)
    ratio: torch.Tensor         # (B, N)


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
                mask: torch.Tensor, clip_range: float) -> PolicyLoss:
    """Clipped surrogate: mean over tokens of max(-A r, -A clip(r, 1-eps, 1+eps)), r = pi/pi_old."""
    log_ratio = (logprobs - old_logprobs) * mask                              # (B, N)
    ratio = torch.exp(log_ratio)                                              # (B, N)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - clip_range, 1 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        clip_frac = masked_mean(((ratio - 1).abs() > clip_range).float(), mask)
        approx_kl = masked_mean(ratio - 1 - log_ratio, mask)                  # k3 with r = pi/pi_old
    return PolicyLoss(loss, clip_frac, approx_kl, ratio)


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip_range_value: float) -> tuple[torch.Tensor, torch.Tensor]:
    """0.5 * mean(max((V - R)^2, (clip(V, V_old +- eps) - R)^2)); returns (loss, clipped share)."""
    clipped = old_values + torch.clamp(values - old_values, -clip_range_value, clip_range_value)
    loss_unclipped = (values - returns) ** 2
    loss_clipped = (clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(loss_unclipped, loss_clipped), mask)
    with torch.no_grad():
        frac = masked_mean((loss_clipped > loss_unclipped).float(), mask)
    return loss, frac


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """1 - Var(R - V) / Var(R) over masked tokens; 1 is perfect, <= 0 predicts nothing."""
    var_r = masked_var(returns, mask)
    return 1 - masked_var(returns - values, mask) / var_r.clamp(min=1e-12)


class AdaptiveKLController:
    """Ziegler et al.'s proportional controller: kl_coef *= 1 + clip(KL/target - 1, -0.2, 0.2) * n/horizon."""

    def __init__(self, kl_coef: float, target: float, horizon: int):
        self.value = kl_coef
        self.target = target
        self.horizon = horizon

    def update(self, current_kl: float, n_samples: int) -> None:
        if self.target <= 0:
            return  # fixed coefficient
        error = min(max(current_kl / self.target - 1, -0.2), 0.2)
        self.value *= 1 + error * n_samples / self.horizon

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = state["value"]
