"""``flash``: flash-attn 2 on CUDA in fp16/bf16, for dense causal attention and a plain
causal window (``window_size``). Optional: when the package is missing or fails to import
for any reason (a wheel built for another torch or CUDA raises OSError or RuntimeError, not
only ImportError), the backend is unavailable and one line says why in the log."""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

import torch

from evotui.dsl.patterns import Pattern
from evotui.model.backends.base import HALF, AttentionBackend, ScoreBias

log = logging.getLogger("evotui.attention")


@lru_cache(maxsize=1)
def flash_fn() -> Any:
    """``flash_attn.flash_attn_func``, or None (logged once) when it cannot be imported."""
    try:
        from flash_attn import flash_attn_func
    except Exception as e:  # noqa: BLE001 - a broken wheel fails in many ways
        if isinstance(e, ModuleNotFoundError) and e.name == "flash_attn":
            return None  # not installed: the normal case, nothing to say
        # a broken wheel (its compiled part missing, an ABI mismatch, ...): one line
        log.warning("flash-attn unavailable, using the other backends: %s: %s",
                    type(e).__name__, str(e).splitlines()[0] if str(e) else "")
        return None
    return flash_attn_func


def flash_applies(pattern: Pattern) -> bool:
    """flash-attn expresses dense causal attention and a plain causal window only."""
    return pattern.kind == "none" or pattern.is_window()


class Flash(AttentionBackend):
    name = "flash"
    supports_bias = False

    def available(self, pattern: Pattern, device: torch.device | str,
                  dtype: torch.dtype | None = None, bias: bool = False) -> bool:
        return (torch.device(device).type == "cuda" and not bias and flash_applies(pattern)
                and dtype in (None, *HALF) and flash_fn() is not None)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: Pattern,
               dropout: float, scale: float, bias: ScoreBias | None = None) -> torch.Tensor:
        # flash-attn takes (B, T, H, hd); window_size=(left, right) counts keys besides the
        # query itself.
        window = (pattern.sw - 1, 0) if pattern.is_window() else (-1, -1)
        y = flash_fn()(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                       dropout_p=dropout, softmax_scale=scale, causal=True, window_size=window)
        return y.transpose(1, 2)
