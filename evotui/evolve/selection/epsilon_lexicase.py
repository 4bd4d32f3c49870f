"""Epsilon-lexicase: lexicase where a survivor may trail the best by epsilon, set per
objective automatically to the median absolute deviation of the candidates' values."""

from __future__ import annotations

import statistics
from collections.abc import Mapping

from evotui.evolve.pareto import cost
from evotui.evolve.selection.base import Entry, Objectives, register
from evotui.evolve.selection.lexicase import Lexicase


def mad(values: list[float]) -> float:
    med = statistics.median(values)
    return statistics.median(abs(v - med) for v in values)


@register
class EpsilonLexicase(Lexicase):
    name = "epsilon_lexicase"

    def tolerances(self, candidates: list[Entry], objectives: Objectives) -> Mapping[str, float]:
        return {m: mad([cost(e.metrics, m, d) for e in candidates])
                for m, d in objectives.items()}
