"""What comes out of the run store: ``frontier.json``, ``lineage.json`` and the status summary.

The JSON files are derived from the database and rewritten atomically (temp file + rename), so a
reader sees the previous file or the new one, never half of one, by :func:`evotui.jsonio.write`
(non-finite numbers as ``null``, so the files are strict JSON). The Pareto front is
:func:`evotui.evolve.pareto.pareto_front`, the same one the engine selects with, imported only
when a front is computed here: the TUI's feed imports this module and must stay free of numpy
and torch.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from evotui import jsonio
from evotui.engine.store import CONFIG_NAME, RunStore
from evotui.jsonio import finite
from evotui.lifecycle import FINISHED

DEFAULT_OBJECTIVES = {"loss": "min"}


def _check(objectives: Mapping[str, str]) -> None:
    for name, direction in objectives.items():
        if direction not in ("min", "max"):
            raise ValueError(f"objective {name}: direction {direction!r} is not min or max")


def objective_values(candidate: Mapping[str, Any],
                     objectives: Mapping[str, str]) -> dict[str, float] | None:
    """The candidate's value for every objective (from its metrics), or None if one is missing."""
    metrics = candidate.get("metrics") or {}
    values = {name: finite(metrics.get(name)) for name in objectives}
    if any(v is None for v in values.values()):
        return None
    return values  # type: ignore[return-value]


def finished(store: RunStore, objectives: Mapping[str, str]) -> list[dict[str, Any]]:
    """Done or stopped candidates with every objective metric present and finite."""
    return [c for c in store.candidates(FINISHED) if objective_values(c, objectives) is not None]


def frontier(store: RunStore, objectives: Mapping[str, str],
             frontier_ids: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The frontier entries, best first by the first objective.

    With ``frontier_ids`` (computed by the evolution layer) those candidates are taken as the
    front (ids not in the store are ignored); without, the non-dominated set among
    :func:`finished` candidates is computed here.
    """
    _check(objectives)
    if frontier_ids is None:
        from evotui.evolve.entry import Entry  # the evolution layer, only when computing
        from evotui.evolve.pareto import pareto_front

        pool = finished(store, objectives)
        front = set(pareto_front([Entry(c["id"], c.get("metrics") or {}, c["status"])
                                  for c in pool], objectives))
        chosen = [c for c in pool if c["id"] in front]
    else:
        chosen = [store.candidate(cid) for cid in dict.fromkeys(frontier_ids)
                  if store.has_candidate(cid)]
    entries = [_frontier_entry(c, objectives) for c in chosen]
    if objectives:
        first, direction = next(iter(objectives.items()))
        missing = math.inf if direction == "min" else -math.inf

        def key(e: dict[str, Any]) -> float:
            value = e["objectives"].get(first)
            return missing if value is None else value

        entries.sort(key=key, reverse=direction == "max")
    return entries


def _frontier_entry(c: Mapping[str, Any], objectives: Mapping[str, str]) -> dict[str, Any]:
    metrics = c.get("metrics") or {}
    return {
        "id": c["id"], "generation": c["generation"], "rung": c["rung"], "status": c["status"],
        "parents": c["parents"], "operator": c["operator"],
        "objectives": {name: finite(metrics.get(name)) for name in objectives},
        "metrics": metrics, "checkpoint": c["checkpoint"], "spec": c["spec"],
    }


def write_frontier(store: RunStore, path: str | Path, objectives: Mapping[str, str],
                   frontier_ids: Sequence[str] | None = None) -> list[str]:
    """Rewrite ``frontier.json`` atomically; returns the frontier ids written."""
    entries = frontier(store, objectives, frontier_ids)
    jsonio.write(path, {"updated": time.time(), "objectives": dict(objectives),
                       "count": len(entries), "frontier": entries})
    return [e["id"] for e in entries]


def write_lineage(store: RunStore, path: str | Path) -> int:
    """Rewrite ``lineage.json`` atomically: every candidate and its parents; returns the count."""
    nodes = [{"id": c["id"], "generation": c["generation"], "parents": c["parents"],
              "operator": c["operator"], "status": c["status"], "rung": c["rung"],
              "created": c["created"]}
             for c in store.candidates(with_spec=False)]
    jsonio.write(path, {"updated": time.time(), "count": len(nodes), "candidates": nodes})
    return len(nodes)


def _objectives_of(store: RunStore, objectives: Mapping[str, str] | None) -> dict[str, str]:
    if objectives is not None:
        return dict(objectives)
    saved = store.get_state("objectives") or store.meta.get("objectives")
    return dict(saved) if saved else dict(DEFAULT_OBJECTIVES)


def _generation(store: RunStore) -> int | None:
    """The engine's saved generation ("generation", or "engine" {"generation": ...}), else the
    newest generation that has candidates."""
    value = store.get_state("generation")
    if value is None:
        engine = store.get_state("engine")
        if isinstance(engine, str):
            engine = json.loads(engine)
        if isinstance(engine, Mapping):
            value = engine.get("generation")
    if value is None:
        generations = [c["generation"] for c in store.candidates(with_spec=False)]
        value = max(generations, default=None)
    return None if value is None else int(value)


def _best(candidates: list[dict[str, Any]], name: str, direction: str) -> dict[str, Any] | None:
    scored = [(v, c["id"]) for c in candidates
              if (v := finite((c.get("metrics") or {}).get(name))) is not None]
    if not scored:
        return None
    value, cid = min(scored) if direction == "min" else max(scored)
    return {"id": cid, "value": value, "direction": direction}


def summary(store: RunStore, objectives: Mapping[str, str] | None = None) -> dict[str, Any]:
    """What ``evotui status RUN_DIR --json`` prints. Objectives default to the stored ones."""
    objectives = _objectives_of(store, objectives)
    _check(objectives)
    meta = store.meta
    running = []
    for c in store.candidates("running", with_spec=False):
        last = store.latest_metrics(c["id"]) or {}
        running.append({"id": c["id"], "rung": c["rung"], "step": c["step"],
                        "total_steps": c["total_steps"], "loss": last.get("loss"),
                        "tokens_per_s": last.get("tokens_per_s"), "device": c["device"]})
    done = store.candidates(FINISHED, with_spec=False)
    counts = store.status_counts()
    return jsonio.clean({
        "run": meta.get("name") or store.run_dir.name,
        "run_dir": str(store.run_dir),
        "config": str(meta.get("config") or store.run_dir / CONFIG_NAME),
        "generation": _generation(store),
        "counts": counts,
        "total": sum(counts.values()),
        "running": running,
        "objectives": objectives,
        "best": {name: _best(done, name, d) for name, d in objectives.items()},
        "pending_commands": [{"id": cmd["id"], "candidate": cmd["candidate"],
                              "action": cmd["action"], "time": cmd["time"]}
                             for cmd in store.pending_commands()],
        "started": store.get_state("created"),
        "updated": store.last_activity() or store.get_state("created"),
    })
