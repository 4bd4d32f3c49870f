"""Tournament selection: draw ``tournament_size`` candidates, keep the one with the best
non-dominated rank, then the largest crowding distance (ties at random)."""

from __future__ import annotations

import random

from evotui.evolve.pareto import rank_and_crowding
from evotui.evolve.selection.base import Entry, Objectives, Selector, register


@register
class Tournament(Selector):
    name = "tournament"

    def choose(self, candidates: list[Entry], objectives: Objectives, k: int,
               rng: random.Random) -> list[str]:
        ranks, crowd = rank_and_crowding([e.metrics for e in candidates], objectives)
        size = min(self.cfg.tournament_size, len(candidates))
        out = []
        for _ in range(k):
            entrants = rng.sample(range(len(candidates)), size)
            best = min(entrants, key=lambda i: (ranks[i], -crowd[i], rng.random()))
            out.append(candidates[best].id)
        return out
