"""The frontier view: the Pareto frontier (``frontier.json``) as a table, and a scatter of two
objectives (``x`` / ``y`` pick them) with every finished candidate behind the frontier."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import Footer, Static
from textual_plotext import PlotextPlot

from evotui.engine.rundir import try_frontier
from evotui.tui.cells import Column, number, short
from evotui.tui.table import RowTable


def read_frontier(path: Path) -> list[dict[str, Any]]:
    """The entries of the run's frontier JSON; [] when there is none yet."""
    frontier = try_frontier(path)
    return frontier.entries if frontier is not None else []


class FrontierScreen(Screen[None]):
    DEFAULT_CSS = """
    FrontierScreen > #frontier-note { height: 1; padding: 0 1; color: $text-muted; }
    FrontierScreen > RowTable { height: 1fr; border: round $primary; }
    FrontierScreen > PlotextPlot { height: 2fr; border: round $primary; }
    """
    BINDINGS = [Binding("x", "axis('x')", "next x"), Binding("y", "axis('y')", "next y"),
                Binding("escape,q,f", "close", "back")]

    def __init__(self, entries: list[dict[str, Any]], points: Mapping[str, Mapping[str, float]],
                 objectives: Mapping[str, str]) -> None:
        super().__init__()
        self.entries, self.points, self.objectives = entries, points, dict(objectives)
        # the objectives that tell candidates apart first (an objective where every candidate
        # scores the same makes a flat axis)
        names = sorted(self.objectives, key=lambda k: -len({round(v[k], 9)
                                                            for v in points.values()}))
        self.x = names[0] if names else None
        self.y = names[1] if len(names) > 1 else self.x

    def compose(self) -> ComposeResult:
        yield Static(f"{len(self.entries)} candidate(s) on the frontier, "
                     f"{len(self.points)} finished with every objective measured",
                     id="frontier-note")
        cols = [Column("id", "id", 5, frozen=True), Column("gen", "gen", 3, True),
                Column("rung", "rung", 4, True), Column("status", "status", 7),
                *[Column(k, f"{k} ({'↓' if d == 'min' else '↑'})", max(8, len(k) + 4), True)
                  for k, d in self.objectives.items()]]  # every objective: scroll sideways
        yield RowTable(cols, id="frontier-table")
        yield PlotextPlot(id="frontier-plot")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(RowTable)
        table.border_title = "Frontier"
        for e in self.entries:  # the same table as the Population: a ▶ cursor row
            objs = e.get("objectives") or {}
            table.set_row(e["id"], {
                "id": Text(e["id"]), "gen": Text(str(e.get("generation", "?"))),
                "rung": Text(str(e.get("rung", "?"))), "status": Text(e.get("status", "?")),
                **{k: Text(short(number(objs.get(k)))) for k in self.objectives}})
        table.focus()
        self.draw()

    def draw(self) -> None:
        plot = self.query_one(PlotextPlot)
        plot.border_title = f"{self.y} against {self.x}" if self.x else "no objectives"
        plot.border_subtitle = "[bold yellow]● frontier[/] [bright_black]• finished[/]"
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        if self.x is None or self.y is None:
            plt.title("no objectives")
            plot.refresh()
            return
        on_front = {e["id"] for e in self.entries}
        behind = [(v[self.x], v[self.y]) for cid, v in self.points.items()
                  if cid not in on_front]
        front = [(number((e.get("objectives") or {}).get(self.x)),
                  number((e.get("objectives") or {}).get(self.y)), e["id"])
                 for e in self.entries]
        front = [(a, b, cid) for a, b, cid in front if a is not None and b is not None]
        if behind:
            xs, ys = zip(*behind, strict=True)
            plt.scatter(list(xs), list(ys), marker="dot", color="gray")
        if front:
            front.sort()
            plt.scatter([a for a, _, _ in front], [b for _, b, _ in front], marker="●",
                        color="orange+")
            xs_all = [a for a, _, _ in front] + [a for a, _ in behind]
            low, high = min(xs_all), max(xs_all)
            nudge = (high - low) * 0.03 or 0.5
            for a, b, cid in front:  # beside its point, towards the middle
                if a > (low + high) / 2:
                    plt.text(cid, a - nudge, b, color="orange+", alignment="right")
                else:
                    plt.text(cid, a + nudge, b, color="orange+", alignment="left")
        if not behind and not front:
            plt.title("nothing finished yet")
        plt.xlabel(f"{self.x} ({self.objectives[self.x]})")
        plt.ylabel(f"{self.y} ({self.objectives[self.y]})")
        plot.refresh()

    def action_axis(self, which: str) -> None:
        """The next objective on axis ``which``, never the one on the other axis."""
        other = self.y if which == "x" else self.x
        names = [n for n in self.objectives if n != other] or list(self.objectives)
        if not names:
            return
        current = getattr(self, which)
        i = names.index(current) if current in names else -1
        setattr(self, which, names[(i + 1) % len(names)])
        self.draw()

    def action_close(self) -> None:
        self.dismiss(None)
