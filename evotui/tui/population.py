"""The Population pane: one row per candidate, sortable (``s`` the next column, ``S`` the other
way), filterable (``/``), rows marked with space (the Loss pane overlays their curves).

A poll's update touches only the rows of candidates that changed, and within them only when a
cell's text changed (the table then rebuilds and redraws that one line). Rows are re-sorted only
when a cell of the sort column changed or rows came or went; the cursor stays on its candidate.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import Input

from evotui.tui import cells
from evotui.tui.feed import Feed, Update
from evotui.tui.messages import CandidateSelected, DetailsRequested
from evotui.tui.table import RowTable, same

# (column key, descending?) in the order ``s`` cycles through; ppl columns go after "loss"
SORTS_HEAD = [("id", False), ("loss", False)]
SORTS_TAIL = [("tok_s", True), ("params", False), ("status", False), ("front", False),
              ("gen", True), ("device", False)]


class PopulationTable(RowTable):
    """The table; enter asks for the details of the row under the cursor. The sort column's
    header carries its direction."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("enter", "details", "details")]
    sorted_by: tuple[str, bool] = ("id", False)

    def header_label(self, col: cells.Column) -> Text:
        label = col.label
        if col.key == self.sorted_by[0]:
            label += "↓" if self.sorted_by[1] else "↑"
        return Text(label, justify="right" if col.right else "left")

    def sorted_on(self, key: str, descending: bool) -> None:
        self.sorted_by = (key, descending)
        self._header = None
        self.refresh_line(0)

    def action_details(self) -> None:
        if self.cursor_key is not None:
            self.post_message(DetailsRequested(self.cursor_key))


class FilterInput(Input):
    """The filter box: enter keeps the filter, escape clears it."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "clear", "clear filter")]

    def action_clear(self) -> None:
        pane = self.parent
        if isinstance(pane, PopulationPane):
            pane.close_filter(clear=True)


class PopulationPane(Vertical):
    ALLOW_MAXIMIZE = True
    DEFAULT_CSS = """
    PopulationPane { border: round $primary; }
    PopulationPane:focus-within { border: round $accent; }
    PopulationPane > PopulationTable { height: 1fr; scrollbar-size: 1 1; }
    PopulationPane > FilterInput { display: none; height: 3; }
    PopulationPane.-filtering > FilterInput { display: block; }
    """

    def __init__(self, objectives: Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.border_title = "Population"
        self.cols = cells.columns(objectives)
        ppl = [(c.key, False) for c in self.cols if c.key.startswith("ppl")]
        self.sorts = [*SORTS_HEAD, *ppl, *SORTS_TAIL]
        self.sort_index = 0
        self.reverse = False  # ``S``: the current sort the other way
        self.rungs: list[int] = []
        self.pending: Mapping[str, str] = {}  # candidate -> action asked, not yet answered
        self.query_text = ""
        self._shown: dict[str, dict[str, Text]] = {}  # visible rows: the cells on screen
        self._candidates: Mapping[str, Mapping[str, Any]] = {}
        self._latest: Mapping[str, Mapping[str, Any]] = {}
        self._frontier: set[str] = set()
        self._selected: str | None = None
        self.cell_updates = 0  # cells that changed so far (tests read it)

    def compose(self) -> ComposeResult:
        yield PopulationTable(self.cols, id="population-table")
        yield FilterInput(placeholder="filter: words of id, operator, status, parents, "
                          "g<generation>", id="population-filter")

    def on_mount(self) -> None:
        self._subtitle()

    @property
    def table(self) -> PopulationTable:
        return self.query_one(PopulationTable)

    @property
    def selected(self) -> str | None:
        """The candidate under the cursor (None also while the app is closing: the table may
        be gone before the last messages are handled)."""
        tables = self.query(PopulationTable)
        return tables.first().cursor_key if tables else None

    # -- updates --------------------------------------------------------------------------

    def _cells(self, cid: str) -> dict[str, Text]:
        return cells.cells(self._candidates[cid], self._latest.get(cid), cid in self._frontier,
                           self.cols, self.rungs, self.pending.get(cid))

    def apply(self, update: Update, feed: Feed) -> None:
        """Show what ``update`` changed; ``feed`` holds every candidate and newest row."""
        self._candidates, self._latest = feed.candidates, feed.latest
        self.rungs = feed.info.rungs
        touched = set(update.candidates) | set(update.latest)
        if dict(feed.pending) != dict(self.pending):
            touched |= set(feed.pending) ^ set(self.pending) | {
                c for c in feed.pending if self.pending.get(c) != feed.pending[c]}
            self.pending = dict(feed.pending)
        if update.frontier is not None:
            new = set(update.frontier)
            touched |= new ^ self._frontier
            self._frontier = new
        sort_key = self.sorts[self.sort_index][0]
        resort = False
        table = self.table
        for cid in [c for c in feed.candidates if c in touched]:
            visible = cells.matches(feed.candidates[cid], self.query_text)
            shown = self._shown.get(cid)
            if shown is None:
                if visible:
                    self._shown[cid] = row = self._cells(cid)
                    table.set_row(cid, row)
                    resort = True
                continue
            if not visible:
                table.remove_row(cid)
                del self._shown[cid]
                continue
            row = self._cells(cid)
            changed = [key for key, text in row.items()
                       if key not in shown or not same(shown[key], text)]
            if changed:  # the unchanged cells stay the objects the table drew
                self.cell_updates += len(changed)
                self._shown[cid] = row = {key: text if key in changed else shown[key]
                                          for key, text in row.items()}
                table.set_row(cid, row)
                resort = resort or sort_key in changed
        if resort:
            self._sort()
        self._announce()

    @property
    def sort_by(self) -> tuple[str, bool]:
        """The column key and whether it runs high to low."""
        key, descending = self.sorts[self.sort_index]
        return key, descending != self.reverse

    def _sort(self) -> None:
        """Rows by the sort column, high to low when descending; missing values last."""
        key, descending = self.sort_by
        self.table.sorted_on(key, descending)
        values = {cid: cells.sort_value(self._candidates[cid], self._latest.get(cid), key,
                                        cid in self._frontier) for cid in self._shown}
        known = sorted((v[1:], cid) for cid, v in values.items() if v[0] == 0)
        if descending:
            known.reverse()
        order = [cid for _, cid in known] + sorted(c for c, v in values.items() if v[0] == 1)
        rank = {cid: i for i, cid in enumerate(order)}
        self.table.sort(rank.__getitem__)

    def _rebuild(self) -> None:
        """Rows again from scratch (the filter changed)."""
        keep = self.selected
        table = self.table
        table.clear()
        self._shown.clear()
        for cid, c in self._candidates.items():
            if cells.matches(c, self.query_text):
                self._shown[cid] = row = self._cells(cid)
                table.set_row(cid, row)
        self._sort()
        if keep is not None:
            table.move_to(keep)
        self._announce()

    def _announce(self) -> None:
        selected = self.selected
        if selected != self._selected:
            self._selected = selected
            self.post_message(CandidateSelected(selected))

    def _subtitle(self) -> None:
        key, descending = self.sort_by
        label = next((c.label for c in self.cols if c.key == key), key)
        text = f"sort {label} {'↓' if descending else '↑'}"
        if self.query_text:
            text += f" · filter “{self.query_text}”"
        self.border_subtitle = text

    @on(RowTable.CursorMoved)
    def _moved(self, event: RowTable.CursorMoved) -> None:
        event.stop()
        self._announce()

    # -- keys -----------------------------------------------------------------------------

    def cycle_sort(self) -> str:
        self.sort_index = (self.sort_index + 1) % len(self.sorts)
        self.reverse = False
        self._sort()
        self._subtitle()
        return self.sorts[self.sort_index][0]

    def reverse_sort(self) -> None:
        self.reverse = not self.reverse
        self._sort()
        self._subtitle()

    @property
    def marked(self) -> list[str]:
        tables = self.query(PopulationTable)
        return [k for k in tables.first().order if k in tables.first().marked] if tables else []

    def open_filter(self) -> None:
        self.add_class("-filtering")
        box = self.query_one(FilterInput)
        box.value = self.query_text
        box.focus()

    def set_filter(self, text: str) -> None:
        self.query_text = text.strip()
        self._rebuild()
        self._subtitle()

    @on(Input.Changed, "#population-filter")
    def _typed(self, event: Input.Changed) -> None:
        if event.value.strip() != self.query_text:
            self.set_filter(event.value)

    @on(Input.Submitted, "#population-filter")
    def _submitted(self, event: Input.Submitted) -> None:
        self.close_filter()

    def close_filter(self, clear: bool = False) -> None:
        if clear:
            self.set_filter("")
        self.remove_class("-filtering")
        self.table.focus()
