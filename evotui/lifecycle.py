"""A candidate's life: its statuses, the moves between them and what a command may do in each.

One definition for every layer (the engine, the store, the trainer, selection, the CLI and the
TUI import it; it imports nothing of evotui and no torch)::

    queued --start--> running --result--> done | stopped | failed | paused | killed
       |                 |  \\--kill--> killing --exit--> killed
       |                 \\--engine stopped or died--> queued          (continues on --resume)
       +--pause--> paused --resume--> queued
       +--kill---> killed <--kill-- paused
    done --promoted--> queued | paused                                 (rung 2 from its checkpoint)

``done`` and ``stopped`` (a guard ended training early, then the candidate was measured) are
*finished*: they hold measured metrics and may be parents. ``failed`` and ``killed`` are final.

Commands (``pause``, ``resume``, ``kill``) are requests a person makes from the CLI or the TUI.
:func:`command_refusal` says why a command cannot act on a candidate in a given status, or None
when it can; the engine applies the same rule when it acts, the faces use it to refuse at once.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """A candidate's status, stored as its string value (``Status.DONE == "done"``)."""

    QUEUED = "queued"  # waiting for a slot (new, promoted, resumed or requeued)
    RUNNING = "running"  # a worker trains it now
    PAUSED = "paused"  # checkpointed and set aside until a resume
    DONE = "done"  # trained to its rung and measured
    STOPPED = "stopped"  # a guard ended its training early; measured all the same
    FAILED = "failed"  # an error, a failing guard or a rung-0 gate; never a parent
    KILLING = "killing"  # a kill was sent and the worker has not exited yet
    KILLED = "killed"  # killed by a person; never a parent

    def is_finished(self) -> bool:
        """Trained and measured (``done`` or ``stopped``): has metrics, may be a parent."""
        return self in FINISHED

    def is_active(self) -> bool:
        """Waiting for a slot or holding one (``queued``, ``running``, ``killing``)."""
        return self in ACTIVE

    def is_final(self) -> bool:
        """Nothing will change it again (``failed``, ``killed``)."""
        return self in FINAL


FINISHED: frozenset[Status] = frozenset({Status.DONE, Status.STOPPED})
ACTIVE: frozenset[Status] = frozenset({Status.QUEUED, Status.RUNNING, Status.KILLING})
FINAL: frozenset[Status] = frozenset({Status.FAILED, Status.KILLED})
STATUSES: tuple[str, ...] = tuple(s.value for s in Status)

# Every move the store accepts (staying in the same status is always allowed).
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.QUEUED: frozenset({Status.RUNNING, Status.PAUSED, Status.KILLED, Status.FAILED}),
    Status.RUNNING: frozenset({Status.DONE, Status.STOPPED, Status.FAILED, Status.PAUSED,
                               Status.KILLED, Status.KILLING, Status.QUEUED}),
    Status.PAUSED: frozenset({Status.QUEUED, Status.KILLED}),
    Status.DONE: frozenset({Status.QUEUED, Status.PAUSED}),  # promoted to the next rung
    Status.STOPPED: frozenset(),
    Status.FAILED: frozenset(),
    Status.KILLING: frozenset({Status.KILLED}),
    Status.KILLED: frozenset(),
}


def can_move(a: str, b: str) -> bool:
    """True when a candidate may go from status ``a`` to status ``b``."""
    a, b = Status(a), Status(b)
    return a == b or b in TRANSITIONS[a]


def finished(status: str) -> bool:
    """``Status(status).is_finished()`` for a plain string (False for an unknown one)."""
    return status in FINISHED


class Command(StrEnum):
    """What a person may ask of one candidate."""

    PAUSE = "pause"  # checkpoint at the next step boundary (or before it starts) and wait
    RESUME = "resume"  # queue a paused candidate again; it continues from its checkpoint
    KILL = "kill"  # stop it for good; never a parent


# The statuses each command acts on. A pause of a running candidate acts at its next step
# boundary; one that arrives while the candidate is being measured acts before its promotion.
ACTS_ON: dict[Command, frozenset[Status]] = {
    Command.PAUSE: frozenset({Status.QUEUED, Status.RUNNING}),
    Command.RESUME: frozenset({Status.PAUSED}),
    Command.KILL: frozenset({Status.QUEUED, Status.RUNNING, Status.PAUSED}),
}
COMMANDS: tuple[str, ...] = tuple(c.value for c in Command)


def command_refusal(command: str, status: str) -> str | None:
    """Why ``command`` cannot act on a candidate in ``status`` (one readable clause, e.g.
    ``"cannot pause a done candidate"``), or None when it can."""
    try:
        cmd = Command(command)
    except ValueError:
        return f"unknown command {command!r}; use one of {', '.join(COMMANDS)}"
    if status in ACTS_ON[cmd]:
        return None
    return f"cannot {cmd.value} a {status} candidate"


class TransitionError(ValueError):
    """A status change the lifecycle does not allow (the store refuses to write it)."""

    def __init__(self, candidate: str, old: str, new: str):
        super().__init__(f"candidate {candidate}: cannot move from {old} to {new} (allowed from "
                         f"{old}: {', '.join(sorted(TRANSITIONS[Status(old)])) or 'nothing'})")
        self.candidate, self.old, self.new = candidate, old, new


def check_move(candidate: str, a: str, b: str) -> None:
    """Raise :class:`TransitionError` unless ``a -> b`` is allowed."""
    if not can_move(a, b):
        raise TransitionError(candidate, a, b)
