"""The attention backend family: one class per way of computing masked causal attention.

Every backend computes the same function, decided by a sparsity ``Pattern``
(``evotui.dsl.patterns``, the single source of truth): output = softmax(scale * q k^T + bias,
masked to the pairs ``pattern.allowed(q_pos, k_pos)``) v, with GQA / MQA (``k`` and ``v`` may
have fewer heads than ``q``; query head ``h`` reads key head ``h // (H / H_kv)``).

Contract of a backend (subclass :class:`AttentionBackend`, one module per backend, and list the
class in ``evotui.model.backends.FAMILY``):

- ``name``: what ``Attention(backend=...)`` and ``build_model(backend=...)`` call it.
- ``available(pattern, device, dtype, bias=False)``: can it run here? (device type, dtype,
  optional packages, whether it can add a score bias). Cheap and free of side effects.
- ``attend(q, k, v, pattern, dropout, scale, bias)``: q (B, H, T, hd), k and v (B, H_kv, T, hd)
  -> (B, H, T, hd) in q's dtype. ``dropout`` applies to the attention probabilities (0 outside
  training); a backend whose ``supports_dropout`` is False is never given a positive one.
- ``bias`` (optional, ``supports_bias``): an additive score term, a callable
  ``bias(h, q_pos, k_pos) -> Tensor`` over broadcastable integer tensors of head index, query
  position and key position (ALiBi: ``-slope[h] * (q_pos - k_pos)``). It must use only
  indexing, arithmetic and comparisons, so the same callable serves a dense (H, T, T) matrix,
  a chunk of one, and FlexAttention's ``score_mod``.

Pre-attention transforms of q and k (RoPE, QK-norm) belong to the module before ``attend``
(``Attention.transform_qk``); backends see the transformed tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch

from evotui.dsl.patterns import Pattern

ScoreBias = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
HALF = (torch.float16, torch.bfloat16)


class AttentionBackend:
    """One way to compute attention; see the module docstring for the whole contract."""

    name: ClassVar[str] = ""
    supports_dropout: ClassVar[bool] = True
    supports_bias: ClassVar[bool] = True

    def available(self, pattern: Pattern, device: torch.device | str,
                  dtype: torch.dtype | None = None, bias: bool = False) -> bool:
        return not bias or self.supports_bias

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pattern: Pattern,
               dropout: float, scale: float, bias: ScoreBias | None = None) -> torch.Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<attention backend {self.name}>"


def dense_bias(bias: ScoreBias, heads: int, t_q: int, t_k: int,
               device: torch.device) -> torch.Tensor:
    """The bias as a dense (heads, t_q, t_k) float tensor."""
    h = torch.arange(heads, device=device)[:, None, None]
    q = torch.arange(t_q, device=device)[None, :, None]
    k = torch.arange(t_k, device=device)[None, None, :]
    return bias(h, q, k).float().expand(heads, t_q, t_k)
