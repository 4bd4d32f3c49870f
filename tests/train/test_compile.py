"""Compiling candidates in one long-lived process: each compiles fresh, per block, without
hitting the recompile limit, never falls back to eager silently; throughput counts steady-state
steps only."""

from __future__ import annotations

import pytest
import torch
import yaml

from evotui.bench.train import RandomTokens
from evotui.dsl import load, loads, to_data
from evotui.train import compiled, throughput
from evotui.train.budget import tokens_per_step
from evotui.train.trainer import CandidateTrainer
from tests.conftest import ROOT


def small(blocks: list[int], **train: object):
    """tiny.yaml cut to some of its blocks, short sequences, compile on."""
    data = to_data(load(ROOT / "configs" / "tiny.yaml"))
    data["model"]["blocks"] = [dict(data["model"]["blocks"][i], id=f"b{j}", name=f"b{j}")
                               for j, i in enumerate(blocks)]
    data["model"]["recurrences"] = []
    data["data"].update(seq_len=64, batch_size=2)
    data["train"].update(compile=True, passkey_eval_seq_len=None, eval_batches=1, **train)
    return loads(yaml.safe_dump(data))


class Recorder:
    """A torch.compile backend that runs the traced graph eagerly and counts calls of it."""

    def __init__(self) -> None:
        self.graphs, self.calls = 0, 0

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: list) -> object:
        self.graphs += 1

        def run(*args: object) -> object:
            self.calls += 1
            return gm.forward(*args)

        return run


def trainer(cfg, logs: list[str] | None = None) -> CandidateTrainer:
    def callback(event: dict) -> None:
        if event["kind"] == "log" and logs is not None:
            logs.append(event["text"])

    return CandidateTrainer(cfg, RandomTokens(cfg.model.emb.vocab, torch.device("cpu")),
                            callback=callback)


def test_compiled_blocks_run_compiled_and_match_eager(monkeypatch) -> None:
    """Every block's forward runs through its compiled graph, every step; a recurrence
    loop, MoE and sparse attention included, with nothing left to eager."""
    rec = Recorder()
    monkeypatch.setattr(compiled, "BACKEND", rec)
    cfg = small([0, 1])
    logs: list[str] = []
    t = trainer(cfg, logs)
    losses = [t.timed_step(4)[0] for _ in range(3)]
    eager_cfg = loads(yaml.safe_dump(to_data(cfg) | {"train": to_data(cfg)["train"]
                                                     | {"compile": False}}))
    e = trainer(eager_cfg)
    want = [e.timed_step(4)[0] for _ in range(3)]
    assert losses == pytest.approx(want, rel=1e-4)
    m = t.compiler.metrics()
    assert m["compiled"] == 1.0 and m["compile_eager_frames"] == 0
    assert m["compile_graph_breaks"] == 0 and m["compile_recompiles"] == 0
    assert rec.graphs == m["compile_graphs"] >= 1
    assert rec.calls == 3 * len(cfg.model.blocks)  # no block ran around its graph
    assert logs == [f"compile: {rec.graphs} graph(s) for 2 block(s), 0 graph break(s)"]


def test_candidates_in_one_process_compile_fresh(monkeypatch) -> None:
    """A worker's consecutive candidates: each compiles from a reset Dynamo state, so none
    meets the last one's cache entries or recompile count, and none recompiles after its first
    step; blocks of one structure share a graph."""
    monkeypatch.setattr(compiled, "BACKEND", "eager")
    seen = []
    for i in range(4):
        cfg = small([6, 1, 1] if i % 2 else [6, 6, 6], seed=i)
        t = trainer(cfg)
        for _ in range(2):
            t.timed_step(2)
        m = t.compiler.metrics()
        seen.append((m["compile_graphs"], m["compile_recompiles"], m["compile_eager_frames"]))
    assert seen[:2] == seen[2:]  # the same again: nothing carried over
    assert all(graphs <= 2 and recompiles == 0 and eager == 0
               for graphs, recompiles, eager in seen), seen


def test_frames_left_to_eager_and_recompiles_are_reported(monkeypatch) -> None:
    """What the other tests' zeros rest on: a block Dynamo leaves to eager (here the recompile
    limit, hit on purpose) and a recompile after the first step (a batch of another shape) are
    counted in the metrics and said on a ``compile:`` line, never silent."""
    monkeypatch.setattr(compiled, "BACKEND", "eager")
    logs: list[str] = []
    t = trainer(small([6, 1]), logs)  # two block structures: two graphs of one forward
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 1)
    t.timed_step(4)
    assert t.compiler.metrics()["compile_eager_frames"] == 1
    assert logs == ["compile: 1 graph(s) for 2 block(s), 0 graph break(s); 1 frame(s) run "
                    "eager: Dynamo recompile limit exceeded"]
    logs.clear()
    t = trainer(small([6]), logs)
    t.timed_step(4)
    batch = t.data.train_batch
    t.data.train_batch = lambda step, seed, b, n: batch(step, seed, b, n // 2)
    t.timed_step(4)
    assert t.compiler.metrics()["compile_recompiles"] >= 1
    assert len(logs) == 2 and logs[1].startswith("compile: step 2 compiled ")


def test_compile_failure_runs_eager_and_says_so(monkeypatch) -> None:
    def broken(gm: torch.fx.GraphModule, example_inputs: list) -> object:
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(compiled, "BACKEND", broken)
    logs: list[str] = []
    t = trainer(small([0, 1]), logs)
    result = t.run(3, total_steps=3, measure=False)
    assert result.status == "done" and result.step == 3
    assert t.compiler.metrics()["compiled"] == 0.0
    assert len(logs) == 1 and logs[0].startswith("compile: failed, this candidate runs eager")
    assert "no C++ compiler found" in logs[0]


def test_throughput_excludes_compile_and_warm_up(monkeypatch) -> None:
    """On a clock where a step takes 1 s and compiling a graph 100 s, throughput is exactly
    tokens per step per second, and the compile time is reported beside it."""
    now = [0.0]

    def clock() -> float:
        now[0] += 1.0  # read at the start and the end of a step: 1 s a step
        return now[0]

    def slow(gm: torch.fx.GraphModule, example_inputs: list) -> object:
        now[0] += 100.0
        return gm.forward

    monkeypatch.setattr(throughput, "perf_counter", clock)
    monkeypatch.setattr("evotui.train.trainer.perf_counter", clock)
    monkeypatch.setattr(compiled, "BACKEND", slow)
    cfg = small([0, 1])
    t = trainer(cfg)
    t.run(5, total_steps=5, measure=False)
    m = t.clock.metrics() | t.compiler.metrics()
    assert m["throughput"] == pytest.approx(tokens_per_step(cfg))  # 1 s per steady step
    assert m["steady_steps"] == 4
    assert m["compile_s"] == pytest.approx(100.0 * m["compile_graphs"])
    assert m["warmup_s"] == pytest.approx(1 + 100.0 * m["compile_graphs"])


def test_step_clock_definition() -> None:
    c = throughput.StepClock()
    for seconds, compiled_now in [(50.0, True), (2.0, False), (9.0, True), (2.0, False)]:
        c.record(seconds, 100, compiled_now)
    assert c.tokens_per_s() == 50.0 and c.steady_steps == 2
    assert c.compile_s() == pytest.approx(50 + 9 - 2 * 2)
    one = throughput.StepClock()
    one.record(4.0, 100, False)
    assert one.tokens_per_s() == 25.0 and one.steady_steps == 0  # no steady step: all of it
    assert throughput.StepClock.restore(c.state()) == c


def test_deep_copy_under_eager_runs_its_own_weights(monkeypatch) -> None:
    """The passkey probe fine-tunes a deep copy of the model; a copied compiled block would
    still call the original's forward, so the copy is made of eager blocks."""
    import copy

    rec = Recorder()
    monkeypatch.setattr(compiled, "BACKEND", rec)
    t = trainer(small([6]))
    x = torch.randint(0, 257, (1, 16))
    with t.compiler.eager():
        twin = copy.deepcopy(t.model)
    with torch.no_grad():
        for p in twin.parameters():
            p.mul_(2.0)
        assert not torch.allclose(twin(x)[0], t.model(x)[0])
    calls = rec.calls
    twin(x)
    assert rec.calls == calls  # the copy never entered the original's graph
    t.model(x)
    assert rec.calls == calls + 1  # the original is compiled again after the block
