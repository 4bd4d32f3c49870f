"""Adaptive operator weights: operators whose children beat their parents are drawn more.

After each evaluated child, every operator that made it has its weight multiplied by
``exp(eta)`` on success and ``exp(-eta)`` otherwise, then clipped to [min_weight, max_weight].
A child succeeds when it is better than its parent on more objectives than it is worse (a child
missing an objective, a failed one say, does not succeed)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from evotui.dsl.run import EvolutionConfig
from evotui.evolve.entry import measured
from evotui.evolve.mutations import DECK
from evotui.evolve.pareto import cost


def op_name(op: str) -> str:
    """The operator of a mutation-log entry: ``"ffn.hidden(block b3: ...)"`` -> ``ffn.hidden``."""
    return op.split("(", 1)[0].strip()


def improved(child: Mapping[str, float], parent: Mapping[str, float],
             objectives: Mapping[str, str]) -> bool:
    """True when the child beats the parent on more objectives than it loses."""
    if not all(measured(child, m) for m in objectives):
        return False
    wins = losses = 0
    for m, d in objectives.items():
        if not measured(parent, m):
            continue
        c, p = cost(child, m, d), cost(parent, m, d)
        wins += c < p
        losses += c > p
    return wins > losses


def default_weights() -> dict[str, float]:
    return {name: m.weight for name, m in DECK.items()}


@dataclass
class AdaptiveWeights:
    """``table``: operator name -> weight; ``weights()`` is what ``mutate`` takes."""

    table: dict[str, float] = field(default_factory=default_weights)
    eta: float = 0.1
    min_weight: float = 0.05
    max_weight: float = 5.0

    @classmethod
    def from_config(cls, evo: EvolutionConfig) -> AdaptiveWeights:
        return cls(eta=evo.adaptive_mutation_eta, min_weight=evo.adaptive_mutation_min_weight,
                   max_weight=evo.adaptive_mutation_max_weight)

    def weight(self, name: str) -> float:
        return self.table.get(name, DECK[name].weight if name in DECK else 1.0)

    def weights(self) -> dict[str, float]:
        """A copy of the table, for ``mutate(..., weights=...)``."""
        return dict(self.table)

    def update(self, ops: Iterable[str], success: bool) -> None:
        """Reward (or penalise) each operator named in ``ops`` (log entries or names) once."""
        step = self.eta if success else -self.eta
        for name in dict.fromkeys(op_name(o) for o in ops):
            w = self.weight(name) * math.exp(step)
            self.table[name] = min(self.max_weight, max(self.min_weight, w))

    def observe(self, ops: Iterable[str], child: Mapping[str, float],
                parent: Mapping[str, float], objectives: Mapping[str, str]) -> bool:
        """Update from one evaluated child; returns whether it counted as a success."""
        success = improved(child, parent, objectives)
        self.update(ops, success)
        return success

    def to_dict(self) -> dict[str, Any]:
        return {"weights": dict(self.table), "eta": self.eta, "min_weight": self.min_weight,
                "max_weight": self.max_weight}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AdaptiveWeights:
        out = cls(eta=float(data.get("eta", 0.1)),
                  min_weight=float(data.get("min_weight", 0.05)),
                  max_weight=float(data.get("max_weight", 5.0)))
        out.table.update({str(k): float(v) for k, v in data.get("weights", {}).items()})
        return out
