"""The in-app engine: ``evotui tui`` runs ``engine.run(generations)`` as a task in the app's
asyncio loop (training stays in the executor's worker processes) and stops it the way
``evotui run`` does on a signal: ``engine.stopping``, after which running candidates pause at
their next step and are queued for ``--resume``.

Quitting can also leave the run going: the engine stops cleanly here, then continues as a
detached ``evotui run --resume RUN_DIR`` process (its own session, so no terminal signal reaches
it; its output in ``RUN_DIR/headless.out``). That is a new process, not this one: the honest
way to keep a run alive once this terminal's process ends.

Worker processes ignore SIGHUP and SIGINT (see ``evotui.engine.local``), so a lost terminal,
which hangs up the whole foreground process group, reaches only the engine, which then stops
them cleanly; they still exit by themselves once the engine process is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HEADLESS_OUT = "headless.out"


def headless_argv(run_dir: Path, device: str = "auto", devices: str | None = None,
                  cpu_slots: int = 1, quiet: bool = False) -> list[str]:
    """The command that continues this run headless, on the same devices."""
    argv = [sys.executable, "-m", "evotui", "run", "--resume", str(run_dir), "--device", device,
            "--cpu-slots", str(cpu_slots)]
    if devices:
        argv += ["--devices", devices]
    if quiet:
        argv.append("--quiet")
    return argv


class EngineHost:
    """One engine run as a task of the running loop, with a clean stop."""

    def __init__(self, engine: Any, generations: int, headless: Sequence[str] | None = None):
        self.engine = engine
        self.generations = generations
        self.headless = list(headless) if headless else None
        self.task: asyncio.Task[None] | None = None
        self.error: BaseException | None = None
        self.hung_up = False

    @property
    def run_dir(self) -> Path:
        return Path(self.engine.options.run_dir)

    def start(self) -> None:
        if self.task is None:
            loop = asyncio.get_running_loop()
            self.task = loop.create_task(self.engine.run(self.generations), name="evotui-engine")
            self.task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.error = task.exception()

    @property
    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    @property
    def stopping(self) -> bool:
        return bool(self.engine.stopping)

    def stop(self) -> None:
        """Ask the engine to stop: running candidates pause and are queued for --resume."""
        self.engine.stopping = True

    async def wait(self) -> None:
        if self.task is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait([self.task])

    def leave_headless(self) -> tuple[int, Path]:
        """Start the detached ``evotui run --resume``; its pid and output file. Call once the
        engine here has stopped (the store has one writer at a time)."""
        if self.running:
            raise RuntimeError("the engine is still running here")
        if not self.headless:
            raise RuntimeError("no headless command for this run")
        out = self.run_dir / HEADLESS_OUT
        with open(out, "ab") as sink:
            proc = subprocess.Popen(self.headless, stdin=subprocess.DEVNULL, stdout=sink,
                                    stderr=subprocess.STDOUT, start_new_session=True,
                                    env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
        return proc.pid, out

