"""Structural novelty: a genome's distance to the genomes seen before it.

``descriptor`` puts a spec in a small feature space where the scales are comparable (log depth
and width, fractions of blocks per branch kind and pattern, log experts, log parameters,
looped fraction); ``novelty`` is the mean Euclidean distance to the ``k`` nearest others. The
engine records it as the measured ``novelty`` objective."""

from __future__ import annotations

import math
from collections.abc import Sequence

from evotui.dsl.estimate import manifest
from evotui.dsl.model import CustomExtra, DenseFFN, GatedExtra, ModelSpec, MoEFFN, RetroExtra
from evotui.dsl.patterns import PATTERNS

Descriptor = tuple[float, ...]


def descriptor(spec: ModelSpec) -> Descriptor:
    blocks = spec.blocks
    n = len(blocks)

    def frac(count: float) -> float:
        return count / n

    def extras(cls: type) -> int:
        return sum(isinstance(e, cls) for b in blocks for e in b.extras)

    moe = [b.ffn for b in blocks if isinstance(b.ffn, MoEFFN)]
    experts = sum(f.n_experts for f in moe) / len(moe) if moe else 0.0
    params = sum(t.numel for t in manifest(spec).values())
    looped = sum(r.end - r.start + 1 for r in spec.recurrences)
    patterns = [frac(sum(b.attn is not None and b.attn.sparsity == p for b in blocks))
                for p in PATTERNS]
    return (
        math.log2(n),
        math.log2(spec.emb.dim),
        frac(sum(b.attn is not None for b in blocks)),
        frac(sum(b.ssm is not None for b in blocks)),
        frac(sum(isinstance(b.ffn, DenseFFN) for b in blocks)),
        frac(len(moe)),
        frac(extras(RetroExtra)),
        frac(extras(GatedExtra)),
        frac(extras(CustomExtra)),
        *patterns,
        math.log2(1 + experts),
        math.log10(max(params, 1)),
        frac(looped),
    )


def distance(a: Sequence[float], b: Sequence[float]) -> float:
    return math.dist(a, b)


def novelty(spec: ModelSpec | Descriptor, others: Sequence[ModelSpec | Descriptor],
            k: int = 5) -> float:
    """Mean distance from ``spec`` to its ``k`` nearest ``others`` (0.0 when there are none).
    ``others`` should not contain ``spec`` itself."""
    if not others:
        return 0.0
    me = _as_descriptor(spec)
    dists = sorted(distance(me, _as_descriptor(o)) for o in others)
    nearest = dists[:max(1, k)]
    return sum(nearest) / len(nearest)


def _as_descriptor(x: ModelSpec | Descriptor) -> Descriptor:
    return descriptor(x) if isinstance(x, ModelSpec) else tuple(x)
