"""MAP-Elites: an archive holding the best candidate of each cell of a structural grid, and
parents drawn uniformly from the archive's elites.

Cells: depth bucket x fraction of attention blocks that are sparse (4 bins) x MoE present x
SSM present. An ``Entry.descriptor`` is :func:`features` of its spec (computed from
``Entry.spec`` when not given); entries with neither share a single cell. The elite of a cell
is the best on the first objective; when there are more cells than ``archive_max_elites`` the
best elites are kept."""

from __future__ import annotations

import bisect
import random
from collections.abc import Sequence

from evotui.dsl.model import ModelSpec, MoEFFN
from evotui.evolve.entry import eligible
from evotui.evolve.pareto import cost
from evotui.evolve.selection.base import Entry, Objectives, Selector, register

DEPTH_EDGES = (2, 4, 8, 16, 32)  # buckets: 1-2, 3-4, 5-8, 9-16, 17-32, 33+
SPARSE_BINS = 4
Cell = tuple[int, ...] | None


def features(spec: ModelSpec) -> tuple[float, float, float, float]:
    """(depth, sparse fraction of attention blocks, MoE present, SSM present)."""
    attn = [b.attn for b in spec.blocks if b.attn is not None]
    sparse = sum(a.sparsity != "none" for a in attn) / len(attn) if attn else 0.0
    moe = any(isinstance(b.ffn, MoEFFN) for b in spec.blocks)
    ssm = any(b.ssm is not None for b in spec.blocks)
    return float(len(spec.blocks)), sparse, float(moe), float(ssm)


def entry_cell(e: Entry) -> Cell:
    if e.descriptor is None and e.spec is not None:
        return cell(features(e.spec))
    return cell(e.descriptor)


def cell(descriptor: Sequence[float] | None) -> Cell:
    if descriptor is None:
        return None
    depth, sparse, moe, ssm = descriptor[:4]
    depth_bucket = bisect.bisect_left(DEPTH_EDGES, depth)
    sparse_bin = 0 if sparse <= 0 else min(SPARSE_BINS - 1, 1 + int(sparse * (SPARSE_BINS - 1)))
    return depth_bucket, sparse_bin, int(moe > 0), int(ssm > 0)


def archive(pool: Sequence[Entry], objectives: Objectives, max_elites: int) -> dict[Cell, str]:
    """Cell -> id of its elite, over the candidates that may be parents."""
    first = next(iter(objectives.items()), None)

    def score(e: Entry) -> float:
        return cost(e.metrics, *first) if first else 0.0

    best: dict[Cell, Entry] = {}
    for e in eligible(pool, objectives):
        c = entry_cell(e)
        if c not in best or score(e) < score(best[c]):
            best[c] = e
    kept = sorted(best.items(), key=lambda item: score(item[1]))[:max_elites]
    return {c: e.id for c, e in kept}


@register
class MapElites(Selector):
    name = "map_elites"

    def choose(self, candidates: list[Entry], objectives: Objectives, k: int,
               rng: random.Random) -> list[str]:
        elites = list(archive(candidates, objectives, self.cfg.archive_max_elites).values())
        return [rng.choice(elites) for _ in range(k)]
