"""One pre-norm residual block: its branches (attention of any kind, SSM, FFN) and extras.

``x += branch(norm(x))`` for attn, ssm, ffn, then each memory or custom extra; gates and
scales from the extras multiply the branch outputs they name.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from evotui.dsl.extras_cost import routed
from evotui.dsl.model import (
    MODIFIERS,
    BlockSpec,
    BranchRouterExtra,
    CustomExtra,
    GatedExtra,
    LayerScaleExtra,
    RetroExtra,
)
from evotui.model.attn_options import build_attention
from evotui.model.components import build_component
from evotui.model.ffn import build_ffn
from evotui.model.memory import Retro
from evotui.model.memory_extras import build_memory
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


class LayerScale(nn.Module):
    """LayerScale (CaiT): a per-channel scale, starting at ``init``, on each named branch."""

    def __init__(self, spec: LayerScaleExtra, present: list[str], dim: int):
        super().__init__()
        self.targets = [t for t in spec.targets if t in present]
        for t in self.targets:
            value = torch.full((dim,), float(spec.init))
            if spec.learnable:
                self.register_parameter(f"scale_{t}", nn.Parameter(value))
            else:
                self.register_buffer(f"scale_{t}", value, persistent=False)

    def gate(self, kind: str, out: torch.Tensor) -> torch.Tensor:
        if kind not in self.targets:
            return out
        return getattr(self, f"scale_{kind}").to(out.dtype) * out


class BranchRouter(nn.Module):
    """Per-token mixture weights over the routed branches: ``n * softmax(r(norm(x_t)) / temp)``,
    computed from each token alone (causal). The router's pre-norm is ``norm``."""

    def __init__(self, spec: BranchRouterExtra, present: list[str], dim: int):
        super().__init__()
        self.n = len(routed(spec, present))
        self.temperature = spec.temperature
        if spec.hidden is None:
            self.w = nn.Linear(dim, self.n, bias=False)
        else:
            self.w_in = nn.Linear(dim, spec.hidden, bias=False)
            self.w_out = nn.Linear(spec.hidden, self.n, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        logits = self.w(h) if hasattr(self, "w") else self.w_out(F.gelu(self.w_in(h)))
        return self.n * torch.softmax(logits.float() / self.temperature, dim=-1).to(x.dtype)


Branch = tuple[str, Callable[[torch.Tensor], torch.Tensor]]


class Block(nn.Module):
    """x += branch(norm(x)) for attn, ssm, ffn, then each memory or custom extra, each output
    through the block's gates and layer scale; with a branch router, the routed branches read
    the same x in parallel (where the first of them would run) and add their weighted sum."""

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
        present = spec.branches()
        self.extras = nn.ModuleList()
        self.extra_kinds: list[str] = []
        self.modifiers: dict[str, int] = {}  # kind -> index in extras (one state_dict name)
        for j, e in enumerate(spec.extras):
            if isinstance(e, GatedExtra):
                module: nn.Module = Gates(e, present, dim)
            elif isinstance(e, LayerScaleExtra):
                module = LayerScale(e, present, dim)
            elif isinstance(e, BranchRouterExtra):
                module = BranchRouter(e, present, dim)
                module.norm = make_norm(norm, dim)
            elif isinstance(e, CustomExtra):
                module = build_component(e, dim)
            elif isinstance(e, RetroExtra):
                module = Retro(e, dim)
            else:
                module = build_memory(e, dim)
            if e.type in MODIFIERS:
                self.modifiers[e.type] = j
            elif not hasattr(module, "norm"):
                module.norm = make_norm(norm, dim)  # its pre-norm, named extras.<j>.norm
            self.extras.append(module)
            self.extra_kinds.append(e.type)
        router = spec.router()
        self.routed = routed(router, present) if router is not None else []

    def _modifier(self, kind: str) -> nn.Module | None:
        j = self.modifiers.get(kind)
        return None if j is None else self.extras[j]

    @property
    def gates(self) -> Gates | None:
        return self._modifier("gated")  # type: ignore[return-value]

    def _scale(self, kind: str, out: torch.Tensor) -> torch.Tensor:
        for name in ("gated", "layer_scale"):
            mod = self._modifier(name)
            if mod is not None:
                out = mod.gate(kind, out)
        return out

    def _branches(self, x0: torch.Tensor) -> list[Branch]:
        out: list[Branch] = []
        for kind in ("attn", "ssm", "ffn"):
            if hasattr(self, kind):
                branch, norm = getattr(self, kind), getattr(self, f"{kind}_norm")
                out.append((kind, lambda x, b=branch, n=norm: b(n(x))))
        for kind, module in zip(self.extra_kinds, self.extras, strict=True):
            if kind == "custom":
                out.append((kind, lambda x, m=module: m(m.norm(x), x0)))
            elif kind not in MODIFIERS:
                out.append((kind, lambda x, m=module: m(m.norm(x))))
        return out

    def forward(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        branches = self._branches(x0)
        for i, (kind, fn) in enumerate(branches):
            if i not in self.routed:
                x = x + self._scale(kind, fn(x))
            elif i == self.routed[0]:
                w = self._modifier("branch_router")(x)  # (B, T, n)
                mix = [w[..., r : r + 1] * self._scale(branches[j][0], branches[j][1](x))
                       for r, j in enumerate(self.routed)]
                x = x + torch.stack(mix).sum(0)
        return x
