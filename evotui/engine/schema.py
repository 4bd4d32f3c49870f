"""The run store's on-disk shape: file names, the SQLite schema, the connection settings and the
``run.log`` line format. Imports no torch."""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

from evotui.lifecycle import COMMANDS

DB_NAME = "run.db"
LOG_NAME = "run.log"
CONFIG_NAME = "config.yaml"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 10_000

ACTIONS = COMMANDS
# pending: the engine has not acted yet; done: it acted (outcome says how); rejected: it could
# not (outcome says why). A command is never dropped: it stays pending until one of the two.
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


def connect(db: Path, readonly: bool) -> sqlite3.Connection:
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
