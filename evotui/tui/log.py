"""The Log pane: the mutation log (the store's events), coloured by kind, bounded.

Focus it (tab) to read back: arrows, page keys and home move a cursor (``▶``) over the lines and
the full text of the line under it shows below, unwrapped nowhere; ``/`` searches (enter keeps
the search, ``n`` / ``N`` go to the next / previous match, escape clears it); ``end`` or ``F``
follows the newest line again. New lines repaint this pane only: it draws its own lines
(Textual's Line API) rather than scrolling a virtual canvas, so a busy log never lays the
whole screen out again. The whole log is ``run.log`` in the run directory.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.reactive import reactive
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Input, Static

MAX_LINES = 2000
KIND_STYLE = {
    "mutation": "cyan", "crossover": "magenta", "start": "blue", "finish": "green",
    "promotion": "bold green", "failure": "bold red", "failed": "bold red", "kill": "red",
    "killed": "red", "pause": "yellow", "paused": "yellow", "resume": "yellow",
    "command": "yellow", "guard": "dark_orange", "run": "bold", "cleanup": "bright_black",
}
CURSOR = "▶"
MATCH_STYLE = "reverse"


def line(event: Mapping[str, Any]) -> Text:
    """``14:03:12 mutation  c0007 <- c0003: ...`` (local time; one line)."""
    kind = str(event.get("kind", "?"))
    text = " | ".join(part.strip() for part in str(event.get("text", "")).splitlines()
                      if part.strip())
    stamp = time.strftime("%H:%M:%S", time.localtime(event.get("time") or 0))
    return Text.assemble((stamp, "bright_black"), " ",
                         (f"{kind:<9}", KIND_STYLE.get(kind, "")), " ", text)


class LogView(Widget, can_focus=True):
    """The lines, newest at the bottom. ``follow``: the cursor stays on the newest line."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "move(-1)", "up", show=False),
        Binding("down", "move(1)", "down", show=False),
        Binding("pageup", "page(-1)", "page up", show=False),
        Binding("pagedown", "page(1)", "page down", show=False),
        Binding("home", "first", "first", show=False),
        Binding("end,F", "follow", "follow"),
        Binding("slash", "search", "search"),
        Binding("n", "next(1)", "next match"),
        Binding("N", "next(-1)", "previous match", show=False),
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {"log--cursor"}
    DEFAULT_CSS = """
    LogView { height: 1fr; }
    LogView > .log--cursor { background: $block-cursor-blurred-background; text-style: bold; }
    LogView:focus > .log--cursor { background: $block-cursor-background;
                                   color: $block-cursor-foreground; }
    """

    cursor: reactive[int] = reactive(0, repaint=False)
    follow: reactive[bool] = reactive(True, repaint=False)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lines: deque[Text] = deque(maxlen=MAX_LINES)
        self.query_text = ""
        self.top = 0  # the first line on screen

    # -- data -----------------------------------------------------------------------------

    def add(self, texts: Iterable[Text]) -> bool:
        before = len(self.lines)
        dropped = 0
        for t in texts:
            if len(self.lines) == self.lines.maxlen:
                dropped += 1
            self.lines.append(t)
        if len(self.lines) == before and not dropped:
            return False
        if self.follow:
            self.cursor = len(self.lines) - 1
        else:  # the same line stays under the cursor while old ones drop off the top
            self.cursor = max(0, self.cursor - dropped)
        self._place()
        self.refresh()
        return True

    @property
    def selected(self) -> Text | None:
        return self.lines[self.cursor] if self.lines else None

    # -- drawing --------------------------------------------------------------------------

    def _place(self) -> None:
        """Keep the cursor on screen (at the bottom while following)."""
        height = max(1, self.size.height)
        if self.follow or self.cursor >= self.top + height:
            self.top = max(0, self.cursor - height + 1)
        elif self.cursor < self.top:
            self.top = self.cursor
        self.top = max(0, min(self.top, max(0, len(self.lines) - height)))

    def on_resize(self) -> None:
        self._place()
        self.refresh()

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        base = self.rich_style
        # following: the newest lines at the bottom, whatever came first, lines or a size
        top = max(0, len(self.lines) - self.size.height) if self.follow else self.top
        i = top + y
        if i >= len(self.lines):
            return Strip.blank(width, base)
        text = self.lines[i].copy()
        if self.query_text:
            text.highlight_words([self.query_text], MATCH_STYLE, case_sensitive=False)
        text.truncate(max(1, width - 2), overflow="ellipsis")
        mark = CURSOR if i == self.cursor and not self.follow else " "
        segments = [Segment(mark + " ", base)] + [
            Segment(s.text, base + s.style if s.style else base)
            for s in text.render(self.app.console)]
        strip = Strip(segments).crop_extend(0, width, base)
        if i == self.cursor and not self.follow:
            cursor: Style = self.get_component_rich_style("log--cursor")
            strip = Strip(Segment.apply_style(list(strip), post_style=cursor), width)
        return strip

    def watch_cursor(self) -> None:
        self._place()
        self.refresh()
        self.post_message(LogPane.Moved())

    def watch_follow(self) -> None:
        self._place()
        self.refresh()
        self.post_message(LogPane.Moved())

    # -- keys -----------------------------------------------------------------------------

    def action_move(self, delta: int) -> None:
        if self.lines:
            self.follow = False
            self.cursor = min(max(0, self.cursor + delta), len(self.lines) - 1)

    def action_page(self, direction: int) -> None:
        self.action_move(direction * max(1, self.size.height - 1))

    def action_first(self) -> None:
        self.follow = False
        self.cursor = 0

    def action_follow(self) -> None:
        self.follow = True
        self.cursor = max(0, len(self.lines) - 1)

    def action_search(self) -> None:
        pane = self.parent
        if isinstance(pane, LogPane):
            pane.open_search()

    def action_next(self, direction: int = 1) -> None:
        """The cursor to the next (1) or previous (-1) line holding the search."""
        if not self.query_text or not self.lines:
            return
        needle = self.query_text.lower()
        n = len(self.lines)
        start = n if self.follow and direction < 0 else self.cursor  # following: the newest
        for k in range(1, n + 1):
            i = (start + direction * k) % n
            if needle in self.lines[i].plain.lower():
                self.follow = False
                self.cursor = i
                return
        self.app.notify(f"log: no line holds “{self.query_text}”", severity="warning")


class SearchInput(Input):
    """The Log's search box: enter keeps it, escape clears it."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "clear", "clear search")]

    def action_clear(self) -> None:
        pane = self.parent
        if isinstance(pane, LogPane):
            pane.close_search(clear=True)


class LogPane(Vertical):
    """The log, its search box and, once the cursor leaves the newest line, the full text of
    the line under it."""

    ALLOW_MAXIMIZE = True
    DEFAULT_CSS = """
    LogPane { border: round $primary; }
    LogPane:focus-within { border: round $accent; }
    LogPane > SearchInput { display: none; height: 3; }
    LogPane.-searching > SearchInput { display: block; }
    LogPane > #log-full { display: none; height: auto; max-height: 4; color: $text;
                          background: $boost; }
    LogPane.-reading > #log-full { display: block; }
    """

    class Moved(Message):
        """The log's cursor or follow mode changed."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.border_title = "Log"
        self._subtitle_text: str | None = None

    def compose(self) -> ComposeResult:
        yield LogView(id="log-view")
        yield SearchInput(placeholder="search the log (enter keeps, esc clears)",
                          id="log-search")
        yield Static("", id="log-full", markup=False)

    @property
    def view(self) -> LogView:
        return self.query_one(LogView)

    @property
    def lines(self) -> deque[Text]:
        return self.view.lines

    def add(self, events: Iterable[Mapping[str, Any]]) -> None:
        if self.view.add(line(e) for e in events) and not self.view.follow:
            self._subtitle()

    def _subtitle(self) -> None:
        view = self.view
        parts = [] if view.follow else [f"line {view.cursor + 1}/{len(view.lines)}"]
        parts.append("following" if view.follow else "F follow")
        if view.query_text:
            parts.append(f"search “{view.query_text}” (n/N)")
        text = " · ".join(parts)
        if text != self._subtitle_text:  # setting it repaints the whole pane
            self._subtitle_text = text
            self.border_subtitle = text

    @on(Moved)
    def _moved(self, event: Message) -> None:
        event.stop()
        view = self.view
        self.set_class(not view.follow and bool(view.lines), "-reading")
        if not view.follow and view.selected is not None:
            self.query_one("#log-full", Static).update(view.selected)
        self._subtitle()

    def open_search(self) -> None:
        self.add_class("-searching")
        box = self.query_one(SearchInput)
        box.value = self.view.query_text
        box.focus()

    @on(Input.Changed, "#log-search")
    def _typed(self, event: Input.Changed) -> None:
        self.view.query_text = event.value.strip()
        self.view.refresh()
        self._subtitle()

    @on(Input.Submitted, "#log-search")
    def _submitted(self, event: Input.Submitted) -> None:
        self.close_search()
        self.view.action_next(-1)  # the newest match first, from the bottom up

    def close_search(self, clear: bool = False) -> None:
        if clear:
            self.view.query_text = ""
            self.view.refresh()
        self.remove_class("-searching")
        self.view.focus()
        self._subtitle()
