"""The torch side of function-preserving inheritance: apply a plan entry of
:func:`evotui.evolve.net2net_plan.net2net_plan` to a parent tensor.

``widen`` gathers units along each listed dimension (a unit is ``unit`` consecutive rows) and,
with ``split``, divides each copy by how many copies its parent unit has, so the sum the next
layer computes over those units is unchanged; ``perturb`` then adds small noise to the new
units (a generator seeded by the caller, so it replays). ``zero`` needs no parent tensor.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor


def widen(t: Tensor, transform: Mapping[str, Any], generator: torch.Generator | None = None
          ) -> Tensor:
    """The child's tensor made from parent tensor ``t`` by a ``widen`` transform."""
    out = t.float()
    for d in transform["dims"]:
        dim, unit, m = int(d["dim"]), int(d["unit"]), [int(j) for j in d["map"]]
        rows = torch.tensor([j * unit + r for j in m for r in range(unit)], dtype=torch.long)
        out = out.index_select(dim, rows)
        if d.get("split"):
            copies = Counter(m)
            scale = torch.tensor([1.0 / copies[j] for j in m for _ in range(unit)])
            shape = [1] * out.dim()
            shape[dim] = -1
            out = out * scale.view(shape)
    p = transform.get("perturb")
    if p:
        dim, start = int(p["dim"]), int(p["from"])
        new = out.narrow(dim, start, out.shape[dim] - start)
        std = float(t.float().std()) if t.numel() > 1 else 0.0
        noise = torch.randn(new.shape, generator=generator) * std * float(p["scale"])
        new.add_(noise)
    return out.to(t.dtype)


def start_from(own: Tensor, parent: Tensor | None, transform: Mapping[str, Any],
               generator: torch.Generator | None = None) -> Tensor | None:
    """What the child tensor ``own`` starts as under ``transform``; None when the transform
    does not fit (a parent tensor missing or a result of another shape: keep it fresh)."""
    if transform["op"] == "zero":
        return torch.zeros_like(own)
    if transform["op"] == "widen" and parent is not None:
        out = widen(parent, transform, generator)
        if out.shape == own.shape:
            return out
    return None
