"""FSDP candidates on the local executor: a job of k shards takes k slots at once (never more
ranks than slots), a job asking for more slots than there are fails with a reason, and a tiny
candidate trained sharded over two CPU slots (gloo) ends with a checkpoint that loads
unsharded. The slot tests run fake jobs in real spawned workers (fast); training is slow."""

from __future__ import annotations

import asyncio
import copy
import os
import signal
import time
from pathlib import Path

import pytest

from evotui.engine.events import Result
from evotui.engine.jobs import Job
from evotui.engine.local import LocalExecutor
from evotui.engine.worker import _sender

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="POSIX signals")

TERMINAL = ("result", "failed")



def sharded(config: dict, shards: int, parallel: str = "fsdp") -> dict:
    data = copy.deepcopy(config)
    data["train"].update(parallel=parallel, shards=shards)
    return data


def job(config: dict, cid: str, out: Path, until: int = 3, cache_dir: str | None = None) -> Job:
    return Job(candidate_id=cid, config=config, until_step=until, total_steps=until, rung=1,
               seed=7, checkpoint_path=str(out / f"{cid}.safetensors"), cache_dir=cache_dir)


def fake(job: Job, events, flag, threads: int | None = None) -> None:
    """A job that trains nothing: it says which slots it got, holds them until told to stop
    (a kill or a pause), then ends with a result (spawned by pickled name)."""
    send = _sender(job.candidate_id, events)
    send({"kind": "log", "text": f"ranks {job.shards} on {','.join(job.devices or [job.device])}"})
    while not flag.value:
        time.sleep(0.02)
    send(Result(status="paused" if flag.value == 1 else "killed", step=0))


def drive(ex: LocalExecutor, jobs: list[Job], react, timeout: float = 120.0) -> dict:
    """Submit ``jobs`` in order; collect events until each has a terminal one. ``react(ex,
    cid, event, seen)`` sees each event; after every event the executor's held slots are
    recorded in ``seen["held"]``."""
    seen: dict = {j.candidate_id: [] for j in jobs} | {"held": []}

    async def scenario() -> None:
        for j in jobs:
            ex.submit(j)
            seen["held"].append(len(ex.busy_slots()))
        pending = {j.candidate_id for j in jobs}
        async for cid, event in ex.events():
            seen[cid].append(event)
            seen["held"].append(len(ex.busy_slots()))
            react(ex, cid, event, seen)
            if event["kind"] in TERMINAL:
                pending.discard(cid)
                if not pending:
                    break
        await ex.shutdown(kill=True)

    asyncio.run(asyncio.wait_for(scenario(), timeout))
    return seen


def test_a_sharded_job_waits_for_all_its_slots(config, tmp_path):
    """Two CPU slots: a plain job holds one; a 2-shard job waits, holding the other, and the
    engine sees no free slot; once the plain job ends, the sharded one starts on both."""
    ex = LocalExecutor(["cpu", "cpu"], cpu_threads=1, target=fake)
    plain = job(sharded(config, 1, "none"), "a", tmp_path)
    wide = job(sharded(config, 2), "b", tmp_path)

    def react(ex, cid, event, seen):
        if cid == "a" and event["kind"] == "log":  # a runs; b waits for a's slot
            assert ex.free_slots() == []
            assert sorted(ex.running()) == ["a", "b"]
            assert not any(e["kind"] == "started" for e in seen["b"])
            ex.request("a", "pause")
        if cid == "b" and event["kind"] == "log" and event["text"].startswith("ranks"):
            assert event["text"] == "ranks 2 on cpu,cpu"
            assert ex.free_slots() == []
            ex.request("b", "kill")

    seen = drive(ex, [plain, wide], react)
    assert seen["a"][-1]["status"] == "paused"
    assert seen["b"][-1]["status"] == "killed"
    started = [i for i, e in enumerate(seen["b"]) if e["kind"] == "started"]
    assert len(started) == 1 and seen["b"][0]["kind"] == "log"  # "waiting" came first
    assert "waiting for 2 cpu slots" in seen["b"][0]["text"]
    assert max(seen["held"]) <= 2  # never more ranks than slots


def test_a_job_wanting_more_slots_than_there_are_fails_with_a_reason(config, tmp_path):
    ex = LocalExecutor(["cpu", "cpu"], cpu_threads=1, target=fake)
    seen = drive(ex, [job(sharded(config, 4), "c", tmp_path)], lambda *a: None)
    (event,) = seen["c"]
    assert event["kind"] == "failed"
    assert "train.shards 4 needs 4 CPU slots" in event["reason"]
    assert "has 2" in event["reason"]
    assert ex.free_slots() == ["cpu", "cpu"]


def test_a_waiting_job_is_killed_at_once_and_its_slot_freed(config, tmp_path):
    """Three CPU slots: d takes two, e waits holding the third; killing e frees it."""
    ex = LocalExecutor(["cpu"] * 3, cpu_threads=1, target=fake)
    wide = [job(sharded(config, 2), "d", tmp_path), job(sharded(config, 2), "e", tmp_path)]

    def react(ex, cid, event, seen):
        if cid == "d" and event["kind"] == "log" and event["text"].startswith("ranks"):
            assert ex.running() == ["d", "e"] and ex.free_slots() == []
            ex.request("e", "kill")
        if cid == "e" and event["kind"] == "failed":
            assert ex.running() == ["d"] and ex.free_slots() == ["cpu"]
            ex.request("d", "pause")

    seen = drive(ex, wide, react)
    assert (seen["e"][-1]["kind"], seen["e"][-1]["reason"]) == ("failed", "killed")
    assert not any(e["kind"] == "started" for e in seen["e"])
    assert seen["d"][-1]["status"] == "paused"
    assert max(seen["held"]) <= 3


def test_auto_trains_unsharded_where_the_memory_of_a_slot_is_unknown(config, tmp_path):
    ex = LocalExecutor(["cpu", "cpu"], cpu_threads=1, target=fake)

    def react(ex, cid, event, seen):
        if event["kind"] == "log":
            assert event["text"] == "ranks 1 on cpu"
            ex.request(cid, "kill")

    drive(ex, [job(sharded(config, 1, "auto"), "f", tmp_path)], react)


@pytest.mark.slow  # two ranks import torch and train: half a minute and more
def test_a_sharded_candidate_trains_and_its_checkpoint_loads_unsharded(config, tmp_path,
                                                                         token_cache):
    from evotui.data import prepare
    from evotui.dsl import RunConfig, parse
    from evotui.train import checkpoint as ckpt
    from evotui.train.trainer import CandidateTrainer

    ex = LocalExecutor(["cpu", "cpu"], cpu_threads=1)
    data = sharded(config, 2)
    seen = drive(ex, [job(data, "g", tmp_path, cache_dir=str(token_cache))],
                 lambda *a: None, timeout=400)
    events = seen["g"]
    result = events[-1]
    assert result["kind"] == "result", result
    assert result["status"] == "done" and result["step"] == 3
    assert any(e["kind"] == "log" and e["text"].startswith("fsdp: training on 2 ranks")
               for e in events)
    assert [e["step"] for e in events if e["kind"] == "step"] == [1, 2, 3]
    assert max(seen["held"]) <= 2
    cfg = parse(data, RunConfig)
    trainer = CandidateTrainer(cfg, prepare(cfg, token_cache), seed=7)
    meta = ckpt.load(result["checkpoint"], trainer.model, trainer.optimizer)
    assert (meta["step"], meta["shards"]) == (3, 2)
    assert trainer.measure()["loss"] == pytest.approx(result["metrics"]["loss"], rel=1e-4)


def kill_rank_1(job: Job, events, flag, threads: int | None = None) -> None:
    """The real job, with rank 1 killed (SIGKILL) as the worker's first step ends."""
    from evotui.engine import sharded
    from evotui.engine.worker import run_job

    start = sharded.train_sharded

    def train_sharded(job, cfg, dataset, send, control, threads, fail):
        def spying(event):
            send(event)
            if getattr(event, "kind", event.get("kind") if isinstance(event, dict) else None
                       ) == "step":
                for child in __import__("multiprocessing").active_children():
                    if child.name.startswith("evotui-rank-1"):
                        os.kill(child.pid, signal.SIGKILL)

        return start(job, cfg, dataset, spying, control, threads, fail)

    sharded.train_sharded = train_sharded
    run_job(job, events, flag, threads)


@pytest.mark.slow
def test_a_lost_rank_fails_the_candidate_and_frees_its_slots(config, tmp_path, token_cache):
    ex = LocalExecutor(["cpu", "cpu"], cpu_threads=1, target=kill_rank_1)
    seen = drive(ex, [job(sharded(config, 2), "h", tmp_path, until=50,
                          cache_dir=str(token_cache))], lambda *a: None, timeout=400)
    failed = seen["h"][-1]
    assert failed["kind"] == "failed", failed
    assert "rank 1" in failed["reason"] or "Connection" in failed["reason"], failed
    assert ex.free_slots() == ["cpu", "cpu"]


@pytest.mark.slow  # a whole search of sharded candidates: a minute and more
def test_a_cpu_run_of_fsdp_candidates_ends_with_checkpoints_that_load_unsharded(
        config, tmp_path, token_cache):
    import json
    import subprocess
    import sys

    import yaml

    from evotui.dsl import loads
    from evotui.model.lm import build_model
    from evotui.train.checkpoint import load_state

    path = tmp_path / "fsdp.yaml"
    path.write_text(yaml.safe_dump(sharded(config, 2)))
    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "evotui", "run", str(path), "--run-dir", str(run),
         "--generations", "1", "--population", "2", "--steps", "2", "--eval-batches", "1",
         "--device", "cpu", "--cpu-slots", "2", "--seed", "5", "--quiet"],
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "EVOTUI_CACHE": str(token_cache)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    frontier = json.loads((run / "frontier.json").read_text())["frontier"]
    assert frontier and all(e["status"] == "done" for e in frontier)
    cfg = loads((run / "config.yaml").read_text())
    for entry in frontier:
        cfg.model = type(cfg.model).model_validate(entry["spec"])
        model = build_model(cfg.model, cfg.data.seq_len)
        model.load_state_dict(load_state(entry["checkpoint"]))  # every tensor, whole
    log = (run / "run.log").read_text()
    assert "fsdp: training on 2 ranks" in log  # run.log says which candidates trained sharded
