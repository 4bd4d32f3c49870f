"""The local executor on CPU with real spawned workers training the embedded tiny config: results,
inheritance, pause and resume, kill, crashes, errors and silent workers."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from evotui.engine.events import Log
from evotui.engine.jobs import Job
from evotui.engine.local import LocalExecutor, device_slots
from evotui.engine.worker import run_job
from tests.conftest import ROOT

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="POSIX signals")

TINY = ROOT / "configs" / "tiny.yaml"
TERMINAL = ("result", "failed")
LONG = 500  # steps: a job that is still running when the test acts on it
Events = dict[str, list[dict]]


@pytest.fixture(scope="module")
def cache_dir(token_cache) -> str:
    """The session's token cache: tiny's corpus tokenised once, so workers only read it."""
    return str(token_cache)



def make_job(config: dict, cache_dir: str, out: Path, cid: str, until: int, **kw) -> Job:
    total = kw.pop("total", until)
    return Job(candidate_id=cid, config=config, until_step=until, total_steps=total, rung=1,
               seed=7, checkpoint_path=str(out / f"{cid}.safetensors"), cache_dir=cache_dir,
               **kw)


def executor(**kw) -> LocalExecutor:
    """One CPU slot with one torch thread: steady step times on a small, busy machine (two
    OpenMP threads on two shared cores can stall a step for seconds)."""
    return LocalExecutor(["cpu"], cpu_threads=1, **kw)


Reaction = Callable[[LocalExecutor, str, dict], None]


def drive(ex: LocalExecutor, jobs: list[Job], react: Reaction | None = None,
          timeout: float = 40.0) -> Events:
    """Submit ``jobs``, collect events until each has its terminal event; ``react`` sees every
    event as it arrives (and may send commands)."""
    seen: Events = {job.candidate_id: [] for job in jobs}

    async def scenario() -> None:
        for job in jobs:
            ex.submit(job)
        pending = set(seen)
        async for cid, event in ex.events():
            seen[cid].append(event)
            if react is not None:
                react(ex, cid, event)
            if event["kind"] in TERMINAL:
                pending.discard(cid)
                if not pending:
                    break
        await ex.shutdown(kill=True)

    asyncio.run(asyncio.wait_for(scenario(), timeout))
    return seen


def terminal(events: list[dict]) -> dict:
    ends = [e for e in events if e["kind"] in TERMINAL]
    assert len(ends) == 1, ends
    assert events[-1] is ends[0]
    return ends[0]


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def on_step(n: int, act: Callable[[LocalExecutor, str, dict], None]) -> Reaction:
    """A reaction that acts once, at the first step event at or past step ``n``."""
    done: list[bool] = []

    def react(ex: LocalExecutor, cid: str, event: dict) -> None:
        if event["kind"] == "step" and event["step"] >= n and not done:
            done.append(True)
            act(ex, cid, event)

    return react


def crash_at_step_2(job: Job, events, flag, threads: int | None = None) -> None:
    """A worker that dies like a segfault would, after two steps (spawned by pickled name)."""
    from evotui.train.trainer import CandidateTrainer

    step = CandidateTrainer.train_step

    def crashing(self, total_steps):
        if self.step == 2:
            os._exit(3)
        return step(self, total_steps)

    CandidateTrainer.train_step = crashing
    run_job(job, events, flag, threads)


@pytest.fixture(scope="module")
def parent(config, cache_dir, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("parent")
    ex = executor()
    events = drive(ex, [make_job(config, cache_dir, out, "p", 3)])["p"]
    return {"events": events, "result": terminal(events)}


def test_device_slots():
    assert device_slots("0,1") == ["cuda:0", "cuda:1"]
    assert device_slots(["cpu", "cuda"]) == ["cpu", "cuda:0"]
    with pytest.raises(ValueError, match="unknown device"):
        device_slots("gpu0")


def test_events_survive_a_cancelled_wait():
    ex = executor()

    async def scenario() -> None:
        events = ex.events()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(anext(events), 0.05)
        threading.Timer(0.05, ex._emit, args=("a", {"kind": "log"})).start()  # another thread
        cid, event = await asyncio.wait_for(anext(events), 5.0)
        assert (cid, event) == ("a", Log(""))  # a plain dict comes out as its typed event
        await ex.shutdown()
        with pytest.raises(StopAsyncIteration):
            await anext(events)

    asyncio.run(scenario())
    assert ex.free_slots() == ["cpu"] and ex.running() == []
    with pytest.raises(RuntimeError, match="shut down"):
        ex.submit(Job("late", {}, 1, 1, 1, 0, "late.safetensors"))


def test_a_job_runs_to_a_result(parent):
    events, result = parent["events"], parent["result"]
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "started" and "heartbeat" not in kinds
    assert [e["step"] for e in events if e["kind"] == "step"] == [1, 2, 3]
    assert result["kind"] == "result" and result["status"] == "done", result
    assert result["step"] == 3 and Path(result["checkpoint"]).is_file()
    for key in ("loss", "ppl_code", "throughput", "passkey_acc", "params_total"):
        assert key in result["metrics"], key
    assert result["inherited"] == 0 and result["fresh"] > 0
    assert gone(events[0]["pid"])


def test_a_child_inherits_from_the_parents_checkpoint(parent, config, cache_dir, tmp_path):
    from evotui.train.checkpoint import load_state

    path = parent["result"]["checkpoint"]
    names = sorted(load_state(path))
    total = parent["result"]["fresh"]
    chosen = names[: len(names) // 2]
    spec = [(n, path, n) for n in chosen] + [("emb.nope", path, "no.such.tensor")]
    job = make_job(config, cache_dir, tmp_path, "c", 1, inherit=spec)
    result = terminal(drive(executor(), [job])["c"])
    assert result["status"] == "done", result
    assert result["inherited"] == len(chosen)
    assert result["fresh"] == total - len(chosen)


def test_pause_then_resume_continues_from_the_checkpoint(config, cache_dir, tmp_path):
    def pause(ex: LocalExecutor, cid: str, event: dict) -> None:
        assert ex.request(cid, "pause")

    job = make_job(config, cache_dir, tmp_path, "q", LONG)
    ex = executor()
    events = drive(ex, [job], on_step(2, pause))["q"]
    result = terminal(events)
    assert result["status"] == "paused", result
    assert 2 <= result["step"] < LONG and Path(result["checkpoint"]).is_file()
    assert result["metrics"] == {}
    done = [e for e in events if e["kind"] == "done"]
    assert [(e["status"], e["step"]) for e in done] == [("paused", result["step"])]
    assert ex.free_slots() == ex.slots

    paused_at = result["step"]
    again = make_job(config, cache_dir, tmp_path, "q", paused_at + 2, total=LONG,
                     resume_from=result["checkpoint"])
    events = drive(executor(), [again])["q"]
    result = terminal(events)
    assert result["status"] == "done", result
    assert result["step"] == paused_at + 2
    assert [e["step"] for e in events if e["kind"] == "step"] == [paused_at + 1, paused_at + 2]
    assert result["metrics"]["loss"] > 0


def test_a_worker_obeys_a_kill_at_its_next_step(config, cache_dir, tmp_path):
    def kill(ex: LocalExecutor, cid: str, event: dict) -> None:
        assert ex.request(cid, "kill")

    # a grace period longer than the test's own time limit: only the worker itself ends it
    ex = executor(grace=600.0)
    events = drive(ex, [make_job(config, cache_dir, tmp_path, "k", LONG)], on_step(1, kill))["k"]
    result = terminal(events)
    assert (result["kind"], result["status"]) == ("result", "killed"), result
    assert result["step"] < LONG and result["metrics"] == {}
    assert gone(events[0]["pid"]) and ex.free_slots() == ["cpu"]
    assert not ex.request("k", "kill")  # no longer running


def test_kill_escalates_when_the_worker_does_not_obey(config, cache_dir, tmp_path):
    def freeze_and_kill(ex: LocalExecutor, cid: str, event: dict) -> None:
        os.kill(events_pid[0], signal.SIGSTOP)  # it can no longer read its flag
        ex.request(cid, "kill")

    events_pid: list[int] = []

    def react(ex: LocalExecutor, cid: str, event: dict) -> None:
        if event["kind"] == "started":
            events_pid.append(event["pid"])
        escalate(ex, cid, event)

    escalate = on_step(1, freeze_and_kill)
    ex = executor(grace=0.5)
    result = terminal(drive(ex, [make_job(config, cache_dir, tmp_path, "x", LONG)], react)["x"])
    assert result["kind"] == "failed" and result["reason"] == "killed", result
    assert result["exitcode"] == -signal.SIGKILL  # SIGTERM waits on a stopped process
    assert gone(events_pid[0]) and ex.free_slots() == ["cpu"]


def test_a_crashing_worker_is_failed_and_its_slot_reclaimed(config, cache_dir, tmp_path):
    ex = executor(target=crash_at_step_2)
    job = make_job(config, cache_dir, tmp_path, "s", LONG)
    busy: list[list[str]] = []

    def react(ex: LocalExecutor, cid: str, event: dict) -> None:
        if event["kind"] == "started":
            busy.append(ex.free_slots())
            with pytest.raises(ValueError, match="no free slot"):
                ex.submit(make_job(config, cache_dir, tmp_path, "other", 1))

    events = drive(ex, [job], react)["s"]
    result = terminal(events)
    assert (result["kind"], result["reason"], result["exitcode"]) == (
        "failed", "worker exited with code 3", 3)
    assert [e["step"] for e in events if e["kind"] == "step"] == [1, 2]
    assert busy == [[]] and ex.free_slots() == ["cpu"]


def test_a_config_that_fails_in_the_worker_is_reported(config, cache_dir, tmp_path):
    prose_only = [s for s in config["data"]["shards"] if s["name"] == "builtin:prose"]
    bad = dict(config, data=dict(config["data"], shards=prose_only))  # ppl_code: no such tag
    ex = executor()
    result = terminal(drive(ex, [make_job(bad, cache_dir, tmp_path, "e", 3)])["e"])
    assert result["kind"] == "failed" and result["exitcode"] == 1, result
    assert result["reason"].startswith("candidate e: evolution.objectives.ppl_code: ")
    assert "\n" not in result["reason"] and "Traceback" in result["traceback"]
    assert ex.free_slots() == ["cpu"]


def test_a_silent_worker_is_failed_and_its_slot_reclaimed(config, cache_dir, tmp_path):
    def freeze(ex: LocalExecutor, cid: str, event: dict) -> None:
        os.kill(pid[0], signal.SIGSTOP)  # alive, but says nothing any more

    pid: list[int] = []
    silence = on_step(1, freeze)

    def react(ex: LocalExecutor, cid: str, event: dict) -> None:
        if event["kind"] == "started":
            pid.append(event["pid"])
        silence(ex, cid, event)

    ex = executor(heartbeat_timeout=3.0)
    result = terminal(drive(ex, [make_job(config, cache_dir, tmp_path, "z", LONG)], react)["z"])
    assert result["kind"] == "failed" and result["reason"] == "no heartbeat for 3 s", result
    assert gone(pid[0]) and ex.free_slots() == ["cpu"]


def test_a_slot_keeps_its_worker_between_jobs(config, cache_dir, tmp_path):
    """Two jobs one after the other on one CPU slot: the same process serves both, and the
    second skips the start-up (spawn, torch import, data preparation)."""
    ex = executor()
    seen: Events = {"a": [], "b": []}

    async def scenario() -> None:
        events = ex.events()
        for cid in seen:
            ex.submit(make_job(config, cache_dir, tmp_path, cid, 2))
            async for got, event in events:
                seen[got].append(event)
                if got == cid and event["kind"] in TERMINAL:
                    break
            assert ex.free_slots() == ["cpu"] and ex.running() == []
        await ex.shutdown()

    asyncio.run(asyncio.wait_for(scenario(), 60.0))
    results = [terminal(seen[cid]) for cid in seen]
    assert [r.get("status") for r in results] == ["done", "done"], results
    pids = [seen[cid][0]["pid"] for cid in seen]
    assert pids[0] == pids[1]
    assert [e["step"] for e in seen["b"] if e["kind"] == "step"] == [1, 2]
    logs = [e["text"] for e in seen["b"] if e["kind"] == "log"]
    assert "data: reusing the dataset this worker prepared" in logs  # no second preparation
    assert gone(pids[0]) and ex.free_slots() == ["cpu"]  # shutdown ended the idle worker


def test_a_hangup_ctrl_c_or_sigterm_does_not_reach_the_worker(config, cache_dir, tmp_path):
    """A terminal, ``timeout``, systemd or Slurm signal the whole process group; only the
    engine decides what that means, so the worker trains on and its candidate can still pause
    cleanly."""

    def hang_up(ex: LocalExecutor, cid: str, event: dict) -> None:
        pid = ex._running(cid).process.pid
        os.kill(pid, signal.SIGHUP)
        os.kill(pid, signal.SIGINT)
        os.kill(pid, signal.SIGTERM)
        time.sleep(0.3)
        assert ex.request(cid, "pause")

    ex = executor()
    events = drive(ex, [make_job(config, cache_dir, tmp_path, "h", LONG)], on_step(1, hang_up))
    result = terminal(events["h"])
    assert (result["kind"], result["status"]) == ("result", "paused")
    assert Path(result["checkpoint"]).is_file()


def test_a_job_waiting_for_a_warm_up_is_not_taken_for_a_silent_worker(config, tmp_path):
    """The warm-up tokenises into an empty cache for longer than the heartbeat timeout; the
    job handed to that worker meanwhile waits, heartbeats keep coming, and it trains."""
    cold = str(tmp_path / "empty-cache")
    ex = executor(heartbeat_timeout=1.5)
    ex.warm(config, cold)
    events = drive(ex, [make_job(config, cold, tmp_path, "w", 1)], timeout=90.0)["w"]
    result = terminal(events)
    assert (result["kind"], result.get("status")) == ("result", "done"), result
    logs = [e["text"] for e in events if e["kind"] == "log"]
    assert "data: reusing the dataset this worker prepared" in logs  # the warm-up prepared it
