"""What a run trusts on disk, checked before it is used: the run directory's name, ``run.db``,
a run directory a stop left half-created, ``train.init_checkpoint``, the files clean-up may
delete, and the errors that come from the machine (a full disk) rather than from a candidate.

Every check either passes or raises a one-line :class:`~evotui.errors.UserError` naming the file
and the fix; nothing here rewrites a file it found damaged. The callers are the store's
``open``, ``evotui run`` (new and ``--resume``), the engine's clean-up and its failure handling,
and ``evotui pause|resume|kill``. Imports no torch except in :func:`check_init_checkpoint`, which
builds the genome on PyTorch's meta device to know its tensors' shapes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import stat
from pathlib import Path
from typing import Any

from evotui.errors import Problem, UserError

SQLITE_MAGIC = b"SQLite format 3\x00"
DB_FILES = ("run.db", "run.db-wal", "run.db-shm", "config.yaml")  # what create() makes
COMPLETE_KEY = "options"  # the state key `evotui run` writes last when it creates a run
FAULT_ERRNOS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                errno.EIO: "input/output error", errno.EROFS: "read-only file system"}
FAULT_TEXTS = ("No space left on device", "Disk quota exceeded", "Input/output error",
               "Read-only file system", "database or disk is full", "disk I/O error")


# -- names ----------------------------------------------------------------------------------
def shown(path: str | os.PathLike[str]) -> str:
    """A path as it can be printed: bytes that are not UTF-8 as ``\\xff`` escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def check_name(value: str | os.PathLike[str], what: str) -> None:
    """A run directory or candidate id that is not valid UTF-8 (SQLite and the JSON exports
    hold text) is one line naming it, not an internal error."""
    try:
        os.fspath(value).encode("utf-8")
    except UnicodeEncodeError:
        raise UserError.single(f"the {what} name is not valid UTF-8 text; rename it (or give "
                               "the name as it is stored, e.g. from `evotui status`)",
                               source=shown(value)) from None


# -- run.db -----------------------------------------------------------------------------------
def check_db(db: Path) -> None:
    """``run.db`` is whole: not empty, an SQLite header, and SQLite's ``quick_check`` passes
    (a corrupt page is found here, before a reader or ``pause`` touches it). Read-only."""
    source = shown(db)
    try:
        size = db.stat().st_size
        with open(db, "rb") as f:
            head = f.read(len(SQLITE_MAGIC))
    except OSError as e:
        raise UserError.single(f"cannot read it: {e.strerror or e}", source=source) from None
    if size == 0:
        raise UserError.single("is empty (0 bytes): the run's store is lost (a full disk, or a "
                               "copy that failed); restore run.db from a copy, nothing was "
                               "changed", source=source)
    if head != SQLITE_MAGIC:
        raise UserError.single("is not an SQLite database (its header is damaged); restore "
                               "run.db from a copy, nothing was changed", source=source)
    try:
        conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
        try:
            rows = [r[0] for r in conn.execute("PRAGMA quick_check(3)").fetchall()]
        finally:
            conn.close()
    except sqlite3.DatabaseError as e:
        rows = [str(e)]
    if rows != ["ok"]:
        found = [line.strip() for row in rows for line in str(row).splitlines()
                 if line.strip() and not line.startswith("***")]
        raise UserError.single(f"is corrupt (SQLite: {'; '.join(found)[:160]}); restore run.db "
                               "from a copy, nothing was changed", source=source)


def _holds_options(db: Path) -> bool:
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return bool(conn.execute("SELECT 1 FROM run WHERE key = ?", (COMPLETE_KEY,)).fetchall())
    except sqlite3.OperationalError:  # no table yet: the schema was never committed
        return False
    finally:
        conn.close()


def prepare_new_run_dir(run_dir: Path) -> None:
    """Before a new run is created in ``run_dir``: a finished creation there (a run) is refused;
    one a stop interrupted before it was complete (``run.db`` empty, or without the options
    `evotui run` saves last) held nothing, so its files are removed and creation starts again."""
    check_name(run_dir, "run directory")
    db = run_dir / DB_FILES[0]
    if not db.exists():
        return
    empty = db.is_file() and db.stat().st_size == 0
    if not empty:
        check_db(db)
        if _holds_options(db):
            raise UserError.single("already holds a run; use --resume to continue it or choose "
                                   "another --run-dir", source=shown(run_dir))
    for name in DB_FILES:
        (run_dir / name).unlink(missing_ok=True)


def check_resumable(store: Any) -> None:
    """A run whose creation was interrupted has no options: nothing ran, so it is started
    again rather than resumed."""
    if store.get_state(COMPLETE_KEY) is None:
        raise UserError.single("the run's creation was interrupted before it was complete "
                               "(nothing ran): start it again with `evotui run CONFIG "
                               "--run-dir` this directory", source=shown(store.run_dir))


# -- the engine, seen from another process -------------------------------------------------
def engine_alive(store: Any) -> bool:
    """Whether an engine is running this run now (its heartbeat is fresh)."""
    state = store.engine_state()
    return state is not None and state.alive()


def engine_stopped(store: Any) -> bool:
    """Whether the run is known to have no engine: one said it stopped or finished, or its
    heartbeat went stale (killed). A run no engine has ever reported on (made by an evotui
    without the heartbeat) is not known to be stopped."""
    state = store.engine_state()
    return state is not None and not state.alive()


# -- init_checkpoint ------------------------------------------------------------------------
def check_init_checkpoint(cfg: Any, source: str | None) -> dict[str, int] | None:
    """Open ``train.init_checkpoint`` and check it against the seed genome before a run exists:
    a whole safetensors file, finite values, and tensors of this genome's names and shapes."""
    path = cfg.train.init_checkpoint
    if not path:
        return None
    from evotui.model.lm import build_model
    from evotui.train.checkpoint import CheckpointError, verify

    model = build_model(cfg.model, cfg.data.seq_len, device="meta")
    shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    try:
        return verify(path, shapes)
    except CheckpointError as e:
        raise UserError([Problem("train.init_checkpoint", f"{e}; give a whole checkpoint of "
                                 "this genome (`evotui export-seed --out-checkpoint` writes one)"
                                 " or remove train.init_checkpoint")], source) from None


# -- clean-up -------------------------------------------------------------------------------
def remove_own_file(path: str | Path, expected: Path) -> bool:
    """Delete ``path`` only if it is the file this run writes there (``expected``: same name,
    same directory) and a regular file, not a link: a link is never followed, so nothing
    outside the run is removed. Returns whether it removed the file."""
    p = Path(path)
    if p.name != expected.name:
        return False
    try:
        if not os.path.samefile(p.parent, expected.parent):
            return False
        if not stat.S_ISREG(os.lstat(p).st_mode):
            return False
        os.unlink(p)  # unlink never follows a link in the last component
    except FileNotFoundError:
        return False
    return True


# -- faults of the machine ------------------------------------------------------------------
def machine_fault(error: BaseException | str | None) -> str | None:
    """Why ``error`` is the machine's fault and not the candidate's (a full disk, a quota, an
    I/O error, a read-only file system), or None. Takes an exception or a worker's one-line
    failure reason."""
    if isinstance(error, OSError) and error.errno in FAULT_ERRNOS:
        return FAULT_ERRNOS[error.errno]
    text = str(error or "")
    for fault in FAULT_TEXTS:
        if fault in text:
            return fault[0].lower() + fault[1:]
    return None


def machine_stop(error: BaseException, run_dir: Path | str) -> UserError | None:
    """The one line a run ends with when the machine failed it (exit 1), or None when
    ``error`` is not the machine's fault."""
    fault = machine_fault(error)
    if fault is None:
        return None
    detail = " ".join(str(error).split())[:160]
    return UserError([Problem("", f"the run stopped: {fault} ({detail}); what was committed is "
                              f"intact: free space, then `evotui run --resume {shown(run_dir)}` "
                              "continues")], shown(run_dir), exit_code=1)


async def guarded(engine: Any, run: Any) -> None:
    """Await the engine's ``run`` coroutine; a full disk or an I/O error in the engine's own
    writes (the store, an export) ends the workers and becomes :func:`machine_stop`'s line.
    SQLite rolls a failed write back and exports are replaced atomically, so nothing already
    committed is damaged, and ``--resume`` requeues what was running."""
    try:
        await run
    except (OSError, sqlite3.Error) as e:
        stop = machine_stop(e, engine.options.run_dir)
        if stop is None:
            raise
        with contextlib.suppress(Exception):  # the disk's error is the one to report
            await engine.executor.shutdown(kill=True)
        raise stop from e
