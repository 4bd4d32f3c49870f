"""What a run is started with: the flags of ``evotui run`` and ``evotui tui``, as one record.

:class:`RunFlags` is the engine's input (``runner.open_run``); the command line builds it once,
by keyword, from its options (``evotui.commands.run_flags``, where each field has its Typer
option). A new run flag is a field here and its option there. Imports nothing heavy: the
command line imports this at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class RunFlags:
    config: Path | None = None  # None: the embedded default (runner.DEFAULT_CONFIG)
    generations: int | None = None
    steps: int | None = None  # the full budget (rung 2)
    eval_batches: int | None = None
    device: str = "auto"
    devices: str | None = None
    checkpoint_dir: Path | None = None
    out: Path | None = None  # the frontier JSON (default RUN_DIR/frontier.json)
    log: Path | None = None
    run_dir: Path | None = None
    cleanup_old_checkpoints: bool = False
    parent_selection: str | None = None
    population: int | None = None
    seed: int | None = None
    resume: Path | None = None
    cpu_slots: int = 1
    data: str = "config"  # or offline: the embedded corpus (evotui.data.offline)
    executor: str | None = None  # local | ray (None: a resumed run's own, else local)
    ray_address: str | None = None  # auto | HOST:PORT (None: a Ray started here)
    ray_checkpoints: str | None = None  # auto | shared | copy (None: a resumed run's, or auto)
    cpu_threads: int | None = None  # not a command-line flag: tests and benchmarks set it


INTERNAL = frozenset({"cpu_threads"})  # fields no command-line option sets
