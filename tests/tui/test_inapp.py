"""The engine in the app's loop (``evotui tui``), with an executor that steps instead of
training: keys reach it through the commands table, ``q`` stops it resumably, SIGHUP too, and
"leave it running" starts a detached process."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

from evotui.dsl import dump, load
from evotui.engine.engine import Engine, Rungs, RunOptions
from evotui.engine.store import RunStore
from evotui.tui.app import EvoApp
from evotui.tui.confirm import QuitScreen
from evotui.tui.host import EngineHost, headless_argv
from evotui.tui.launch import install_signals, remove_signals
from tests.conftest import ROOT
from tests.tui.helpers import until

TICK = 0.03  # seconds per fake step


class SteppingExecutor:
    """One slot; a job sends a step event every TICK until its rung's last step, or until a
    pause or kill request (answered at the next step, as a worker does)."""

    def __init__(self) -> None:
        self.slots = ["cpu"]
        self.queue: asyncio.Queue = asyncio.Queue()
        self.jobs: dict[str, dict] = {}

    def warm(self, config, cache_dir=None) -> None:
        pass

    def free_slots(self) -> list[str]:
        return [] if self.jobs else ["cpu"]

    def submit(self, job) -> None:
        self.jobs[job.candidate_id] = {"flag": None}
        self.queue.put_nowait((job.candidate_id, {"kind": "started", "device": "cpu",
                                                  "pid": os.getpid()}))
        asyncio.get_running_loop().create_task(self._run(job))

    async def _run(self, job) -> None:
        cid, step = job.candidate_id, 0
        Path(job.checkpoint_path).parent.mkdir(parents=True, exist_ok=True)
        while step < job.until_step:
            await asyncio.sleep(TICK)
            flag = self.jobs[cid]["flag"]
            if flag:
                Path(job.checkpoint_path).write_bytes(b"x")
                del self.jobs[cid]
                self.queue.put_nowait((cid, {"kind": "result", "step": step, "metrics": {},
                                             "status": "paused" if flag == "pause" else
                                             "killed", "checkpoint": job.checkpoint_path}))
                return
            step += 1
            self.queue.put_nowait((cid, {"kind": "step", "step": step, "loss": 5.0 / step,
                                         "lr": 1e-3, "tokens": 64 * step,
                                         "tokens_per_s": 1000.0}))
        del self.jobs[cid]
        self.queue.put_nowait((cid, {"kind": "result", "status": "done", "step": step,
                                     "metrics": {"ppl_code": 10.0}}))

    def request(self, cid: str, action: str) -> bool:
        if cid not in self.jobs:
            return False
        self.jobs[cid]["flag"] = action
        return True

    def events(self):
        queue = self.queue

        class Stream:
            def __aiter__(self):
                return self

            async def __anext__(self):
                return await queue.get()

        return Stream()

    async def shutdown(self, kill: bool = False) -> None:
        while self.jobs:
            await asyncio.sleep(TICK)


def in_app(tmp_path, sampler) -> tuple[EvoApp, EngineHost]:
    cfg = load(ROOT / "configs" / "tiny.yaml")
    cfg.evolution.population = 2
    run_dir = tmp_path / "run"
    store = RunStore.create(run_dir, dump(cfg), {"name": "in-app"})
    store.set_state("objectives", cfg.evolution.objectives)
    store.set_state("rungs", {"steps": [400, 800]})
    engine = Engine(cfg, RunOptions(run_dir=run_dir, poll_s=0.05), SteppingExecutor(), store,
                    Rungs((400, 800)))
    host = EngineHost(engine, 1, headless=None)
    return EvoApp(run_dir, host=host, sampler=sampler, poll_s=0.1), host


def status(app: EvoApp, cid: str) -> str | None:
    return (app.feed.candidates.get(cid) or {}).get("status")


def stopped_resumably(run_dir: Path, paused: int = 0) -> None:
    """Nothing left running; the candidates the stop interrupted are queued for --resume."""
    with RunStore.open(run_dir, readonly=True) as store:
        counts = store.status_counts()
    assert counts["running"] == 0 and counts["queued"] == 2 - paused, counts
    assert counts["paused"] == paused, counts
    assert "stopped (resumable with --resume)" in (run_dir / "run.log").read_text()


def test_p_pauses_the_in_app_engine_candidate_and_q_stops_the_run_resumably(tmp_path,
                                                                              sampler):
    app, host = in_app(tmp_path, sampler)

    async def main():
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, lambda: status(app, "c0000") == "running")
            assert "engine in this app" in app.query_one("StatusBar").text
            await pilot.press("p")
            await until(pilot, lambda: status(app, "c0000") == "paused")
            await until(pilot, lambda: status(app, "c0001") == "running")
            await pilot.press("q")
            assert isinstance(app.screen, QuitScreen)
            await pilot.press("s")
            await until(pilot, lambda: not host.running)
            await pilot.pause()
        return app.return_value

    message = asyncio.run(main())
    assert message.startswith("run stopped; continue it with: evotui run --resume")
    with RunStore.open(app.run_dir, readonly=True) as store:
        assert [c["action"] for c in store.commands()] == ["pause"]  # via the commands table
        assert store.commands()[0]["status"] == "done"
    stopped_resumably(app.run_dir, paused=1)  # c0000 stays paused, c0001 is queued again


def test_sighup_stops_the_in_app_engine_cleanly(tmp_path, sampler):
    app, host = in_app(tmp_path, sampler)
    hung_up = []

    async def main():
        async with app.run_test(size=(80, 24)) as pilot:
            installed = install_signals(app, on_hangup=lambda: hung_up.append(True))
            try:
                await until(pilot, lambda: status(app, "c0000") == "running")
                os.kill(os.getpid(), signal.SIGHUP)
                await until(pilot, lambda: host.stopping)
                await host.wait()
            finally:
                remove_signals(installed)

    asyncio.run(main())
    assert hung_up and host.hung_up and not host.running and host.error is None
    stopped_resumably(app.run_dir)


def test_leaving_it_running_starts_a_detached_process(tmp_path, sampler):
    app, host = in_app(tmp_path, sampler)
    marker = tmp_path / "session"
    host.headless = [sys.executable, "-c", "import os, sys; print('headless', os.getsid(0)); "
                     f"open({str(marker)!r}, 'w').write(str(os.getsid(0)))"]
    pid, out = host.leave_headless()
    deadline = time.monotonic() + 20
    while not marker.exists() or not marker.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert int(marker.read_text()) == pid  # a session of its own: no terminal's hangup
    assert out == app.run_dir / "headless.out"
    argv = headless_argv(Path("runs/x"), "cuda", "0,1", 3, quiet=True)
    assert argv[1:] == ["-m", "evotui", "run", "--resume", "runs/x", "--device", "cuda",
                        "--cpu-slots", "3", "--devices", "0,1", "--quiet"]
