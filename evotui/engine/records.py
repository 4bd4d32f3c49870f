"""What the run store hands out: frozen, typed records (Optuna's ``FrozenTrial`` is the model).

A :class:`Candidate` is one row of the ``candidates`` table, decoded: JSON columns as Python
values, ``status`` a :class:`~evotui.lifecycle.Status`, ``checkpoint`` a path that works from
here (the store keeps paths inside the run directory relative to it, so a moved or copied run
is whole). Records never change; the store's ``update_candidate`` writes a new state and
``candidate(id)`` reads it back.

For callers written against the old rows, a record also reads like a mapping
(``c["status"]``, ``c.get("checkpoint")``); ``to_dict()`` is the plain JSON-ready form.
:class:`EngineState` is what the engine says about itself (see ``RunStore.engine_state``).
Imports no torch.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from evotui.engine.schema import CANDIDATE_FIELDS, CANDIDATE_JSON
from evotui.lifecycle import Status

_NAMES: dict[type, tuple[str, ...]] = {}  # each record class's field names


class _Readable:
    """Mapping-style reads of a dataclass's fields (``r["name"]``, ``r.get``, ``dict(r)``)."""

    def __getitem__(self, key: str) -> Any:
        if key not in self._names():
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in self._names() else default

    def keys(self) -> list[str]:
        return list(self._names())

    def __contains__(self, key: object) -> bool:
        return key in self._names()

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def _names(self) -> tuple[str, ...]:
        names = _NAMES.get(type(self))
        if names is None:  # once per class: fields() walks the dataclass on every call
            names = tuple(f.name for f in fields(self))  # type: ignore[arg-type]
            _NAMES[type(self)] = names
        return names

    def to_dict(self) -> dict[str, Any]:
        """Plain data (strings for enums), ready for JSON."""
        return {name: _plain(getattr(self, name)) for name in self._names()}


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, Status) else value


@dataclass(frozen=True)
class Candidate(_Readable):
    """One candidate as the store holds it now. ``spec`` is None when read ``with_spec=False``."""

    id: str
    generation: int
    status: Status
    rung: int = 0  # the rung it trains toward (queued, running) or last finished
    step: int = 0
    total_steps: int | None = None
    parents: list[str] = field(default_factory=list)
    operator: str = ""
    spec: dict[str, Any] | None = None
    spec_key: str | None = None
    provenance: Any = None
    metrics: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    error: str | None = None
    device: str | None = None
    created: float = 0.0
    updated: float = 0.0

    @property
    def finished(self) -> bool:
        return self.status.is_finished()


def decode_candidate(row: sqlite3.Row, run_dir: Path) -> Candidate:
    data = dict(row)
    for key in CANDIDATE_JSON:
        if key in data:
            data[key] = json.loads(data[key])
    data["status"] = Status(data["status"])
    data["checkpoint"] = from_store(data.get("checkpoint"), run_dir)
    data["metrics"] = data.get("metrics") or {}
    return Candidate(**data)


def encode_candidate(fields_: Mapping[str, Any], run_dir: Path) -> dict[str, Any]:
    """Column values for ``fields_`` (JSON ones serialised, paths made run-relative)."""
    unknown = set(fields_) - set(CANDIDATE_FIELDS)
    if unknown:
        raise ValueError(f"unknown candidate field(s): {', '.join(sorted(unknown))}")
    out = dict(fields_)
    if "status" in out:
        try:
            out["status"] = Status(out["status"]).value
        except ValueError:
            raise ValueError(f"status {out['status']!r} is not one of "
                             f"{', '.join(Status)}") from None
    for key in CANDIDATE_JSON:
        if key in out:
            value = out[key]
            out[key] = json.dumps(list(value) if key == "parents" else (value or {}))
    if "checkpoint" in out:
        out["checkpoint"] = to_store(out["checkpoint"], run_dir)
    return out


def to_store(path: str | os.PathLike[str] | None, run_dir: Path) -> str | None:
    """A path as the store keeps it: relative to the run directory when it lies inside it
    (a run moved or copied elsewhere then finds its own files), else absolute. A relative
    ``path`` is taken as relative to the run directory, as the store reads it back."""
    if path is None:
        return None
    full = Path(os.path.abspath(Path(run_dir) / path))
    try:
        return full.relative_to(os.path.abspath(run_dir)).as_posix()
    except ValueError:
        return str(full)


def from_store(value: str | None, run_dir: Path) -> str | None:
    """The stored path made usable from here: relative ones are joined to the run directory."""
    if not value:
        return value
    p = Path(value)
    return value if p.is_absolute() else str(run_dir / p)


@dataclass(frozen=True)
class EngineState(_Readable):
    """What the engine last said about itself, in the ``run`` table (key ``engine_state``).

    ``state``: ``running`` (training and breeding), ``stopping`` (a stop was asked: in-flight
    candidates are being paused), ``stopped`` (resumable with ``--resume``) or ``finished``
    (every generation done). ``pid``: the engine's process. ``since``: when it entered the
    state; ``heartbeat``: the latest time a running engine said it was alive (every few
    seconds, :data:`HEARTBEAT_S`).
    """

    state: str
    pid: int | None
    since: float
    heartbeat: float

    def alive(self, now: float | None = None, stale_after: float = 0.0) -> bool:
        """A running or stopping engine that has beaten within ``stale_after`` seconds
        (default :data:`STALE_S`); False for a stopped or finished one, or a dead one."""
        now = time.time() if now is None else now
        return (self.state in ("running", "stopping")
                and now - self.heartbeat <= (stale_after or STALE_S))


ENGINE_STATES = ("running", "stopping", "stopped", "finished")
HEARTBEAT_S = 2.0  # a running engine refreshes its heartbeat at least this often
STALE_S = 10.0  # a heartbeat older than this: the engine is gone (killed, machine down)
