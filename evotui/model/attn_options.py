"""Options of softmax attention: ALiBi, QK-norm, an output gate and the top-k key selector.

- ALiBi (Press et al. 2022): ``-slope_h * (q_pos - k_pos)`` added to the scores, with the
  geometric slopes of the paper; alone or together with RoPE. It goes to the backends as their
  score bias, so every pattern and backend that takes a bias runs it.
- QK-norm: RMSNorm over each head's query and key (one learned scale of ``head_dim`` for the
  queries, one for the keys), before RoPE, as in OLMo 2 and Qwen 3.
- Output gate (Qiu et al. 2025, gate G1): ``sigmoid(W_g x)`` from the block's normed input,
  one value per head or per channel, multiplies the attention output before ``wo``.
- Key selector: :class:`evotui.model.selector.KeySelector` replaces the pattern.

:func:`build_attention` picks the module for an :class:`AttnSpec`: ``LINEAR`` and ``MLA`` have
their own modules; softmax attention with an option is :class:`OptionedAttention`; plain
softmax attention is ``evotui.model.attention.Attention``.
"""

from __future__ import annotations

import torch
from torch import nn

from evotui.dsl.attn_spec import AttnSpec
from evotui.model.attention import Attention, attend


def alibi_slopes(heads: int) -> torch.Tensor:
    """ALiBi's per-head slopes: 2^(-8 i / n) for n a power of two; otherwise the slopes of the
    nearest lower power of two followed by every other slope of the next one (the paper's)."""

    def powers(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    n = 1 << (heads.bit_length() - 1)
    slopes = powers(n) + powers(2 * n)[0::2][: heads - n]
    return torch.tensor(slopes, dtype=torch.float32)


class Alibi:
    """The ALiBi score bias for the backends: ``bias(h, q_pos, k_pos)``."""

    def __init__(self, slopes: torch.Tensor):
        self.slopes = slopes

    def __call__(self, h: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return -self.slopes.to(q.device)[h] * (q - k)


class OutputGate(nn.Module):
    """``sigmoid(wg x)`` per head or per channel, applied to y (B, H, T, hd)."""

    def __init__(self, dim: int, heads: int, head_dim: int, per: str):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.per_channel = per == "channel"
        self.wg = nn.Linear(dim, heads * head_dim if self.per_channel else heads, bias=False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        g = torch.sigmoid(self.wg(x)).view(B, T, self.heads, -1).transpose(1, 2)
        return y * g.to(y.dtype)


class OptionedAttention(Attention):
    """Softmax attention (MHA / GQA / MQA) with ALiBi, QK-norm, an output gate and/or a key
    selector. Projections are named as in :class:`Attention`, so weights carry over."""

    def __init__(self, spec: AttnSpec, dim: int, seq_len: int, backend: str = "auto"):
        super().__init__(spec, dim, seq_len, backend)
        self.register_buffer("slopes", alibi_slopes(spec.heads) if spec.alibi else None,
                             persistent=False)
        if self.slopes is not None:
            self.bias = Alibi(self.slopes)
        if spec.qk_norm:
            self.q_norm = nn.RMSNorm(spec.head_dim, eps=1e-6)
            self.k_norm = nn.RMSNorm(spec.head_dim, eps=1e-6)
        self.gate: OutputGate | None = None
        if spec.gate != "none":
            self.gate = OutputGate(dim, spec.heads, spec.head_dim, spec.gate)
        self.select = None
        if spec.key_select is not None:
            from evotui.model.selector import KeySelector

            self.select = KeySelector(spec.key_select, dim)

    def _apply(self, fn, recurse: bool = True):  # keep the bias on the moved slopes
        super()._apply(fn, recurse)
        if self.slopes is not None:
            self.bias = Alibi(self.slopes)
        return self

    def transform_qk(self, q: torch.Tensor, k: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        if hasattr(self, "q_norm"):
            q, k = self.q_norm(q), self.k_norm(k)
        return super().transform_qk(q, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        q, k, v = self.qkv(x)
        q, k = self.transform_qk(q, k)
        p = self.dropout if self.training else 0.0
        if self.select is not None:
            y = self.select(x, q, k, v, self.scale, self.slopes, p)
        else:
            y = attend(q, k, v, self.pattern, self.backend, p, self.scale, self.bias)
        if self.gate is not None:
            y = self.gate(x, y)
        return self.wo(y.transpose(1, 2).reshape(B, T, self.heads * self.head_dim))


def build_attention(spec: AttnSpec, dim: int, seq_len: int, backend: str = "auto") -> nn.Module:
    """The attention module of one block for ``spec`` (see the module docstring)."""
    if spec.kind == "LINEAR":
        from evotui.model.linear_attention import LinearAttention

        return LinearAttention(spec, dim, seq_len)
    if spec.kind == "MLA":
        from evotui.model.mla import MLAttention

        return MLAttention(spec, dim, seq_len, backend)
    if spec.alibi or spec.qk_norm or spec.gate != "none" or spec.key_select is not None:
        return OptionedAttention(spec, dim, seq_len, backend)
    return Attention(spec, dim, seq_len, backend)


__all__ = ["Alibi", "OptionedAttention", "OutputGate", "alibi_slopes", "build_attention"]
