"""The attention backends (see ``base.AttentionBackend`` for the contract) and how one is
chosen. A new backend is a new module here plus one entry in ``FAMILY``.

``auto`` picks, among the available ones: on CUDA, flash where it applies; SDPA for dense
causal attention and whenever attention dropout is active (FlexAttention has none); else flex.
Elsewhere: SDPA for dense causal attention, chunked for every sparse pattern.
"""

from __future__ import annotations

import math

import torch

from evotui.dsl.patterns import Pattern
from evotui.model.backends.base import AttentionBackend, ScoreBias
from evotui.model.backends.chunked import Chunked
from evotui.model.backends.flash import Flash, flash_applies, flash_fn
from evotui.model.backends.flex import Flex, flex_attention
from evotui.model.backends.reference import Reference
from evotui.model.backends.sdpa import SDPA

FAMILY: dict[str, AttentionBackend] = {
    b.name: b for b in (Reference(), SDPA(), Chunked(), Flex(), Flash())
}
BACKENDS = tuple(FAMILY)
CHOICES = ("auto", *BACKENDS)

__all__ = ["BACKENDS", "CHOICES", "FAMILY", "AttentionBackend", "ScoreBias", "attend",
           "available_backends", "flash_applies", "flash_fn", "flex_attention",
           "select_backend"]


def available_backends(pattern: Pattern, device: torch.device | str,
                       dtype: torch.dtype | None = None, bias: bool = False) -> list[str]:
    """Backends that can run ``pattern`` on ``device`` (and ``dtype``, when given)."""
    return [name for name, b in FAMILY.items() if b.available(pattern, device, dtype, bias)]


def _auto(available: list[str], pattern: Pattern, device: torch.device | str,
          dropout: float) -> str:
    if torch.device(device).type == "cuda":
        if "flash" in available:
            return "flash"
        if pattern.kind == "none" or dropout > 0 or "flex" not in available:
            return "sdpa" if "sdpa" in available else available[0]
        return "flex"
    if pattern.kind == "none" and "sdpa" in available:
        return "sdpa"
    return "chunked" if "chunked" in available else available[0]


def select_backend(requested: str, pattern: Pattern, device: torch.device | str,
                   dtype: torch.dtype | None = None, dropout: float = 0.0,
                   bias: bool = False) -> str:
    """Resolve ``requested`` (a backend or ``auto``) to a backend that can run here.

    ``dropout`` is the attention dropout in effect (0 outside training); ``bias`` says whether
    an additive score bias will be passed."""
    available = available_backends(pattern, device, dtype, bias)
    if requested == "auto":
        return _auto(available, pattern, device, dropout)
    if requested not in available:
        what = f"sparsity {pattern.kind} on {torch.device(device)}"
        if dtype is not None:
            what += f" in {str(dtype).removeprefix('torch.')}"
        if bias:
            what += " with a score bias"
        raise ValueError(f"attention backend {requested!r} is not available for {what}; "
                         f"available: {', '.join([*available, 'auto'])}")
    if dropout > 0 and not FAMILY[requested].supports_dropout:
        raise ValueError(f"attention backend {requested!r} has no attention dropout; "
                         "use sdpa or auto, or set dropout: 0")
    return requested


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: Pattern,
           backend: str = "auto", dropout: float = 0.0, scale: float | None = None,
           bias: ScoreBias | None = None) -> torch.Tensor:
    """Attention core: q (B, H, T, hd), k and v (B, H_kv, T, hd) -> (B, H, T, hd).

    ``dropout`` applies to the attention probabilities (pass 0 outside training); ``bias`` is
    an optional additive score term (see ``base``)."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    name = select_backend(backend, pattern, q.device, q.dtype, dropout, bias is not None)
    return FAMILY[name].attend(q, k, v, pattern, dropout, scale, bias)
