"""The Loss pane: the selected candidate's training and held-out loss against step, with rung
boundaries, overlaid with its first parent's curve and the current best's (textual-plotext).

It keeps the rows of the (at most three) candidates it shows: loaded from the store when one of
them changes, then extended with each poll's new rows, and redrawn only when they change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from textual.app import RenderResult
from textual_plotext import PlotextPlot

MAX_ROWS = 4000  # per candidate; beyond, the older half is thinned
COLORS = {"train": "green+", "eval": "cyan+", "parent": "gray", "best": "orange+",
          "rung": "red"}
STYLE = {"train": "bold green", "eval": "bold cyan", "parent": "bright_black",
         "best": "bold yellow", "rung": "red"}


def thin(points: Sequence[tuple[float, float]], limit: int) -> list[tuple[float, float]]:
    """At most ``limit`` points, evenly picked, the last one always kept."""
    if len(points) <= limit:
        return list(points)
    stride = len(points) / limit
    picked = [points[int(i * stride)] for i in range(limit - 1)]
    return [*picked, points[-1]]


class LossPane(PlotextPlot):
    DEFAULT_CSS = "LossPane { border: round $primary; }"

    def __init__(self, rungs: Sequence[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.border_title = "Loss"
        self.rungs = list(rungs)
        self.shown: tuple[str | None, str | None, str | None] = (None, None, None)
        self.rows: dict[str, list[dict[str, Any]]] = {}
        self.draws = 0
        # a finished candidate's last held-out loss (its final measurement, not an eval row)
        self.final: Callable[[str], tuple[float, float] | None] = lambda cid: None
        self._built: tuple[tuple[int, int, int, str], RenderResult] | None = None

    def render(self) -> RenderResult:
        """The plot, built again only when its data, size or theme changed."""
        key = (self.draws, self.size.width, self.size.height, str(self.app.theme))
        if self._built is None or self._built[0] != key:
            self._built = (key, super().render())
        return self._built[1]

    def track(self, selected: str | None, parent: str | None, best: str | None,
              load: Callable[[str], list[dict[str, Any]]]) -> None:
        """Show ``selected`` with ``parent`` and ``best`` (each may be None)."""
        wanted = (selected, parent if parent != selected else None,
                  best if best not in (selected, parent) else None)
        if wanted == self.shown:
            return
        keep = {cid for cid in wanted if cid}
        self.rows = {cid: rows for cid, rows in self.rows.items() if cid in keep}
        for cid in keep - set(self.rows):
            self.rows[cid] = load(cid)[-MAX_ROWS:]
        self.shown = wanted
        self.redraw()

    def extend(self, rows: Iterable[dict[str, Any]]) -> None:
        """Add a poll's new metric rows; redraws when one of the shown candidates got some."""
        changed = False
        for row in rows:
            mine = self.rows.get(row["candidate"])
            if mine is not None:
                mine.append(row)
                changed = True
                if len(mine) > MAX_ROWS:
                    half = len(mine) // 2
                    mine[:half] = mine[:half:2]
        if changed:
            self.redraw()

    def touch(self, changed: Iterable[str]) -> None:
        """Redraw if a shown candidate changed (its final held-out loss may have arrived)."""
        if set(self.shown) & set(changed):
            self.redraw()

    def _series(self, cid: str | None, kind: str) -> list[tuple[float, float]]:
        if cid is None:
            return []
        points = [(r["step"], r["loss"]) for r in self.rows.get(cid, [])
                  if r["kind"] == kind and isinstance(r.get("loss"), int | float)]
        last = self.final(cid) if kind == "eval" else None
        if last is not None and all(step != last[0] for step, _ in points):
            points.append(last)
        return points

    def redraw(self) -> None:
        selected, parent, best = self.shown
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        width = max(10, self.size.width or 60)
        lines = [(selected, "train", f"{selected} train"), (selected, "eval", "held-out"),
                 (parent, "train", f"parent {parent}"), (best, "train", f"best {best}")]
        legend = []
        drawn = False
        for cid, kind, label in lines:
            points = thin(self._series(cid, kind), 2 * width)
            if not points:
                continue
            role = kind if cid == selected else ("parent" if cid == parent else "best")
            xs, ys = zip(*points, strict=True)
            if kind == "eval":
                plt.scatter(list(xs), list(ys), marker="dot", color=COLORS[role])
            else:
                plt.plot(list(xs), list(ys), marker="braille", color=COLORS[role])
            legend.append(f"[{STYLE[role]}]{label}[/]")
            drawn = True
        if drawn:
            for boundary in self.rungs[:-1]:
                plt.vline(boundary, COLORS["rung"])
            legend.append(f"[{STYLE['rung']}]│ rung[/]")
        else:
            plt.title(f"{selected}: no metrics yet" if selected else "no candidate selected")
        plt.xlabel("step")
        self.border_subtitle = " ".join(legend)
        self.draws += 1
        self.refresh()
