"""Snapshots of what a user sees, on the fixed run with a fixed clock, at the 80x24 minimum and
at 160x48: the main screen, the Loss pane zoomed, help, the kill dialog and the frontier view.
Any change to them shows up as a diff. Regenerate after an intended change with
``pytest tests/tui/test_snapshots.py --snapshot-update`` and look at the SVGs."""

from __future__ import annotations

import pytest

from evotui.tui.app import EvoApp
from tests.tui.conftest import clock
from tests.tui.helpers import ready

SIZES = pytest.mark.parametrize("size", [(80, 24), (160, 48)], ids=lambda s: f"{s[0]}x{s[1]}")


@pytest.fixture(autouse=True)
def _beside_the_run(fixture_run, monkeypatch):
    monkeypatch.chdir(fixture_run.parent)  # help names the run directory as "run"


def shot(snap_compare, run_dir, sampler, size, press=()):
    app = EvoApp(run_dir, sampler=sampler, clock=clock)
    return snap_compare(app, press=list(press), terminal_size=size, run_before=ready)


@SIZES
def test_main_screen(snap_compare, fixture_run, sampler, size):
    assert shot(snap_compare, fixture_run, sampler, size)


@SIZES
def test_zoomed_loss(snap_compare, fixture_run, sampler, size):
    # c0002 runs; c0000 (the seed, also the best) and c0001 marked: their curves overlaid
    assert shot(snap_compare, fixture_run, sampler, size,
                ["space", "space", "z"])


@SIZES
def test_help(snap_compare, fixture_run, sampler, size):
    assert shot(snap_compare, fixture_run, sampler, size, ["question_mark"])


@SIZES
def test_kill_dialog(snap_compare, fixture_run, sampler, size):
    assert shot(snap_compare, fixture_run, sampler, size, ["down", "down", "k"])


@SIZES
def test_frontier_view(snap_compare, fixture_run, sampler, size):
    assert shot(snap_compare, fixture_run, sampler, size, ["f"])
