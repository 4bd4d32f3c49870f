"""Parent selection on constructed metric tables: each scheme picks what it should, respects
min / max, and never picks a failed, unfinished or unmeasured candidate."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from evotui.dsl import EvolutionConfig, load
from evotui.evolve import PARENT_STATUSES, Entry, elite_features, get_selector
from evotui.evolve.selection import SELECTORS
from evotui.evolve.selection.map_elites import archive, cell
from tests.conftest import ROOT

OBJ = {"loss": "min", "throughput": "max"}
NAMES = ["lexicase", "epsilon_lexicase", "pareto", "tournament", "map_elites", "random"]


def picks(name: str, pool, objectives=OBJ, k: int = 400, seed: int = 0, **cfg) -> Counter:
    selector = get_selector(name, EvolutionConfig(**cfg))
    return Counter(selector.select(pool, objectives, k, random.Random(seed)))


def cheaters() -> list[Entry]:
    """Candidates whose numbers look best but which may never be parents."""
    best = {"loss": 0.001, "throughput": 1e9}
    out = [Entry(f"st-{s}", best, status=s)
           for s in ("failed", "killed", "paused", "running", "queued")]
    out.append(Entry("no-loss", {"throughput": 1e9}))
    out.append(Entry("no-throughput", {"loss": 0.001}))
    out.append(Entry("nan-loss", {"loss": float("nan"), "throughput": 1e9}))
    out.append(Entry("none-loss", {"loss": None, "throughput": 1e9}))  # type: ignore[dict-item]
    return out


POOL = [
    Entry("fast", {"loss": 3.0, "throughput": 900.0}),
    Entry("accurate", {"loss": 1.0, "throughput": 100.0}),
    Entry("balanced", {"loss": 2.0, "throughput": 500.0}),
    Entry("bad", {"loss": 4.0, "throughput": 50.0}, descriptor=(1, 0, 0, 0)),
]


def test_all_schemes_are_registered():
    assert sorted(SELECTORS) == sorted(NAMES)
    assert get_selector("epsilon-lexicase").name == "epsilon_lexicase"
    with pytest.raises(ValueError, match="unknown parent selection"):
        get_selector("roulette")


@pytest.mark.parametrize("name", NAMES)
def test_never_selects_ineligible(name):
    pool = POOL + cheaters()
    chosen = picks(name, pool, k=300)
    assert set(chosen) <= {"fast", "accurate", "balanced", "bad"}
    assert sum(chosen.values()) == 300


@pytest.mark.parametrize("name", NAMES)
def test_nothing_eligible_gives_nothing(name):
    assert picks(name, cheaters(), k=5) == Counter()
    assert picks(name, POOL, k=0) == Counter()


def test_parent_statuses():
    assert {"done", "stopped"} == set(PARENT_STATUSES)
    stopped = Entry("s", {"loss": 1.0, "throughput": 1.0}, status="stopped")
    assert picks("lexicase", [stopped], k=3) == Counter({"s": 3})


def test_lexicase_picks_each_specialist_and_never_the_dominated():
    chosen = picks("lexicase", POOL)
    # best on one objective each: both selectable; "balanced" is best on neither
    assert chosen["fast"] > 100 and chosen["accurate"] > 100
    assert chosen["balanced"] == 0 and chosen["bad"] == 0


def test_lexicase_respects_direction():
    flipped = {"loss": "max", "throughput": "min"}
    chosen = picks("lexicase", POOL, objectives=flipped)
    assert set(chosen) == {"bad"}  # highest loss and lowest throughput: best on both


def test_lexicase_single_objective_is_the_best():
    assert set(picks("lexicase", POOL, objectives={"loss": "min"})) == {"accurate"}
    assert set(picks("lexicase", POOL, objectives={"throughput": "max"})) == {"fast"}


def test_epsilon_lexicase_keeps_near_ties():
    pool = [Entry("a", {"loss": 1.00}), Entry("b", {"loss": 1.01}), Entry("c", {"loss": 1.02}),
            Entry("d", {"loss": 5.0}), Entry("e", {"loss": 9.0})]
    # MAD of the losses is 0.02 (median 1.02; deviations 0.02, 0.01, 0, 3.98, 7.98)
    chosen = picks("epsilon_lexicase", pool, objectives={"loss": "min"})
    assert set(chosen) == {"a", "b", "c"}
    assert set(picks("lexicase", pool, objectives={"loss": "min"})) == {"a"}


def test_pareto_prefers_front_then_spread():
    chosen = get_selector("pareto").select(POOL, OBJ, 3, random.Random(0))
    assert set(chosen) == {"fast", "accurate", "balanced"}  # the whole front, before "bad"
    # a crowded middle point loses to the extremes when only two are taken
    crowded = POOL + [Entry("crowded", {"loss": 2.05, "throughput": 495.0})]
    two = get_selector("pareto").select(crowded, OBJ, 2, random.Random(0))
    assert set(two) == {"fast", "accurate"}
    many = get_selector("pareto").select(POOL, OBJ, 10, random.Random(0))
    assert len(many) == 10 and set(many) == {e.id for e in POOL}


def test_tournament_size_and_rank():
    # the whole pool in every tournament: the front's extremes (infinite crowding) win
    assert set(picks("tournament", POOL, tournament_size=4)) == {"fast", "accurate"}
    # size 2: every pairing with the dominated candidate has a better one; the others win
    chosen = picks("tournament", POOL, tournament_size=2)
    assert chosen["bad"] == 0 and set(chosen) == {"fast", "accurate", "balanced"}
    # with a dominated pair only, the better of the two always wins
    pair = [Entry("x", {"loss": 1.0, "throughput": 2.0}), Entry("y", {"loss": 2.0,
                                                                      "throughput": 1.0})]
    assert set(picks("tournament", pair, tournament_size=2)) == {"x"}


def test_map_elites_archive_keeps_best_per_cell():
    pool = [
        Entry("shallow-a", {"loss": 2.0}, descriptor=(2, 0.0, 0, 0)),
        Entry("shallow-b", {"loss": 1.0}, descriptor=(2, 0.0, 0, 0)),
        Entry("deep-moe", {"loss": 3.0}, descriptor=(12, 0.5, 1, 0)),
        Entry("deep-ssm", {"loss": 5.0}, descriptor=(12, 0.5, 0, 1)),
        Entry("failed", {"loss": 0.1}, descriptor=(30, 1.0, 1, 1), status="failed"),
    ]
    arch = archive(pool, {"loss": "min"}, max_elites=64)
    assert sorted(arch.values()) == ["deep-moe", "deep-ssm", "shallow-b"]
    chosen = picks("map_elites", pool, objectives={"loss": "min"})
    assert set(chosen) == {"deep-moe", "deep-ssm", "shallow-b"}
    # the archive is capped, keeping the best elites on the first objective
    capped = picks("map_elites", pool, objectives={"loss": "min"}, archive_max_elites=2)
    assert set(capped) == {"shallow-b", "deep-moe"}
    # direction respected: with loss maximised the worse shallow one is the elite
    arch_max = archive(pool, {"loss": "max"}, max_elites=64)
    assert "shallow-a" in arch_max.values()


def test_map_elites_cells_from_specs():
    cfg = load(ROOT / "configs" / "tiny.yaml")
    f = elite_features(cfg.model)
    assert f[0] == 7 and f[2] == 1.0 and f[3] == 1.0  # 7 blocks, MoE and SSM present
    assert 0 < f[1] < 1  # some attention blocks are sparse, one is dense
    assert cell(f) == (2, 3, 1, 1)
    gpt2 = load(ROOT / "configs" / "gpt2_124m.yaml").model
    assert cell(elite_features(gpt2)) == (3, 0, 0, 0)
    assert cell(None) is None


def test_map_elites_computes_cells_from_specs(tiny, gpt2):
    pool = [Entry("tiny", {"loss": 2.0}, spec=tiny.model),
            Entry("gpt2", {"loss": 3.0}, spec=gpt2.model),
            Entry("gpt2-better", {"loss": 1.0}, spec=gpt2.model)]
    arch = archive(pool, {"loss": "min"}, max_elites=8)
    assert sorted(arch.values()) == ["gpt2-better", "tiny"]
