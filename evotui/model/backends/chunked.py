"""``chunked``: block-sparse attention whose work follows the keys a pattern attends, on any
device (the CPU's sparse backend; FlexAttention's job on CUDA).

Queries are cut into chunks (``masks.chunk_plan``); each chunk attends only to its candidate
keys, gathered into a compact K/V: the band of keys a window can reach (a strided view of the
padded keys, not the whole prefix), plus, for ``local_global``, every ``global_stride``-th key
outside the band, all in one softmax (the same result as merging a local and a global
attention by their log-sum-exp, in one kernel call). ``dilated`` runs as ``dilation``
interleaved subsequences (a strided view), each a plain window. ``Pattern.allowed`` masks the
candidates, so the pattern stays the single source of truth. The math is two batched matmuls
and a softmax over (chunk x candidate keys) tiles (unfused: faster on CPUs than SDPA with a
mask, whose backward takes a slow path).
Dense causal attention goes to SDPA's ``is_causal`` kernel directly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from evotui.dsl.patterns import Pattern
from evotui.model.backends.base import AttentionBackend, ScoreBias
from evotui.model.masks import chunk_layout, chunk_plan


class Chunked(AttentionBackend):
    name = "chunked"

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: Pattern,
               dropout: float, scale: float, bias: ScoreBias | None = None) -> torch.Tensor:
        B, H, T, hd = q.shape
        if pattern.kind == "none" and bias is None:
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True,
                                                  scale=scale, enable_gqa=k.shape[1] != H)
        plan = chunk_plan(pattern, T)
        blocked, q_pos, k_pos = chunk_layout(pattern, T, q.device)
        R, n, C, nb = plan.residues, plan.length, plan.chunk, plan.blocks

        def split(x: torch.Tensor) -> torch.Tensor:
            # (B, h, T, hd) -> (B, h, R, n, hd): position i * R + r lands at [r, i]
            x = F.pad(x, (0, 0, 0, n * R - T))
            return x.view(B, x.shape[1], n, R, hd).transpose(2, 3)

        qs = split(q).reshape(B * H, R * nb, C, hd)
        ks, vs = self._keys(split(k), plan, H), self._keys(split(v), plan, H)
        att = (qs * scale) @ ks.transpose(-1, -2)  # (B * H, R * nb, C, keys)
        if bias is not None:
            h = torch.arange(H, device=q.device)[:, None, None, None]
            b = bias(h, q_pos[None, :, :, None], k_pos[None, :, None, :])
            att = (att.view(B, H, *blocked.shape) + b.to(att.dtype)).view_as(att)
        att = att.to(torch.promote_types(att.dtype, torch.float32))  # softmax in >= fp32
        att = att.masked_fill(blocked, float("-inf")).softmax(-1).to(vs.dtype)
        if dropout > 0:
            att = F.dropout(att, p=dropout, training=True)
        y = (att @ vs).view(B, H, R, n, hd).transpose(2, 3).reshape(B, H, n * R, hd)
        return y[:, :, :T]

    @staticmethod
    def _keys(x: torch.Tensor, plan: object, heads: int) -> torch.Tensor:
        """(B, h_kv, R, n, hd) -> the candidate keys of every chunk, (B * H, R * nb, keys, hd)."""
        B, h_kv, R, n, hd = x.shape
        C, nb, band = plan.chunk, plan.blocks, plan.band
        if band < 0:
            cand = x[:, :, :, None]  # one chunk per subsequence: all of it
        else:
            padded = F.pad(x, (0, 0, band, 0))  # (B, h_kv, R, band + n, hd)
            cand = padded.unfold(3, band + C, C).transpose(-1, -2)  # (.., R, nb, band+C, hd)
            if plan.stride:
                glob = x[:, :, :, ::plan.stride]  # (B, h_kv, 1, G, hd)
                glob = glob[:, :, :, None].expand(B, h_kv, R, nb, glob.shape[-2], hd)
                cand = torch.cat([cand, glob], dim=-2)
        groups = heads // h_kv
        cand = cand[:, :, None].expand(B, h_kv, groups, *cand.shape[2:])
        return cand.reshape(B * heads, R * nb, cand.shape[-2], hd)
