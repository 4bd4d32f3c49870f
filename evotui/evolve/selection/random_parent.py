"""Random parents: each parent drawn uniformly among the eligible candidates, ignoring every
objective. The baseline of ``evotui bench search``'s ``random`` method (random search over the
same mutation deck, chain lengths, rungs and promotion as the evolutionary search)."""

from __future__ import annotations

import random

from evotui.evolve.selection.base import Entry, Objectives, Selector, register


@register
class RandomParent(Selector):
    name = "random"

    def choose(self, candidates: list[Entry], objectives: Objectives, k: int,
               rng: random.Random) -> list[str]:
        return [rng.choice(candidates).id for _ in range(k)]
