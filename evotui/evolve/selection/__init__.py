"""Parent selection schemes. ``get_selector(name, cfg)`` gives the one a run config names."""

from __future__ import annotations

from evotui.dsl.run import EvolutionConfig
from evotui.evolve.selection import (  # noqa: F401  (registers the selectors)
    epsilon_lexicase,
    lexicase,
    map_elites,
    pareto,
    random_parent,
    tournament,
)
from evotui.evolve.selection.base import (
    PARENT_STATUSES,
    SELECTORS,
    Entry,
    Selector,
    eligible,
    register,
)


def get_selector(name: str, evolution_cfg: EvolutionConfig | None = None) -> Selector:
    """The selector registered as ``name`` (``-`` and ``_`` are the same)."""
    key = name.replace("-", "_")
    if key not in SELECTORS:
        raise ValueError(f"unknown parent selection {name!r}; known: {', '.join(SELECTORS)}")
    return SELECTORS[key](evolution_cfg)


__all__ = ["PARENT_STATUSES", "SELECTORS", "Entry", "Selector", "eligible", "get_selector",
           "register"]
