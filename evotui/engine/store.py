"""The run store: one SQLite file (``run.db``, WAL) that the engine writes and the TUI and CLI read.

The engine is the single writer of every table but ``commands``, which ``evotui pause|resume|kill``
and the TUI write from other processes. Every write commits at once (or at the end of an explicit
``with store.transaction():``), so killing the engine at any instant loses nothing committed.
Events are also appended to ``run.log``, one readable line each, for ``tail -f``.

This module imports no torch: the TUI opens the store and must start instantly.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from evotui import atomic
from evotui.errors import UserError

DB_NAME = "run.db"
LOG_NAME = "run.log"
CONFIG_NAME = "config.yaml"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 10_000

# "killing": a kill was sent and the worker has not exited yet (then "killed").
STATUSES = ("queued", "running", "paused", "done", "stopped", "failed", "killing", "killed")
FINISHED = ("done", "stopped")
ACTIONS = ("pause", "resume", "kill")
COMMAND_STATUSES = ("pending", "done", "rejected")
METRIC_KINDS = ("train", "eval")

CANDIDATE_FIELDS = ("generation", "parents", "operator", "spec", "spec_key", "provenance",
                    "status", "rung", "step", "total_steps", "metrics", "checkpoint", "error",
                    "device")
CANDIDATE_JSON = ("parents", "spec", "provenance", "metrics")
METRIC_FIELDS = ("candidate", "rung", "step", "loss", "lr", "tokens", "tokens_per_s", "kind",
                 "extra", "time")


def _one_of(values: Sequence[str]) -> str:
    return ", ".join(f"'{v}'" for v in values)


SCHEMA = f"""
CREATE TABLE run (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE candidates (
    id TEXT PRIMARY KEY,
    generation INTEGER NOT NULL,
    parents TEXT NOT NULL DEFAULT '[]',
    operator TEXT NOT NULL DEFAULT '',
    spec TEXT NOT NULL,
    spec_key TEXT,
    provenance TEXT NOT NULL DEFAULT '{{}}',
    status TEXT NOT NULL,
    rung INTEGER NOT NULL DEFAULT 0,
    step INTEGER NOT NULL DEFAULT 0,
    total_steps INTEGER,
    metrics TEXT NOT NULL DEFAULT '{{}}',
    checkpoint TEXT,
    error TEXT,
    device TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE INDEX candidates_status ON candidates (status);
CREATE INDEX candidates_spec_key ON candidates (spec_key);
CREATE TABLE metrics (
    id INTEGER PRIMARY KEY,
    candidate TEXT NOT NULL,
    rung INTEGER NOT NULL DEFAULT 0,
    step INTEGER NOT NULL,
    loss REAL,
    lr REAL,
    tokens INTEGER,
    tokens_per_s REAL,
    kind TEXT NOT NULL DEFAULT 'train' CHECK (kind IN ({_one_of(METRIC_KINDS)})),
    extra TEXT NOT NULL DEFAULT '{{}}',
    time REAL NOT NULL
);
CREATE INDEX metrics_candidate ON metrics (candidate, id);
CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    kind TEXT NOT NULL,
    candidate TEXT,
    text TEXT NOT NULL
);
CREATE TABLE commands (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL,
    candidate TEXT NOT NULL,
    action TEXT NOT NULL CHECK (action IN ({_one_of(ACTIONS)})),
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ({_one_of(COMMAND_STATUSES)})),
    outcome TEXT,
    done_time REAL
);
CREATE INDEX commands_status ON commands (status, id)
"""


def format_log_line(at: float, kind: str, text: str, candidate: str | None = None) -> str:
    """``2026-11-24 14:03:12 [mutation] c0007 <- c0003: ...``: one line, local time.

    The candidate id leads the text unless the text already starts with it.
    """
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))
    body = " | ".join(part.strip() for part in text.splitlines() if part.strip())
    if candidate and not re.match(rf"{re.escape(candidate)}\b", body):
        body = f"{candidate} {body}".rstrip()
    return f"{stamp} [{kind}] {body}"


def _connect(db: Path, readonly: bool) -> sqlite3.Connection:
    if readonly:
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True,
                               isolation_level=None, check_same_thread=False)
    else:
        conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    if not readonly:
        conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def _decode_candidate(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    for key in CANDIDATE_JSON:
        if key in out:
            out[key] = json.loads(out[key])
    return out


def _encode_candidate(fields: Mapping[str, Any]) -> dict[str, Any]:
    unknown = set(fields) - set(CANDIDATE_FIELDS)
    if unknown:
        raise ValueError(f"unknown candidate field(s): {', '.join(sorted(unknown))}")
    if "status" in fields and fields["status"] not in STATUSES:
        raise ValueError(f"status {fields['status']!r} is not one of {', '.join(STATUSES)}")
    out = dict(fields)
    for key in CANDIDATE_JSON:
        if key in out:
            value = out[key]
            out[key] = json.dumps(list(value) if key == "parents" else (value or {}))
    return out


class RunStore:
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
        store = cls(run_dir, _connect(run_dir / DB_NAME, False), readonly=False,
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
            conn = _connect(db, readonly)
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

    # -- candidates ----------------------------------------------------------------------------

    def add_candidate(self, id: str, *, generation: int, spec: Mapping[str, Any],
                      parents: Sequence[str] = (), operator: str = "",
                      spec_key: str | None = None, provenance: Mapping[str, Any] | None = None,
                      status: str = "queued", rung: int = 0, step: int = 0,
                      total_steps: int | None = None, metrics: Mapping[str, Any] | None = None,
                      checkpoint: str | None = None, device: str | None = None) -> None:
        fields = _encode_candidate({
            "generation": generation, "parents": parents, "operator": operator, "spec": spec,
            "spec_key": spec_key, "provenance": provenance, "status": status, "rung": rung,
            "step": step, "total_steps": total_steps, "metrics": metrics,
            "checkpoint": checkpoint, "device": device})
        now = time.time()
        fields |= {"id": id, "created": now, "updated": now}
        names = ", ".join(fields)
        marks = ", ".join("?" * len(fields))
        try:
            self._write(f"INSERT INTO candidates ({names}) VALUES ({marks})",
                        tuple(fields.values()))
        except sqlite3.IntegrityError as exc:
            raise ValueError(f"cannot add candidate {id!r}: {exc}") from exc

    def update_candidate(self, id: str, **fields: Any) -> None:
        """Set some columns of one candidate (JSON ones take Python values); bumps ``updated``."""
        encoded = _encode_candidate(fields) | {"updated": time.time()}
        assignments = ", ".join(f"{name} = ?" for name in encoded)
        cur = self._write(f"UPDATE candidates SET {assignments} WHERE id = ?",
                          (*encoded.values(), id))
        if cur.rowcount == 0:
            raise KeyError(f"no candidate {id!r}")

    def candidate(self, id: str) -> dict[str, Any]:
        rows = self._rows("SELECT * FROM candidates WHERE id = ?", (id,))
        if not rows:
            raise KeyError(f"no candidate {id!r}")
        return _decode_candidate(rows[0])

    def has_candidate(self, id: str) -> bool:
        return bool(self._rows("SELECT 1 FROM candidates WHERE id = ?", (id,)))

    def find_spec_key(self, spec_key: str) -> dict[str, Any] | None:
        """The first candidate with this genome key, if any (so a genome is never trained twice)."""
        rows = self._rows("SELECT * FROM candidates WHERE spec_key = ? ORDER BY created LIMIT 1",
                          (spec_key,))
        return _decode_candidate(rows[0]) if rows else None

    def candidates(self, status: str | Iterable[str] | None = None, *,
                   generation: int | None = None, with_spec: bool = True) -> list[dict[str, Any]]:
        """Candidates in creation order, optionally of some statuses or one generation."""
        where: list[str] = []
        params: list[Any] = []
        if status is not None:
            wanted = [status] if isinstance(status, str) else list(status)
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
        return [_decode_candidate(r) for r in self._rows(sql + " ORDER BY created, id", params)]

    def count_candidates(self, status: str | None = None) -> int:
        if status is None:
            return self._rows("SELECT COUNT(*) AS n FROM candidates")[0]["n"]
        return self._rows("SELECT COUNT(*) AS n FROM candidates WHERE status = ?",
                          (status,))[0]["n"]

    def status_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        for row in self._rows("SELECT status, COUNT(*) AS n FROM candidates GROUP BY status"):
            counts[row["status"]] = row["n"]
        return counts

    # -- metrics -------------------------------------------------------------------------------

    def add_metrics(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Insert step metrics in one commit. Each row needs ``candidate`` and ``step``."""
        now = time.time()
        params = []
        for row in rows:
            unknown = set(row) - set(METRIC_FIELDS)
            if unknown:
                raise ValueError(f"unknown metric field(s): {', '.join(sorted(unknown))}")
            kind = row.get("kind", "train")
            if kind not in METRIC_KINDS:
                raise ValueError(f"metric kind {kind!r} is not one of {', '.join(METRIC_KINDS)}")
            params.append((row["candidate"], row.get("rung", 0), row["step"], row.get("loss"),
                           row.get("lr"), row.get("tokens"), row.get("tokens_per_s"), kind,
                           json.dumps(row.get("extra") or {}), row.get("time", now)))
        if params:
            with self.transaction():
                self._conn.executemany(
                    f"INSERT INTO metrics ({', '.join(METRIC_FIELDS)}) "
                    f"VALUES ({', '.join('?' * len(METRIC_FIELDS))})", params)
        return len(params)

    def metrics_for(self, candidate: str, *, kind: str | None = None, rung: int | None = None,
                    since_id: int = 0) -> list[dict[str, Any]]:
        """One candidate's metric rows in insertion order (``since_id`` for incremental reads)."""
        sql = "SELECT * FROM metrics WHERE candidate = ? AND id > ?"
        params: list[Any] = [candidate, since_id]
        if kind is not None:
            sql += " AND kind = ?"
            params.append(kind)
        if rung is not None:
            sql += " AND rung = ?"
            params.append(rung)
        return [self._metric(r) for r in self._rows(sql + " ORDER BY id", params)]

    def latest_metrics(self, candidate: str, kind: str = "train") -> dict[str, Any] | None:
        rows = self._rows("SELECT * FROM metrics WHERE candidate = ? AND kind = ? "
                          "ORDER BY id DESC LIMIT 1", (candidate, kind))
        return self._metric(rows[0]) if rows else None

    @staticmethod
    def _metric(row: sqlite3.Row) -> dict[str, Any]:
        out = dict(row)
        out["extra"] = json.loads(out["extra"])
        return out

    # -- events --------------------------------------------------------------------------------

    def add_event(self, kind: str, text: str, candidate: str | None = None) -> int:
        """Record one event (the mutation log) and append its line to ``run.log``."""
        now = time.time()
        with self.transaction():
            cur = self._conn.execute(
                "INSERT INTO events (time, kind, candidate, text) VALUES (?, ?, ?, ?)",
                (now, kind, candidate, text))
            self._log_pending.append(format_log_line(now, kind, text, candidate))
        return int(cur.lastrowid or 0)

    def events(self, since_id: int = 0, limit: int = 1000, *, candidate: str | None = None,
               kind: str | None = None) -> list[dict[str, Any]]:
        """Events after ``since_id``, oldest first, at most ``limit``."""
        sql = "SELECT * FROM events WHERE id > ?"
        params: list[Any] = [since_id]
        if candidate is not None:
            sql += " AND candidate = ?"
            params.append(candidate)
        if kind is not None:
            sql += " AND kind = ?"
            params.append(kind)
        return [dict(r) for r in self._rows(sql + " ORDER BY id LIMIT ?", [*params, limit])]

    def recent_events(self, limit: int = 100) -> list[dict[str, Any]]:
        """The last ``limit`` events, oldest first."""
        rows = self._rows("SELECT * FROM events ORDER BY id DESC LIMIT ?", (limit,))
        return [dict(r) for r in reversed(rows)]

    # -- commands ------------------------------------------------------------------------------

    def request(self, candidate: str, action: str) -> int:
        """Queue a pause/resume/kill for the engine; returns the command id."""
        if action not in ACTIONS:
            raise UserError.single(f"unknown action {action!r}; use one of {', '.join(ACTIONS)}",
                                   source=str(self.run_dir))
        with self.transaction():
            if not self.has_candidate(candidate):
                raise UserError.single(f"no candidate {candidate!r} in this run "
                                       f"(`evotui status {self.run_dir}` lists them)",
                                       source=str(self.run_dir))
            cur = self._conn.execute(
                "INSERT INTO commands (time, candidate, action) VALUES (?, ?, ?)",
                (time.time(), candidate, action))
        return int(cur.lastrowid or 0)

    def pending_commands(self) -> list[dict[str, Any]]:
        rows = self._rows("SELECT * FROM commands WHERE status = 'pending' ORDER BY id")
        return [dict(r) for r in rows]

    def finish_command(self, id: int, status: str, outcome: str = "") -> None:
        """Mark a pending command ``done`` or ``rejected`` with a readable outcome."""
        if status not in ("done", "rejected"):
            raise ValueError(f"command status {status!r} is not done or rejected")
        with self.transaction():
            cur = self._conn.execute(
                "UPDATE commands SET status = ?, outcome = ?, done_time = ? "
                "WHERE id = ? AND status = 'pending'", (status, outcome, time.time(), id))
            if cur.rowcount == 0:
                raise ValueError(f"command {id} is {self.command(id)['status']}, not pending")

    def command(self, id: int) -> dict[str, Any]:
        rows = self._rows("SELECT * FROM commands WHERE id = ?", (id,))
        if not rows:
            raise KeyError(f"no command {id}")
        return dict(rows[0])

    def commands(self, limit: int = 100) -> list[dict[str, Any]]:
        """The last ``limit`` commands, oldest first."""
        rows = self._rows("SELECT * FROM commands ORDER BY id DESC LIMIT ?", (limit,))
        return [dict(r) for r in reversed(rows)]

    def wait_command(self, id: int, timeout: float = 5.0, poll: float = 0.1) -> dict[str, Any]:
        """Poll until the engine has answered a command or ``timeout`` passes; the last row."""
        deadline = time.monotonic() + timeout
        while True:
            row = self.command(id)
            if row["status"] != "pending" or time.monotonic() >= deadline:
                return row
            time.sleep(poll)

    # -- activity ------------------------------------------------------------------------------

    def last_activity(self) -> float | None:
        """The latest time anything was written: a candidate, an event or a metric row."""
        times = [self._rows("SELECT MAX(updated) AS t FROM candidates")[0]["t"]]
        for table in ("events", "metrics"):
            rows = self._rows(f"SELECT time AS t FROM {table} ORDER BY id DESC LIMIT 1")
            times += [r["t"] for r in rows]
        known = [t for t in times if t is not None]
        return max(known) if known else None
