"""Attention sparsity patterns: one predicate per pattern, the single source of truth.

A predicate takes integer query positions ``q`` and key positions ``k`` (broadcastable numpy
arrays or torch tensors: only ``//``, ``%``, comparisons, ``&`` and ``|`` are used, so the same
function serves the estimator here, the boolean SDPA masks and FlexAttention's ``mask_mod`` in
the model layer) and returns where a query may attend to a key. Every predicate is causal and
keeps the diagonal, so no row is ever fully masked.

Semantics (documented in docs/dsl.md):

- ``none``: causal.
- ``sliding(sw)``: the ``sw`` most recent keys, the query itself included.
- ``block(block_size, block_stride)``: blocks of ``block_size`` positions start every
  ``block_stride`` positions; a query sees a key when some block holds both.
- ``local_global(sw, global_stride)``: the window plus every key at a multiple of
  ``global_stride`` (token 0 included).
- ``dilated(dilation, sw=None)``: keys whose distance is a multiple of ``dilation``, within
  ``sw`` when given.
- ``local_block(sw, block_size, block_stride)``: the window overlaid (union) with the block
  pattern.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

PATTERNS = ("none", "sliding", "block", "local_global", "dilated", "local_block")

# Knobs each pattern requires, and the ones it may use. Anything else set is an error.
REQUIRED_KNOBS: dict[str, tuple[str, ...]] = {
    "none": (),
    "sliding": ("sw",),
    "block": ("block_size",),
    "local_global": ("sw", "global_stride"),
    "dilated": ("dilation",),
    "local_block": ("sw", "block_size"),
}
OPTIONAL_KNOBS: dict[str, tuple[str, ...]] = {
    "none": (),
    "sliding": (),
    "block": ("block_stride",),
    "local_global": (),
    "dilated": ("sw",),
    "local_block": ("block_stride",),
}
ALL_KNOBS = ("sw", "block_size", "block_stride", "global_stride", "dilation")


@dataclass(frozen=True)
class Pattern:
    """A sparsity pattern with its knobs resolved; hashable, so masks can be cached on it."""

    kind: str = "none"
    sw: int | None = None
    block_size: int | None = None
    block_stride: int | None = None
    global_stride: int | None = None
    dilation: int | None = None

    def allowed(self, q: Any, k: Any) -> Any:
        """Boolean array: may query ``q`` attend to key ``k``?"""
        causal = k <= q
        if self.kind == "none":
            return causal
        if self.kind == "sliding":
            return causal & (q - k < self.sw)
        if self.kind == "block":
            return causal & _same_block(q, k, self.block_size, self._stride())
        if self.kind == "local_global":
            return causal & ((q - k < self.sw) | (k % self.global_stride == 0))
        if self.kind == "dilated":
            hit = causal & ((q - k) % self.dilation == 0)
            return hit & (q - k < self.sw) if self.sw is not None else hit
        if self.kind == "local_block":
            block = _same_block(q, k, self.block_size, self._stride())
            return causal & ((q - k < self.sw) | block)
        raise ValueError(f"unknown sparsity pattern {self.kind!r}")

    def _stride(self) -> int:
        return self.block_stride if self.block_stride is not None else self.block_size

    def is_window(self) -> bool:
        """True for a plain causal window (what flash-attn's ``window_size`` can express)."""
        return self.kind == "sliding"

    def keys_per_query(self, seq_len: int) -> float:
        """Mean number of keys a query attends to over a ``seq_len`` sequence (exact)."""
        return _mean_keys(self, seq_len)

    def density(self, seq_len: int) -> float:
        """Attended fraction of the causal triangle (1.0 for dense causal attention)."""
        return self.keys_per_query(seq_len) / ((seq_len + 1) / 2)

    def retained_keys(self, seq_len: int) -> int:
        """Keys a decoder must keep cached at position ``seq_len`` for this and later queries."""
        n = seq_len
        if self.kind == "none":
            return n
        if self.kind == "sliding":
            return min(self.sw, n)
        if self.kind == "block":
            return min(self.block_size, n)
        if self.kind == "local_global":
            return min(self.sw, n) + math.ceil(max(n - self.sw, 0) / self.global_stride)
        if self.kind == "dilated":
            return n if self.sw is None else min(self.sw, n)
        if self.kind == "local_block":
            return min(max(self.sw, self.block_size), n)
        raise ValueError(f"unknown sparsity pattern {self.kind!r}")


def _same_block(q: Any, k: Any, size: int, stride: int) -> Any:
    # Blocks [j*stride, j*stride + size). For k <= q, some block holds both exactly when the
    # last block starting at or before k still reaches q (or when k is q itself).
    # (k - k % stride) rather than (k // stride) * stride: torch 2.13's Inductor miscompiles
    # floor division of an arange whose length the divisor does not divide.
    return (k - k % stride + size > q) | (k == q)


@lru_cache(maxsize=256)
def _mean_keys(pattern: Pattern, seq_len: int) -> float:
    total = 0
    rows_per_chunk = max(1, (1 << 22) // max(seq_len, 1))
    k = np.arange(seq_len, dtype=np.int64)[None, :]
    for start in range(0, seq_len, rows_per_chunk):
        q = np.arange(start, min(seq_len, start + rows_per_chunk), dtype=np.int64)[:, None]
        total += int(np.count_nonzero(pattern.allowed(q, k)))
    return total / seq_len


def dense_mask(pattern: Pattern, seq_len: int) -> np.ndarray:
    """The full ``seq_len x seq_len`` boolean mask (True = attend), for tests and references."""
    idx = np.arange(seq_len, dtype=np.int64)
    return pattern.allowed(idx[:, None], idx[None, :])
