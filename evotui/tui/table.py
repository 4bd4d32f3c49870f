"""A keyed table on Textual's Line API that redraws only the rows that changed.

Textual's ``DataTable`` invalidates every cached cell on any ``update_cell`` and re-renders the
whole visible table, which costs tens of milliseconds per refresh with a few dozen running
candidates. Here each row's line (a ``Strip``) is built when one of its cells changes, from the
segments of each cell, which are kept and built again only for the cells whose text changed (a
training candidate changes its step, loss and tok/s, not its other ten cells); only that line's
region is refreshed, and only when it is on screen; scrolling and the cursor reuse the built
lines. A fixed header line, a row cursor (arrows, page keys, home/end, mouse), marks,
horizontal scrolling with frozen columns, and columns dropped by priority when the table is
narrow.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
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

GAP = 1  # blank cells after each column
LEAD = 2  # before the first column: the cursor marker and the mark
CURSOR_MARK, MARK = "▶", "*"  # shapes, so the cursor and marks show without colour


BLANK = Text("")


def same(a: Text, b: Text) -> bool:
    """The same text in the same styles."""
    return a is b or (a.plain, a.style, a.spans) == (b.plain, b.style, b.spans)


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


def choose(cols: Sequence[Column], width: int) -> list[Column]:
    """The columns shown in ``width`` cells: priority 0 always, then by priority each that still
    fits; in their own order, frozen ones first; a stretch column takes the width left."""
    used = LEAD
    keep: set[str] = set()
    for col in sorted(cols, key=lambda c: c.priority):
        if col.priority == 0 or used + col.width + GAP <= width:
            keep.add(col.key)
            used += col.width + GAP
    shown = [c for c in cols if c.key in keep and c.frozen]
    shown += [c for c in cols if c.key in keep and not c.frozen]
    spare = width - used
    if spare > 0:
        for i, col in enumerate(shown):
            if col.stretch:
                shown[i] = replace(col, width=min(col.most or col.width, col.width + spare))
                break
    return shown


class RowTable(ScrollView, can_focus=True):
    """Rows of cells by key; ``set_row`` rebuilds one row's line and refreshes only it.

    The cursor row is drawn in the cursor colours over every cell's own and marked ``▶``;
    space marks rows (``*``). The columns that fit the width are shown, by priority; frozen ones
    (the id) stay put while the rest scroll sideways."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "cursor(-1)", "up", show=False),
        Binding("down", "cursor(1)", "down", show=False),
        Binding("pageup", "page(-1)", "page up", show=False),
        Binding("pagedown", "page(1)", "page down", show=False),
        Binding("home", "cursor_to(0)", "first", show=False),
        Binding("end", "cursor_to(-1)", "last", show=False),
        Binding("left", "scroll_left", "left", show=False),
        Binding("right", "scroll_right", "right", show=False),
        Binding("space", "mark", "mark", show=False),
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {"table--header", "table--cursor"}
    DEFAULT_CSS = """
    RowTable { background: $surface; }
    RowTable > .table--header { text-style: bold; background: $panel; }
    RowTable > .table--cursor { background: $block-cursor-blurred-background;
                                text-style: bold; }
    RowTable:focus > .table--cursor { background: $block-cursor-background;
                                      color: $block-cursor-foreground; text-style: bold; }
    """

    cursor_row: reactive[int] = reactive(0, always_update=False, repaint=False)

    class CursorMoved(Message):
        """The cursor is on another row (``key`` None: no rows)."""

        def __init__(self, key: str | None) -> None:
            super().__init__()
            self.key = key

    class MarksChanged(Message):
        """Rows were marked or unmarked; ``keys``: the marked rows, in table order."""

        def __init__(self, keys: list[str]) -> None:
            super().__init__()
            self.keys = keys

    def __init__(self, cols: Sequence[Column], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cols = list(cols)
        self.shown_cols = choose(self.cols, 10**6)
        self.order: list[str] = []
        self.index: dict[str, int] = {}
        self.cells: dict[str, dict[str, Text]] = {}
        self.marked: set[str] = set()
        self._strips: dict[str, tuple[Strip, Strip]] = {}  # frozen part, scrolling part
        # per row and column: the cell's text and width, and the segments drawn from them
        self._segs: dict[str, dict[str, tuple[Text, int, list[Segment]]]] = {}
        self._parsed: dict[str, Style] = {}  # a cell's style by name
        self._drawn: dict[str, tuple[tuple[int, int, bool, bool], tuple[Strip, Strip], Strip]] = {}
        self._header: tuple[Strip, Strip] | None = None
        self._styles: tuple[Style, Style, Style] | None = None  # base, header, cursor
        self.rows_built = 0  # row lines built so far (tests read it)
        self.cells_built = 0  # cells drawn so far (tests read it)
        self._widths()

    def _widths(self) -> None:
        self._fixed = LEAD + sum(c.width + GAP for c in self.shown_cols if c.frozen)
        self._total_width = self._fixed + sum(c.width + GAP for c in self.shown_cols
                                              if not c.frozen)

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
            self._refresh_row(self.index[key])
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
        self._segs.pop(key, None)
        self._drawn.pop(key, None)
        self._reindex(keep)

    def clear(self) -> None:
        self.order, self.index, self.cells, self._strips, self._segs = [], {}, {}, {}, {}
        self._drawn = {}
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
        # one column kept for the vertical scrollbar: the columns chosen to fit never make
        # a horizontal one appear when the rows overflow
        shown = choose(self.cols, self.size.width - self.styles.scrollbar_size_vertical)
        if shown != self.shown_cols:
            self.shown_cols = shown
            self._widths()
            self._strips.clear()
            self._header = None
        self._resized()

    # -- rendering ------------------------------------------------------------------------

    def _refresh_row(self, row: int) -> None:
        """Repaint one row's line if it is on screen (one off screen is drawn when scrolled
        to, from its new cells)."""
        top = round(self.scroll_offset.y)
        if top <= row < top + max(1, self.size.height - 1):
            self.refresh_line(row + 1)

    def _cell(self, text: Text, col: Column, style: Style) -> list[Segment]:
        """One cell's segments: ``text`` fitted to the column, then the gap."""
        self.cells_built += 1
        plain = text.plain
        if not text.spans and plain.isascii() and plain.isprintable():
            # one style, one cell per character: cut and pad the string, as fit() would
            if len(plain) > col.width:
                plain = plain[:col.width - 1] + "…"
            own = style + self._style(text.style) if text.style else style
            pad = " " * (col.width - len(plain))
            if col.right:  # the padding unstyled, as fit() pads a right-aligned cell
                return [Segment(pad, style), Segment(plain, own), Segment(" " * GAP, style)]
            return [Segment(plain + pad, own), Segment(" " * GAP, style)]
        line = Text().append_text(fit(text, col.width, col.right))  # its style as a span:
        line.append(" " * GAP)  # render() leaves out a text's base style
        return [Segment(s.text, style + s.style if s.style else style)
                for s in line.render(self.app.console)]

    def _line(self, cells: Iterable[tuple[Column, Text]], style: Style,
              kept: dict[str, tuple[Text, int, list[Segment]]] | None = None) -> Strip:
        """The line of ``cells``; ``kept``: each cell's segments from before, reused for a
        cell whose text and width are unchanged (and updated for the others)."""
        segments: list[Segment] = []
        width = 0
        for col, cell in cells:
            old = kept.get(col.key) if kept is not None else None
            if old is not None and old[1] == col.width and same(old[0], cell):
                segs = old[2]
            else:
                segs = self._cell(cell, col, style)
                if kept is not None:
                    kept[col.key] = (cell, col.width, segs)
            segments += segs
            width += col.width + GAP
        return Strip(Segment.simplify(segments), width)

    def _parts(self, cell: Callable[[Column], Text], style: Style,
               kept: dict[str, tuple[Text, int, list[Segment]]] | None = None
               ) -> tuple[Strip, Strip]:
        frozen = [(c, cell(c)) for c in self.shown_cols if c.frozen]
        rest = [(c, cell(c)) for c in self.shown_cols if not c.frozen]
        return self._line(frozen, style, kept), self._line(rest, style, kept)

    def _style(self, style: str | Style) -> Style:
        if isinstance(style, Style):
            return style
        parsed = self._parsed.get(style)
        if parsed is None:
            parsed = self._parsed[style] = self.app.console.get_style(style)
        return parsed

    @property
    def line_styles(self) -> tuple[Style, Style, Style]:
        """The base, header and cursor styles (computed once per style change)."""
        if self._styles is None:
            base = self.rich_style
            self._styles = (base, base + self.get_component_rich_style("table--header"),
                            self.get_component_rich_style("table--cursor"))
        return self._styles

    def _row_strips(self, key: str) -> tuple[Strip, Strip]:
        strips = self._strips.get(key)
        if strips is None:
            cells = self.cells[key]
            strips = self._parts(lambda c: cells.get(c.key, BLANK), self.line_styles[0],
                                 self._segs.setdefault(key, {}))
            self._strips[key] = strips
            self.rows_built += 1
        return strips

    def header_label(self, col: Column) -> Text:
        return Text(col.label, justify="right" if col.right else "left")

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.size.width
        base, header, cursor = self.line_styles
        if y == 0:
            if self._header is None:
                self._header = self._parts(self.header_label, header)
            return self._join(Segment(" " * LEAD, header), self._header, base, scroll_x, width)
        row = scroll_y + y - 1
        if row >= len(self.order):
            return Strip.blank(width, base)
        key = self.order[row]
        parts = self._row_strips(key)
        state = (scroll_x, width, row == self.cursor_row, key in self.marked)
        drawn = self._drawn.get(key)
        if drawn is not None and drawn[0] == state and drawn[1] is parts:
            return drawn[2]  # the same line as last time (a repaint of the whole table)
        marks = (CURSOR_MARK if state[2] else " ") + (MARK if state[3] else " ")
        line = self._join(Segment(marks, base), parts, base, scroll_x, width)
        if state[2]:
            line = Strip(Segment.apply_style(list(line), post_style=cursor), width)
        self._drawn[key] = (state, parts, line)
        return line

    def _join(self, lead: Segment, parts: tuple[Strip, Strip], base: Style, scroll_x: int,
              width: int) -> Strip:
        """The lead, the frozen part and the part of the rest scrolled into view, as one line
        of ``width`` cells."""
        frozen, rest = parts
        view = max(0, width - self._fixed)
        if scroll_x or rest.cell_length > view:
            rest = rest.crop_extend(scroll_x, scroll_x + view, base)
        used = LEAD + frozen.cell_length + rest.cell_length
        segments = [lead, *frozen, *rest]
        if used > width:
            return Strip(segments, used).crop(0, width)
        if used < width:
            segments.append(Segment(" " * (width - used), base))
        return Strip(segments, width)

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles = None
        self._header = None
        self._strips.clear()
        self._segs.clear()
        self._drawn.clear()

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

    def action_mark(self) -> None:
        """Mark or unmark the row under the cursor, then move down one row."""
        key = self.cursor_key
        if key is None:
            return
        self.marked ^= {key}
        self.refresh_line(self.cursor_row + 1)
        self.post_message(self.MarksChanged([k for k in self.order if k in self.marked]))
        self.action_cursor(1)
