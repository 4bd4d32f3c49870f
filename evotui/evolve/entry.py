"""A candidate as selection sees it, and which candidates may be parents."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from evotui.dsl.model import ModelSpec
from evotui.jsonio import finite
from evotui.lifecycle import FINISHED

# Candidates that finished a rung with measurements (evotui.lifecycle: done, or stopped early by
# a guard and measured all the same) may be parents; no other status ever is.
PARENT_STATUSES = FINISHED


@dataclass(frozen=True)
class Entry:
    """One candidate. ``descriptor``: its structural features for MAP-Elites (see
    ``selection.map_elites.features``); when absent they are computed from ``spec``."""

    id: str
    metrics: Mapping[str, float] = field(default_factory=dict)
    status: str = "done"
    descriptor: tuple[float, ...] | None = None
    spec: ModelSpec | None = None


def measured(metrics: Mapping[str, object], name: str) -> bool:
    """True when ``name`` holds a finite number (a missing metric is never a zero)."""
    return finite(metrics.get(name)) is not None


def eligible(pool: Iterable[Entry], objectives: Mapping[str, str]) -> list[Entry]:
    """Candidates that may be parents: finished, with every objective measured."""
    return [e for e in pool
            if e.status in PARENT_STATUSES and all(measured(e.metrics, m) for m in objectives)]
