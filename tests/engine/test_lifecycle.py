"""The candidate lifecycle, defined once: statuses, their moves, what each command may do."""

from __future__ import annotations

import pytest

from evotui.engine import store
from evotui.lifecycle import (
    FINISHED,
    TRANSITIONS,
    Command,
    Status,
    TransitionError,
    can_move,
    check_move,
    command_refusal,
)


def test_the_store_keeps_the_lifecycle_statuses():
    assert tuple(Status) == store.STATUSES and set(TRANSITIONS) == set(Status)
    assert tuple(Command) == store.ACTIONS


def test_finished_means_measured():
    assert {s for s in Status if s.is_finished()} == {Status.DONE, Status.STOPPED} == FINISHED
    assert not Status.PAUSED.is_finished() and Status("done").is_finished()
    assert {s for s in Status if s.is_final()} == {Status.FAILED, Status.KILLED}


@pytest.mark.parametrize(("a", "b", "ok"), [
    ("queued", "running", True), ("running", "done", True), ("done", "queued", True),
    ("paused", "queued", True), ("killing", "killed", True), ("running", "queued", True),
    ("queued", "done", False), ("failed", "queued", False), ("killed", "queued", False),
    ("stopped", "running", False), ("killing", "running", False), ("done", "done", True),
])
def test_moves(a, b, ok):
    assert can_move(a, b) is ok
    if not ok:
        with pytest.raises(TransitionError, match=f"c1: cannot move from {a} to {b}"):
            check_move("c1", a, b)


def test_final_statuses_never_move():
    for s in Status:
        if s.is_final():
            assert all(not can_move(s, t) for t in Status if t != s)


@pytest.mark.parametrize(("command", "status", "refused"), [
    ("pause", "queued", None), ("pause", "running", None),
    ("pause", "done", "cannot pause a done candidate"),
    ("pause", "paused", "cannot pause a paused candidate"),
    ("resume", "paused", None), ("resume", "running", "cannot resume a running candidate"),
    ("kill", "paused", None), ("kill", "queued", None),
    ("kill", "killed", "cannot kill a killed candidate"),
    ("kill", "done", "cannot kill a done candidate"),
])
def test_command_rules(command, status, refused):
    assert command_refusal(command, status) == refused


def test_every_command_acts_only_where_the_move_exists():
    """What a command does to a status is a move the store accepts."""
    effect = {Command.PAUSE: {Status.QUEUED: Status.PAUSED, Status.RUNNING: Status.PAUSED},
              Command.RESUME: {Status.PAUSED: Status.QUEUED},
              Command.KILL: {Status.QUEUED: Status.KILLED, Status.PAUSED: Status.KILLED,
                             Status.RUNNING: Status.KILLING}}
    for command, moves in effect.items():
        for s in Status:
            assert (command_refusal(command, s) is None) == (s in moves), (command, s)
        assert all(can_move(a, b) for a, b in moves.items())
    assert command_refusal("explode", "queued").startswith("unknown command 'explode'")
