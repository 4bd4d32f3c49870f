"""Engine decisions without worker processes: an instant fake executor."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from evotui.dsl import load
from evotui.engine.engine import Engine, Rungs, RunOptions
from evotui.engine.events import Result
from evotui.engine.executor import Executor
from evotui.engine.store import RunStore
from evotui.errors import UserError
from tests.conftest import ROOT

TINY = ROOT / "configs" / "tiny.yaml"


class InstantExecutor(Executor):
    """Finishes every job at once with the metrics ``outcome(candidate)`` gives."""

    def __init__(self, outcome):
        super().__init__(["cpu"])
        self.outcome = outcome
        self.submitted: list = []
        self.warmed: list = []

    def warm(self, config, cache_dir=None):
        self.warmed.append(config)

    def busy_slots(self):
        return []

    def running(self):
        return []

    def submit(self, job):
        self.submitted.append(job)
        status, metrics = self.outcome(job.candidate_id)
        Path(job.checkpoint_path).parent.mkdir(parents=True, exist_ok=True)
        Path(job.checkpoint_path).write_bytes(b"x")
        self._emit(job.candidate_id, Result(
            status=status, metrics=metrics, step=job.until_step,
            checkpoint=job.checkpoint_path if status != "failed" else None))

    def request(self, cid, action):
        return False

    async def shutdown(self, kill=False):
        self._end()


OPEN: list[RunStore] = []


@pytest.fixture(autouse=True)
def close_stores():
    """Every store a test opens is closed when it ends, whatever happened."""
    yield
    while OPEN:
        OPEN.pop().close()


def engine_with(tmp_path, outcome, population=3, objectives=None):
    cfg = load(TINY)
    cfg.evolution.population = population
    if objectives:
        cfg.evolution.objectives = objectives
    store = RunStore.create(tmp_path / "run", "x: 1\n", {"name": "t"})
    OPEN.append(store)
    options = RunOptions(run_dir=tmp_path / "run", poll_s=0.01)
    return Engine(cfg, options, InstantExecutor(outcome), store, Rungs((2, 4)))


def metrics(i):
    return {"ppl_code": 10.0 + i, "ppl_text": 12.0 - i, "ppl_math": 5.0, "passkey_acc": 0.1,
            "throughput": 100.0}


def test_two_generations_with_an_instant_executor(tmp_path):
    eng = engine_with(tmp_path, lambda cid: ("done", metrics(int(cid[1:]))))
    asyncio.run(eng.run(2))
    assert [w["model"]["name"] for w in eng.executor.warmed] == ["tiny"]  # warmed once, first
    cands = eng.store.candidates()
    assert {c["generation"] for c in cands} == {0, 1}
    assert all(c["status"] in ("done", "stopped") for c in cands)
    gen1 = [c for c in cands if c["generation"] == 1]
    assert gen1 and all(c["parents"] for c in gen1)


def test_no_measured_parent_is_a_clear_error(tmp_path):
    # every candidate finishes, but an objective (mfu) is never measured on this machine
    eng = engine_with(tmp_path, lambda cid: ("done", metrics(1)),
                      objectives={"ppl_code": "min", "mfu": "max"})
    with pytest.raises(UserError, match="never measured: mfu"):
        asyncio.run(eng.run(2))


def test_failed_candidates_are_never_parents(tmp_path):
    # the seed fails; its siblings finish: generation 1 descends only from them
    eng = engine_with(tmp_path, lambda cid: ("failed", {}) if cid == "c0000"
                      else ("done", metrics(int(cid[1:]))))
    asyncio.run(eng.run(2))
    gen1 = eng.store.candidates(generation=1)
    assert gen1 and all("c0000" not in c["parents"] for c in gen1)


def test_generation_zero_stops_when_variation_repeats_itself(tmp_path, monkeypatch):
    from evotui.engine import breeding as engine_mod

    real = engine_mod.mutate
    first = {}

    def same(cfg, parent, rng, **kw):  # always the same child: only one is kept
        first.setdefault("child", real(cfg, parent, rng, **kw))
        return first["child"]

    monkeypatch.setattr(engine_mod, "mutate", same)
    eng = engine_with(tmp_path, lambda cid: ("done", metrics(1)), population=4)
    eng.breed(0)
    assert len(eng.store.candidates(generation=0)) == 2  # the seed and one distinct child
    assert "has 2 of 4 candidates" in (tmp_path / "run" / "run.log").read_text()
