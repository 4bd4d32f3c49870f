"""Causal softmax attention (MHA / GQA / MQA) with RoPE and a sparsity pattern.

One ``Pattern`` (evotui.dsl.patterns) decides which keys a query sees; the backends of
``evotui.model.backends`` (reference, sdpa, chunked, flex, flash: one class each, with
``available()`` and ``attend()``) all compute the same function from it. ``auto`` picks one for
the input's device, dtype and pattern (see ``evotui.model.backends``).
"""

from __future__ import annotations

import math
from functools import cache

import torch
from torch import nn

from evotui.dsl.model import AttnSpec
from evotui.dsl.patterns import Pattern
from evotui.model.backends import (
    BACKENDS,
    CHOICES,
    FAMILY,
    ScoreBias,
    attend,
    available_backends,
    flash_applies,
    flex_attention,
    select_backend,
)
from evotui.model.rope import RoPE

__all__ = ["BACKENDS", "CHOICES", "Attention", "attend", "available_backends",
           "flash_applies", "flex_attention", "reference_attention", "select_backend"]

DEFAULT_ROPE_THETA = 10000.0


@cache
def canonical(pattern: Pattern) -> Pattern:
    """The one instance of each distinct pattern. Compiled code guards on the identity of the
    pattern behind its constant masks, so layers with equal patterns must share the object to
    share a graph."""
    return pattern


def reference_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: Pattern,
    dropout: float = 0.0, scale: float | None = None, bias: ScoreBias | None = None,
) -> torch.Tensor:
    """Dense masked attention in fp32; K/V heads repeated explicitly for GQA / MQA."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    return FAMILY["reference"].attend(q, k, v, pattern, dropout, scale, bias)


class Attention(nn.Module):
    """The attention branch of a block: x (B, T, dim) -> (B, T, dim).

    ``backend`` may be changed after construction; it is resolved on every call against the
    input's device and dtype, so a module built on CPU runs its CUDA backends once moved."""

    def __init__(self, spec: AttnSpec, dim: int, seq_len: int, backend: str = "auto"):
        super().__init__()
        if backend not in CHOICES:
            raise ValueError(f"unknown attention backend {backend!r}; "
                             f"expected one of {', '.join(CHOICES)}")
        self.heads = spec.heads
        self.kv_heads = spec.kv_heads
        self.head_dim = spec.head_dim
        self.seq_len = seq_len
        self.pattern = canonical(spec.pattern())
        self.dropout = spec.dropout
        self.scale = 1.0 / math.sqrt(spec.head_dim)
        self.backend = backend
        if self.dropout > 0 and backend != "auto" and not FAMILY[backend].supports_dropout:
            raise ValueError(f"attention backend {backend!r} has no attention dropout; "
                             "use sdpa or auto, or set dropout: 0")
        self.bias: ScoreBias | None = None  # an additive score term (ALiBi), when set
        self.wq = nn.Linear(dim, self.heads * self.head_dim, bias=False)
        self.wk = nn.Linear(dim, self.kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(dim, self.kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(self.heads * self.head_dim, dim, bias=False)
        self.rope: RoPE | None = None
        if spec.rope != "none":
            theta = spec.rope_theta if spec.rope_theta is not None else DEFAULT_ROPE_THETA
            self.rope = RoPE(spec.head_dim, spec.rope, theta, spec.rope_factor, seq_len)

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The projections: q (B, H, T, hd), k and v (B, H_kv, T, hd)."""
        B, T, _ = x.shape
        q = self.wq(x).view(B, T, self.heads, self.head_dim).transpose(1, 2)
        k = self.wk(x).view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.wv(x).view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)
        return q, k, v

    def transform_qk(self, q: torch.Tensor, k: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """What q and k go through before attention (RoPE; QK-norm would go here)."""
        if self.rope is not None:
            q, k = self.rope(q, k)
        return q, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        q, k, v = self.qkv(x)
        q, k = self.transform_qk(q, k)
        p = self.dropout if self.training else 0.0
        y = attend(q, k, v, self.pattern, self.backend, p, self.scale, self.bias)
        return self.wo(y.transpose(1, 2).reshape(B, T, self.heads * self.head_dim))

    def extra_repr(self) -> str:
        return (f"heads={self.heads}, kv_heads={self.kv_heads}, head_dim={self.head_dim}, "
                f"sparsity={self.pattern.kind}, backend={self.backend}")
