"""Pareto dominance, ranks, crowding and the front, with min and max objectives."""

from __future__ import annotations

import math

from evotui.evolve import Entry, crowding_distance, dominates, nondominated_rank, pareto_front

OBJ = {"loss": "min", "throughput": "max"}


def test_dominates_respects_directions():
    a = {"loss": 1.0, "throughput": 200.0}
    b = {"loss": 2.0, "throughput": 100.0}
    assert dominates(a, b, OBJ)
    assert not dominates(b, a, OBJ)
    assert not dominates(a, a, OBJ)  # equal is not dominating
    # with the directions flipped, b is the better one
    assert dominates(b, a, {"loss": "max", "throughput": "min"})


def test_missing_metric_never_dominates():
    full = {"loss": 5.0, "throughput": 1.0}
    partial = {"loss": 0.1}  # would win on loss, but throughput is missing: not zero, worst
    assert not dominates(partial, full, OBJ)
    assert dominates(full, {"loss": 5.0}, OBJ)


def test_nondominated_ranks():
    points = [
        {"loss": 1.0, "throughput": 100.0},  # front 0
        {"loss": 2.0, "throughput": 300.0},  # front 0
        {"loss": 2.0, "throughput": 90.0},  # dominated by 0 -> front 1
        {"loss": 3.0, "throughput": 80.0},  # dominated by 2 -> front 2
        {"loss": 1.5, "throughput": 150.0},  # front 0
    ]
    assert nondominated_rank(points, OBJ) == [0, 0, 1, 2, 0]


def test_crowding_distance_extremes_infinite_and_gaps_ordered():
    front = [{"loss": x, "throughput": 10.0 - x} for x in (0.0, 1.0, 2.0, 6.0, 10.0)]
    d = crowding_distance(front, OBJ)
    assert math.isinf(d[0]) and math.isinf(d[4])
    # the point at 6.0 sits in a wider gap (2..10) than the one at 1.0 (0..2)
    assert d[3] > d[1] > 0
    assert crowding_distance(front[:2], OBJ) == [math.inf, math.inf]


def test_front_excludes_dominated_failed_and_incomplete():
    pool = [
        Entry("a", {"loss": 1.0, "throughput": 100.0}),
        Entry("b", {"loss": 2.0, "throughput": 300.0}),
        Entry("dominated", {"loss": 2.0, "throughput": 50.0}),
        Entry("failed", {"loss": 0.1, "throughput": 9999.0}, status="failed"),
        Entry("killed", {"loss": 0.1, "throughput": 9999.0}, status="killed"),
        Entry("no-throughput", {"loss": 0.01}),
        Entry("nan", {"loss": float("nan"), "throughput": 9999.0}),
    ]
    assert sorted(pareto_front(pool, OBJ)) == ["a", "b"]


def test_entries_give_answers_by_id():
    pool = [Entry("a", {"loss": 1.0, "throughput": 100.0}),
            Entry("b", {"loss": 2.0, "throughput": 300.0}),
            Entry("c", {"loss": 2.0, "throughput": 90.0})]
    assert nondominated_rank(pool, OBJ) == {"a": 0, "b": 0, "c": 1}
    crowd = crowding_distance(pool, OBJ)
    assert set(crowd) == {"a", "b", "c"}
    assert nondominated_rank([], OBJ) == []
