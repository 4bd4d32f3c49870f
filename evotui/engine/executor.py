"""Executors run jobs in workers and stream their events back: a family behind one base class.

A new executor (a cluster, a remote box) is a new module with a subclass. The engine only sees:

* ``slots``: the device strings it may place jobs on (a string may repeat: ``["cpu", "cpu"]``
  is two CPU slots); ``free_slots()``: the ones not running a job now, as a multiset;
* ``submit(job)``: start ``job`` on ``job.device``, which must be a free slot; a job whose
  config trains sharded (``train.parallel``, FSDP over k ranks) takes k slots of one node at
  once, waiting for them while holding those it has, or fails at once when the executor can
  never give it k;
* ``request(candidate_id, "pause" | "kill")``: ask a running worker to pause or die;
* ``events()``: an async iterator of ``(candidate_id, event)`` for all jobs (one consumer);
* ``running()``: the candidates with a live worker; ``shutdown(kill)``: stop, then end events().

Events are the typed ones of :mod:`evotui.engine.events` (a subclass may hand ``_emit`` a plain
``{"kind": ...}`` dict; it is parsed):

* ``Started`` (``device``, ``pid``): the worker process exists;
* ``Log``, ``Step``, ``Eval``, ``Guard``, ``Checkpoint``, ``Done``: as the worker sends them;
* exactly one terminal event per submitted job, sent after its slot is free again:
  ``Result`` (``status`` done | stopped | failed | paused | killed) or ``Failed`` (``reason``:
  one line; ``exitcode``; ``traceback`` when the worker raised; ``signal`` when one ended it).

Heartbeats are the executor's business and are not passed on. ``events()`` is meant for one
consumer at a time (several iterators share one stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from abc import ABC, abstractmethod
from collections import Counter, deque
from collections.abc import AsyncIterator, Iterable
from typing import Any

from evotui.engine.events import Event, parse
from evotui.engine.jobs import Job

ACTIONS = ("pause", "kill")


class Executor(ABC):
    """The base: slot accounting and the thread-safe bridge from workers to ``events()``."""

    def __init__(self, slots: Iterable[str]):
        self.slots: list[str] = list(slots)
        if not self.slots:
            raise ValueError("an executor needs at least one device slot")
        self._bridge = threading.Lock()
        self._items: deque[Any] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._ended = False

    # -- the engine's interface ---------------------------------------------------------
    @abstractmethod
    def busy_slots(self) -> list[str]:
        """The slots the jobs hold now (one entry per slot; an FSDP job holds several)."""

    def free_slots(self) -> list[str]:
        free = Counter(self.slots)
        free.subtract(Counter(self.busy_slots()))
        return [slot for slot in dict.fromkeys(self.slots) for _ in range(max(0, free[slot]))]

    @abstractmethod
    def submit(self, job: Job) -> None:
        """Start ``job`` on ``job.device``; ValueError if that slot is not free."""

    @abstractmethod
    def request(self, candidate_id: str, action: str) -> bool:
        """Ask a running candidate's worker to ``pause`` or ``kill``; False if not running."""

    @abstractmethod
    def running(self) -> list[str]:
        """The candidate ids with a live worker."""

    def warm(self, config: dict[str, Any],  # noqa: B027 - optional, not abstract
             cache_dir: str | None = None) -> None:
        """Get every slot ready for ``config`` (plain data) before the first job, where that
        saves the first job time. An executor with nothing to prepare does nothing."""

    @abstractmethod
    async def shutdown(self, kill: bool = False) -> None:
        """Wait for the running jobs (killing them first with ``kill``), then end events()."""

    def events(self) -> AsyncIterator[tuple[str, Event]]:
        """Every job's events in arrival order, until ``shutdown`` has finished. Cancelling a
        pending ``anext()`` (``asyncio.wait_for`` timing out) loses nothing and ends nothing."""
        return _EventStream(self)

    # -- for subclasses -----------------------------------------------------------------
    def _emit(self, candidate_id: str, event: Event | dict[str, Any]) -> None:
        """Hand an event (typed, or a plain dict that is parsed) to events(); callable from
        any thread."""
        event = parse(event)
        with self._bridge:
            self._items.append((candidate_id, event))
        self._wake_up()

    def _end(self) -> None:
        """events() stops once the events before this call are consumed."""
        with self._bridge:
            self._ended = True
        self._wake_up()

    def _wake_up(self) -> None:
        with self._bridge:
            loop, wake = self._loop, self._wake
        if loop is not None and wake is not None:
            with contextlib.suppress(RuntimeError):  # a closed loop: the items wait
                loop.call_soon_threadsafe(wake.set)

    def _next(self) -> tuple[str, Event] | None:
        """The next item; None when there is none yet; StopAsyncIteration after the end."""
        with self._bridge:
            if self._items:
                return self._items.popleft()
            if self._ended:
                raise StopAsyncIteration
            return None

    def _attach(self) -> asyncio.Event:
        loop = asyncio.get_running_loop()
        with self._bridge:
            if self._loop is not loop or self._wake is None:
                self._loop, self._wake = loop, asyncio.Event()
            return self._wake


class _EventStream:
    """An async iterator over an executor's events. Not a generator: a generator that is
    cancelled while it waits is finished for good."""

    def __init__(self, executor: Executor):
        self.executor = executor

    def __aiter__(self) -> _EventStream:
        return self

    async def __anext__(self) -> tuple[str, Event]:
        while True:
            wake = self.executor._attach()
            wake.clear()  # before looking, so an item emitted meanwhile sets it again
            item = self.executor._next()
            if item is not None:
                return item
            await wake.wait()


def check_action(action: str) -> None:
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; use one of {', '.join(ACTIONS)}")
