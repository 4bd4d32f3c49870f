"""``evotui bench search`` on a fake executor: every method trains the same tokens (every
candidate, every rung counted), the verdict says "within noise" under two standard errors,
and the random method's parents are drawn uniformly."""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from pathlib import Path

from evotui.bench import search
from evotui.dsl import load
from evotui.engine.engine import Rungs
from evotui.engine.events import Result
from evotui.engine.executor import Executor
from evotui.evolve.selection import Entry, get_selector
from tests.conftest import ROOT

TPS = 1024  # tokens per step


def fake_loss(job) -> float:
    key = hashlib.sha256(repr(job.config["model"]).encode()).digest()
    return 3.0 + key[0] / 255 - 0.001 * job.until_step


class FakeExecutor(Executor):
    """Finishes every job at once: ``until_step`` steps of TPS tokens, a loss from the genome."""

    log: list = []

    def __init__(self):
        super().__init__(["cpu"])

    def busy_slots(self):
        return []

    def running(self):
        return []

    def submit(self, job):
        FakeExecutor.log.append(job)
        Path(job.checkpoint_path).parent.mkdir(parents=True, exist_ok=True)
        Path(job.checkpoint_path).write_bytes(b"x")
        loss = fake_loss(job)
        metrics = {"loss": loss, "loss_code": loss + 0.1, "loss_text": loss - 0.1,
                   "loss_math": loss, "ppl_code": 20.0, "ppl_text": 18.0, "ppl_math": 19.0,
                   "passkey_acc": 0.1, "throughput": 100.0}
        evals = [{"step": s, "loss": loss + 1.0 / s} for s in range(10, job.until_step, 10)]
        self._emit(job.candidate_id, Result(status="done", metrics=metrics, step=job.until_step,
                                            tokens=job.until_step * TPS, evals=evals,
                                            checkpoint=job.checkpoint_path))

    def request(self, cid, action):
        return False

    async def shutdown(self, kill=False):
        self._end()


def test_every_method_trains_the_same_tokens(tmp_path) -> None:
    cfg = load(ROOT / "configs" / "tiny.yaml")
    cfg.evolution.population = 3
    rungs = Rungs((4, 10))
    FakeExecutor.log = []
    result = search.run(cfg, rungs, TPS, budget_tokens=100_000, seeds=2,
                        methods=["evolve", "random", "seed"], executors=FakeExecutor,
                        work=tmp_path)
    budget = result["budget"]
    # 3 x 4 steps + 2 promoted x 6 more = 24 steps a generation; 100,000 tokens fit 4
    assert budget["generations"] == 4 and budget["tokens"] == 4 * 24 * TPS
    for method, m in result["methods"].items():
        assert m["tokens_spent"] == [budget["tokens"]] * 2, method
        assert m["best_loss_mean"] is not None
        assert set(m["shards_mean"]) == {"code", "text", "math"}
    whole = [j for j in FakeExecutor.log if j.until_step == budget["tokens"] // TPS]
    assert len(whole) == 2  # the seed method: one job of the whole budget per seed
    runs = Counter(Path(j.checkpoint_path).relative_to(tmp_path).parts[0].split("-")[0]
                   for j in FakeExecutor.log)
    assert runs["seed"] == 2 and runs["evolve"] == runs["random"] > 2 * 4 * 3
    assert {v["a"] + "/" + v["b"] for v in result["verdicts"]} == {
        "evolve/random", "evolve/seed", "random/seed"}
    png = search.plot(result, tmp_path / "anytime.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_random_search_parents_and_config() -> None:
    cfg = search.method_config(load(ROOT / "configs" / "tiny.yaml"), "random")
    assert cfg.evolution.parent_selection == "random" and cfg.evolution.crossover_prob == 0.0
    pool = [Entry(f"c{i}", {"loss": float(i)}) for i in range(4)]
    picks = Counter(get_selector("random").select(pool, {"loss": "min"}, 4000,
                                                  random.Random(0)))
    assert set(picks) == {"c0", "c1", "c2", "c3"}
    assert min(picks.values()) > 850  # uniform: the worst is drawn as often as the best


def test_verdict_within_noise_under_two_standard_errors() -> None:
    def method(losses):
        runs = [{"best_loss": x, "shards": {}, "tokens_spent": 1} for x in losses]
        return search.summary(runs)

    close = search.verdicts({"a": method([1.0, 1.2, 1.1]), "b": method([1.05, 1.25, 1.15])})
    assert close[0]["verdict"] == "within noise"
    far = search.verdicts({"a": method([1.0, 1.01, 1.02]), "b": method([2.0, 2.01, 2.02])})
    assert far[0]["verdict"] == "a better"


def test_command_refuses_an_unknown_method(run_cli) -> None:
    code, _, err = run_cli("bench", "search", str(ROOT / "configs" / "tiny.yaml"),
                           "--methods", "evolve,grid")
    assert code == 2 and "--methods" in err and "grid" in err


def test_the_switch_turns_the_net2net_plan_off(tmp_path) -> None:
    """evolution.function_preserving: the engine sends resized children's plans to the
    workers when true, none when false; anything but a boolean is refused."""
    import asyncio

    import pytest
    import yaml

    from evotui.dsl import loads, to_data
    from evotui.errors import UserError

    sent = {}
    for on in (True, False):
        cfg = load(ROOT / "configs" / "tiny.yaml")
        cfg.evolution.population = 6
        cfg.evolution.function_preserving = on
        budget = search.plan(cfg, Rungs((2, 4)), TPS, 3 * (6 * 2 + 3 * 2) * TPS)
        FakeExecutor.log = []
        asyncio.run(search.search(cfg, 0, budget, FakeExecutor(), tmp_path / f"fp-{on}"))
        sent[on] = [j.transforms for j in FakeExecutor.log if j.inherit]
    assert any(sent[True]) and not any(sent[False])
    data = to_data(load(ROOT / "configs" / "tiny.yaml"))
    data["evolution"]["function_preserving"] = "sometimes"
    with pytest.raises(UserError, match="function_preserving"):
        loads(yaml.safe_dump(data))
