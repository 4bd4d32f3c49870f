"""The run store's append-mostly tables: step metrics, the event log (mirrored to ``run.log``)
and the command queue. A mixin of :class:`evotui.engine.store.RunStore`, which supplies the
connection, the lock and transactions. Imports no torch."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from evotui.engine.schema import ACTIONS, METRIC_FIELDS, METRIC_KINDS, format_log_line
from evotui.errors import UserError


class Journal:
    """Metrics, events and commands of one run (see the store's docstring)."""

    run_dir: Path
    _conn: sqlite3.Connection
    _log_pending: list[str]

    def transaction(self) -> AbstractContextManager[None]:  # supplied by RunStore
        raise NotImplementedError

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        raise NotImplementedError

    def has_candidate(self, id: str) -> bool:
        raise NotImplementedError

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
        """Queue a pause/resume/kill for the engine; returns the command id. It stays
        ``pending`` until the engine has acted on it (``done``) or refused it (``rejected``),
        with the outcome or the reason; the engine never drops one."""
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

    def pending_commands(self, candidate: str | None = None) -> list[dict[str, Any]]:
        """Commands the engine has not acted on yet, oldest first (of one candidate, or all)."""
        if candidate is None:
            rows = self._rows("SELECT * FROM commands WHERE status = 'pending' ORDER BY id")
        else:
            rows = self._rows("SELECT * FROM commands WHERE status = 'pending' "
                              "AND candidate = ? ORDER BY id", (candidate,))
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
