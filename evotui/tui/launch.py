"""Starting the app: ``evotui tui`` (the engine in the app's loop) and ``evotui attach``.

The loop is ours (``asyncio.run``), not the app's, so whatever ends the app (``q``, ctrl+q, a
signal, a crash) the engine is stopped cleanly and waited for before the process exits:
running candidates pause at their next step and are queued for ``--resume``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer

from evotui.tui.host import EngineHost, headless_argv
from evotui.tui.terminal import Terminal, app_terminal


def install_signals(app: Any, on_hangup: Callable[[], None] | None = None
                    ) -> list[signal.Signals]:
    """SIGHUP -> ``app.hangup(on_hangup)``, SIGTERM / SIGINT -> ``app.terminate``; the
    signals installed (remove them with :func:`remove_signals`)."""
    loop = asyncio.get_running_loop()
    installed = []
    handlers = {signal.SIGHUP: lambda: app.hangup(on_hangup),
                signal.SIGTERM: app.terminate, signal.SIGINT: app.terminate}
    for sig, handler in handlers.items():
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, handler)
            installed.append(sig)
    return installed


def remove_signals(installed: list[signal.Signals]) -> None:
    loop = asyncio.get_running_loop()
    for sig in installed:
        loop.remove_signal_handler(sig)


async def serve(app: Any, host: EngineHost | None,
                on_hangup: Callable[[], None] | None = None) -> str | None:
    """Run ``app`` to its end, then make sure the engine has stopped cleanly."""
    installed = install_signals(app, on_hangup)
    try:
        return await app.run_async()
    finally:
        if host is not None and host.running:
            host.stop()
            if not host.hung_up:
                with contextlib.suppress(OSError):
                    print("stopping the run: running candidates pause at their next step...",
                          file=sys.stderr, flush=True)
            await host.wait()
        remove_signals(installed)


def run_in_app(flags: Any, default_config: Path, quiet: bool = False) -> None:
    """``evotui tui``: open (or resume) the run as ``evotui run`` would, then the app."""
    from multiprocessing import resource_tracker

    from evotui.engine.runner import open_run
    from evotui.tui.app import EvoApp

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    engine, generations = open_run(flags, default_config)
    run_dir = Path(engine.options.run_dir)
    # spawning starts multiprocessing's resource tracker, which hands it sys.stderr's
    # descriptor: start it now, while that is a real file and not the app's capture
    resource_tracker.ensure_running()
    host = EngineHost(engine, generations,
                      headless_argv(run_dir, flags.device, flags.devices, flags.cpu_slots, quiet))
    with app_terminal(run_dir) as terminal:
        app = EvoApp(run_dir, host=host)
        message = asyncio.run(serve(app, host, terminal.hang_up))
    if host.error is not None:
        raise host.error
    _say(message)


def attach(run_dir: Path, readonly: bool = False) -> None:
    """``evotui attach``: the app on a run going on elsewhere; quitting leaves it running."""
    from evotui.engine.store import RunStore
    from evotui.tui.app import EvoApp

    RunStore.open(run_dir, readonly=True).close()  # not a run directory: one line, exit 2
    app = EvoApp(run_dir, readonly=readonly)
    _say(asyncio.run(serve(app, None, Terminal(0, 2).hang_up)))


def _say(message: str | None) -> None:
    if message:
        with contextlib.suppress(OSError):
            typer.echo(message)
