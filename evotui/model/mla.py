"""Multi-head latent attention (MLA, DeepSeek-V2), as published.

Keys and values come from one low-rank joint latent: ``c = kv_norm(W_kv_a x)`` of width
``kv_latent`` is up-projected (``W_kv_b``) to every head's non-rotary key part (``head_dim``)
and value (``head_dim``). Position goes through a decoupled rotary part: ``W_kv_a`` also gives
one ``rope_dim``-wide key shared by all heads, rotated by RoPE, and each query has its own
``rope_dim`` rotated part. Queries are a full projection, or, with ``q_latent``, a low-rank one
(``W_q_b q_norm(W_q_a x)``). Scores use ``head_dim + rope_dim`` channels.

What a decoder caches per token and layer is the latent and the shared rotary key:
``kv_latent + rope_dim`` values (:meth:`MLAttention.cache`), against ``2 x heads x head_dim``
for MHA. Sparsity patterns, ALiBi and the output gate work as for softmax attention.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from evotui.dsl.attn_spec import AttnSpec
from evotui.model.attention import CHOICES, attend, select_backend
from evotui.model.attn_options import Alibi, OutputGate, alibi_slopes
from evotui.model.rope import RoPE

DEFAULT_ROPE_THETA = 10000.0
UNEQUAL_V = ("sdpa", "reference")  # backends that take a value width unlike the key width


class MLAttention(nn.Module):
    """The MLA attention branch: x (B, T, dim) -> (B, T, dim)."""

    def __init__(self, spec: AttnSpec, dim: int, seq_len: int, backend: str = "auto"):
        super().__init__()
        if backend not in CHOICES:
            raise ValueError(f"unknown attention backend {backend!r}; "
                             f"expected one of {', '.join(CHOICES)}")
        assert spec.kv_latent is not None
        h, hd = spec.heads, spec.head_dim
        self.heads, self.head_dim, self.kv_latent = h, hd, spec.kv_latent
        self.rope_dim = spec.rope_dim or 0
        self.pattern = spec.pattern()
        self.dropout = spec.dropout
        self.backend = backend
        self.scale = 1.0 / math.sqrt(hd + self.rope_dim)
        qw = h * (hd + self.rope_dim)
        if spec.q_latent is not None:
            self.wq_a = nn.Linear(dim, spec.q_latent, bias=False)
            self.q_norm = nn.RMSNorm(spec.q_latent, eps=1e-6)
            self.wq_b = nn.Linear(spec.q_latent, qw, bias=False)
        else:
            self.wq = nn.Linear(dim, qw, bias=False)
        self.wkv_a = nn.Linear(dim, spec.kv_latent + self.rope_dim, bias=False)
        self.kv_norm = nn.RMSNorm(spec.kv_latent, eps=1e-6)
        self.wkv_b = nn.Linear(spec.kv_latent, h * 2 * hd, bias=False)
        self.wo = nn.Linear(h * hd, dim, bias=False)
        self.rope: RoPE | None = None
        if self.rope_dim:
            theta = spec.rope_theta if spec.rope_theta is not None else DEFAULT_ROPE_THETA
            self.rope = RoPE(self.rope_dim, spec.rope, theta, spec.rope_factor, seq_len)
        self.register_buffer("slopes", alibi_slopes(h) if spec.alibi else None,
                             persistent=False)
        self.bias = None
        if self.slopes is not None:
            self.bias = Alibi(self.slopes)
        self.gate: OutputGate | None = None
        if spec.gate != "none":
            self.gate = OutputGate(dim, h, hd, spec.gate)

    def _apply(self, fn, recurse: bool = True):  # keep the bias on the moved slopes
        super()._apply(fn, recurse)
        if self.slopes is not None:
            self.bias = Alibi(self.slopes)
        return self

    def cache(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What a decoder keeps per token: the normed latent (B, T, kv_latent) and the rotary
        key (B, T, rope_dim) before rotation."""
        c, k_rope = self.wkv_a(x).split([self.kv_latent, self.rope_dim], dim=-1)
        return self.kv_norm(c), k_rope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        h, hd, rd = self.heads, self.head_dim, self.rope_dim
        q = self.wq_b(self.q_norm(self.wq_a(x))) if hasattr(self, "wq_a") else self.wq(x)
        q = q.view(B, T, h, hd + rd).transpose(1, 2)
        c, k_rope = self.cache(x)
        kv = self.wkv_b(c).view(B, T, h, 2 * hd).transpose(1, 2)
        k, v = kv.split([hd, hd], dim=-1)
        if rd:
            q_nope, q_rope = q.split([hd, rd], dim=-1)
            k_rope = k_rope.view(B, T, 1, rd).transpose(1, 2)
            q_rope, k_rope = self.rope(q_rope, k_rope)
            q = torch.cat([q_nope, q_rope], dim=-1)
            k = torch.cat([k, k_rope.expand(B, h, T, rd)], dim=-1)
        p = self.dropout if self.training else 0.0
        name = select_backend(self.backend, self.pattern, x.device, q.dtype, p,
                              self.bias is not None)
        if rd and name not in UNEQUAL_V:
            y = attend(q, k, F.pad(v, (0, rd)), self.pattern, name, p, self.scale,
                       self.bias)[..., :hd]
        else:
            y = attend(q, k, v, self.pattern, name, p, self.scale, self.bias)
        if self.gate is not None:
            y = self.gate(x, y)
        return self.wo(y.transpose(1, 2).reshape(B, T, h * hd))

    def extra_repr(self) -> str:
        return (f"heads={self.heads}, head_dim={self.head_dim}, kv_latent={self.kv_latent}, "
                f"rope_dim={self.rope_dim}, sparsity={self.pattern.kind}, backend={self.backend}")
