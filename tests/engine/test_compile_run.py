"""A compiled candidate through the engine, in this process: the worker's own job function
trains it, the engine records it. What compiling did (graphs, breaks, recompiles, compile
seconds) lands in the candidate's metrics, and a compile that fails reaches ``run.log``."""

from __future__ import annotations

import asyncio
import re

import pytest
import torch

from evotui.engine import worker
from evotui.engine.engine import Engine, Rungs, RunOptions
from evotui.engine.executor import Executor
from evotui.engine.store import RunStore
from evotui.train import compiled
from tests.train.test_compile import small


class _Flag:
    value = 0


class InProcessExecutor(Executor):
    """Runs each job at once, in this process, through :func:`evotui.engine.worker.execute`
    (what a worker process runs), so a monkeypatched compile backend applies."""

    def __init__(self) -> None:
        super().__init__(["cpu"])

    def busy_slots(self):
        return []

    def running(self):
        return []

    def submit(self, job):
        def send(event):
            self._emit(job.candidate_id, event)

        final = worker.execute(job, send, _Flag())
        if final["kind"] == "error":  # as the Ray executor does
            final = {"kind": "failed", "reason": final["error"], "traceback": final["traceback"]}
        send(final)

    def request(self, cid, action):
        return False

    async def shutdown(self, kill=False):
        self._end()


def run_one(tmp_path, token_cache):
    cfg = small([6])  # one dense block: traced in seconds
    cfg.evolution.population = 2
    cfg.evolution.objectives = {"ppl_code": "min", "throughput": "max"}
    store = RunStore.create(tmp_path / "run", "x: 1\n", {"name": "t"})
    options = RunOptions(run_dir=tmp_path / "run", poll_s=0.01, cache_dir=token_cache)
    engine = Engine(cfg, options, InProcessExecutor(), store, Rungs((2, 3)))
    try:
        asyncio.run(engine.run(1))
        cands = store.candidates()
    finally:
        store.close()
    return cands, (tmp_path / "run" / "run.log").read_text()


@pytest.mark.parametrize("works", [True, False], ids=["compiles", "compile-fails"])
def test_compile_metrics_and_failures_reach_the_run(tmp_path, token_cache, monkeypatch,
                                                    works):
    def broken(gm: torch.fx.GraphModule, example_inputs: list) -> object:
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(compiled, "BACKEND", "eager" if works else broken)
    cands, log = run_one(tmp_path, token_cache)
    assert len(cands) == 2
    for cand in cands:
        m = cand["metrics"]
        assert cand["status"] in ("done", "stopped"), log
        for key in ("compiled", "compile_graphs", "compile_graph_breaks", "compile_recompiles",
                    "compile_eager_frames", "compile_s", "warmup_s", "steady_steps"):
            assert key in m, key
        lines = [line for line in log.splitlines() if f"[compile] {cand['id']} " in line]
        assert lines, log  # one line per job (rung), on its first step
        for line in lines:
            if works:  # the training graphs; the metric adds the evaluation's (no autograd)
                found = re.search(r"compile: (\d+) graph\(s\) for (\d+) block\(s\), 0 graph "
                                  r"break\(s\)$", line)
                assert found, line
                assert 1 <= int(found[1]) <= m["compile_graphs"]
                assert int(found[2]) == len(cand["spec"]["blocks"])
            else:
                assert "compile: failed, this candidate runs eager" in line
                assert "no C++ compiler found" in line
        if works:
            assert m["compiled"] == 1.0 and m["compile_graphs"] >= 1
            assert m["compile_recompiles"] == 0 and m["compile_eager_frames"] == 0
        else:
            assert m["compiled"] == 0.0
