"""Lexicase selection: objectives in a random order, each keeping only the best survivors."""

from __future__ import annotations

import random
from collections.abc import Mapping

from evotui.evolve.pareto import cost
from evotui.evolve.selection.base import Entry, Objectives, Selector, register


@register
class Lexicase(Selector):
    name = "lexicase"

    def tolerances(self, candidates: list[Entry], objectives: Objectives) -> Mapping[str, float]:
        """How far from the best a survivor may be, per objective (0: exact lexicase)."""
        return dict.fromkeys(objectives, 0.0)

    def choose(self, candidates: list[Entry], objectives: Objectives, k: int,
               rng: random.Random) -> list[str]:
        eps = self.tolerances(candidates, objectives)
        return [self.one(candidates, objectives, eps, rng) for _ in range(k)]

    def one(self, candidates: list[Entry], objectives: Objectives, eps: Mapping[str, float],
            rng: random.Random) -> str:
        order = list(objectives)
        rng.shuffle(order)
        survivors = candidates
        for m in order:
            values = [cost(e.metrics, m, objectives[m]) for e in survivors]
            best = min(values)
            survivors = [e for e, v in zip(survivors, values, strict=True)
                         if v <= best + eps[m]]
            if len(survivors) == 1:
                break
        return rng.choice(survivors).id
