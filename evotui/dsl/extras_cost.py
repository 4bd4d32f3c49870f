"""Tensors, FLOPs and cache of the memory extras, layer scale and the branch router (see
``evotui.dsl.estimate``; retro, gated and custom extras are counted there)."""

from __future__ import annotations

from typing import Any

from evotui.dsl.extras_spec import (
    AssocMemoryExtra,
    BranchRouterExtra,
    ChunkMemoryExtra,
    LayerScaleExtra,
    MemoryTokensExtra,
)

NEW_EXTRAS = (MemoryTokensExtra, ChunkMemoryExtra, AssocMemoryExtra, LayerScaleExtra,
              BranchRouterExtra)
Shape = tuple[tuple[int, ...], float]  # shape and applications per token


def extra_shapes(e: Any, q: str, d: int, branches: list[str]) -> dict[str, Shape]:
    """``{name: (shape, per_token)}`` of extra ``e`` at prefix ``q`` (``blocks.i.extras.j``),
    without its pre-norm; ``branches`` are the block's branch kinds in forward order."""
    if isinstance(e, LayerScaleExtra):
        if not e.learnable:
            return {}
        return {f"{q}.scale_{t}": ((d,), 1.0) for t in e.targets if t in branches}
    if isinstance(e, BranchRouterExtra):
        n = len(routed(e, branches))
        if e.hidden is None:
            return {f"{q}.w.weight": ((n, d), 1.0)}
        return {f"{q}.w_in.weight": ((e.hidden, d), 1.0), f"{q}.w_out.weight": ((n, e.hidden), 1.0)}
    w = e.heads * e.head_dim
    out: dict[str, Shape] = {f"{q}.wq.weight": ((w, d), 1.0)}
    if isinstance(e, MemoryTokensExtra):
        out[f"{q}.mem_k"] = ((e.tokens, w), 1.0)  # every token scores and mixes every slot
        out[f"{q}.mem_v"] = ((e.tokens, w), 1.0)
    else:
        once = 1.0 / e.stride if isinstance(e, ChunkMemoryExtra) else 1.0
        out[f"{q}.wk.weight"] = ((w, d), once)
        out[f"{q}.wv.weight"] = ((w, d), once)
    out[f"{q}.wo.weight"] = ((d, w), 1.0)
    return out


def routed(router: BranchRouterExtra, branches: list[str]) -> list[int]:
    """Indices into ``branches`` of the branches the router mixes (in forward order)."""
    return [i for i, b in enumerate(branches) if b in router.targets]


def extra_cost(e: Any, seq_len: int, dtype_bytes: int = 2) -> tuple[float, int]:
    """(training FLOPs per token beyond the weights, cache bytes per sequence)."""
    if isinstance(e, ChunkMemoryExtra):
        w = e.heads * e.head_dim
        visible = sum((t + 1) // e.stride for t in range(seq_len)) / seq_len
        return 12 * w * visible, 2 * w * (seq_len // e.stride) * dtype_bytes
    if isinstance(e, AssocMemoryExtra):
        c = min(e.chunk, seq_len)
        return (12 * e.heads * e.head_dim * (c + e.head_dim),
                e.heads * e.head_dim * (e.head_dim + 1) * dtype_bytes)
    return 0.0, 0
