"""``sdpa``: ``F.scaled_dot_product_attention``. ``is_causal`` for dense causal attention
(fused kernels skip the upper triangle), else the dense boolean mask of the pattern, so a
sparse pattern costs the whole square. GQA through ``enable_gqa`` (no K/V copies)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from evotui.dsl.patterns import Pattern
from evotui.model.backends.base import AttentionBackend, ScoreBias, dense_bias
from evotui.model.masks import sdpa_mask


class SDPA(AttentionBackend):
    name = "sdpa"

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: Pattern,
               dropout: float, scale: float, bias: ScoreBias | None = None) -> torch.Tensor:
        gqa = q.shape[1] != k.shape[1]
        if pattern.kind == "none" and bias is None:
            return F.scaled_dot_product_attention(
                q, k, v, dropout_p=dropout, is_causal=True, scale=scale, enable_gqa=gqa)
        mask = sdpa_mask(pattern, q.shape[-2], q.device)
        if bias is not None:
            b = dense_bias(bias, q.shape[1], q.shape[-2], k.shape[-2], q.device)
            mask = b.masked_fill(~mask, float("-inf")).to(q.dtype)
        return F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=dropout, scale=scale, enable_gqa=gqa)
