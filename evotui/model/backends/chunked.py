"""``chunked``: block-sparse attention whose work follows the keys a pattern attends, on any
device (the CPU's sparse backend; FlexAttention's job on CUDA).

Queries are cut into chunks (``masks.chunk_plan``); each chunk attends only to its candidate
keys, gathered into a compact K/V: the band of keys a window can reach (not the whole prefix),
trimmed per chunk to the first key any of its queries attends, plus, for ``local_global``,
every ``global_stride``-th key outside its band, all in one softmax (the same result as merging
a local and a global attention by their log-sum-exp, in one kernel call). ``dilated`` runs as
``dilation`` interleaved subsequences, each a plain window. Chunks that read about the same
number of keys form a group (``masks.chunk_groups``: a group holds at least
``masks.GROUP_SHARE`` of the chunks, its band the widest of theirs), and each group is ONE call
of SDPA over (chunks, chunk, keys) tiles with a cached mask from ``Pattern.allowed`` (additive
in the query dtype, boolean where a score bias such as ALiBi is added; the pattern stays the
single source of truth), so the fused CPU kernel does the work, forward and
backward, with no score tile ever materialised. With GQA / MQA the query heads that share a
key head are stacked on the tile's rows, so K/V are gathered once per key head.
Dense causal attention goes to SDPA's ``is_causal`` kernel directly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from evotui.dsl.patterns import Pattern
from evotui.model.backends.base import AttentionBackend, ScoreBias
from evotui.model.masks import chunk_groups, chunk_plan


class Chunked(AttentionBackend):
    name = "chunked"

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: Pattern,
               dropout: float, scale: float, bias: ScoreBias | None = None) -> torch.Tensor:
        B, H, T, hd = q.shape
        h_kv = k.shape[1]
        g = H // h_kv
        if pattern.kind == "none" and bias is None:
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True,
                                                  scale=scale, enable_gqa=g != 1)
        plan = chunk_plan(pattern, T)
        tables = chunk_groups(pattern, T, q.device, g, torch.bool if bias is not None else q.dtype)
        out_index, parts = tables[0], tables[1:]
        C = plan.chunk
        # the tiles in position order: q, y are views, no gather
        natural = len(parts) == 3 and plan.residues == 1 and parts[0].shape[0] == T
        qg = q.view(B, h_kv, g, T, hd)
        ys = []
        for i in range(0, len(parts), 3):
            q_index, k_index, allowed = parts[i:i + 3]
            rows, keys = allowed.shape[1], allowed.shape[-1]
            if natural:
                qi = qg.view(B, h_kv, g, rows, C, hd)
            else:
                qi = qg.index_select(3, q_index).view(B, h_kv, g, rows, C, hd)
            qi = qi.transpose(2, 3).reshape(B * h_kv, rows, g * C, hd)
            # gathered as (keys, rows): SDPA's own layout, so its gradients come back unpermuted
            ki, vi = (x.index_select(2, k_index).view(B * h_kv, keys, rows, hd).transpose(1, 2)
                      for x in (k, v))
            mask = allowed
            if bias is not None:
                mask = self._bias(bias, pattern, T, q_index, k_index, allowed, B, H, C, q)
            y = F.scaled_dot_product_attention(qi, ki, vi, attn_mask=mask, dropout_p=dropout,
                                               scale=scale)
            ys.append(y.view(B, h_kv, rows, g, C, hd))
        y = ys[0] if len(ys) == 1 else torch.cat(ys, 2)
        y = y.permute(0, 1, 3, 2, 4, 5).reshape(B, H, -1, hd)  # (B, H, rows * C, hd)
        if natural:
            return y if y.shape[2] == T else y[:, :, :T]
        return y.index_select(2, out_index)

    @staticmethod
    def _bias(bias: ScoreBias, pattern: Pattern, T: int, q_index: torch.Tensor,
              k_index: torch.Tensor, allowed: torch.Tensor, B: int, H: int, C: int,
              q: torch.Tensor) -> torch.Tensor:
        """The group's additive mask: the bias on its tiles, -inf where not attended,
        (B * H_kv, rows, g * C, keys) in the layout of the tiles."""
        _, rows, gC, keys = allowed.shape
        g = gC // C
        h = torch.arange(H, device=q.device).view(H // g, g, 1, 1, 1)
        qp = q_index.view(1, 1, rows, C, 1)
        kp = k_index.view(keys, rows).t().reshape(1, 1, rows, 1, keys)
        b = bias(h, qp, kp).to(q.dtype).expand(H // g, g, rows, C, keys)
        b = b.transpose(1, 2).reshape(H // g, rows, gC, keys)
        b = b.masked_fill(~allowed, float("-inf"))
        return b.repeat(B, 1, 1, 1)
