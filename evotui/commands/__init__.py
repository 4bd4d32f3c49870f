"""Every command of ``evotui``, one module per group. Each module here defines
``register(app, bench_app)`` and adds its Typer commands; ``evotui.cli`` calls them all, in
the order of ``MODULES`` (a new group of commands is a new module appended there).
Modules are imported at start-up, so they import nothing heavy (torch, textual, matplotlib)
at module level: only inside the command functions."""

from __future__ import annotations

import importlib

import typer

CORE: tuple[str, ...] = ("config", "train", "run", "steer", "bench")  # in --help order
MODULES: tuple[str, ...] = (*CORE, "experiments", "analysis", "tui", "convert", "data",
                            "faults", "bench_search")


def register_all(app: typer.Typer, bench_app: typer.Typer) -> None:
    for name in MODULES:
        importlib.import_module(f"{__name__}.{name}").register(app, bench_app)
