"""``flex``: CUDA only. Compiled ``flex_attention`` with the pattern's cached ``BlockMask``
(work follows the 128 x 128 tiles that hold any allowed pair); a score bias becomes its
``score_mod``. No attention dropout."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch

from evotui.dsl.patterns import Pattern
from evotui.model.backends.base import AttentionBackend, ScoreBias
from evotui.model.masks import block_mask, flex_available, flex_module


@lru_cache(maxsize=1)
def _compiled_flex() -> Any:
    return torch.compile(flex_module().flex_attention, dynamic=False)


def flex_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: Pattern,
                   scale: float | None = None, compiled: bool = True,
                   bias: ScoreBias | None = None) -> torch.Tensor:
    """FlexAttention with the pattern's cached ``BlockMask``. ``compiled=False`` runs the
    unfused eager path (any device, slow: for tests only)."""
    flex = flex_module().flex_attention
    if compiled and not torch.compiler.is_compiling():
        flex = _compiled_flex()
    mask = block_mask(pattern, q.shape[-2], q.device)
    score_mod = None
    if bias is not None:
        def score_mod(score: Any, b: Any, h: Any, q_idx: Any, kv_idx: Any) -> Any:
            return score + bias(h, q_idx, kv_idx)
    return flex(q, k, v, score_mod=score_mod, block_mask=mask, scale=scale,
                enable_gqa=q.shape[1] != k.shape[1])


class Flex(AttentionBackend):
    name = "flex"
    supports_dropout = False

    def available(self, pattern: Pattern, device: torch.device | str,
                  dtype: torch.dtype | None = None, bias: bool = False) -> bool:
        return torch.device(device).type == "cuda" and flex_available()

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: Pattern,
               dropout: float, scale: float, bias: ScoreBias | None = None) -> torch.Tensor:
        return flex_attention(q, k, v, pattern, scale, bias=bias)
