"""The Loss pane: the selected candidate's training and held-out loss against step, with rung
boundaries, overlaid with its first parent's curve, the current best's and those of the marked
candidates (space in the Population table), drawn by :mod:`evotui.tui.plot`.

It keeps the rows of the candidates it shows: loaded from the store when one of them changes,
then extended with each poll's new rows, and redrawn only when they change: the plot's lines are
built once per change and drawn through Textual's Line API (no markup or ANSI to parse). Too
short for a plot with honest y labels (fewer than ``MIN_PLOT_ROWS`` rows of plot), it shows each
curve's newest value and a sparkline instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.strip import Strip
from textual.widget import Widget

from evotui.tui.plot import Series, draw
from evotui.tui.spark import sparkline

MAX_ROWS = 4000  # per candidate; beyond, the older half is thinned
MIN_PLOT_ROWS = 3  # fewer rows of plot than this: values and sparklines, not a plot
STYLE = {"train": "bold green", "eval": "bold cyan", "parent": "bright_black",
         "best": "bold yellow", "rung": "red"}
MARK_STYLES = ["bold magenta", "bold blue", "yellow", "bold red", "white"]


def thin(points: Sequence[tuple[float, float]], limit: int) -> list[tuple[float, float]]:
    """At most ``limit`` points, evenly picked, the last one always kept."""
    if len(points) <= limit:
        return list(points)
    stride = len(points) / limit
    picked = [points[int(i * stride)] for i in range(limit - 1)]
    return [*picked, points[-1]]


class LossPane(Widget, can_focus=True):
    DEFAULT_CSS = """
    LossPane { border: round $primary; width: 1fr; height: 1fr; background: $surface; }
    LossPane:focus { border: round $accent; }
    """
    ALLOW_MAXIMIZE = True

    def __init__(self, rungs: Sequence[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.border_title = "Loss"
        self.rungs = list(rungs)
        self.shown: tuple[str | None, str | None, str | None] = (None, None, None)
        self.marked: tuple[str, ...] = ()
        self.rows: dict[str, list[dict[str, Any]]] = {}
        self.draws = 0
        # a finished candidate's last held-out loss (its final measurement, not an eval row)
        self.final: Callable[[str], tuple[float, float] | None] = lambda cid: None
        self._built: tuple[tuple[int, int, int], list[Strip]] | None = None
        self._legend: Text | None = None
        self._parsed: dict[str, Style] = {}  # a curve's style by name
        self._curves: list[Series] = []  # what redraw() found to plot, before thinning
        # per (candidate, kind): the rows read so far and their points
        self._points: dict[tuple[str, str], tuple[int, list[tuple[float, float]]]] = {}

    @property
    def plot_rows(self) -> int:
        """Rows left for the curves: the pane less the x axis, its ticks and its label."""
        return self.content_size.height - 3

    @property
    def strips(self) -> list[Strip]:
        """The pane's lines, built again only when its data, size or style changed."""
        width, height = self.content_size
        key = (self.draws, width, height)
        if self._built is None or self._built[0] != key:
            if self.plot_rows < MIN_PLOT_ROWS:
                lines = self.summary(width).split("\n")
            else:
                lines = self.plot(width, height)
            base = self.rich_style
            strips = []
            for line in lines[:height]:
                line.truncate(width)
                segments = self._segments(line, base)
                if line.cell_len < width:
                    segments.append(Segment(" " * (width - line.cell_len), base))
                strips.append(Strip(segments, width))
            self._built = (key, strips)
        return self._built[1]

    def _segments(self, line: Text, base: Style) -> list[Segment]:
        """``line`` as segments over ``base``. The plot's lines are runs of text, each in one
        style (spans in order, none overlapping): cut straight from the string, which is
        several times quicker than Rich's general rendering, used for any other line."""
        plain, out, pos = line.plain, [], 0
        for start, end, style in line.spans:
            if start < pos or line.style or not isinstance(style, str):
                return [Segment(s.text, base + s.style if s.style else base)
                        for s in line.render(self.app.console)]
            if start > pos:
                out.append(Segment(plain[pos:start], base))
            parsed = self._parsed.get(style)
            if parsed is None:
                parsed = self._parsed[style] = self.app.console.get_style(style)
            out.append(Segment(plain[start:end], base + parsed))
            pos = end
        if pos < len(plain):
            out.append(Segment(plain[pos:], base))
        return out

    def render_line(self, y: int) -> Strip:
        strips = self.strips
        if y < len(strips):
            return strips[y]
        return Strip.blank(self.content_size.width, self.rich_style)

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._built = None

    def plot(self, width: int, height: int) -> list[Text]:
        """The curves, the rung boundaries and the step axis; a line saying why when there
        is nothing to plot."""
        series = [Series(thin(c.points, 2 * width), c.style, c.dots) for c in self._curves]
        lines = draw(series, width, height, self.rungs[:-1] if series else (), STYLE["rung"],
                     "step")
        if not series:
            selected = self.shown[0]
            note = f"{selected}: no metrics yet" if selected else "no candidate selected"
            lines[0] = Text(note.center(width), style="bold")
        return lines

    def _lines(self) -> list[tuple[str, str, str, str]]:
        """(candidate, kind, label, role) of every curve shown."""
        selected, parent, best = self.shown
        out = [(selected, "train", f"{selected} train", "train"),
               (selected, "eval", "held-out", "eval"),
               (parent, "train", f"parent {parent}", "parent"),
               (best, "train", f"best {best}", "best")]
        out += [(cid, "train", f"* {cid}", f"mark{i % len(MARK_STYLES)}")
                for i, cid in enumerate(self.marked)]
        return [line for line in out if line[0] is not None]

    @staticmethod
    def _style(role: str) -> str:
        if role.startswith("mark"):
            return MARK_STYLES[int(role[4:])]
        return STYLE[role]

    def summary(self, width: int) -> Text:
        """Each curve's newest loss and its shape, one line each (a pane too short to plot)."""
        out = Text(no_wrap=True, overflow="ellipsis")
        for cid, kind, label, role in self._lines():
            points = self._series(cid, kind)
            if not points:
                continue
            if out:
                out.append("\n")
            head = f"{label[:18]:<18} {points[-1][1]:>7.4g} "
            out.append(head, style=self._style(role))
            out.append(sparkline([v for _, v in points], width - len(head)),
                       style=self._style(role))
        if not out:
            out.append("no metrics yet" if self.shown[0] else "no candidate selected",
                       style="bright_black")
        return out

    def track(self, selected: str | None, parent: str | None, best: str | None,
              load: Callable[[str], list[dict[str, Any]]], marked: Sequence[str] = ()) -> None:
        """Show ``selected`` with ``parent``, ``best`` (each may be None) and ``marked``."""
        wanted = (selected, parent if parent != selected else None,
                  best if best not in (selected, parent) else None)
        marks = tuple(m for m in marked if m not in wanted)
        if wanted == self.shown and marks == self.marked:
            return
        keep = {cid for cid in (*wanted, *marks) if cid}
        self.rows = {cid: rows for cid, rows in self.rows.items() if cid in keep}
        self._points = {k: v for k, v in self._points.items() if k[0] in keep}
        for cid in keep - set(self.rows):
            self.rows[cid] = load(cid)[-MAX_ROWS:]
        self.shown, self.marked = wanted, marks
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
                    self._points.pop((row["candidate"], "train"), None)  # work them out again
                    self._points.pop((row["candidate"], "eval"), None)
        if changed:
            self.redraw()

    def touch(self, changed: Iterable[str]) -> None:
        """Redraw if a shown candidate changed (its final held-out loss may have arrived)."""
        if set(self.shown) & set(changed) or set(self.marked) & set(changed):
            self.redraw()

    def _series(self, cid: str | None, kind: str) -> list[tuple[float, float]]:
        """(step, loss) of ``cid``'s rows of ``kind``; kept, and extended with the rows that
        came since (a long run's thousands of rows are not read again on every poll)."""
        if cid is None:
            return []
        rows = self.rows.get(cid, [])
        seen, points = self._points.get((cid, kind), (0, []))
        if seen > len(rows):  # not the rows these points came from
            seen, points = 0, []
        points += [(r["step"], r["loss"]) for r in rows[seen:]
                   if r["kind"] == kind and isinstance(r.get("loss"), int | float)
                   and math.isfinite(r["loss"])]  # a diverged step's inf is not a point
        self._points[(cid, kind)] = (len(rows), points)
        last = self.final(cid) if kind == "eval" else None
        if last is not None and all(step != last[0] for step, _ in points):
            return [*points, last]
        return list(points)

    def redraw(self) -> None:
        """The data changed: the lines are built again at the next paint; the legend (the
        border's subtitle) is set only when it changed, as that repaints the border too."""
        legend = Text()
        self._curves = []
        for cid, kind, label, role in self._lines():
            points = self._series(cid, kind)
            if points:
                self._curves.append(Series(points, self._style(role), dots=kind == "eval"))
                legend.append(label, style=self._style(role))
                legend.append(" ")
        self._curves.reverse()  # the selected candidate's curves drawn last: on top
        if legend:
            legend.append("│ rung", style=STYLE["rung"])
        if legend != self._legend:
            self._legend = legend
            self.border_subtitle = legend
        self.draws += 1
        self.refresh()
