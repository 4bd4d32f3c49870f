"""Commands that live beside the layer they drive. Each module here defines
``register(app, bench_app)`` and adds its Typer commands; ``evotui.cli`` calls them all.
Modules are imported at start-up, so they import nothing heavy (torch, textual, matplotlib)
at module level: only inside the command functions."""

from __future__ import annotations

import importlib

import typer

MODULES: tuple[str, ...] = ("experiments", "analysis", "tui", "convert")


def register_all(app: typer.Typer, bench_app: typer.Typer) -> None:
    for name in MODULES:
        importlib.import_module(f"{__name__}.{name}").register(app, bench_app)
