"""Analytic FLOP counts of transformer passes, from RunInfo.model and PhaseRecord.work.

Pure standard library: the read side (breakdown table, HTML report, demo.py) imports it.

For a decoder of L layers, hidden size h, vocabulary V, one forward pass over one token costs
2 FLOPs per multiply-accumulate of every weight matrix it touches:

    per token     2 * [ L * (h*q + 2*h*kv + q*h  +  m*h*I)  +  h*V ]
                        attention projections     MLP         LM head
    per sequence  2 * 2 * L * q * T^2                      (Q K^T and A V, full T x T)

with q = n_head * head_dim, kv = n_kv_head * head_dim, I the MLP width, m = 2 for GPT-2's
plain MLP and 3 for Llama's gated one (gate, up, down). For GPT-2 (q = kv = h, I = 4h) this is
the classic 2 * tokens * (12*L*h^2 + V*h) + 4*L*h*sum(T^2); backward costs twice the forward, so
forward + backward = 6 * tokens * (12*L*h^2 + V*h) + 12*L*h*sum(T^2).

Embedding lookups, layer norms, softmax and activation functions are left out (they are
O(tokens * h), noise next to the matmuls); tied or untied embeddings change the parameter count,
not the FLOPs, because the LM head matmul runs either way.

Example:
    >>> spec = ModelSpec.from_info({"n_layer": 2, "hidden": 64, "n_head": 4, "vocab": 100})
    >>> phase_flops(spec, {"mode": "fwd", "tokens": 10, "sum_t2": 100})
    2145280.0

Known limitations:
    - "gen" work (KV-cache decoding) counts each token once and attention as causal (half of
      T^2), which is what a cached decoder computes; a runner that regenerates without a cache
      does more work than this reports.
    - A separate value model is assumed to have the policy's shape; its 1-wide head is counted as
      a full LM head (an overcount of 2*h*V per token on the `values` passes).
"""

from __future__ import annotations

from dataclasses import dataclass

# work["mode"] -> multiple of one forward pass
MODE_FACTOR: dict[str, float] = {"fwd": 1.0, "gen": 1.0, "bwd": 2.0, "fwd_bwd": 3.0}


@dataclass(frozen=True)
class ModelSpec:
    """The shape facts FLOPs need. Build it with `ModelSpec.from_info(run_info.model)`.

    Attributes:
        n_layer, hidden, vocab: depth, width, vocabulary.
        n_head, n_kv_head, head_dim: query heads, key/value heads (fewer under GQA), head width.
        intermediate: MLP width I.
        gated: True for a gated MLP (Llama's gate/up/down), False for GPT-2's fc/proj.
    """

    n_layer: int
    hidden: int
    vocab: int
    n_head: int
    n_kv_head: int
    head_dim: int
    intermediate: int
    gated: bool = False

    @classmethod
    def from_info(cls, model: dict) -> "ModelSpec":
        """From RunInfo.model: needs n_layer, hidden, n_head, vocab; the rest has GPT-2 defaults."""
        hidden, n_head = int(model["hidden"]), int(model["n_head"])
        head_dim = int(model.get("head_dim") or hidden // n_head)
        family = str(model.get("family", "gpt2")).lower()
        return cls(
            n_layer=int(model["n_layer"]), hidden=hidden, vocab=int(model["vocab"]),
            n_head=n_head, n_kv_head=int(model.get("n_kv_head") or n_head), head_dim=head_dim,
            intermediate=int(model.get("intermediate") or 4 * hidden),
            gated=bool(model.get("gated", model.get("gated_mlp", family in ("llama", "mistral", "qwen2")))),
        )

    @property
    def q_width(self) -> int:
        return self.n_head * self.head_dim

    @property
    def kv_width(self) -> int:
        return self.n_kv_head * self.head_dim

    def matmul_params(self) -> int:
        """Weights touched once per token in a forward pass (LM head included, embeddings not)."""
        h = self.hidden
        attn = h * self.q_width + 2 * h * self.kv_width + self.q_width * h
        mlp = (3 if self.gated else 2) * h * self.intermediate
        return self.n_layer * (attn + mlp) + h * self.vocab


def forward_flops(spec: ModelSpec, tokens: int, sum_t2: int, causal_cache: bool = False) -> float:
    """FLOPs of one forward pass over a batch.

    Args:
        spec: the model shape.
        tokens: tokens fed through the model (sum of sequence lengths).
        sum_t2: sum over sequences of length^2 (attention cost grows with it).
        causal_cache: True for KV-cache decoding, where token t attends to t keys, not T.
    Returns:
        FLOPs (float).
    """
    attn = 4.0 * spec.n_layer * spec.q_width * sum_t2
    if causal_cache:
        attn /= 2.0
    return 2.0 * spec.matmul_params() * tokens + attn


def phase_flops(spec: ModelSpec, work: dict) -> float | None:
    """FLOPs of a phase from its PhaseRecord.work, or None when the work is unknown.

    Args:
        work: {"mode": "gen"|"fwd"|"bwd"|"fwd_bwd", "tokens": int, "sum_t2": int}.
    """
    mode = work.get("mode")
    tokens = work.get("tokens")
    if mode not in MODE_FACTOR or not tokens:
        return None
    fwd = forward_flops(spec, int(tokens), int(work.get("sum_t2") or 0), causal_cache=mode == "gen")
    return MODE_FACTOR[mode] * fwd


def gpt2_train_flops(n_layer: int, hidden: int, vocab: int, tokens: int, sum_t2: int) -> float:
    """The issue's closed form for GPT-2, forward + backward: 6*tokens*(12Lh^2 + Vh) + 12Lh*sum(T^2)."""
    return 6.0 * tokens * (12 * n_layer * hidden ** 2 + vocab * hidden) + 12.0 * n_layer * hidden * sum_t2
