"""Rotary position embeddings: standard, linear, NTK-aware and YaRN scaling.

All kinds rotate pairs of channels (the rotate-half convention: channel ``i`` pairs with
``i + head_dim/2``) by ``position * inv_freq``. The kinds differ only in the frequencies, the
positions and a magnitude:

- ``standard``: ``inv_freq_i = theta ** (-2i / d)``.
- ``linear``: positions divided by ``factor`` (position interpolation).
- ``ntk``: ``theta * factor ** (d / (d - 2))`` as the base (NTK-aware scaling).
- ``yarn``: NTK-by-parts (YaRN, Peng et al. 2023). With ``L`` the original context (the
  training ``seq_len``), a pair whose wavelength fits ``r = L / wavelength`` times into ``L``
  keeps its frequency when ``r > beta``, is interpolated by ``factor`` when ``r < alpha``, and
  is blended linearly between. q and k are also each scaled by ``0.1 * ln(factor) + 1`` (the
  attention temperature), folded into the cached cos and sin.

cos and sin are non-persistent fp32 buffers (never in ``state_dict``), built for ``seq_len``
positions, rebuilt lazily for longer inputs and recomputed (not cast) whenever the module is
moved or cast; the rotation runs in fp32.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

ROPE_KINDS = ("standard", "linear", "ntk", "yarn")
YARN_ALPHA = 1.0
YARN_BETA = 32.0


def yarn_mscale(factor: float) -> float:
    """YaRN's per-tensor scale for q and k (so logits scale by its square)."""
    return 0.1 * math.log(factor) + 1.0 if factor > 1.0 else 1.0


def rope_frequencies(
    kind: str, head_dim: int, theta: float, factor: float = 1.0, seq_len: int = 2048
) -> torch.Tensor:
    """Inverse frequencies (head_dim // 2,) in float64 for a RoPE ``kind``."""
    if kind not in ROPE_KINDS:
        raise ValueError(f"unknown rope kind {kind!r}; expected one of {', '.join(ROPE_KINDS)}")
    d = head_dim
    if kind == "ntk":
        theta = theta * factor ** (d / (d - 2))
    inv_freq = theta ** (-torch.arange(0, d, 2, dtype=torch.float64, device="cpu") / d)
    if kind == "yarn":
        rotations = seq_len * inv_freq / (2 * math.pi)  # L / wavelength
        keep = ((rotations - YARN_ALPHA) / (YARN_BETA - YARN_ALPHA)).clamp(0.0, 1.0)
        inv_freq = keep * inv_freq + (1.0 - keep) * inv_freq / factor
    return inv_freq


class RoPE(nn.Module):
    """Applies a RoPE kind to q and k of shape (B, H, T, head_dim)."""

    def __init__(
        self, head_dim: int, kind: str, theta: float, factor: float | None = None,
        seq_len: int = 2048,
    ):
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"RoPE needs an even head_dim, got {head_dim}")
        self.kind = kind
        self.factor = float(factor) if factor is not None else 1.0
        inv_freq = rope_frequencies(kind, head_dim, theta, self.factor, seq_len)
        self.inv_freq = inv_freq.tolist()  # plain floats: rebuilt caches need no buffer
        self.pos_scale = 1.0 / self.factor if kind == "linear" else 1.0
        self.mscale = yarn_mscale(self.factor) if kind == "yarn" else 1.0
        self.register_buffer("cos", torch.empty(0), persistent=False)
        self.register_buffer("sin", torch.empty(0), persistent=False)
        self._build(seq_len, torch.empty(0).device)  # the default ("meta" in torch.device("meta"))

    def _apply(self, fn: Any, recurse: bool = True) -> RoPE:
        # .to(), .cuda(), .half(), to_empty(): recompute the cache on the new device in fp32
        # rather than keep a cast (imprecise) or uninitialised (to_empty) copy.
        super()._apply(fn, recurse)
        self._build(self.cos.shape[0], self.cos.device)
        return self

    def _build(self, length: int, device: torch.device) -> None:
        # Angles in float64 on the CPU (not every device has float64), then moved.
        pos = torch.arange(length, dtype=torch.float64, device="cpu") * self.pos_scale
        angles = torch.outer(pos, torch.tensor(self.inv_freq, dtype=torch.float64, device="cpu"))
        self.cos = (angles.cos() * self.mscale).float().to(device)
        self.sin = (angles.sin() * self.mscale).float().to(device)

    def cos_sin(self, length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(length, head_dim // 2) fp32 cos and sin, extending the cache when needed."""
        stale = self.cos.dtype != torch.float32 or self.cos.device != device
        if stale or self.cos.shape[0] < length:
            size = max(length, self.cos.shape[0] if not stale else 0)
            self._build(1 << (size - 1).bit_length(), device)  # next power of two
        return self.cos[:length], self.sin[:length]

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = self.cos_sin(q.shape[-2], q.device)
        return rotate(q, cos, sin), rotate(k, cos, sin)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, factor={self.factor:g}, mscale={self.mscale:.4f}"


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate-half RoPE in fp32; ``cos``/``sin`` of shape (T, head_dim // 2)."""
    x1, x2 = x.float().chunk(2, dim=-1)
    y = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
    return y.to(x.dtype)
