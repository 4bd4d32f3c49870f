"""The memory extras besides retro: persistent memory tokens, chunk summaries and an
associative (linear-attention) memory. Each is a branch ``x += gating_weight * f(norm(x))``;
its pre-norm is set by the block (``module.norm``) and ``gating_weight`` is a fixed scale.

- ``memory_tokens`` (Sukhbaatar et al. 2019, persistent memory): ``tokens`` learned key and
  value slots that every position reads with softmax attention. The slots depend on no
  position, so the read is causal.
- ``chunk_memory`` (landmark / compressive summaries): position ``e = stride - 1, 2 stride - 1,
  ...`` stores the mean of the ``chunk`` tokens ending at ``e``; position ``t`` reads, with
  softmax attention, the summaries with ``e <= t`` (none: no output).
- ``assoc_memory`` (fast weights, Schlag et al. 2021): causal linear attention with its own
  projections and feature map elu + 1, chunked (``evotui.model.linear_attention``).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from evotui.dsl.extras_spec import AssocMemoryExtra, ChunkMemoryExtra, MemoryTokensExtra
from evotui.model.linear_attention import causal_linear_attention, feature_map


class _Heads(nn.Module):
    def __init__(self, spec: MemoryTokensExtra | ChunkMemoryExtra | AssocMemoryExtra, dim: int):
        super().__init__()
        self.heads, self.head_dim = spec.heads, spec.head_dim
        self.width = spec.heads * spec.head_dim
        self.gating_weight = spec.gating_weight
        self.scale = 1.0 / math.sqrt(spec.head_dim)
        self.wq = nn.Linear(dim, self.width, bias=False)

    def split(self, t: torch.Tensor) -> torch.Tensor:
        """(B, n, width) -> (B, heads, n, head_dim)."""
        return t.view(t.shape[0], t.shape[1], self.heads, self.head_dim).transpose(1, 2)

    def merge(self, y: torch.Tensor) -> torch.Tensor:
        B, _, T, _ = y.shape
        return self.gating_weight * self.wo(y.transpose(1, 2).reshape(B, T, self.width))


class MemoryTokens(_Heads):
    def __init__(self, spec: MemoryTokensExtra, dim: int):
        super().__init__(spec, dim)
        self.mem_k = nn.Parameter(torch.empty(spec.tokens, self.width))
        self.mem_v = nn.Parameter(torch.empty(spec.tokens, self.width))
        nn.init.normal_(self.mem_k, std=0.02)
        nn.init.normal_(self.mem_v, std=0.02)
        self.wo = nn.Linear(self.width, dim, bias=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        q = self.split(self.wq(h))  # (B, H, T, hd)
        k = self.split(self.mem_k.unsqueeze(0))[0]  # (H, n, hd)
        v = self.split(self.mem_v.unsqueeze(0))[0]
        att = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)
        return self.merge(att @ v)


class ChunkMemory(_Heads):
    def __init__(self, spec: ChunkMemoryExtra, dim: int):
        super().__init__(spec, dim)
        assert spec.stride is not None
        self.chunk, self.stride = spec.chunk, spec.stride
        self.wk = nn.Linear(dim, self.width, bias=False)
        self.wv = nn.Linear(dim, self.width, bias=False)
        self.wo = nn.Linear(self.width, dim, bias=False)

    def summaries(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, n, D) means of the ``chunk`` tokens ending at each summary position, and those
        positions (n,)."""
        T = h.shape[1]
        ends = torch.arange(self.stride - 1, T, self.stride, device=h.device)
        prefix = torch.cat([h.new_zeros(h.shape[0], 1, h.shape[2]), h.cumsum(dim=1)], dim=1)
        starts = (ends - self.chunk + 1).clamp(min=0)
        sums = prefix[:, ends + 1] - prefix[:, starts]
        return sums / (ends - starts + 1).to(h.dtype)[None, :, None], ends

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        T = h.shape[1]
        mem, ends = self.summaries(h)
        if mem.shape[1] == 0:  # shorter than one stride: nothing to read yet
            return self.merge(self.split(self.wq(h)) * 0.0)
        q = self.split(self.wq(h))
        k, v = self.split(self.wk(mem)), self.split(self.wv(mem))  # (B, H, n, hd)
        visible = ends[None, :] <= torch.arange(T, device=h.device)[:, None]  # (T, n)
        scores = (q @ k.transpose(-2, -1)) * self.scale
        scores = scores.masked_fill(~visible, torch.finfo(scores.dtype).min)
        att = torch.softmax(scores, dim=-1) * visible  # rows with nothing visible read zeros
        return self.merge(att @ v)


class AssocMemory(_Heads):
    def __init__(self, spec: AssocMemoryExtra, dim: int):
        super().__init__(spec, dim)
        self.chunk = spec.chunk
        self.wk = nn.Linear(dim, self.width, bias=False)
        self.wv = nn.Linear(dim, self.width, bias=False)
        self.wo = nn.Linear(self.width, dim, bias=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        q, k, v = self.split(self.wq(h)), self.split(self.wk(h)), self.split(self.wv(h))
        y = causal_linear_attention(feature_map(q.float()), feature_map(k.float()), v,
                                    self.chunk)
        return self.merge(y.to(h.dtype))


def build_memory(spec: MemoryTokensExtra | ChunkMemoryExtra | AssocMemoryExtra,
                 dim: int) -> nn.Module:
    kinds = {"memory_tokens": MemoryTokens, "chunk_memory": ChunkMemory,
             "assoc_memory": AssocMemory}
    return kinds[spec.type](spec, dim)
