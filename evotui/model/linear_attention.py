"""Causal linear attention (Katharopoulos et al. 2020) in chunked form.

With the feature map ``phi(x) = elu(x) + 1`` (positive), position t reads

    y_t = phi(q_t) . sum_{s<=t} phi(k_s) v_s^T  /  phi(q_t) . sum_{s<=t} phi(k_s)

The sequence is cut into chunks of ``chunk`` tokens: inside a chunk the masked (C x C) products
are computed directly; across chunks a running (hd x hd) state and a (hd) normaliser, summed
over the earlier chunks, carry everything before. Work is O(T (C + hd) hd) per head: linear in
the sequence length. At inference the state is the whole cache (constant per layer).

The projections are named as in softmax attention (``wq``, ``wk``, ``wv``, ``wo``; GQA key and
value heads), so a block switching between LINEAR and softmax keeps its weights. RoPE (when
set) rotates q and k before the feature map, QK-norm normalises them before RoPE, and the
output gate works as for softmax attention.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from evotui.dsl.attn_spec import AttnSpec
from evotui.model.attn_options import OutputGate
from evotui.model.rope import RoPE

EPS = 1e-6
DEFAULT_ROPE_THETA = 10000.0


def feature_map(x: torch.Tensor) -> torch.Tensor:
    return F.elu(x) + 1.0


def causal_linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                            chunk: int) -> torch.Tensor:
    """q, k (B, H, T, d) already feature-mapped (positive), v (B, H, T, dv) -> (B, H, T, dv),
    in fp32, chunked."""
    B, H, T, d = q.shape
    dv = v.shape[-1]
    C = max(1, min(chunk, T))
    pad = (-T) % C
    q, k, v = (F.pad(t.float(), (0, 0, 0, pad)) for t in (q, k, v))  # padded keys come last
    N = (T + pad) // C
    q, k, v = q.view(B, H, N, C, d), k.view(B, H, N, C, d), v.view(B, H, N, C, dv)
    tri = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    a = (q @ k.transpose(-2, -1)).masked_fill(~tri, 0.0)  # (B, H, N, C, C)
    num = a @ v
    den = a.sum(-1)
    kv = k.transpose(-2, -1) @ v  # (B, H, N, d, dv) per chunk
    state = kv.cumsum(dim=2) - kv  # sums over the earlier chunks only
    z = k.sum(dim=3)  # (B, H, N, d)
    zs = z.cumsum(dim=2) - z
    num = num + q @ state
    den = den + (q * zs.unsqueeze(3)).sum(-1)
    y = num / (den.unsqueeze(-1) + EPS)
    return y.reshape(B, H, N * C, dv)[:, :, :T]


class LinearAttention(nn.Module):
    """The LINEAR attention branch: x (B, T, dim) -> (B, T, dim)."""

    def __init__(self, spec: AttnSpec, dim: int, seq_len: int):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = spec.heads, spec.kv_heads, spec.head_dim
        self.chunk = spec.chunk or 64
        self.wq = nn.Linear(dim, self.heads * self.head_dim, bias=False)
        self.wk = nn.Linear(dim, self.kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(dim, self.kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(self.heads * self.head_dim, dim, bias=False)
        if spec.qk_norm:
            self.q_norm = nn.RMSNorm(spec.head_dim, eps=1e-6)
            self.k_norm = nn.RMSNorm(spec.head_dim, eps=1e-6)
        self.rope: RoPE | None = None
        if spec.rope != "none":
            theta = spec.rope_theta if spec.rope_theta is not None else DEFAULT_ROPE_THETA
            self.rope = RoPE(spec.head_dim, spec.rope, theta, spec.rope_factor, seq_len)
        self.gate: OutputGate | None = None
        if spec.gate != "none":
            self.gate = OutputGate(dim, spec.heads, spec.head_dim, spec.gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        hd = self.head_dim
        q = self.wq(x).view(B, T, self.heads, hd).transpose(1, 2)
        k = self.wk(x).view(B, T, self.kv_heads, hd).transpose(1, 2)
        v = self.wv(x).view(B, T, self.kv_heads, hd).transpose(1, 2)
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)
        if self.rope is not None:
            q, k = self.rope(q, k)
        groups = self.heads // self.kv_heads
        if groups > 1:
            k = k.repeat_interleave(groups, dim=1)
            v = v.repeat_interleave(groups, dim=1)
        y = causal_linear_attention(feature_map(q.float()), feature_map(k.float()), v,
                                    self.chunk).to(x.dtype)
        if self.gate is not None:
            y = self.gate(x, y)
        return self.wo(y.transpose(1, 2).reshape(B, T, self.heads * hd))

    def extra_repr(self) -> str:
        return f"heads={self.heads}, kv_heads={self.kv_heads}, head_dim={self.head_dim}, " \
               f"chunk={self.chunk}, feature_map=elu+1"
