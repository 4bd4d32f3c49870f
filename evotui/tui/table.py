"""A keyed table on Textual's Line API that redraws only the rows that changed.

Textual's ``DataTable`` invalidates every cached cell on any ``update_cell`` and re-renders the
whole visible table, which costs tens of milliseconds per refresh with a few dozen running
candidates. Here each row's line (a ``Strip``) is built once when one of its cells changes, and
only that line's region is refreshed; scrolling and the cursor reuse the built lines. A fixed
header line, a row cursor (arrows, page keys, home/end, mouse), horizontal scrolling.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.events import Click
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from evotui.tui.cells import Column

GAP = 1  # blank cells between columns


def fit(text: Text, width: int, right: bool) -> Text:
    """``text`` cut or padded to exactly ``width`` cells."""
    out = text.copy()
    out.truncate(width, overflow="ellipsis")
    pad = width - out.cell_len
    if pad > 0:
        if right:
            out = Text(" " * pad) + out
        else:
            out.append(" " * pad)
    return out


class RowTable(ScrollView, can_focus=True):
    """Rows of cells by key; ``set_row`` rebuilds one row's line and refreshes only it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "cursor(-1)", "up", show=False),
        Binding("down", "cursor(1)", "down", show=False),
        Binding("pageup", "page(-1)", "page up", show=False),
        Binding("pagedown", "page(1)", "page down", show=False),
        Binding("home", "cursor_to(0)", "first", show=False),
        Binding("end", "cursor_to(-1)", "last", show=False),
        Binding("left", "scroll_left", "left", show=False),
        Binding("right", "scroll_right", "right", show=False),
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {"table--header", "table--cursor"}
    DEFAULT_CSS = """
    RowTable { background: $surface; }
    RowTable > .table--header { text-style: bold; background: $panel; }
    RowTable > .table--cursor { background: $block-cursor-blurred-background; }
    RowTable:focus > .table--cursor { background: $block-cursor-background;
                                      color: $block-cursor-foreground; }
    """

    cursor_row: reactive[int] = reactive(0, always_update=False, repaint=False)

    class CursorMoved(Message):
        """The cursor is on another row (``key`` None: no rows)."""

        def __init__(self, key: str | None) -> None:
            super().__init__()
            self.key = key

    def __init__(self, cols: Sequence[Column], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cols = list(cols)
        self.order: list[str] = []
        self.index: dict[str, int] = {}
        self.cells: dict[str, dict[str, Text]] = {}
        self._strips: dict[str, Strip] = {}
        self._header: Strip | None = None
        self._styles: tuple[Style, Style, Style] | None = None  # base, header, cursor
        self.rows_built = 0  # row lines built so far (tests read it)
        self._total_width = sum(c.width for c in self.cols) + GAP * (len(self.cols) + 1)

    # -- data -----------------------------------------------------------------------------

    @property
    def row_count(self) -> int:
        return len(self.order)

    @property
    def cursor_key(self) -> str | None:
        if not self.order:
            return None
        return self.order[min(max(self.cursor_row, 0), len(self.order) - 1)]

    def set_row(self, key: str, cells: dict[str, Text]) -> None:
        """Add the row (at the end) or replace its cells; redraws only that line."""
        self.cells[key] = cells
        self._strips.pop(key, None)
        if key in self.index:
            self.refresh_line(self.index[key] + 1)
            return
        self.index[key] = len(self.order)
        self.order.append(key)
        self._resized()

    def remove_row(self, key: str) -> None:
        if key not in self.index:
            return
        keep = self.cursor_key
        self.order.remove(key)
        self.cells.pop(key, None)
        self._strips.pop(key, None)
        self._reindex(keep)

    def clear(self) -> None:
        self.order, self.index, self.cells, self._strips = [], {}, {}, {}
        self.cursor_row = 0
        self._resized()

    def sort(self, key: Callable[[str], Any]) -> None:
        """Reorder the rows by ``key(row key)``; the cursor stays on its row."""
        keep = self.cursor_key
        self.order.sort(key=key)
        self._reindex(keep)

    def move_to(self, key: str) -> None:
        if key in self.index:
            self.cursor_row = self.index[key]

    def _reindex(self, keep: str | None) -> None:
        self.index = {k: i for i, k in enumerate(self.order)}
        if keep in self.index:
            self.set_reactive(RowTable.cursor_row, self.index[keep])
        self.cursor_row = min(self.cursor_row, max(0, len(self.order) - 1))
        self._resized()
        self.post_message(self.CursorMoved(self.cursor_key))

    def _resized(self) -> None:
        """The scroll range: the rows and the header, but never less than the view, so that
        while the rows fit on screen a new one repaints this table instead of laying out the
        whole screen again (a new virtual size means a new layout)."""
        view = self.size.height  # less the horizontal scrollbar when the columns overflow
        if self._total_width > self.size.width:
            view -= self.styles.scrollbar_size_horizontal
        self.virtual_size = Size(self._total_width, max(len(self.order) + 1, view))
        self.refresh()

    def on_resize(self) -> None:
        self._resized()

    # -- rendering ------------------------------------------------------------------------

    def _line(self, cells: Iterable[tuple[Column, Text]], style: Style) -> Strip:
        text = Text(" " * GAP)
        for col, cell in cells:
            text.append_text(fit(cell, col.width, col.right))
            text.append(" " * GAP)
        segments = [Segment(s.text, style + s.style if s.style else style)
                    for s in text.render(self.app.console)]
        return Strip(segments, text.cell_len)

    @property
    def line_styles(self) -> tuple[Style, Style, Style]:
        """The base, header and cursor styles (computed once per style change)."""
        if self._styles is None:
            base = self.rich_style
            self._styles = (base, base + self.get_component_rich_style("table--header"),
                            self.get_component_rich_style("table--cursor"))
        return self._styles

    def _row_strip(self, key: str) -> Strip:
        strip = self._strips.get(key)
        if strip is None:
            cells = self.cells[key]
            strip = self._line(((c, cells.get(c.key, Text(""))) for c in self.cols),
                               self.line_styles[0])
            self._strips[key] = strip
            self.rows_built += 1
        return strip

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.size.width
        base, header, cursor = self.line_styles
        if y == 0:
            if self._header is None:
                self._header = self._line(((c, Text(c.label, justify="right" if c.right
                                                    else "left")) for c in self.cols), header)
            strip = self._header
        else:
            row = scroll_y + y - 1
            if row >= len(self.order):
                return Strip.blank(width, base)
            strip = self._row_strip(self.order[row])
            if row == self.cursor_row:
                strip = strip.apply_style(cursor)
        return strip.crop_extend(scroll_x, scroll_x + width, base)

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles = None
        self._header = None
        self._strips.clear()

    # -- cursor ---------------------------------------------------------------------------

    def watch_cursor_row(self, old: int, new: int) -> None:
        self.refresh_line(old + 1)
        self.refresh_line(new + 1)
        self._show_cursor()
        self.post_message(self.CursorMoved(self.cursor_key))

    def _show_cursor(self) -> None:
        visible = max(1, self.size.height - 1)
        top = round(self.scroll_offset.y)
        if self.cursor_row < top:
            self.scroll_to(y=self.cursor_row, animate=False)
        elif self.cursor_row >= top + visible:
            self.scroll_to(y=self.cursor_row - visible + 1, animate=False)

    def action_cursor(self, delta: int) -> None:
        if self.order:
            self.cursor_row = min(max(0, self.cursor_row + delta), len(self.order) - 1)

    def action_page(self, direction: int) -> None:
        self.action_cursor(direction * max(1, self.size.height - 2))

    def action_cursor_to(self, row: int) -> None:
        if self.order:
            self.cursor_row = row % len(self.order)

    def on_click(self, event: Click) -> None:
        row = round(self.scroll_offset.y) + event.y - 1
        if event.y >= 1 and 0 <= row < len(self.order):
            self.cursor_row = row
