"""What several commands share: argument types and the progress printer.

Nothing heavy at import (rich loads inside :func:`progress`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ConfigArg = Annotated[Path, typer.Argument(help="A YAML config (see docs/dsl.md).")]
RunDirArg = Annotated[Path, typer.Argument(help="A run directory (holds run.db).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def progress(message: str) -> None:
    """A line of progress (data preparation, tokenising) on stderr, dimmed."""
    from rich.console import Console

    Console(stderr=True).print(f"[dim]{message}[/]", highlight=False)
