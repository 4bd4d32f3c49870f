"""One pre-norm residual block: its branches (attention of any kind, SSM, FFN) and extras.

``x += branch(norm(x))`` for attn, ssm, ffn, then each memory or custom extra; gates and
scales from the extras multiply the branch outputs they name.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from evotui.dsl.model import BlockSpec, CustomExtra, GatedExtra
from evotui.model.attn_options import build_attention
from evotui.model.components import build_component
from evotui.model.ffn import build_ffn
from evotui.model.memory import Retro
from evotui.model.ssm import Mamba2


def make_norm(kind: str, dim: int) -> nn.Module:
    return nn.LayerNorm(dim) if kind == "layernorm" else nn.RMSNorm(dim, eps=1e-6)


class Gates(nn.Module):
    """Per-channel sigmoid gates on the outputs of the named branches of one block."""

    def __init__(self, spec: GatedExtra, present: list[str], dim: int):
        super().__init__()
        self.targets = [t for t in spec.targets if t in present]
        logit = math.log(spec.init_weight / (1 - spec.init_weight))
        for t in self.targets:
            value = torch.full((dim,), logit)
            if spec.learnable:
                self.register_parameter(f"gate_{t}", nn.Parameter(value))
            else:
                self.register_buffer(f"gate_{t}", value, persistent=False)

    def gate(self, kind: str, out: torch.Tensor) -> torch.Tensor:
        if kind not in self.targets:
            return out
        return torch.sigmoid(getattr(self, f"gate_{kind}")).to(out.dtype) * out


class Block(nn.Module):
    """x += branch(norm(x)) for attn, ssm, ffn, then each extra (retro, custom), gated."""

    def __init__(self, spec: BlockSpec, dim: int, norm: str, seq_len: int, backend: str):
        super().__init__()
        if spec.attn is not None:
            self.attn_norm = make_norm(norm, dim)
            self.attn = build_attention(spec.attn, dim, seq_len, backend=backend)
        if spec.ssm is not None:
            self.ssm_norm = make_norm(norm, dim)
            self.ssm = Mamba2(spec.ssm, dim)
        if spec.ffn is not None:
            self.ffn_norm = make_norm(norm, dim)
            self.ffn = build_ffn(spec.ffn, dim)
        self.extras = nn.ModuleList()
        self.extra_kinds: list[str] = []
        self.gate_index: int | None = None  # the Gates module lives in extras (one state_dict name)
        for j, e in enumerate(spec.extras):
            if isinstance(e, GatedExtra):
                self.gate_index = j
                module: nn.Module = Gates(e, spec.branches(), dim)
            else:
                module = build_component(e, dim) if isinstance(e, CustomExtra) else Retro(e, dim)
                module.norm = make_norm(norm, dim)  # its pre-norm, named extras.<j>.norm
            self.extras.append(module)
            self.extra_kinds.append(e.type)

    @property
    def gates(self) -> Gates | None:
        return None if self.gate_index is None else self.extras[self.gate_index]

    def _gate(self, kind: str, out: torch.Tensor) -> torch.Tensor:
        gates = self.gates
        return gates.gate(kind, out) if gates is not None else out

    def forward(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "attn"):
            x = x + self._gate("attn", self.attn(self.attn_norm(x)))
        if hasattr(self, "ssm"):
            x = x + self._gate("ssm", self.ssm(self.ssm_norm(x)))
        if hasattr(self, "ffn"):
            x = x + self._gate("ffn", self.ffn(self.ffn_norm(x)))
        for kind, module in zip(self.extra_kinds, self.extras, strict=True):
            if kind == "retro":
                x = x + self._gate("retro", module(module.norm(x)))
            elif kind == "custom":
                x = x + self._gate("custom", module(module.norm(x), x0))
        return x
