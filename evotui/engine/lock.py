"""One engine per run directory: an exclusive OS file lock on ``RUN_DIR/engine.lock``.

The lock belongs to the open file, so the kernel drops it when the engine's process dies in any
way (kill -9 included): a stale lock file never blocks a ``--resume``. The file holds the pid of
the engine holding it, which the refusal names. Imports no torch.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import IO

from evotui.errors import UserError

LOCK_NAME = "engine.lock"


class RunLock:
    """``with RunLock(run_dir):`` holds the run's engine lock, or raises a one-line
    :class:`UserError` (exit 2) naming the pid of the engine that holds it."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / LOCK_NAME
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            pid = f.read().strip() or "unknown"
            f.close()
            raise UserError.single(
                f"another engine (pid {pid}) is running this run; stop it first (Ctrl-C, or "
                f"kill -TERM {pid}), or attach to it with `evotui attach`",
                source=str(self.path.parent)) from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self._file = f

    def release(self) -> None:
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.seek(0)
                self._file.truncate()
            self._file.close()  # closing drops the lock
            self._file = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def holder(run_dir: str | Path) -> int | None:
    """The pid of the engine holding ``run_dir``'s lock now, or None when no engine holds it."""
    path = Path(run_dir) / LOCK_NAME
    try:
        f = open(path, encoding="utf-8")  # noqa: SIM115
    except OSError:
        return None
    with f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = f.read().strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        return None
