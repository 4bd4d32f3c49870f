"""Waiting for the app in pilot tests: polls, not fixed sleeps."""

from __future__ import annotations

import time
from collections.abc import Callable

from textual.geometry import Region
from textual.pilot import Pilot

from evotui.tui.gpu import GpuPane


async def until(pilot: Pilot, check: Callable[[], object], timeout: float = 10.0) -> None:
    """Let the app run until ``check()`` is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {check}")
        await pilot.pause(0.02)


async def ready(pilot: Pilot) -> None:
    """The GPU pane has its first reading, and a poll after it is on screen (the pane draws
    its readings with the app's refreshes)."""
    app = pilot.app
    await until(pilot, lambda: app.query_one(GpuPane).reading is not None)
    polls = len(app.timings)
    await until(pilot, lambda: len(app.timings) > polls and "paint_ms" in app.timings[-1])
    await pilot.pause()


def rows(app) -> list[str]:
    """The candidate ids in the Population table, in their on-screen order."""
    return list(app.population.table.order)


def text_of(*widgets) -> str:
    """What the widgets show, as plain text (their rendered lines)."""
    out = []
    for w in widgets:
        region = Region(0, 0, w.size.width, w.size.height)
        out += ["".join(seg.text for seg in strip).rstrip() for strip in w.render_lines(region)]
    return "\n".join(out)
