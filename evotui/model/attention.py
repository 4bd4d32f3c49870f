"""Causal softmax attention (MHA / GQA / MQA) with RoPE and a sparsity pattern.

One ``Pattern`` (evotui.dsl.patterns) decides which keys a query sees; every backend is built
from it and computes the same function:

- ``reference``: dense masked math in fp32 with K/V repeated per query head. The test oracle.
- ``sdpa``: ``F.scaled_dot_product_attention``; ``is_causal`` for dense causal attention, else
  the boolean mask from ``masks.sdpa_mask``. GQA through ``enable_gqa`` (no K/V copies).
- ``flex``: CUDA only. Compiled ``flex_attention`` with the cached ``BlockMask``.
- ``flash``: CUDA, fp16/bf16, ``flash_attn`` installed, and a ``none`` or ``sliding`` pattern.
- ``auto``: on CUDA, flash where it applies, else SDPA for dense causal attention (and whenever
  attention dropout is active, which FlexAttention lacks), else flex. Elsewhere: sdpa.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from evotui.dsl.model import AttnSpec
from evotui.dsl.patterns import Pattern
from evotui.model.masks import block_mask, flex_available, flex_module, sdpa_mask
from evotui.model.rope import RoPE

BACKENDS = ("reference", "sdpa", "flex", "flash")
CHOICES = ("auto", *BACKENDS)
DEFAULT_ROPE_THETA = 10000.0
HALF = (torch.float16, torch.bfloat16)


@lru_cache(maxsize=1)
def _flash_fn() -> Any:
    try:
        from flash_attn import flash_attn_func
    except ImportError:
        return None
    return flash_attn_func


@lru_cache(maxsize=1)
def _compiled_flex() -> Any:
    return torch.compile(flex_module().flex_attention, dynamic=False)


def flash_applies(pattern: Pattern) -> bool:
    """flash-attn expresses dense causal attention and a plain causal window only."""
    return pattern.kind == "none" or pattern.is_window()


def available_backends(
    pattern: Pattern, device: torch.device | str, dtype: torch.dtype | None = None
) -> list[str]:
    """Backends that can run ``pattern`` on ``device`` (and ``dtype``, when given)."""
    out = ["reference", "sdpa"]
    if torch.device(device).type == "cuda":
        if flex_available():
            out.append("flex")
        if _flash_fn() is not None and flash_applies(pattern) and dtype in (None, *HALF):
            out.append("flash")
    return out


def select_backend(
    requested: str, pattern: Pattern, device: torch.device | str,
    dtype: torch.dtype | None = None, dropout: float = 0.0,
) -> str:
    """Resolve ``requested`` (a backend or ``auto``) to a backend that can run here.

    ``dropout`` is the attention dropout in effect (0 outside training)."""
    available = available_backends(pattern, device, dtype)
    if requested == "auto":
        if "flash" in available:
            return "flash"
        if pattern.kind == "none" or dropout > 0 or "flex" not in available:
            return "sdpa"
        return "flex"
    if requested not in available:
        what = f"sparsity {pattern.kind} on {torch.device(device)}"
        if dtype is not None:
            what += f" in {str(dtype).removeprefix('torch.')}"
        raise ValueError(f"attention backend {requested!r} is not available for {what}; "
                         f"available: {', '.join([*available, 'auto'])}")
    if requested == "flex" and dropout > 0:
        raise ValueError("attention backend 'flex' has no attention dropout; "
                         "use sdpa or auto, or set dropout: 0")
    return requested


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: Pattern,
    backend: str = "auto", dropout: float = 0.0, scale: float | None = None,
) -> torch.Tensor:
    """Attention core: q (B, H, T, hd), k and v (B, H_kv, T, hd) -> (B, H, T, hd).

    ``dropout`` applies to the attention probabilities (pass 0 outside training)."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    backend = select_backend(backend, pattern, q.device, q.dtype, dropout)
    if backend == "reference":
        return reference_attention(q, k, v, pattern, dropout, scale)
    if backend == "sdpa":
        return _sdpa(q, k, v, pattern, dropout, scale)
    if backend == "flex":
        return flex_attention(q, k, v, pattern, scale)
    return _flash(q, k, v, pattern, dropout, scale)


def reference_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: Pattern,
    dropout: float = 0.0, scale: float | None = None,
) -> torch.Tensor:
    """Dense masked attention in fp32; K/V heads repeated explicitly for GQA / MQA."""
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    groups = q.shape[1] // k.shape[1]
    kf = k.float().repeat_interleave(groups, dim=1)
    vf = v.float().repeat_interleave(groups, dim=1)
    att = (q.float() @ kf.transpose(-2, -1)) * scale
    att = att.masked_fill(~sdpa_mask(pattern, q.shape[-2], q.device), float("-inf"))
    att = att.softmax(dim=-1)
    if dropout > 0:
        att = F.dropout(att, p=dropout, training=True)
    return (att @ vf).to(q.dtype)


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: Pattern,
          dropout: float, scale: float) -> torch.Tensor:
    gqa = q.shape[1] != k.shape[1]
    if pattern.kind == "none":
        return F.scaled_dot_product_attention(
            q, k, v, dropout_p=dropout, is_causal=True, scale=scale, enable_gqa=gqa
        )
    mask = sdpa_mask(pattern, q.shape[-2], q.device)
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, dropout_p=dropout, scale=scale, enable_gqa=gqa
    )


def flex_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: Pattern,
                   scale: float | None = None, compiled: bool = True) -> torch.Tensor:
    """FlexAttention with the pattern's cached ``BlockMask``. ``compiled=False`` runs the
    unfused eager path (any device, slow: for tests only)."""
    flex = flex_module().flex_attention
    if compiled and not torch.compiler.is_compiling():
        flex = _compiled_flex()
    mask = block_mask(pattern, q.shape[-2], q.device)
    return flex(q, k, v, block_mask=mask, scale=scale, enable_gqa=q.shape[1] != k.shape[1])


def _flash(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: Pattern,
           dropout: float, scale: float) -> torch.Tensor:
    # flash-attn takes (B, T, H, hd); window_size=(left, right) counts keys besides the query.
    window = (pattern.sw - 1, 0) if pattern.is_window() else (-1, -1)
    y = _flash_fn()(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), dropout_p=dropout,
        softmax_scale=scale, causal=True, window_size=window,
    )
    return y.transpose(1, 2)


class Attention(nn.Module):
    """The attention branch of a block: x (B, T, dim) -> (B, T, dim).

    ``backend`` may be changed after construction; it is resolved on every call against the
    input's device and dtype, so a module built on CPU runs its CUDA backends once moved."""

    def __init__(self, spec: AttnSpec, dim: int, seq_len: int, backend: str = "auto"):
        super().__init__()
        if backend not in CHOICES:
            raise ValueError(f"unknown attention backend {backend!r}; "
                             f"expected one of {', '.join(CHOICES)}")
        self.heads = spec.heads
        self.kv_heads = spec.kv_heads
        self.head_dim = spec.head_dim
        self.seq_len = seq_len
        self.pattern = spec.pattern()
        self.dropout = spec.dropout
        self.scale = 1.0 / math.sqrt(spec.head_dim)
        self.backend = backend
        if backend == "flex" and self.dropout > 0:
            raise ValueError("attention backend 'flex' has no attention dropout; "
                             "use sdpa or auto, or set dropout: 0")
        self.wq = nn.Linear(dim, self.heads * self.head_dim, bias=False)
        self.wk = nn.Linear(dim, self.kv_heads * self.head_dim, bias=False)
        self.wv = nn.Linear(dim, self.kv_heads * self.head_dim, bias=False)
        self.wo = nn.Linear(self.heads * self.head_dim, dim, bias=False)
        self.rope: RoPE | None = None
        if spec.rope != "none":
            theta = spec.rope_theta if spec.rope_theta is not None else DEFAULT_ROPE_THETA
            self.rope = RoPE(spec.head_dim, spec.rope, theta, spec.rope_factor, seq_len)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.wq(x).view(B, T, self.heads, self.head_dim).transpose(1, 2)
        k = self.wk(x).view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.wv(x).view(B, T, self.kv_heads, self.head_dim).transpose(1, 2)
        if self.rope is not None:
            q, k = self.rope(q, k)
        p = self.dropout if self.training else 0.0
        y = attend(q, k, v, self.pattern, self.backend, p, self.scale)
        return self.wo(y.transpose(1, 2).reshape(B, T, self.heads * self.head_dim))

    def extra_repr(self) -> str:
        return (f"heads={self.heads}, kv_heads={self.kv_heads}, head_dim={self.head_dim}, "
                f"sparsity={self.pattern.kind}, backend={self.backend}")
