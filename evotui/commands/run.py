"""``evotui run``: the search, headless, with a status line and the log lines (rich).

The engine is set up by :func:`evotui.engine.runner.open_run`; this module only shows it
running. Nothing heavy at import: the engine and rich load inside the command."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import typer

from evotui.commands import run_flags as rf
from evotui.commands.common import progress
from evotui.engine.flags import RunFlags


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    app.command("run")(run)


@rf.run_command
def run(flags: RunFlags, quiet: rf.Quiet = False) -> None:
    """Run the evolutionary search headless: a status line and the log lines."""
    from evotui.engine.runner import open_run

    engine, total = open_run(flags, progress=progress)
    run_headless(engine, total, quiet)


def status_line(status: dict[str, Any], generations: int) -> str:
    """The line under the log: generation, counts and the best of the first objectives."""
    counts = status.get("counts", {})
    best = status.get("best", {})
    shown = ", ".join(f"{k} {v['value']:.4g} ({v['id']})" for k, v in list(best.items())[:3] if v)
    return (f"generation {(status.get('generation') or 0) + 1}/{generations}  running "
            f"{counts.get('running', 0)}  queued {counts.get('queued', 0)}  done "
            f"{counts.get('done', 0) + counts.get('stopped', 0)}  failed "
            f"{counts.get('failed', 0)}  best: {shown or '-'}")


def run_headless(engine: Any, generations: int, quiet: bool = False) -> None:
    """Run to the end, printing the log lines and a status line; SIGINT / SIGTERM / SIGHUP
    stop it cleanly (resumable)."""
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    console = Console()

    def line() -> Text:
        return Text(status_line(engine.status(), generations), style="bold")

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(sig, _stop)
        task = asyncio.create_task(engine.run(generations))
        with Live(line(), console=console, refresh_per_second=2,
                  transient=True, redirect_stdout=False) as live:
            def show(kind: str, payload: Any) -> None:
                text = _text(payload)
                if text is not None and kind != "log" and not quiet:
                    live.console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] [{kind}] {text}",
                                       highlight=False)
                live.update(line())

            engine.on_event = show
            await task

    def _stop() -> None:
        engine.stopping = True

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    asyncio.run(main())
    console.print(f"run directory: {engine.options.run_dir}")


def _text(payload: Any) -> str | None:
    """The log text an engine event carries, if any (a dict's ``text`` or a typed event's)."""
    if isinstance(payload, dict):
        return payload.get("text")
    return getattr(payload, "text", None)
