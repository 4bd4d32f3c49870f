"""The retro extra: a causal memory over summaries of earlier chunks of the same sequence.

The sequence is cut into chunks of ``stride`` tokens and each complete chunk is summarised by
the mean of its (normed) inputs. A token in chunk ``k`` reads the summaries of chunks
``k - slots .. k - 1``: never its own chunk, so the read is strictly causal. Keys and values
are projected from the summaries, once per chunk.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from evotui.dsl.model import RetroExtra


def visible_chunks(seq_len: int, stride: int, slots: int, n_chunks: int,
                   device: torch.device | None = None) -> torch.Tensor:
    """(seq_len, n_chunks) bool: may position t read the summary of chunk c."""
    own = torch.arange(seq_len, device=device).unsqueeze(1) // stride
    c = torch.arange(n_chunks, device=device).unsqueeze(0)
    return (c < own) & (c >= own - slots)


class Retro(nn.Module):
    """Reads earlier chunk summaries with attention, gated attention or a plain mean."""

    def __init__(self, spec: RetroExtra, dim: int):
        super().__init__()
        if spec.mem_dim is None:
            raise ValueError("retro mem_dim is unresolved; load the spec through ModelSpec")
        m = spec.mem_dim
        self.stride = spec.stride
        self.slots = spec.slots
        self.aggregator = spec.aggregator
        self.gating_weight = spec.gating_weight
        self.scale = 1.0 / math.sqrt(m)
        if self.aggregator != "mean":
            self.wq = nn.Linear(dim, m, bias=False)
            self.wk = nn.Linear(dim, m, bias=False)
        self.wv = nn.Linear(dim, m, bias=False)
        if self.aggregator == "gate":
            self.wg = nn.Linear(dim, m, bias=False)
        self.wo = nn.Linear(m, dim, bias=False)

    def summaries(self, h: torch.Tensor) -> torch.Tensor:
        """(B, n, D) means of the n = T // stride complete chunks. A trailing partial chunk
        is never visible (only tokens inside it could come after it), so it is dropped."""
        B, T, D = h.shape
        n = T // self.stride
        return h[:, : n * self.stride].reshape(B, n, self.stride, D).mean(dim=2)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        T = h.size(1)
        mem = self.summaries(h)  # (B, n, D)
        mask = visible_chunks(T, self.stride, self.slots, mem.size(1), h.device)  # (T, n)
        v = self.wv(mem)  # (B, n, M)
        if self.aggregator == "mean":
            weights = mask.to(v.dtype)
            weights = weights / weights.sum(dim=1, keepdim=True).clamp(min=1.0)
        else:
            scores = (self.wq(h) @ self.wk(mem).transpose(1, 2)) * self.scale  # (B, T, n)
            # a finite fill keeps rows with nothing visible free of NaN; they are zeroed below
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
            weights = torch.softmax(scores, dim=-1) * mask
        read = weights @ v  # (B, T, M); zeros where no summary is visible
        if self.aggregator == "gate":
            read = read * torch.sigmoid(self.wg(h))
        return self.gating_weight * self.wo(read)
