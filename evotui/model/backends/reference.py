"""``reference``: dense masked attention in fp32 with K/V repeated per query head. The oracle
every other backend is tested against; quadratic in time and memory, so never chosen by auto."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from evotui.dsl.patterns import Pattern
from evotui.model.backends.base import AttentionBackend, ScoreBias, dense_bias
from evotui.model.masks import sdpa_mask


class Reference(AttentionBackend):
    name = "reference"

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: Pattern,
               dropout: float, scale: float, bias: ScoreBias | None = None) -> torch.Tensor:
        groups = q.shape[1] // k.shape[1]
        kf = k.float().repeat_interleave(groups, dim=1)
        vf = v.float().repeat_interleave(groups, dim=1)
        att = (q.float() @ kf.transpose(-2, -1)) * scale
        if bias is not None:
            att = att + dense_bias(bias, q.shape[1], q.shape[-2], k.shape[-2], q.device)
        att = att.masked_fill(~sdpa_mask(pattern, q.shape[-2], q.device), float("-inf"))
        att = att.softmax(dim=-1)
        if dropout > 0:
            att = F.dropout(att, p=dropout, training=True)
        return (att @ vf).to(q.dtype)
