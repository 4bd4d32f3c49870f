"""Faults and commands at every phase, decided without worker processes: a scripted executor
forces the phase (a pause that arrives during the end-of-rung measurement, a stop in rung 2,
a worker ended by a signal while the run stops), so nothing here depends on timing."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from evotui.dsl import load
from evotui.engine.engine import Engine, Rungs, RunOptions
from evotui.engine.events import Event, Failed, Result
from evotui.engine.executor import Executor
from evotui.engine.jobs import Job
from evotui.engine.lock import RunLock, holder
from evotui.engine.store import RunStore
from evotui.errors import UserError
from evotui.lifecycle import Status
from tests.conftest import ROOT

TINY = ROOT / "configs" / "tiny.yaml"
RUNGS = (2, 10)


def metrics(cid: str, rung: int) -> dict[str, float]:
    """Lower is better for c0000, then c0001, ...; rung 2 measures better than rung 1."""
    i = int(cid[1:])
    return {"ppl_code": 10.0 + i - rung, "ppl_text": 12.0 + i - rung, "ppl_math": 5.0 + i,
            "passkey_acc": 0.5 - i / 100, "throughput": 100.0 - i, "rung_measured": rung}


class Scripted(Executor):
    """Jobs end when the test says: ``script(executor, job)`` returns the job's events now
    (the last one terminal), or None to hold the job until ``request`` is called for it."""

    def __init__(self, script: Callable[[Scripted, Job], list[Event] | None] | None = None):
        super().__init__(["cpu"])
        self.script = script or (lambda ex, job: None)
        self.jobs: dict[str, Job] = {}
        self.submitted: list[tuple[str, int]] = []
        self.requests: list[tuple[str, str]] = []
        self.on_request: Callable[[Scripted, Job, str], list[Event] | None] | None = None

    def busy_slots(self) -> list[str]:
        return [job.device for job in self.jobs.values()]

    def running(self) -> list[str]:
        return list(self.jobs)

    def submit(self, job: Job) -> None:
        self.jobs[job.candidate_id] = job
        self.submitted.append((job.candidate_id, job.rung))
        self.send(job, self.script(self, job))

    def request(self, candidate_id: str, action: str) -> bool:
        job = self.jobs.get(candidate_id)
        if job is None:
            return False
        self.requests.append((candidate_id, action))
        if self.on_request is not None:
            self.send(job, self.on_request(self, job, action))
        return True

    def send(self, job: Job, events: list[Event] | None) -> None:
        for event in events or []:
            if event.kind in ("result", "failed"):
                self.jobs.pop(job.candidate_id, None)
            self._emit(job.candidate_id, event)

    async def shutdown(self, kill: bool = False) -> None:
        self._end()


def finished(job: Job, status: str = "done") -> list[Event]:
    Path(job.checkpoint_path).parent.mkdir(parents=True, exist_ok=True)
    Path(job.checkpoint_path).write_bytes(b"weights")
    return [Result(status=status, step=job.until_step, metrics=metrics(job.candidate_id, job.rung),
                   checkpoint=job.checkpoint_path)]


def paused(job: Job, step: int) -> list[Event]:
    Path(job.checkpoint_path).parent.mkdir(parents=True, exist_ok=True)
    Path(job.checkpoint_path).write_bytes(b"weights")
    return [Result(status="paused", step=step, checkpoint=job.checkpoint_path)]


def make_engine(run_dir: Path, executor: Executor, population: int = 3) -> Engine:
    cfg = load(TINY)
    cfg.evolution.population = population
    cfg.evolution.topk_keep = 0.34  # one of three continues into rung 2
    if (run_dir / "run.db").exists():
        store = RunStore.open(run_dir)
    else:
        store = RunStore.create(run_dir, "x: 1\n", {"name": "t"})
    options = RunOptions(run_dir=run_dir, poll_s=0.01, stop_grace_s=0.5)
    return Engine(cfg, options, executor, store, Rungs(RUNGS))


def run(engine: Engine, generations: int = 1) -> None:
    try:
        asyncio.run(engine.run(generations))
    finally:
        engine.store.close()


def read(run_dir: Path) -> RunStore:
    return RunStore.open(run_dir, readonly=True)


# -- a pause during the end-of-rung measurement ------------------------------------------------

def pause_arrives_during_measurement(target: str, rung: int) -> Scripted:
    """The target's job of ``rung`` is measuring when the pause comes: the pause request finds
    the worker past its last step, so the rung finishes (done) instead of pausing."""
    def script(ex: Scripted, job: Job) -> list[Event] | None:
        if job.candidate_id == target and job.rung == rung:
            return None  # in its measurement until the pause arrives
        return finished(job)

    ex = Scripted(script)
    ex.on_request = lambda ex, job, action: finished(job)  # measured; the flag came too late
    return ex


def request_when_started(store_dir: Path, target: str, action: str) -> Callable:
    def on_event(kind: str, payload: dict) -> None:
        if kind == "start" and payload.get("candidate") == target and not sent:
            with RunStore.open(store_dir) as other:  # another process, as `evotui pause` is
                sent.append(other.request(target, action))

    sent: list[int] = []
    on_event.sent = sent  # type: ignore[attr-defined]
    return on_event


def test_a_pause_during_rung_1_measurement_acts_before_promotion(tmp_path):
    run_dir = tmp_path / "run"
    ex = pause_arrives_during_measurement("c0000", 1)
    engine = make_engine(run_dir, ex)
    engine.on_event = listener = request_when_started(run_dir, "c0000", "pause")
    run(engine)
    with read(run_dir) as store:
        c = store.candidate("c0000")
        command = store.command(listener.sent[0])
        assert c.status == Status.PAUSED and c.rung == 2  # promoted, but it trains no further
        assert c.metrics["rung_measured"] == 1  # its rung-1 result was kept
        assert command["status"] == "done" and "paused before rung 2" in command["outcome"]
    assert ("c0000", 2) not in ex.submitted  # it did not train on


def test_a_pause_during_measurement_of_one_not_promoted_is_refused_with_the_reason(tmp_path):
    run_dir = tmp_path / "run"
    ex = pause_arrives_during_measurement("c0002", 1)
    engine = make_engine(run_dir, ex)
    engine.on_event = listener = request_when_started(run_dir, "c0002", "pause")
    run(engine)
    with read(run_dir) as store:
        c = store.candidate("c0002")
        command = store.command(listener.sent[0])
        assert c.status == Status.DONE and c.rung == 1
        assert command["status"] == "rejected"
        assert "rung 1 finished" in command["outcome"] and "not promoted" in command["outcome"]
        assert not store.pending_commands()


def test_a_pause_during_the_last_rung_measurement_is_refused_with_the_reason(tmp_path):
    run_dir = tmp_path / "run"
    ex = pause_arrives_during_measurement("c0000", 2)
    engine = make_engine(run_dir, ex)
    sent: list[int] = []

    def on_event(kind: str, payload: dict) -> None:
        if kind == "start" and payload["candidate"] == "c0000" and "rung 2" in payload["text"]:
            with RunStore.open(run_dir) as other:
                sent.append(other.request("c0000", "pause"))

    engine.on_event = on_event
    run(engine)
    with read(run_dir) as store:
        c = store.candidate("c0000")
        command = store.command(sent[0])
        assert c.status == Status.DONE and c.rung == 2 and c.metrics["rung_measured"] == 2
        assert command["status"] == "rejected" and "rung 2 finished" in command["outcome"]


def test_a_pause_while_training_is_done_when_the_worker_has_paused(tmp_path):
    run_dir = tmp_path / "run"
    ex = pause_arrives_during_measurement("c0001", 1)
    ex.on_request = lambda ex, job, action: paused(job, 1)  # it obeyed at its next step
    engine = make_engine(run_dir, ex)
    engine.on_event = listener = request_when_started(run_dir, "c0001", "pause")
    run(engine)
    with read(run_dir) as store:
        c = store.candidate("c0001")
        command = store.command(listener.sent[0])
        assert c.status == Status.PAUSED and c.step == 1
        assert command["status"] == "done" and "paused at step 1" in command["outcome"]


def test_commands_wait_while_pending_and_a_refusal_says_why(tmp_path):
    run_dir = tmp_path / "run"
    engine = make_engine(run_dir, Scripted(lambda ex, job: finished(job)))
    run(engine)
    with RunStore.open(run_dir) as store:
        resume = store.request("c0001", "resume")  # no engine runs: it stays pending
        assert store.command(resume)["status"] == "pending"
    run(make_engine(run_dir, Scripted(lambda ex, job: finished(job))), generations=2)
    with read(run_dir) as store:
        row = store.command(resume)
        assert row["status"] == "rejected" and row["outcome"] == "cannot resume a done candidate"


# -- stops and resumes -------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["sigterm", "kill -9"])
def test_a_stop_during_rung_2_then_resume_finishes_rung_2(tmp_path, how):
    run_dir = tmp_path / "run"
    holder_: list[Engine] = []

    def script(ex: Scripted, job: Job) -> list[Event] | None:
        if job.rung == 1:
            return finished(job)
        holder_[0].stopping = True  # a stop lands in rung 2
        return None

    ex = Scripted(script)
    ex.on_request = lambda ex, job, action: paused(job, RUNGS[0] + 3)  # the stop's pause
    engine = make_engine(run_dir, ex)
    holder_.append(engine)
    if how == "sigterm":
        run(engine)
    else:  # the engine dies in rung 2: no pause, no clean-up, the store as it was
        async def die() -> None:
            task = asyncio.create_task(engine.run(1))
            while not engine.stopping:
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        engine.stopping = False
        asyncio.run(die())
        engine.store.close()
    with read(run_dir) as store:
        promoted = store.get_state("promoted.0")
        assert promoted == ["c0000"]
        assert store.candidate("c0000").rung == 2 and store.candidate("c0000").status in (
            Status.QUEUED, Status.RUNNING)
        before = {c.id: c for c in store.candidates()}

    again = Scripted(lambda ex, job: finished(job))
    run(make_engine(run_dir, again))
    assert again.submitted == [("c0000", 2)]  # rung 2 continues; nothing re-runs rung 1
    with read(run_dir) as store:
        c = store.candidate("c0000")
        assert c.status == Status.DONE and c.rung == 2 and c.step == RUNGS[1]
        assert c.metrics["rung_measured"] == 2  # selection sees rung-2 numbers
        for other in store.candidates():
            if other.id not in promoted:  # not promoted: untouched by the resume
                assert (other.status, other.rung, other.metrics) == (
                    before[other.id].status, before[other.id].rung, before[other.id].metrics)
        assert store.engine_state().state == "finished"


def test_a_worker_ended_by_a_signal_while_the_run_stops_is_requeued_not_failed(tmp_path):
    run_dir = tmp_path / "run"
    engines: list[Engine] = []

    def script(ex: Scripted, job: Job) -> list[Event] | None:
        if job.candidate_id == "c0000":
            engines[0].stopping = True  # SIGTERM to the process group: the engine stops...
            return None
        return finished(job)

    ex = Scripted(script)
    # ...and the worker dies of the signal before it could pause
    ex.on_request = lambda ex, job, action: [Failed("worker exited with code -15 (SIGTERM)",
                                                    -15, signal="SIGTERM")]
    engine = make_engine(run_dir, ex)
    engines.append(engine)
    run(engine)
    with read(run_dir) as store:
        c = store.candidate("c0000")
        assert c.status == Status.QUEUED and c.error is None
        assert store.engine_state().state == "stopped"
        assert any("interrupted" in e["text"] for e in store.events(candidate="c0000"))


def test_a_candidate_that_does_not_pause_within_the_grace_period_is_ended_and_requeued(
        tmp_path):
    run_dir = tmp_path / "run"
    engines: list[Engine] = []

    def script(ex: Scripted, job: Job) -> list[Event] | None:
        engines[0].stopping = True
        return None  # it never answers the pause

    ex = Scripted(script)
    ex.on_request = lambda ex, job, action: (
        [Failed("killed", -9, signal="SIGKILL")] if action == "kill" else None)
    engine = make_engine(run_dir, ex)
    engines.append(engine)
    run(engine)
    assert [action for _, action in ex.requests] == ["pause", "kill"]
    with read(run_dir) as store:
        assert store.candidate("c0000").status == Status.QUEUED


# -- one engine per run directory ----------------------------------------------------------------

def test_a_second_engine_on_a_locked_run_directory_is_refused_naming_the_pid(tmp_path):
    import os

    run_dir = tmp_path / "run"
    engine = make_engine(run_dir, Scripted(lambda ex, job: finished(job)))
    with RunLock(run_dir):
        assert holder(run_dir) == os.getpid()
        with pytest.raises(UserError) as err:
            run(engine)
    assert err.value.exit_code == 2 and f"pid {os.getpid()}" in err.value.render()
    assert "\n" not in err.value.render()
    assert holder(run_dir) is None  # released: the next engine may run
    with read(run_dir) as store:
        assert store.count_candidates() == 0  # the refused engine changed nothing
