"""Pareto selection: the best non-dominated rank first, then the least crowded."""

from __future__ import annotations

import random

from evotui.evolve.pareto import rank_and_crowding
from evotui.evolve.selection.base import Entry, Objectives, Selector, register


def pareto_order(candidates: list[Entry], objectives: Objectives,
                 rng: random.Random) -> list[Entry]:
    """Candidates by (rank, most crowding distance first); exact ties in random order."""
    shuffled = list(candidates)
    rng.shuffle(shuffled)
    ranks, crowd = rank_and_crowding([e.metrics for e in shuffled], objectives)
    order = sorted(range(len(shuffled)), key=lambda i: (ranks[i], -crowd[i]))
    return [shuffled[i] for i in order]


@register
class Pareto(Selector):
    name = "pareto"

    def choose(self, candidates: list[Entry], objectives: Objectives, k: int,
               rng: random.Random) -> list[str]:
        order = pareto_order(candidates, objectives, rng)
        return [order[i % len(order)].id for i in range(k)]
