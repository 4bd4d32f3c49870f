"""Incremental reads of a run store: what changed since the last look.

The data layer of the app, usable without it (``evotui bench tui`` drives it too): each
:meth:`Feed.poll` returns the candidates that changed (new, or their ``updated`` moved), the
metric rows written since the last poll, the events since the last event id, the worker
processes and the frontier when ``frontier.json`` was rewritten. Imports no Textual and no torch.

Metric rows are read per candidate with ``metrics_for(since_id=...)``: only candidates that run,
or that changed since the last poll, can have new rows (the engine writes a candidate's rows
before the status change that ends its run), so a poll reads a handful of indexed ranges, never
the whole table. The first poll reads each candidate's latest rows only, not its history.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evotui.engine.exports import objective_values
from evotui.engine.rundir import RunDir, try_frontier
from evotui.engine.store import RunStore
from evotui.jsonio import finite
from evotui.lifecycle import FINISHED

ACTIVE = ("running", "killing")
EVENT_BATCH = 500  # events read per poll at most (a long backlog arrives over several polls)


@dataclass
class Update:
    """What one poll found. ``candidates``: changed or new ones (no spec), by id; ``metrics``:
    new rows in insertion order, train and eval; ``latest``: the newest train row of each
    candidate that got one; ``frontier``: ids when ``frontier.json`` changed, else None."""

    candidates: dict[str, dict[str, Any]] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    latest: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    workers: dict[str, dict[str, Any]] = field(default_factory=dict)
    frontier: list[str] | None = None
    answered: list[dict[str, Any]] = field(default_factory=list)  # commands done or rejected
    first: bool = False

    @property
    def empty(self) -> bool:
        return not (self.candidates or self.metrics or self.events or self.answered
                    or self.frontier is not None)


@dataclass
class RunInfo:
    """What the run is: its name, objectives, rung boundaries and generations (read once)."""

    name: str
    run_dir: Path
    objectives: dict[str, str]
    rungs: list[int]
    generations: int | None
    frontier_path: Path


class Feed:
    """Reads one run store incrementally. Not thread-safe: poll from one thread at a time."""

    def __init__(self, store: RunStore, *, log_backlog: int = 200):
        self.store = store
        self.log_backlog = log_backlog
        self.info = read_info(store)
        self.candidates: dict[str, dict[str, Any]] = {}
        self.latest: dict[str, dict[str, Any]] = {}  # newest train row per candidate
        self.frontier: list[str] = []
        self.pending: dict[str, str] = {}  # candidate -> its oldest unanswered command
        self._pending_ids: set[int] = set()
        self._since: dict[str, int] = {}  # last metric row id read, per candidate
        self._event_id = 0
        self._frontier_stamp: tuple[float, int] | None = None
        self._polled = False
        self._version = 0  # counts the changes to finished candidates (all best() reads)
        self._best: tuple[int, str | None] | None = None  # best() at a version

    def poll(self) -> Update:
        first = not self._polled
        self._polled = True
        up = Update(first=first)
        for c in self.store.candidates(with_spec=False):
            old = self.candidates.get(c["id"])
            if old is None or old["updated"] != c["updated"]:
                up.candidates[c["id"]] = c
                self.candidates[c["id"]] = c
                if c["status"] in FINISHED or (old is not None and old["status"] in FINISHED):
                    self._version += 1
        if first:
            self._first_metrics(up)
            events = self.store.recent_events(self.log_backlog)
        else:
            self._new_metrics(up)
            events = self.store.events(self._event_id, EVENT_BATCH)
        if events:
            self._event_id = events[-1]["id"]
        up.events = events
        up.workers = self.store.get_state("workers", {}) or {}
        self._commands(up)
        frontier = self._read_frontier()
        if frontier is not None:
            self.frontier = frontier
            up.frontier = frontier
        return up

    def _commands(self, up: Update) -> None:
        """The commands waiting for the engine, and those it answered since the last poll."""
        pending = self.store.pending_commands()
        ids = {c["id"] for c in pending}
        up.answered = [self.store.command(i) for i in sorted(self._pending_ids - ids)]
        self._pending_ids = ids
        self.pending = {}
        for c in pending:
            self.pending.setdefault(c["candidate"], c["action"])

    def _first_metrics(self, up: Update) -> None:
        """The newest train row of each candidate; later polls read rows after the newest of
        any kind (an eval row may be newer than the last train row)."""
        for cid in self.candidates:
            for kind in ("train", "eval"):
                row = self.store.latest_metrics(cid, kind)
                if row is not None:
                    self._since[cid] = max(self._since.get(cid, 0), row["id"])
                    if kind == "train":
                        self.latest[cid] = row
        up.latest = dict(self.latest)

    def _new_metrics(self, up: Update) -> None:
        for cid, c in self.candidates.items():
            if c["status"] not in ACTIVE and cid not in up.candidates:
                continue
            rows = self.store.metrics_for(cid, since_id=self._since.get(cid, 0))
            if not rows:
                continue
            self._since[cid] = rows[-1]["id"]
            up.metrics += rows
            for row in rows:
                if row["kind"] == "train":
                    self.latest[cid] = up.latest[cid] = row
        up.metrics.sort(key=lambda r: r["id"])

    def _read_frontier(self) -> list[str] | None:
        """The frontier ids when ``frontier.json`` is new or rewritten; None when unchanged."""
        path = self.info.frontier_path
        try:
            st = path.stat()
        except OSError:
            return None
        stamp = (st.st_mtime, st.st_size)
        if stamp == self._frontier_stamp:
            return None
        frontier = try_frontier(path)
        if frontier is None:
            return None  # replaced atomically, so only a foreign file gets here
        self._frontier_stamp = stamp
        return frontier.ids

    # -- reads for one candidate (the Loss pane, the details screen) ---------------------------

    def curve(self, cid: str) -> list[dict[str, Any]]:
        """Every metric row of one candidate, train and eval, oldest first."""
        return self.store.metrics_for(cid)

    def best(self) -> str | None:
        """The current best finished candidate: the lowest held-out loss (the first objective
        where no candidate has one); worked out again only when a finished one changed."""
        if self._best is None or self._best[0] != self._version:
            best = (best_candidate(self.candidates.values(), {"loss": "min"})
                    or best_candidate(self.candidates.values(), self.info.objectives))
            self._best = (self._version, best)
        return self._best[1]


def engine_said(store: RunStore) -> tuple[str | None, float | None, int | None]:
    """What the engine last said about itself: its state (running, stopping, stopped,
    finished), its latest heartbeat and its pid; (None, None, None) for a run store from before
    the engine kept a heartbeat."""
    said = store.engine_state()
    if said is None:
        return None, None, None
    return said.state, said.heartbeat, said.pid


def read_info(store: RunStore) -> RunInfo:
    objectives = store.get_state("objectives") or {"loss": "min"}
    rungs = (store.get_state("rungs") or {}).get("steps") or []
    generations = None
    try:
        import yaml

        cfg = yaml.safe_load(store.config_yaml or "") or {}
        generations = (cfg.get("evolution") or {}).get("generations")
    except Exception:  # noqa: BLE001 - a config we cannot read only loses the "of N"
        generations = None
    meta = store.meta
    return RunInfo(name=str(meta.get("name") or store.run_dir.name), run_dir=store.run_dir,
                   objectives=dict(objectives), rungs=[int(s) for s in rungs],
                   generations=generations, frontier_path=RunDir.of(store).frontier_path)


def best_candidate(candidates: Iterable[Mapping[str, Any]],
                   objectives: Mapping[str, str]) -> str | None:
    """The finished candidate with the best value of the first objective (ties: first)."""
    if not objectives:
        return None
    name, direction = next(iter(objectives.items()))
    best: tuple[float, str] | None = None
    for c in candidates:
        if c["status"] not in FINISHED:
            continue
        value = finite((c.get("metrics") or {}).get(name))
        if value is None:
            continue
        key = value if direction == "min" else -value
        if best is None or key < best[0]:
            best = (key, c["id"])
    return best[1] if best else None


def lineage(candidates: Mapping[str, Mapping[str, Any]], cid: str,
            depth: int = 12) -> list[list[str]]:
    """Ancestors of ``cid`` by generation back from its parents: [[parents], [grandparents],...]
    (each id once, at most ``depth`` levels)."""
    levels: list[list[str]] = []
    seen = {cid}
    frontier = [cid]
    for _ in range(depth):
        nxt: list[str] = []
        for c in frontier:
            for p in (candidates.get(c) or {}).get("parents") or []:
                if p not in seen:
                    seen.add(p)
                    nxt.append(p)
        if not nxt:
            break
        levels.append(nxt)
        frontier = nxt
    return levels


def children(candidates: Mapping[str, Mapping[str, Any]], cid: str) -> list[str]:
    return [c["id"] for c in candidates.values() if cid in (c.get("parents") or [])]


def frontier_points(candidates: Iterable[Mapping[str, Any]], objectives: Mapping[str, str]
                    ) -> dict[str, dict[str, float]]:
    """Objective values of every finished candidate that has them all."""
    out = {}
    for c in candidates:
        if c["status"] in FINISHED:
            values = objective_values(c, objectives)
            if values is not None:
                out[c["id"]] = values
    return out
