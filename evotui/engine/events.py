"""What workers, executors and the engine tell each other: one frozen type per kind of event.

A worker sends them (the trainer's plain ``{"kind": ...}`` dicts become these at the worker's
edge, :func:`parse`), an executor passes them on as ``(candidate_id, event)``, the engine
records them and hands ``(kind, payload)`` to its ``on_event`` listener (the TUI, the headless
status line). Each has a ``kind`` and reads like a mapping too (``event["step"]``,
``event.get("metrics")``); ``to_dict()`` is its plain form.

Passed on by executors:

* :class:`Started` (``device``, ``pid``): the job's worker process exists;
* :class:`Log` (``text``): data preparation progress;
* :class:`Step`, :class:`Eval`, :class:`Guard`, :class:`Checkpoint`, :class:`Done`: the trainer's;
* exactly one terminal event per job: :class:`Result` (the trainer's ``TrainResult`` and where
  the time went; ``status`` done | stopped | failed | paused | killed) or :class:`Failed`
  (``reason``, one line; ``exitcode``; ``traceback`` when the worker raised; ``signal`` when a
  signal ended the worker).

Between a worker and its executor only: :class:`Heartbeat` and :class:`WorkerError`.
Imports no torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from evotui.engine.records import _Readable


@dataclass(frozen=True)
class Event(_Readable):
    """The base: ``kind`` names the type; the fields are the payload."""

    kind: ClassVar[str] = ""

    def _names(self) -> tuple[str, ...]:
        return ("kind", *(f.name for f in fields(self)))


@dataclass(frozen=True)
class Started(Event):
    kind: ClassVar[str] = "started"
    device: str = "cpu"
    pid: int | None = None


@dataclass(frozen=True)
class Log(Event):
    kind: ClassVar[str] = "log"
    text: str = ""


@dataclass(frozen=True)
class Step(Event):
    kind: ClassVar[str] = "step"
    step: int = 0
    loss: float = float("nan")
    lr: float = 0.0
    tokens: int = 0
    tokens_per_s: float = 0.0
    grad_norm: float | None = None
    time: float | None = None


@dataclass(frozen=True)
class Eval(Event):
    """A held-out evaluation during training: the mean ``loss`` and one per eval tag."""

    kind: ClassVar[str] = "eval"
    step: int = 0
    loss: float = float("nan")
    losses: dict[str, float] = field(default_factory=dict)  # {"loss_code": ..., ...}


@dataclass(frozen=True)
class Guard(Event):
    kind: ClassVar[str] = "guard"
    step: int = 0
    reason: str = ""


@dataclass(frozen=True)
class Checkpoint(Event):
    kind: ClassVar[str] = "checkpoint"
    step: int = 0
    path: str = ""


@dataclass(frozen=True)
class Done(Event):
    """The trainer has stopped training (the result follows)."""

    kind: ClassVar[str] = "done"
    status: str = "done"
    reason: str | None = None
    step: int = 0


@dataclass(frozen=True)
class Result(Event):
    """A job's end as the trainer reports it (``evotui.train.trainer.TrainResult``) plus the
    worker's accounting (``timings``, ``received_at``, ``inherited`` and ``fresh`` tensors)."""

    kind: ClassVar[str] = "result"
    status: str = "done"
    stop_reason: str | None = None
    step: int = 0
    tokens: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    curve: list[dict[str, float]] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)
    telemetry: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    inherited: int = 0
    fresh: int = 0
    transformed: int = 0  # tensors started from a function-preserving transform
    error: str | None = None
    train_seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    first_step_at: float | None = None
    received_at: float | None = None


@dataclass(frozen=True)
class Failed(Event):
    """The job ended without a result: the worker raised, crashed, went silent or was killed."""

    kind: ClassVar[str] = "failed"
    reason: str = ""
    exitcode: int | None = None
    traceback: str | None = None
    signal: str | None = None  # "SIGTERM", ... when a signal ended the worker


@dataclass(frozen=True)
class Heartbeat(Event):
    kind: ClassVar[str] = "heartbeat"


@dataclass(frozen=True)
class WorkerError(Event):
    """The worker raised (it exits next); the executor turns this into :class:`Failed`."""

    kind: ClassVar[str] = "error"
    error: str = ""
    traceback: str | None = None


KINDS: dict[str, type[Event]] = {cls.kind: cls for cls in (
    Started, Log, Step, Eval, Guard, Checkpoint, Done, Result, Failed, Heartbeat, WorkerError)}
TERMINAL = ("result", "failed")


def parse(event: Event | Mapping[str, Any]) -> Event:
    """The typed event for a plain ``{"kind": ..., ...}`` dict (an event passes through).
    Keys the type does not have are dropped; ``Eval``'s per-tag ``loss_*`` keys go to
    ``losses``. An unknown kind is a ValueError."""
    if isinstance(event, Event):
        return event
    data = dict(event)
    kind = data.pop("kind", None)
    cls = KINDS.get(str(kind))
    if cls is None:
        raise ValueError(f"unknown event kind {kind!r}; one of {', '.join(KINDS)}")
    names = {f.name for f in fields(cls)}
    if cls is Eval:
        losses = {k: v for k, v in data.items() if k.startswith("loss_")}
        data["losses"] = {**losses, **data.get("losses", {})}
    return cls(**{k: v for k, v in data.items() if k in names})
