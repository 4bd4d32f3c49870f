"""The run store: one SQLite file (``run.db``, WAL) that the engine writes and the TUI and CLI read.

The engine is the single writer of every table but ``commands``, which ``evotui pause|resume|kill``
and the TUI write from other processes. Every write commits at once (or at the end of an explicit
``with store.transaction():``), so killing the engine at any instant loses nothing committed.
Events are also appended to ``run.log``, one readable line each, for ``tail -f``.

Candidates come back as frozen :class:`~evotui.engine.records.Candidate` records, and a status
change is checked against :data:`evotui.lifecycle.TRANSITIONS` (a move the lifecycle does not
allow raises :class:`~evotui.lifecycle.TransitionError`). Checkpoint paths inside the run
directory are stored relative to it. The engine says what it is doing (running, stopping,
stopped, finished) and beats a heartbeat in the ``run`` table: :meth:`RunStore.engine_state`.
The schema is :mod:`evotui.engine.schema`; metrics, events and commands are
:class:`evotui.engine.journal.Journal`.

This module imports no torch: the TUI opens the store and must start instantly.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from evotui import atomic
from evotui.engine.journal import Journal
from evotui.engine.records import (
    ENGINE_STATES,
    Candidate,
    EngineState,
    decode_candidate,
    encode_candidate,
)
from evotui.engine.schema import (  # noqa: F401 - re-exported: the store's names
    ACTIONS,
    CANDIDATE_FIELDS,
    COMMAND_STATUSES,
    CONFIG_NAME,
    DB_NAME,
    LOG_NAME,
    METRIC_KINDS,
    SCHEMA,
    SCHEMA_VERSION,
    connect,
    format_log_line,
)
from evotui.errors import UserError
from evotui.lifecycle import FINISHED, STATUSES, Status, check_move  # noqa: F401

ENGINE_STATE_KEY = "engine_state"


class RunStore(Journal):
    """One run's database. Open with :meth:`create` or :meth:`open`; close when done."""

    def __init__(self, run_dir: Path, conn: sqlite3.Connection, *, readonly: bool,
                 log_path: str | Path | None = None) -> None:
        self.run_dir = run_dir
        self.db_path = run_dir / DB_NAME
        self.readonly = readonly
        self.log_path = Path(log_path) if log_path is not None else run_dir / LOG_NAME
        self._conn = conn
        self._lock = threading.RLock()
        self._depth = 0
        self._log: TextIO | None = None
        self._log_pending: list[str] = []

    # -- opening and closing ------------------------------------------------------------------

    @classmethod
    def create(cls, run_dir: str | Path, config_yaml: str, meta: Mapping[str, Any], *,
               log_path: str | Path | None = None) -> RunStore:
        """Start a new run in ``run_dir``: the schema, the metadata and ``config.yaml``."""
        run_dir = Path(run_dir)
        if (run_dir / DB_NAME).exists():
            raise UserError.single(f"already holds a run ({DB_NAME}); continue it with --resume "
                                   "or choose another run directory", source=str(run_dir))
        run_dir.mkdir(parents=True, exist_ok=True)
        store = cls(run_dir, connect(run_dir / DB_NAME, False), readonly=False,
                    log_path=log_path)
        with store.transaction():
            for statement in SCHEMA.split(";"):
                store._conn.execute(statement)
            store._conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            store.set_state("meta", dict(meta))
            store.set_state("config_yaml", config_yaml)
            store.set_state("created", time.time())
        atomic.write_text(run_dir / CONFIG_NAME, config_yaml)
        return store

    @classmethod
    def open(cls, run_dir: str | Path, readonly: bool = False, *,
             log_path: str | Path | None = None) -> RunStore:
        """Open an existing run; a directory without ``run.db`` is a :class:`UserError`."""
        from evotui.engine import integrity

        run_dir = Path(run_dir)
        integrity.check_name(run_dir, "run directory")
        db = run_dir / DB_NAME
        if not db.is_file():
            raise UserError.single(f"no {DB_NAME} here, so this is not a run directory "
                                   "(`evotui run` starts one)",
                                   source=str(run_dir))
        integrity.check_db(db)  # empty, damaged header or corrupt page: one line, unchanged
        conn: sqlite3.Connection | None = None
        try:
            conn = connect(db, readonly)
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            if conn is not None:
                conn.close()
            raise UserError.single(f"cannot read {DB_NAME}: {exc}", source=str(run_dir)) from exc
        if version != SCHEMA_VERSION:
            conn.close()
            raise UserError.single(f"{DB_NAME} has schema version {version}; this evotui reads "
                                   f"version {SCHEMA_VERSION}", source=str(run_dir))
        return cls(run_dir, conn, readonly=readonly, log_path=log_path)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
            if self._log is not None:
                self._log.close()
                self._log = None

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ------------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Group writes into one commit. Writes outside it commit one by one. Nests."""
        if self.readonly:
            raise PermissionError(f"{self.db_path} is open read-only")
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            self._conn.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                self._log_pending.clear()
                raise
            finally:
                self._depth = 0
            self._flush_log()

    def _write(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        with self.transaction():
            return self._conn.execute(sql, params)

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def _flush_log(self) -> None:
        if not self._log_pending:
            return
        if self._log is None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = open(self.log_path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115
        for line in self._log_pending:
            self._log.write(line + "\n")
        self._log.flush()
        self._log_pending.clear()

    # -- run state -----------------------------------------------------------------------------

    def set_state(self, key: str, value: Any) -> None:
        """Store any JSON-serialisable value under ``key`` (generation, RNG state, weights...)."""
        self._write("INSERT INTO run (key, value) VALUES (?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (key, json.dumps(value)))

    def get_state(self, key: str, default: Any = None) -> Any:
        rows = self._rows("SELECT value FROM run WHERE key = ?", (key,))
        return json.loads(rows[0]["value"]) if rows else default

    @property
    def meta(self) -> dict[str, Any]:
        return self.get_state("meta", {})

    @property
    def config_yaml(self) -> str:
        return self.get_state("config_yaml", "")

    # -- the engine's own state ----------------------------------------------------------------

    def set_engine_state(self, state: str | None = None) -> None:
        """The engine says what it does (``running``, ``stopping``, ``stopped``, ``finished``)
        or, with no argument, that it is still alive (the heartbeat). Written by the engine."""
        now = time.time()
        old = self.engine_state()
        if state is None:
            if old is None:
                return
            state, since = old.state, old.since
        else:
            if state not in ENGINE_STATES:
                raise ValueError(f"engine state {state!r} is not one of {', '.join(ENGINE_STATES)}")
            since = old.since if old is not None and old.state == state else now
        self.set_state(ENGINE_STATE_KEY, {"state": state, "pid": os.getpid(), "since": since,
                                          "heartbeat": now})

    def engine_state(self) -> EngineState | None:
        """What the engine last wrote about itself; None before any engine ran. ``alive()``
        tells a live engine from one that was killed (its heartbeat goes stale)."""
        data = self.get_state(ENGINE_STATE_KEY)
        if not isinstance(data, Mapping):
            return None
        return EngineState(str(data.get("state")), data.get("pid"), float(data.get("since", 0)),
                           float(data.get("heartbeat", 0)))

    # -- candidates ----------------------------------------------------------------------------

    def add_candidate(self, id: str, *, generation: int, spec: Mapping[str, Any],
                      parents: Sequence[str] = (), operator: str = "",
                      spec_key: str | None = None, provenance: Mapping[str, Any] | None = None,
                      status: str = "queued", rung: int = 0, step: int = 0,
                      total_steps: int | None = None, metrics: Mapping[str, Any] | None = None,
                      checkpoint: str | None = None, device: str | None = None) -> None:
        fields = encode_candidate({
            "generation": generation, "parents": parents, "operator": operator, "spec": spec,
            "spec_key": spec_key, "provenance": provenance, "status": status, "rung": rung,
            "step": step, "total_steps": total_steps, "metrics": metrics,
            "checkpoint": checkpoint, "device": device}, self.run_dir)
        now = time.time()
        fields |= {"id": id, "created": now, "updated": now}
        names = ", ".join(fields)
        marks = ", ".join("?" * len(fields))
        try:
            self._write(f"INSERT INTO candidates ({names}) VALUES ({marks})",
                        tuple(fields.values()))
        except sqlite3.IntegrityError as exc:
            raise ValueError(f"cannot add candidate {id!r}: {exc}") from exc

    def update_candidate(self, id: str, **fields: Any) -> Candidate:
        """Set some columns of one candidate (JSON ones take Python values); bumps ``updated``.
        A status change must be allowed by the lifecycle (else :class:`TransitionError`, and
        nothing is written). Returns the candidate as it is now."""
        encoded = encode_candidate(fields, self.run_dir) | {"updated": time.time()}
        assignments = ", ".join(f"{name} = ?" for name in encoded)
        with self.transaction():
            rows = self._rows("SELECT status FROM candidates WHERE id = ?", (id,))
            if not rows:
                raise KeyError(f"no candidate {id!r}")
            if "status" in encoded:
                check_move(id, rows[0]["status"], encoded["status"])
            self._conn.execute(f"UPDATE candidates SET {assignments} WHERE id = ?",
                               (*encoded.values(), id))
            return self.candidate(id)

    def candidate(self, id: str) -> Candidate:
        rows = self._rows("SELECT * FROM candidates WHERE id = ?", (id,))
        if not rows:
            raise KeyError(f"no candidate {id!r}")
        return decode_candidate(rows[0], self.run_dir)

    def has_candidate(self, id: str) -> bool:
        return bool(self._rows("SELECT 1 FROM candidates WHERE id = ?", (id,)))

    def find_spec_key(self, spec_key: str) -> Candidate | None:
        """The first candidate with this genome key, if any (so a genome is never trained twice)."""
        rows = self._rows("SELECT * FROM candidates WHERE spec_key = ? ORDER BY created LIMIT 1",
                          (spec_key,))
        return decode_candidate(rows[0], self.run_dir) if rows else None

    def candidates(self, status: str | Iterable[str] | None = None, *,
                   generation: int | None = None, with_spec: bool = True) -> list[Candidate]:
        """Candidates in creation order, optionally of some statuses or one generation
        (``with_spec=False``: ``spec`` is None, for a cheaper read)."""
        where: list[str] = []
        params: list[Any] = []
        if status is not None:
            wanted = [status] if isinstance(status, str) else [str(s) for s in status]
            where.append(f"status IN ({', '.join('?' * len(wanted))})")
            params += wanted
        if generation is not None:
            where.append("generation = ?")
            params.append(generation)
        columns = "*" if with_spec else ", ".join(
            c for c in ("id", *CANDIDATE_FIELDS, "created", "updated") if c != "spec")
        sql = f"SELECT {columns} FROM candidates"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [decode_candidate(r, self.run_dir)
                for r in self._rows(sql + " ORDER BY created, id", params)]

    def count_candidates(self, status: str | None = None) -> int:
        if status is None:
            return self._rows("SELECT COUNT(*) AS n FROM candidates")[0]["n"]
        return self._rows("SELECT COUNT(*) AS n FROM candidates WHERE status = ?",
                          (str(status),))[0]["n"]

    def status_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        for row in self._rows("SELECT status, COUNT(*) AS n FROM candidates GROUP BY status"):
            counts[row["status"]] = row["n"]
        return counts
