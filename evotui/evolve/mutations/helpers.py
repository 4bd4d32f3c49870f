"""Small pure helpers the operators share: choices, rounding, branches, ids, span remapping."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

from evotui.evolve.mutations.base import Data, Skip

T = TypeVar("T")
BRANCH_KEYS = ("attn", "ssm", "ffn")


def choose_other(rng: random.Random, options: Iterable[T], current: Any) -> T:
    """A random option different from ``current``; :class:`Skip` when there is none."""
    pool = list(dict.fromkeys(o for o in options if o != current))
    if not pool:
        raise Skip
    return rng.choice(pool)


def round_to(x: float, q: int, lo: int | None = None) -> int:
    """``x`` rounded to a multiple of ``q`` (at least ``lo``, default ``q``)."""
    return max(lo if lo is not None else q, q * round(x / q))


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def scaled(rng: random.Random, value: int, factors: Sequence[float], lo: int, hi: int,
           q: int = 1) -> int:
    """``value`` times a random factor, rounded to a multiple of ``q``, clamped to [lo, hi]."""
    options = {min(hi, max(lo, round_to(value * f, q, lo=q))) for f in factors}
    options.discard(value)
    if not options:
        raise Skip
    return rng.choice(sorted(options))


MODIFIERS = ("gated", "layer_scale", "branch_router")  # extras acting on other branches


def branches(block: Data) -> list[str]:
    """Branch kinds a block's data has (gates, layer scales and routers are not branches)."""
    out = [k for k in BRANCH_KEYS if block.get(k) is not None]
    out += [e["type"] for e in block.get("extras", []) if e["type"] not in MODIFIERS]
    return out


def gated_index(block: Data) -> int | None:
    return next((j for j, e in enumerate(block.get("extras", [])) if e["type"] == "gated"), None)


def prune_gate(block: Data) -> None:
    """Keep only the targets the block still has in its gate, layer scale and branch router;
    drop a gate or scale left with none, and a router left with fewer than two."""
    present = set(branches(block))
    extras = block.get("extras", [])
    for j in reversed(range(len(extras))):
        e = extras[j]
        if e["type"] not in MODIFIERS:
            continue
        targets = [t for t in e["targets"] if t in present]
        if len(targets) >= (2 if e["type"] == "branch_router" else 1):
            e["targets"] = targets
        else:
            del extras[j]


def new_id(rng: random.Random, taken: set[str]) -> str:
    """A fresh block id not in ``taken`` (which it joins)."""
    while True:
        bid = f"n{rng.getrandbits(32):08x}"
        if bid not in taken:
            taken.add(bid)
            return bid


def ssm_head_dim(inner: int, preferred: int) -> int:
    """The SSM head width dividing ``inner`` closest to ``preferred``."""
    return min(divisors(inner), key=lambda h: (abs(h - preferred), -h))


def fit_block_to_width(block: Data, dim: int, old_dim: int | None = None) -> None:
    """Make a block's data valid at model width ``dim``: the SSM head width must divide
    expand*dim; derived widths (SSM dt_rank, retro mem_dim) that sat at their defaults for
    ``old_dim`` follow the new width."""
    ssm = block.get("ssm")
    if ssm is not None:
        inner = ssm.get("expand", 2) * dim
        hd = ssm.get("head_dim", 64)
        if inner % hd:
            ssm["head_dim"] = ssm_head_dim(inner, hd)
        if old_dim is not None and ssm.get("dt_rank") == -(-old_dim // 16):
            del ssm["dt_rank"]
    if old_dim is not None:
        for e in block.get("extras", []):
            if e["type"] == "retro" and e.get("mem_dim") == max(1, old_dim // 4):
                del e["mem_dim"]


# -- recurrence spans under block edits ----------------------------------------------------
# Spans are disjoint inclusive intervals. Each edit maps positions monotonically, so spans stay
# disjoint; a span emptied by a removal is dropped.

def spans_after_insert(data: Data, pos: int) -> None:
    """A block was inserted at ``pos``: later spans shift; a span it lands inside grows."""
    for rec in data.get("recurrences", []):
        if pos <= rec["start"]:
            rec["start"] += 1
            rec["end"] += 1
        elif pos <= rec["end"]:
            rec["end"] += 1


def spans_after_remove(data: Data, pos: int) -> None:
    """The block at ``pos`` was removed: later spans shift; its span shrinks or goes."""
    kept = []
    for rec in data.get("recurrences", []):
        if pos < rec["start"]:
            rec["start"] -= 1
            rec["end"] -= 1
        elif pos <= rec["end"]:
            rec["end"] -= 1
        if rec["end"] >= rec["start"]:
            kept.append(rec)
    data["recurrences"] = kept


def insert_block(data: Data, pos: int, block: Data) -> None:
    data["blocks"].insert(pos, block)
    spans_after_insert(data, pos)


def remove_block(data: Data, pos: int) -> Data:
    block = data["blocks"].pop(pos)
    spans_after_remove(data, pos)
    return block


def free_ranges(n_blocks: int, spans: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Maximal runs of block indices no span covers."""
    covered = {i for s, e in spans for i in range(s, e + 1)}
    out: list[tuple[int, int]] = []
    start = None
    for i in range(n_blocks + 1):
        if i < n_blocks and i not in covered:
            start = i if start is None else start
        elif start is not None:
            out.append((start, i - 1))
            start = None
    return out
