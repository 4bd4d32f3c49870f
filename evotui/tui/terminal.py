"""The terminal for the app alone, while the engine's worker processes run beside it.

A spawned worker inherits file descriptors 0, 1 and 2; anything it prints (a library warning,
a crash message) would land in the middle of the app's screen. While ``evotui tui`` runs, the
app draws on private duplicates of the terminal, and descriptors 0/1/2 (what children inherit)
are /dev/null and ``RUN_DIR/workers.out``. After a hangup, the private descriptors are pointed
at /dev/null, so the app's last reads and writes neither fail nor block while it exits.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Iterator
from pathlib import Path

WORKERS_OUT = "workers.out"


class Terminal:
    """Which descriptors the app reads keys from and draws on."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.read_fd, self.write_fd = read_fd, write_fd

    def hang_up(self) -> None:
        """The terminal is gone: /dev/null in and out. A read never blocks (the app's input
        thread may be between its select and its read) and a write never fails."""
        with contextlib.suppress(OSError):
            null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, self.read_fd)
            os.dup2(null, self.write_fd)
            os.close(null)


@contextlib.contextmanager
def app_terminal(run_dir: Path) -> Iterator[Terminal]:
    """Move the terminal to private descriptors for the app (``sys.__stdin__`` and
    ``sys.__stderr__``, which Textual uses) and give descriptors 0/1/2 to the children;
    everything is put back at the end. Without a terminal on 0 and 2, changes nothing."""
    if not (os.isatty(0) and os.isatty(2)):
        yield Terminal(0, 2)
        return
    term_in, term_out = os.dup(0), os.dup(2)  # not inheritable: no child holds the terminal
    saved = {fd: os.dup(fd) for fd in (0, 1, 2)}
    names = ("__stdin__", "__stdout__", "__stderr__", "stdin", "stdout", "stderr")
    before = {name: getattr(sys, name) for name in names}
    reader = io.TextIOWrapper(io.FileIO(term_in, "r", closefd=False), encoding="utf-8")
    writer = io.TextIOWrapper(io.FileIO(term_out, "w", closefd=False), encoding="utf-8",
                              line_buffering=True)
    try:
        with open(run_dir / WORKERS_OUT, "ab") as out, open(os.devnull, "rb") as null:
            os.dup2(null.fileno(), 0)
            os.dup2(out.fileno(), 1)
            os.dup2(out.fileno(), 2)
        sys.__stdin__ = sys.stdin = reader  # type: ignore[misc]
        sys.__stdout__ = sys.stdout = writer  # type: ignore[misc]
        sys.__stderr__ = sys.stderr = writer  # type: ignore[misc]
        yield Terminal(term_in, term_out)
    finally:
        with contextlib.suppress(ValueError, OSError):
            writer.flush()
        for name, value in before.items():
            setattr(sys, name, value)
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        for fd in (term_in, term_out):
            with contextlib.suppress(OSError):
                os.close(fd)
