"""``evotui report RUN_DIR``: a Markdown report with PNG plots of one run.

Reads the run store (read-only), its frontier (``frontier.json`` or the run's ``--out``) and
``lineage.json`` through :class:`evotui.engine.rundir.RunDir`; writes
``report.md`` and its images into ``RUN_DIR/report`` (or ``--out``), each file atomically.
Every image the Markdown names is written before the Markdown itself. Imports no torch.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evotui import atomic
from evotui.analysis import motifs
from evotui.analysis.points import run_config
from evotui.engine import exports
from evotui.engine.rundir import RunDir
from evotui.engine.store import RunStore
from evotui.errors import UserError

MAX_CURVES = 8
FAILED = ("failed", "killed", "stopped")


@dataclass
class RunData:
    """Everything the report shows, read once from the run."""

    run_dir: Path
    summary: dict[str, Any]
    objectives: dict[str, str]
    candidates: list[dict[str, Any]]
    frontier: list[str]
    frontier_source: str
    lineage: list[dict[str, Any]]
    curves: dict[str, dict[str, Any]] = field(default_factory=dict)
    model_name: str | None = None


def read_run(run_dir: Path) -> RunData:
    store = RunStore.open(run_dir, readonly=True)
    try:
        cfg = run_config(store)
        objectives = dict(cfg.evolution.objectives) if cfg else dict(
            store.get_state("objectives") or exports.DEFAULT_OBJECTIVES)
        summary = exports.summary(store, objectives)
        candidates = store.candidates()
        rd = RunDir.of(store)
        written = rd.frontier()
        if written is not None:
            frontier, source = written.ids, str(written.path)
        else:
            frontier = [e["id"] for e in exports.frontier(store, objectives)]
            source = "computed from the run store (no frontier.json)"
        nodes = rd.lineage()
        if nodes is None:
            nodes = [{k: c[k] for k in ("id", "generation", "parents", "operator", "status")}
                     for c in candidates]
        data = RunData(run_dir, summary, objectives, candidates, frontier, source, nodes,
                       model_name=cfg.model.name if cfg else None)
        by_id = {c["id"]: c for c in candidates}
        for cid in frontier[:MAX_CURVES]:
            if cid not in by_id:
                continue
            c = by_id[cid]
            data.curves[cid] = {
                "train": store.metrics_for(cid, kind="train"),
                "eval": store.metrics_for(cid, kind="eval"),
                "final": (c["step"], (c.get("metrics") or {}).get("loss")),
            }
    finally:
        store.close()
    return data


def main_axes(objectives: Mapping[str, str], candidates: Sequence[Mapping[str, Any]]
              ) -> tuple[list[str], dict[str, str]]:
    """The two objectives the Pareto plot shows, and their directions: the first two in the
    config's order that vary across the candidates (an objective every candidate scores the
    same on says nothing in a scatter), else the first two; with one objective, that one
    against active parameters."""
    directions = dict(objectives) | {"params_active": "min"}
    names = list(objectives) or ["loss"]
    directions.setdefault("loss", "min")

    def varies(name: str) -> bool:
        values = {(c.get("metrics") or {}).get(name) for c in candidates}
        return len({v for v in values if isinstance(v, int | float)}) > 1

    chosen = [n for n in names if varies(n)][:2]
    chosen += [n for n in names if n not in chosen][: 2 - len(chosen)]
    if len(chosen) < 2:
        chosen.append("params_active")
    return chosen, directions


def failure_reasons(candidates: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Failed, killed and early-stopped candidates grouped by reason (numbers blanked)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for c in candidates:
        if c["status"] not in FAILED:
            continue
        if c["status"] == "stopped" and not c.get("error"):
            continue
        reason = str(c.get("error") or "(no reason recorded)").strip().splitlines()[0]
        key = (re.sub(r"\d{1,3}(?:,\d{3})+|\d+\.\d+(?:e[+-]?\d+)?|\d{3,}", "#", reason),
               c["status"])
        groups.setdefault(key, []).append(c["id"])
    rows = [{"reason": r, "status": s, "count": len(ids), "candidates": ids}
            for (r, s), ids in groups.items()]
    return sorted(rows, key=lambda row: -row["count"])


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return out


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def write_report(run_dir: Path, out: Path | None = None) -> dict[str, Any]:
    """Write the report; returns the Markdown path, the image paths and the frontier ids."""
    from evotui.analysis import plots

    data = read_run(run_dir)
    out = out or run_dir / "report"
    if out.exists() and not out.is_dir():
        raise UserError.single("exists and is not a directory", path="--out", source=str(out))
    by_id = {c["id"]: c for c in data.candidates}
    axes, directions = main_axes(data.objectives, data.candidates)
    front_specs = [by_id[i]["spec"] for i in data.frontier if i in by_id]
    front_counts = motifs.count(front_specs)
    all_counts = motifs.count(c["spec"] for c in data.candidates)
    motif_rows = sorted(((m, front_counts.get(m, 0), n) for m, n in all_counts.items()),
                        key=lambda r: (-r[2], r[0]))
    failures = failure_reasons(data.candidates)
    images = {
        "pareto": plots.pareto(out / "pareto.png", data.candidates, axes, directions,
                               data.frontier),
        "loss_curves": plots.loss_curves(out / "loss_curves.png", data.curves),
        "lineage": plots.lineage(out / "lineage.png", data.lineage, data.frontier),
        "motifs": plots.motif_bars(out / "motifs.png", motif_rows, len(front_specs),
                                   len(data.candidates)),
    }
    if failures:
        images["failures"] = plots.failure_bars(
            out / "failures.png", [(f"{r['reason']} ({r['status']})", r["count"])
                                   for r in failures])
    text = "\n".join(_markdown(data, axes, motif_rows, len(front_specs), failures, images))
    md = out / "report.md"
    atomic.write_text(md, text + "\n")
    return {"report": str(md), "images": [str(p) for p in images.values()],
            "frontier": data.frontier}


def _markdown(data: RunData, axes: list[str], motif_rows: list[tuple[str, int, int]],
              n_front: int, failures: list[dict[str, Any]], images: Mapping[str, Path]
              ) -> list[str]:
    s = data.summary
    counts = {k: v for k, v in s["counts"].items() if v}
    gens = sorted({c["generation"] for c in data.candidates})
    started, updated = s.get("started"), s.get("updated")
    wall = updated - started if started and updated else None
    lines = [
        f"# Run report: {s['run']}",
        "",
        f"Written {time.strftime('%Y-%m-%d %H:%M:%S')} from `{data.run_dir}`.",
        "",
        *_table(["", ""], [
            ["config", f"`{s['config']}`"],
            ["model", data.model_name or "-"],
            ["generations", f"{len(gens)} ({gens[0]}..{gens[-1]})" if gens else "0"],
            ["candidates", f"{s['total']}: " + ", ".join(f"{v} {k}" for k, v in
                                                         counts.items())],
            ["wall time", _duration(wall) + " (first record to last activity)"],
            ["objectives", ", ".join(f"{k} ({v})" for k, v in data.objectives.items())],
            ["frontier", f"{len(data.frontier)} candidate(s); from {data.frontier_source}"],
        ]),
        "",
        "## Pareto front",
        "",
        f"All measured candidates in grey, the frontier (non-dominated over all "
        f"{len(data.objectives)} objectives) in red, on the two main objectives "
        f"{axes[0]} and {axes[1]}.",
        "",
        f"![Pareto front]({images['pareto'].name})",
        "",
        "## Frontier",
        "",
    ]
    by_id = {c["id"]: c for c in data.candidates}
    names = list(data.objectives)
    rows = []
    for cid in data.frontier:
        c = by_id.get(cid)
        if c is None:
            continue
        m = c.get("metrics") or {}
        op = c.get("operator") or "seed"
        rows.append([cid, c["generation"], c["rung"], c["status"], *[m.get(n) for n in names],
                     m.get("params_active"), op if len(op) <= 70 else op[:67] + "..."])
    lines += _table(["id", "gen", "rung", "status", *names, "params_active", "operator"], rows)
    if not rows:
        lines.append("\nNo candidate is on the frontier yet.")
    lines += [
        "",
        "## Loss curves of the frontier",
        "",
        f"Training loss (solid) and held-out loss (dashed; the last point is the final "
        f"measurement) of up to {MAX_CURVES} frontier candidates; dotted lines mark where a "
        "candidate moved to its next rung.",
        "",
        f"![Loss curves]({images['loss_curves'].name})",
        "",
        "## Lineage",
        "",
        "Each candidate by generation; an arrow runs from each parent to its child, coloured "
        "by the kind of operator that made the child. Frontier candidates are ringed.",
        "",
        f"![Lineage]({images['lineage'].name})",
        "",
        "## Motifs",
        "",
        f"How many candidates carry each motif: the frontier ({n_front}) against the whole "
        f"population ({len(data.candidates)}).",
        "",
        f"![Motifs]({images['motifs'].name})",
        "",
    ]
    lines += _table(["motif", "frontier", "population"], [
        [m, f"{f} ({f / n_front:.0%})" if n_front else "0",
         f"{p} ({p / len(data.candidates):.0%})"] for m, f, p in motif_rows])
    lines += ["", "## Failures", ""]
    if failures:
        lines += [f"![Failures]({images['failures'].name})", ""]
        lines += _table(["reason", "status", "count", "candidates"], [
            [r["reason"], r["status"], r["count"], ", ".join(r["candidates"][:8])
             + (" ..." if len(r["candidates"]) > 8 else "")] for r in failures])
    else:
        lines.append("No candidate failed, was killed or was stopped early.")
    return lines
