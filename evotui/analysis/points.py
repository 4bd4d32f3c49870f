"""Measured data points for the scaling fits, read from run stores.

One point per finished candidate (done or stopped) with a measured held-out loss:

- ``loss``: the candidate's held-out loss (``metrics.loss``, the mean over eval shards);
- ``params``: ``params_active`` (parameters a token uses; equal to ``params_total`` without
  MoE); ``params_total`` is kept beside it;
- ``tokens``: the training tokens the candidate itself trained on, as its last training
  metrics row records them (weights inherited from a parent are not counted; ``inherited``
  says which candidates started from a parent's weights, from the engine's start events);
- ``throughput``: measured training tokens/s (``metrics.throughput``); ``width``: model dim.

Imports no torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from evotui.dsl import RunConfig, loads
from evotui.engine.rundir import RunDir, read_frontier
from evotui.engine.store import DB_NAME, RunStore
from evotui.errors import UserError
from evotui.jsonio import finite
from evotui.lifecycle import FINISHED

PARAMS_MEASURE = "params_active"


@dataclass
class Point:
    run: str
    id: str
    loss: float
    params: float
    params_total: float
    tokens: float
    throughput: float | None
    width: int
    generation: int
    rung: int
    inherited: bool
    frontier: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Source:
    """One run the points came from."""

    run_dir: Path
    config: RunConfig | None
    frontier_ids: list[str]
    points: list[Point] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def run_dir_of(path: Path) -> tuple[Path, Path | None]:
    """(run directory, frontier JSON given) for a run directory or a frontier JSON."""
    if path.is_dir():
        if not (path / DB_NAME).is_file():
            raise UserError.single(f"no {DB_NAME} here; give a run directory or its "
                                   "frontier.json", source=str(path))
        return path, None
    if not path.is_file():
        raise UserError.single("no such file or directory", source=str(path))
    if not (path.parent / DB_NAME).is_file():
        raise UserError.single(f"no {DB_NAME} beside this file: the tokens each candidate "
                               "trained on are recorded only in the run store; give the run "
                               "directory (or a frontier.json inside it)", source=str(path))
    return path.parent, path


def _frontier_ids(path: Path) -> list[str]:
    """The ids on a frontier JSON; [] when the run has written none yet."""
    return read_frontier(path).ids if path.is_file() else []


def run_config(store: RunStore) -> RunConfig | None:
    """The run's resolved config as the store keeps it (None if it no longer validates)."""
    text = store.config_yaml
    if not text:
        return None
    try:
        return loads(text, source=str(store.run_dir / "config.yaml"))
    except UserError:
        return None


def _inherited(store: RunStore) -> set[str]:
    """Candidates that started from trained weights: a parent's or ``train.init_checkpoint``
    (the engine records ``inherited_tensors``; runs from before that, by their start line)."""
    marked = {c["id"] for c in store.candidates()
              if (c.get("metrics") or {}).get("inherited_tensors")}
    starts = store.events(kind="start", limit=1 << 40)
    return marked | {e["candidate"] for e in starts if "inherits from" in e["text"]}


def read_source(path: Path) -> Source:
    run_dir, frontier_file = run_dir_of(path)
    store = RunStore.open(run_dir, readonly=True)
    try:
        source = Source(run_dir, run_config(store),
                        _frontier_ids(frontier_file or RunDir.of(store).frontier_path))
        on_front = set(source.frontier_ids)
        inherited = _inherited(store)
        for c in store.candidates(FINISHED):
            metrics = c.get("metrics") or {}
            loss = finite(metrics.get("loss"))
            params = finite(metrics.get(PARAMS_MEASURE))
            last = store.latest_metrics(c["id"], "train") or {}
            tokens = finite(last.get("tokens"))
            missing = [name for name, v in (("held-out loss", loss), (PARAMS_MEASURE, params),
                                            ("tokens trained", tokens)) if v is None]
            if missing or not tokens:
                source.skipped.append(f"{c['id']}: no {', '.join(missing) or 'tokens'} recorded")
                continue
            source.points.append(Point(
                run=str(run_dir), id=c["id"], loss=loss, params=params,  # type: ignore[arg-type]
                params_total=finite(metrics.get("params_total")) or params,  # type: ignore[arg-type]
                tokens=tokens, throughput=finite(metrics.get("throughput")),  # type: ignore[arg-type]
                width=int((c.get("spec") or {}).get("emb", {}).get("dim", 0)),
                generation=c["generation"], rung=c["rung"], inherited=c["id"] in inherited,
                frontier=c["id"] in on_front))
    finally:
        store.close()
    return source


def read_sources(paths: list[Path]) -> list[Source]:
    """Each distinct run once, in the order given."""
    seen: dict[Path, Source] = {}
    for path in paths:
        run_dir, _ = run_dir_of(path)
        key = run_dir.resolve()
        if key not in seen:
            seen[key] = read_source(path)
        else:  # a second frontier file of the same run: its ids join the frontier
            extra = set(_frontier_ids(path)) if path.is_file() else set()
            for p in seen[key].points:
                p.frontier = p.frontier or p.id in extra
    return list(seen.values())
