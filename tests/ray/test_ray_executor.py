"""The Ray executor on a real local Ray cluster (two CPU slots), training the embedded tiny
config: results, a worker process killed mid-candidate (only its candidate fails, its slot gets
a new actor), and checkpoints copied through the head when nodes share no filesystem."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from evotui.engine.jobs import Job
from tests.conftest import ROOT

ray_executor = pytest.importorskip("evotui.engine.ray_executor")

TINY = ROOT / "configs" / "tiny.yaml"
TERMINAL = ("result", "failed")
LONG = 500  # steps: still running when the test acts on it



def job(config: dict, cache: Path, out: Path, cid: str, until: int, **kw) -> Job:
    return Job(candidate_id=cid, config=config, until_step=until, total_steps=max(until, 4),
               rung=1, seed=7, checkpoint_path=str(out / f"{cid}.safetensors"),
               cache_dir=str(cache), **kw)


def drive(ex, jobs: list[Job], react=None, timeout: float = 180.0) -> dict[str, list]:
    """Wait for the slots, submit ``jobs``, collect events until each has its terminal one."""
    seen: dict[str, list] = {j.candidate_id: [] for j in jobs}

    async def scenario() -> None:
        while len(ex.free_slots()) < len(jobs):  # Ray places the actors
            await asyncio.sleep(0.1)
        for j in jobs:
            ex.submit(j)
        pending = set(seen)
        async for cid, event in ex.events():
            seen[cid].append(event)
            if react is not None:
                react(ex, cid, event)
            if event["kind"] in TERMINAL:
                pending.discard(cid)
                if not pending:
                    break

    try:
        asyncio.run(asyncio.wait_for(scenario(), timeout))
    except TimeoutError:
        got = {cid: [(e["kind"], e.get("step")) for e in events] for cid, events in seen.items()}
        pytest.fail(f"no terminal event within {timeout:g} s; slots free: {ex.free_slots()}; "
                    f"events: {got}")
    return seen


def terminal(events: list) -> dict:
    ends = [e for e in events if e["kind"] in TERMINAL]
    assert len(ends) == 1, ends
    assert events[-1] is ends[0]
    return ends[0]


def shut(ex) -> None:
    asyncio.run(ex.shutdown(kill=True))


@pytest.mark.slow
def test_a_killed_worker_process_fails_only_its_candidate(ray_cluster, config, token_cache,
                                                          tmp_path):
    """Two candidates on two slots; the process of one is SIGKILLed mid-candidate: that one
    fails as 'actor died', the other finishes, and the dead slot gets a new actor that trains
    the next candidate; pause reaches a Ray worker at its next step."""
    ex = ray_executor.RayExecutor(["cpu", "cpu"], heartbeat_timeout=60.0)
    pids: dict[str, int] = {}

    def react(ex, cid, event):
        if event["kind"] == "started":
            pids[cid] = event["pid"]
        if cid == "victim" and event["kind"] == "step" and event["step"] == 2:
            os.kill(pids[cid], signal.SIGKILL)

    try:
        seen = drive(ex, [job(config, token_cache, tmp_path, "victim", LONG),
                          job(config, token_cache, tmp_path, "other", 3)], react)
        victim, other = terminal(seen["victim"]), terminal(seen["other"])
        assert victim["kind"] == "failed" and victim["reason"] == "actor died", victim
        assert (other["kind"], other["status"], other["step"]) == ("result", "done", 3), other
        assert Path(other["checkpoint"]).is_file() and other["metrics"]["loss"] > 0
        assert ex.running() == []

        asked: list[float] = []

        def pause(ex, cid, event):
            if cid == "next" and event["kind"] == "step" and not asked:
                asked.append(time.monotonic())
                assert ex.request(cid, "pause")

        seen = drive(ex, [job(config, token_cache, tmp_path, "next", LONG),
                          job(config, token_cache, tmp_path, "more", 2)], pause)
        paused = terminal(seen["next"])
        assert (paused["kind"], paused["status"]) == ("result", "paused"), paused
        assert 1 <= paused["step"] < LONG and Path(paused["checkpoint"]).is_file()
        assert terminal(seen["more"])["status"] == "done"
        assert pids["victim"] not in {seen[c][0]["pid"] for c in ("next", "more")}
    finally:
        shut(ex)


def test_checkpoints_copied_through_the_head(ray_cluster, config, token_cache, tmp_path):
    """Copy mode: the worker trains on copies in its own scratch directory and the checkpoint
    comes back to the path the engine reads; a child inherits from it and a paused candidate
    resumes from it the same way."""
    ex = ray_executor.RayExecutor(["cpu"], checkpoints="copy")
    head = tmp_path / "head"
    head.mkdir()
    try:
        parent = terminal(drive(ex, [job(config, token_cache, head, "p", 3)])["p"])
        assert parent["status"] == "done" and parent["checkpoint"] == str(head / "p.safetensors")
        from evotui.train.checkpoint import load_state

        names = sorted(load_state(parent["checkpoint"]))
        spec = [(n, parent["checkpoint"], n) for n in names[: len(names) // 2]]
        child = terminal(drive(ex, [job(config, token_cache, head, "c", 2, inherit=spec)])["c"])
        assert child["status"] == "done" and child["inherited"] == len(spec), child
        again = job(config, token_cache, head, "p", 5, resume_from=parent["checkpoint"])
        events = drive(ex, [again])["p"]
        resumed = terminal(events)
        assert resumed["status"] == "done" and resumed["step"] == 5, resumed
        assert [e["step"] for e in events if e["kind"] == "step"] == [4, 5]
        checkpoints = [e for e in events if e["kind"] == "checkpoint"]
        assert checkpoints and all(e["path"] == str(head / "p.safetensors") for e in checkpoints)
    finally:
        shut(ex)


def test_checkpoint_mode_probes_every_node(ray_cluster, tmp_path):
    assert ray_executor.checkpoint_mode(tmp_path / "ck") == (
        "shared", f"all 1 node(s) read {tmp_path / 'ck'}")
    assert ray_executor.checkpoint_mode(tmp_path, "copy") == ("copy", "chosen")
    assert not list((tmp_path / "ck").iterdir())  # the probe file is gone
