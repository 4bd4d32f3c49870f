"""The read side of a run directory: where a run's files are and what they hold.

A run records the paths given on its command line (``--out``, ``--log``, ``--checkpoint-dir``)
in its store (state ``options``); every reader finds the files through :class:`RunDir`, so a
run started with ``--out runs/frontier_x.json`` is read from there by ``evotui frontier``, the
app, ``report``, ``fit-scaling``, ``export-seed`` and ``ablate`` alike::

    RUN_DIR/run.db          the store (SQLite, WAL)          RunDir.db
    RUN_DIR/config.yaml     the resolved config              RunDir.config_path
    RUN_DIR/frontier.json   the Pareto frontier, or --out    RunDir.frontier_path, .frontier()
    RUN_DIR/lineage.json    every candidate and its parents  RunDir.lineage_path, .lineage()
    RUN_DIR/run.log         the mutation log, or --log       RunDir.log_path
    RUN_DIR/checkpoints/    checkpoints, or --checkpoint-dir RunDir.checkpoint_dir, .checkpoint()

The store itself (:meth:`RunDir.store`), the status summary (:meth:`RunDir.summary`) and one
candidate's metric rows (:meth:`RunDir.metrics`) are reached from here too. The write side is
:mod:`evotui.engine.exports` (the JSON files) and the store. Imports no torch and nothing of the
evolution layer: the app reads runs through this module.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evotui import jsonio
from evotui.engine.store import CONFIG_NAME, DB_NAME, LOG_NAME, RunStore
from evotui.errors import UserError

FRONTIER_NAME = "frontier.json"
LINEAGE_NAME = "lineage.json"
CHECKPOINTS_NAME = "checkpoints"


@dataclass(frozen=True)
class Frontier:
    """A frontier JSON, read: its entries (as listed, best first), objectives and path, and
    the document as the file holds it (``doc``)."""

    path: Path
    entries: list[dict[str, Any]]
    objectives: dict[str, str] = field(default_factory=dict)
    doc: Any = None

    @property
    def ids(self) -> list[str]:
        return [str(e["id"]) for e in self.entries]


def read_frontier(path: Path) -> Frontier:
    """A frontier JSON (``{"objectives", "frontier": [...]}`` as evotui writes it, or a bare
    list of entries); :class:`UserError` naming the file when it is not one."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise UserError.single(f"cannot read it: {e}", source=str(path)) from None
    except json.JSONDecodeError as e:
        raise UserError.single(f"not valid JSON (line {e.lineno}: {e.msg}); give a frontier "
                               "JSON written by evotui", source=str(path)) from None
    frontier = _frontier(Path(path), data)
    if frontier is None:
        raise UserError.single("not a frontier JSON (expected a 'frontier' list of entries "
                               "with an 'id')", path="frontier", source=str(path))
    return frontier


def try_frontier(path: Path) -> Frontier | None:
    """The frontier JSON at ``path``; None when there is none yet (or it is not one)."""
    data = jsonio.read(path)
    return None if data is None else _frontier(Path(path), data)


def _frontier(path: Path, data: Any) -> Frontier | None:
    entries = data.get("frontier") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not all(
            isinstance(e, dict) and "id" in e for e in entries):
        return None
    objectives = data.get("objectives") if isinstance(data, dict) else None
    return Frontier(path, entries, dict(objectives or {}), data)


@dataclass(frozen=True)
class RunDir:
    """One run directory and the paths its run recorded. ``options``: the run's state
    ``options`` (``frontier_path``, ``log_path``, ``checkpoint_dir``, ...; {} for none)."""

    root: Path
    options: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        """The run in ``path``; :class:`UserError` when it holds no run store."""
        with RunStore.open(Path(path), readonly=True) as store:
            return cls.of(store)

    @classmethod
    def of(cls, store: RunStore) -> RunDir:
        """The run directory of an open store (read nothing else)."""
        return cls(Path(store.run_dir), dict(store.get_state("options") or {}))

    @staticmethod
    def is_run(path: str | Path) -> bool:
        """True when ``path`` is a directory holding a run store."""
        return (Path(path) / DB_NAME).is_file()

    # -- paths -------------------------------------------------------------------------------
    def _option(self, name: str, default: Path) -> Path:
        value = self.options.get(name)
        return Path(value) if value else default

    @property
    def db(self) -> Path:
        return self.root / DB_NAME

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_NAME

    @property
    def frontier_path(self) -> Path:
        """The run's ``--out`` frontier JSON, else ``RUN_DIR/frontier.json``."""
        return self._option("frontier_path", self.root / FRONTIER_NAME)

    @property
    def lineage_path(self) -> Path:
        return self.root / LINEAGE_NAME

    @property
    def log_path(self) -> Path:
        """The run's ``--log`` file, else ``RUN_DIR/run.log``."""
        return self._option("log_path", self.root / LOG_NAME)

    @property
    def checkpoint_dir(self) -> Path:
        """The run's ``--checkpoint-dir`` (shared between runs: file names start with the run's
        id), else ``RUN_DIR/checkpoints``."""
        return self._option("checkpoint_dir", self.root / CHECKPOINTS_NAME)

    def owned(self) -> list[Path]:
        """Files the run reads back or writes (store, config, exports, log, its checkpoints),
        resolved: never an output of a command about the run."""
        files = [self.db, self.config_path, self.frontier_path, self.root / FRONTIER_NAME,
                 self.lineage_path, self.log_path, self.root / LOG_NAME]
        files += list((self.root / CHECKPOINTS_NAME).glob("*"))
        return [f.resolve() for f in files]

    # -- contents ----------------------------------------------------------------------------
    def store(self, readonly: bool = True) -> RunStore:
        """The run store; a writable one appends to the run's own log file."""
        if readonly:
            return RunStore.open(self.root, readonly=True)
        return RunStore.open(self.root, log_path=self.log_path)

    def frontier(self) -> Frontier | None:
        """The frontier as the run last wrote it; None when there is none yet."""
        return try_frontier(self.frontier_path)

    def lineage(self) -> list[dict[str, Any]] | None:
        """The nodes of ``lineage.json`` (id, generation, parents, operator, status, rung);
        None when there is none yet."""
        data = jsonio.read(self.lineage_path)
        nodes = data.get("candidates") if isinstance(data, dict) else None
        return nodes if isinstance(nodes, list) else None

    def summary(self, objectives: Mapping[str, str] | None = None) -> dict[str, Any]:
        """What ``evotui status`` prints (see :func:`evotui.engine.exports.summary`)."""
        from evotui.engine.exports import summary

        with self.store() as store:
            return summary(store, objectives)

    def metrics(self, cid: str, kind: str | None = None) -> list[dict[str, Any]]:
        """Every metric row of one candidate (``kind``: train or eval; None: both), oldest
        first."""
        with self.store() as store:
            return store.metrics_for(cid, kind=kind)

    def checkpoint(self, recorded: str | None) -> Path | None:
        """A candidate's checkpoint file from the path the run recorded, or None when it is
        not on disk. The run's own ``checkpoints/`` comes first (a copied or moved run reads
        its own files, never the original's), then the recorded path (a ``--checkpoint-dir``
        outside the run; a relative one is relative to the run directory)."""
        if not recorded:
            return None
        p = Path(recorded)
        tries = [self.root / CHECKPOINTS_NAME / p.name, p if p.is_absolute() else self.root / p]
        return next((t for t in tries if t.is_file()), None)
