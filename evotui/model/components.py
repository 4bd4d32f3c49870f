"""The torch side of the registered ``custom`` components (see ``evotui.dsl.components``).

A component class is constructed as ``Class(model_dim, params)`` and called as
``module(h, x0)``: ``h`` is the normed block input and ``x0`` the token embeddings, both
(B, T, D). :func:`build_component` imports a component's module by its registered path and
checks that what it registers matches the shapes the registry declares.
"""

from __future__ import annotations

import importlib

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import BaseModel

from evotui.dsl import components
from evotui.dsl.components import BottleneckParams
from evotui.dsl.model import CustomExtra


class ExpGater(nn.Module):
    """Sigmoid-gated bottleneck: wo(sigmoid(wg h) * wv h)."""

    def __init__(self, model_dim: int, params: BottleneckParams):
        super().__init__()
        r = params.dim
        self.wg = nn.Linear(model_dim, r, bias=False)
        self.wv = nn.Linear(model_dim, r, bias=False)
        self.wo = nn.Linear(r, model_dim, bias=False)

    def forward(self, h: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        return self.wo(torch.sigmoid(self.wg(h)) * self.wv(h))


class ExpBridge(nn.Module):
    """Bottleneck bridge from the token embeddings: w_out(silu(w_in [h, x0]))."""

    def __init__(self, model_dim: int, params: BottleneckParams):
        super().__init__()
        r = params.dim
        self.w_in = nn.Linear(2 * model_dim, r, bias=False)
        self.w_out = nn.Linear(r, model_dim, bias=False)

    def forward(self, h: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        return self.w_out(F.silu(self.w_in(torch.cat([h, x0], dim=-1))))


def _import(path: str, name: str) -> type[nn.Module]:
    mod_name, sep, cls_name = path.partition(":")
    if not sep or not mod_name or not cls_name:
        raise ValueError(f"component {name!r}: module path {path!r} is not 'package.module:Class'")
    try:
        cls = getattr(importlib.import_module(mod_name), cls_name)
    except (ImportError, AttributeError) as e:
        raise ImportError(f"component {name!r}: cannot import {path!r}: {e}") from e
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"component {name!r}: {path!r} is not a torch.nn.Module subclass")
    return cls


def _shape_diff(got: dict[str, tuple[int, ...]], want: dict[str, tuple[int, ...]]) -> str:
    parts = []
    if extra := sorted(got.keys() - want.keys()):
        parts.append(f"registers undeclared {', '.join(f'{k} {got[k]}' for k in extra)}")
    if missing := sorted(want.keys() - got.keys()):
        parts.append(f"lacks declared {', '.join(f'{k} {want[k]}' for k in missing)}")
    for k in sorted(got.keys() & want.keys()):
        if got[k] != want[k]:
            parts.append(f"{k} is {got[k]} but declared {want[k]}")
    return "; ".join(parts)


def build_component(extra: CustomExtra, dim: int) -> nn.Module:
    """Construct the module of a ``custom`` extra and check it against its declared shapes."""
    comp = components.get(extra.name)
    if comp is None:
        raise ValueError(f"unknown component {extra.name!r}; registered: "
                         + ", ".join(components.names()))
    params: BaseModel = extra.component_params()
    module = _import(comp.module, comp.name)(dim, params)
    got = {k: tuple(t.shape) for k, t in module.state_dict().items()}
    want = {k: tuple(s) for k, s in comp.shapes(dim, params).items()}
    if got != want:
        raise ValueError(f"component {comp.name!r}: module {comp.module} disagrees with the "
                         f"shapes its registration declares: {_shape_diff(got, want)}")
    return module
