"""The selection family: one base class, a registry, and the parent-eligibility rule.

``Selector.select`` first keeps the candidates that may be parents (finished, every objective
measured: see :func:`evotui.evolve.entry.eligible`), then asks the subclass to choose among
them. A new scheme is a new module with a registered :class:`Selector` subclass."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import ClassVar

from evotui.dsl.run import EvolutionConfig
from evotui.evolve.entry import PARENT_STATUSES, Entry, eligible

Objectives = Mapping[str, str]


class Selector:
    """Picks parents. ``select`` returns ``k`` candidate ids (a strong candidate may appear
    more than once), or fewer (none) when fewer candidates may be parents."""

    name: ClassVar[str] = ""

    def __init__(self, cfg: EvolutionConfig | None = None):
        self.cfg = cfg if cfg is not None else EvolutionConfig()

    def select(self, pool: Sequence[Entry], objectives: Objectives, k: int,
               rng: random.Random) -> list[str]:
        candidates = eligible(pool, objectives)
        if k <= 0 or not candidates:
            return []
        return self.choose(candidates, objectives, k, rng)

    def choose(self, candidates: list[Entry], objectives: Objectives, k: int,
               rng: random.Random) -> list[str]:
        """Choose ``k`` ids among ``candidates`` (all eligible, at least one)."""
        raise NotImplementedError


SELECTORS: dict[str, type[Selector]] = {}


def register(cls: type[Selector]) -> type[Selector]:
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    SELECTORS[cls.name] = cls
    return cls


__all__ = ["PARENT_STATUSES", "SELECTORS", "Entry", "Objectives", "Selector", "eligible",
           "register"]
