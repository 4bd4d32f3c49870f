"""The report's plots: Pareto front, frontier loss curves, lineage tree, motifs, failures.

Each function takes plain data (dicts from the run store), draws one figure and writes it as
a PNG atomically. Matplotlib is imported inside (through :mod:`evotui.analysis.figures`)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from evotui.analysis.figures import FRONT, GREY, figure, log_if_wide, note, save
from evotui.analysis.motifs import operator_kind

KIND_COLOURS = {
    "seed": "#333333", "crossover": "#9467bd", "attention": "#1f77b4", "ffn / moe": "#ff7f0e",
    "ssm": "#2ca02c", "extras": "#8c564b", "blocks": "#e377c2", "recurrence": "#17becf",
    "model": "#bcbd22", "copy": "#7f7f7f", "other": "#7f7f7f",
}


def _value(c: Mapping[str, Any], name: str) -> float | None:
    v = (c.get("metrics") or {}).get(name)
    if isinstance(v, bool) or not isinstance(v, int | float) or v != v or abs(v) == float("inf"):
        return None
    return float(v)


def pareto(path: Path, candidates: Sequence[Mapping[str, Any]], axes: Sequence[str],
           directions: Mapping[str, str], frontier: Sequence[str]) -> Path:
    """Every candidate measured on both ``axes`` in grey, the frontier in colour."""
    fig = figure()
    ax = fig.add_subplot()
    x_name, y_name = axes
    pts = [(c["id"], _value(c, x_name), _value(c, y_name)) for c in candidates]
    pts = [(i, x, y) for i, x, y in pts if x is not None and y is not None]
    if not pts:
        note(ax, f"no candidate has both {x_name} and {y_name} measured yet")
        return save(fig, path)
    front = set(frontier)
    rest = [p for p in pts if p[0] not in front]
    top = [p for p in pts if p[0] in front]
    if rest:
        ax.scatter([p[1] for p in rest], [p[2] for p in rest], color=GREY, s=22,
                   label="all candidates")
    if top:
        ax.scatter([p[1] for p in top], [p[2] for p in top], color=FRONT, s=46, zorder=3,
                   edgecolors="black", lw=0.6, label="frontier")
        for i, x, y in top:
            ax.annotate(i, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    log_if_wide(ax, "x", [p[1] for p in pts])
    log_if_wide(ax, "y", [p[2] for p in pts])
    ax.set_xlabel(f"{x_name} ({_better(directions.get(x_name))})")
    ax.set_ylabel(f"{y_name} ({_better(directions.get(y_name))})")
    ax.set_title("Pareto front: frontier over all objectives, shown on two", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, path)


def _better(direction: str | None) -> str:
    return {"min": "lower is better", "max": "higher is better"}.get(direction or "", "")


def loss_curves(path: Path, curves: Mapping[str, Mapping[str, Any]]) -> Path:
    """Training and held-out loss of each frontier candidate against its step, with its
    rung boundaries. ``curves[id]`` has ``train`` and ``eval`` metric rows and ``final``
    (step, held-out loss) of its last measurement."""
    fig = figure(8, 4.8)
    ax = fig.add_subplot()
    drawn = False
    colours = iter(_palette())
    boundary_label = "rung boundary"
    for cid, curve in curves.items():
        colour = next(colours)
        train = curve.get("train") or []
        evals = curve.get("eval") or []
        if train:
            ax.plot([r["step"] for r in train], [r["loss"] for r in train], "-o", ms=3,
                    color=colour, label=f"{cid} train")
            drawn = True
            for a, b in zip(train, train[1:], strict=False):
                if a["rung"] != b["rung"]:
                    ax.axvline(a["step"], color=colour, ls=":", lw=1, label=boundary_label)
                    boundary_label = None
        points = [(r["step"], r["loss"]) for r in evals]
        final = curve.get("final")
        if final and final[1] is not None:
            points.append(final)
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], "--s", ms=5, color=colour,
                    label=f"{cid} held-out")
            drawn = True
    if not drawn:
        note(ax, "no loss recorded for the frontier yet")
        return save(fig, path)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title("Frontier loss curves (train solid, held-out dashed)", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, ncols=2)
    return save(fig, path)


def _palette() -> list[str]:
    base = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
            "#17becf", "#bcbd22", "#7f7f7f"]
    return base * 100


def lineage(path: Path, nodes: Sequence[Mapping[str, Any]], frontier: Sequence[str]) -> Path:
    """Generation across, candidates of a generation stacked; parent -> child edges coloured by
    the operator kind that made the child; frontier ringed in red; failures as crosses."""
    fig = figure(8, 5)
    ax = fig.add_subplot()
    if not nodes:
        note(ax, "no candidates yet")
        return save(fig, path)
    by_gen: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
    for n in nodes:
        by_gen[n["generation"]].append(n)
    pos = {}
    for g, members in by_gen.items():
        for i, n in enumerate(members):
            pos[n["id"]] = (g, i - (len(members) - 1) / 2)
    front = set(frontier)
    label_all = len(nodes) <= 30
    kinds_seen: dict[str, str] = {}
    for n in nodes:
        kind = operator_kind(n.get("operator") or "", n.get("parents") or [])
        colour = KIND_COLOURS.get(kind, KIND_COLOURS["other"])
        kinds_seen[kind] = colour
        x, y = pos[n["id"]]
        for parent in dict.fromkeys(n.get("parents") or []):
            if parent in pos:
                px, py = pos[parent]
                bend = 0.35 if px == x else 0.0  # a mutation within the same generation
                ax.annotate("", (x, y), (px, py), arrowprops={
                    "arrowstyle": "->", "color": colour, "lw": 1.1, "alpha": 0.8,
                    "shrinkA": 5, "shrinkB": 5, "connectionstyle": f"arc3,rad={bend}"})
        failed = n.get("status") in ("failed", "killed")
        ax.scatter([x], [y], color=colour, marker="x" if failed else "o",
                   s=40 if failed else 30, zorder=3)
        if n["id"] in front:
            ax.scatter([x], [y], facecolors="none", edgecolors=FRONT, s=130, lw=1.6, zorder=4)
        if n["id"] in front or label_all:
            ax.annotate(n["id"], (x, y), textcoords="offset points", xytext=(6, 5), fontsize=7,
                        fontweight="bold" if n["id"] in front else "normal")
    for kind, colour in kinds_seen.items():
        ax.scatter([], [], color=colour, label=kind)
    ax.scatter([], [], facecolors="none", edgecolors=FRONT, lw=1.6, label="frontier")
    if any(n.get("status") in ("failed", "killed") for n in nodes):
        ax.scatter([], [], color="black", marker="x", label="failed / killed")
    gens = sorted(by_gen)
    ax.set_xticks(gens)
    ax.set_xlim(gens[0] - 0.5, gens[-1] + 0.5)
    ax.set_yticks([])
    ax.set_xlabel("generation")
    ax.set_title("Lineage (edges: parent -> child, coloured by the operator kind)", fontsize=10)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    return save(fig, path)


def motif_bars(path: Path, rows: Sequence[tuple[str, int, int]], n_front: int,
               n_all: int) -> Path:
    """Share of the frontier and of the whole population carrying each motif."""
    fig = figure(8, max(3.0, 0.32 * len(rows) + 1.2))
    ax = fig.add_subplot()
    if not rows:
        note(ax, "no genomes to read motifs from")
        return save(fig, path)
    names = [r[0] for r in rows]
    ys = range(len(rows))
    front = [r[1] / n_front if n_front else 0 for r in rows]
    pop = [r[2] / n_all if n_all else 0 for r in rows]
    ax.barh([y - 0.2 for y in ys], front, height=0.4, color=FRONT,
            label=f"frontier ({n_front})")
    ax.barh([y + 0.2 for y in ys], pop, height=0.4, color=GREY,
            label=f"all candidates ({n_all})")
    ax.set_yticks(list(ys), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.05)
    ax.set_xlabel("share of candidates carrying the motif")
    ax.set_title("Motifs: frontier against the whole population", fontsize=10)
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return save(fig, path)


def failure_bars(path: Path, reasons: Sequence[tuple[str, int]]) -> Path:
    fig = figure(8, max(2.5, 0.35 * len(reasons) + 1.2))
    ax = fig.add_subplot()
    if not reasons:
        note(ax, "no failures")
        return save(fig, path)
    ys = range(len(reasons))
    ax.barh(list(ys), [r[1] for r in reasons], color="#d62728")
    ax.set_yticks(list(ys), [r[0] for r in reasons], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("candidates")
    ax.set_title("Why candidates failed, were killed or stopped early", fontsize=10)
    ax.grid(True, axis="x", alpha=0.3)
    return save(fig, path)
