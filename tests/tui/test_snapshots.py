"""Snapshots of the main screen (at the 80x24 minimum and wide) and of the frontier view, on
the fixed run: any change to what a user sees shows up as a diff. Regenerate after an intended
change with ``pytest tests/tui/test_snapshots.py --snapshot-update`` and review the SVGs."""

from __future__ import annotations

import pytest

from evotui.tui.app import EvoApp
from tests.tui.helpers import ready


@pytest.mark.parametrize("size", [(80, 24), (150, 42)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_main_screen(snap_compare, fixture_run, sampler, size):
    app = EvoApp(fixture_run, sampler=sampler)
    assert snap_compare(app, terminal_size=size, run_before=ready)


def test_frontier_view(snap_compare, fixture_run, sampler):
    app = EvoApp(fixture_run, sampler=sampler)
    assert snap_compare(app, press=["f"], terminal_size=(100, 30), run_before=ready)
