"""Pareto dominance, non-dominated ranks, crowding distance and the front.

Objectives map a metric name to ``min`` or ``max``. Internally every value is turned into a
cost (lower is better); a missing or non-finite metric is the worst possible cost, so it can
never make a point look good.

``nondominated_rank`` and ``crowding_distance`` take metric mappings (and answer a list, by
position) or :class:`Entry` objects (and answer a dict keyed by candidate id)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import overload

from evotui.evolve.entry import Entry, eligible, measured

Metrics = Mapping[str, float]


def _metrics(points: Sequence[Metrics] | Sequence[Entry]) -> list[Metrics]:
    return [p.metrics if isinstance(p, Entry) else p for p in points]


def _by_id(points: Sequence[Metrics] | Sequence[Entry]) -> bool:
    return bool(points) and isinstance(points[0], Entry)


def cost(metrics: Metrics, name: str, direction: str) -> float:
    if not measured(metrics, name):
        return math.inf
    v = float(metrics[name])
    return v if direction == "min" else -v


def costs(metrics: Metrics, objectives: Mapping[str, str]) -> tuple[float, ...]:
    return tuple(cost(metrics, m, d) for m, d in objectives.items())


def dominates_costs(a: Sequence[float], b: Sequence[float]) -> bool:
    """Cost vector ``a`` is no worse than ``b`` everywhere and better somewhere (all
    minimised): the one definition of dominance."""
    return all(x <= y for x, y in zip(a, b, strict=True)) and tuple(a) != tuple(b)


def dominates(a: Metrics, b: Metrics, objectives: Mapping[str, str]) -> bool:
    """``a`` is no worse than ``b`` on every objective and better on one."""
    return dominates_costs(costs(a, objectives), costs(b, objectives))


def non_dominated(points: Mapping[str, Sequence[float]]) -> list[str]:
    """Keys of the cost vectors no other one dominates (all minimised), in the given order."""
    ranks = _cost_ranks([tuple(p) for p in points.values()])
    return [k for k, r in zip(points, ranks, strict=True) if r == 0]


@overload
def nondominated_rank(points: Sequence[Entry], objectives: Mapping[str, str]
                      ) -> dict[str, int]: ...


@overload
def nondominated_rank(points: Sequence[Metrics], objectives: Mapping[str, str]
                      ) -> list[int]: ...


def nondominated_rank(points: Sequence[Metrics] | Sequence[Entry],
                      objectives: Mapping[str, str]) -> list[int] | dict[str, int]:
    """Rank of each point: 0 for the non-dominated front, 1 for the front after it, ..."""
    ranks = _ranks(_metrics(points), objectives)
    if _by_id(points):
        return {p.id: r for p, r in zip(points, ranks, strict=True)}  # type: ignore[union-attr]
    return ranks


def _ranks(points: Sequence[Metrics], objectives: Mapping[str, str]) -> list[int]:
    return _cost_ranks([costs(p, objectives) for p in points])


def _cost_ranks(cs: Sequence[tuple[float, ...]]) -> list[int]:
    """Non-dominated sorting of cost vectors: 0 for the front, 1 for the next, ..."""
    n = len(cs)

    def dom(i: int, j: int) -> bool:
        return dominates_costs(cs[i], cs[j])

    beaten_by = [0] * n
    beats: list[list[int]] = [[] for _ in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            if dom(i, j):
                beats[i].append(j)
                beaten_by[j] += 1
            elif dom(j, i):
                beats[j].append(i)
                beaten_by[i] += 1
    ranks = [0] * n
    front = [i for i in range(n) if beaten_by[i] == 0]
    r = 0
    while front:
        nxt = []
        for i in front:
            ranks[i] = r
            for j in beats[i]:
                beaten_by[j] -= 1
                if beaten_by[j] == 0:
                    nxt.append(j)
        front, r = nxt, r + 1
    return ranks


@overload
def crowding_distance(points: Sequence[Entry], objectives: Mapping[str, str]
                      ) -> dict[str, float]: ...


@overload
def crowding_distance(points: Sequence[Metrics], objectives: Mapping[str, str]
                      ) -> list[float]: ...


def crowding_distance(points: Sequence[Metrics] | Sequence[Entry],
                      objectives: Mapping[str, str]) -> list[float] | dict[str, float]:
    """NSGA-II crowding distance of each point within ``points`` (usually one front): the
    extremes of each objective are infinite, the others sum the normalised gap between their
    neighbours."""
    dist = _crowding(_metrics(points), objectives)
    if _by_id(points):
        return {p.id: d for p, d in zip(points, dist, strict=True)}  # type: ignore[union-attr]
    return dist


def _crowding(points: Sequence[Metrics], objectives: Mapping[str, str]) -> list[float]:
    n = len(points)
    dist = [0.0] * n
    if n <= 2:
        return [math.inf] * n
    cs = [costs(p, objectives) for p in points]
    for m in range(len(objectives)):
        order = sorted(range(n), key=lambda i: cs[i][m])
        lo, hi = cs[order[0]][m], cs[order[-1]][m]
        dist[order[0]] = dist[order[-1]] = math.inf
        if not math.isfinite(hi - lo) or hi == lo:
            continue
        for pos in range(1, n - 1):
            gap = cs[order[pos + 1]][m] - cs[order[pos - 1]][m]
            dist[order[pos]] += gap / (hi - lo)
    return dist


def rank_and_crowding(points: Sequence[Metrics], objectives: Mapping[str, str]
                      ) -> tuple[list[int], list[float]]:
    """Non-dominated rank of each point and its crowding distance within its own front."""
    ranks = _ranks(points, objectives)
    crowd = [0.0] * len(points)
    for r in set(ranks):
        members = [i for i, x in enumerate(ranks) if x == r]
        for i, d in zip(members, _crowding([points[i] for i in members], objectives),
                        strict=True):
            crowd[i] = d
    return ranks, crowd


def pareto_front(pool: Sequence[Entry], objectives: Mapping[str, str]) -> list[str]:
    """Ids of the non-dominated candidates among those that may be parents."""
    ok = eligible(pool, objectives)
    ranks = _ranks([e.metrics for e in ok], objectives)
    return [e.id for e, r in zip(ok, ranks, strict=True) if r == 0]
