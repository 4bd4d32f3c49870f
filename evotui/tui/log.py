"""The Log pane: the tail of the mutation log (the store's events), coloured by kind, bounded."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

from rich.console import RenderableType
from rich.text import Text
from textual.widget import Widget

MAX_LINES = 500
KIND_STYLE = {
    "mutation": "cyan", "crossover": "magenta", "start": "blue", "finish": "green",
    "promotion": "bold green", "failure": "bold red", "failed": "bold red", "kill": "red",
    "killed": "red", "pause": "yellow", "paused": "yellow", "resume": "yellow",
    "command": "yellow", "guard": "dark_orange", "run": "bold", "cleanup": "bright_black",
}


def line(event: Mapping[str, Any]) -> Text:
    """``14:03:12 mutation  c0007 <- c0003: ...`` (local time; one line)."""
    kind = str(event.get("kind", "?"))
    text = " | ".join(part.strip() for part in str(event.get("text", "")).splitlines()
                      if part.strip())
    stamp = time.strftime("%H:%M:%S", time.localtime(event.get("time") or 0))
    return Text.assemble((stamp, "bright_black"), " ",
                         (f"{kind:<9}", KIND_STYLE.get(kind, "")), " ", text)


class LogPane(Widget):
    """The newest lines that fit, newest at the bottom; at most ``MAX_LINES`` kept. New lines
    repaint this pane only (a scrolling log would lay the whole screen out again on each
    write); the whole log is ``run.log`` in the run directory."""

    DEFAULT_CSS = "LogPane { border: round $primary; }"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.border_title = "Log"
        self.lines: deque[Text] = deque(maxlen=MAX_LINES)

    def add(self, events: Iterable[Mapping[str, Any]]) -> None:
        added = False
        for event in events:
            self.lines.append(line(event))
            added = True
        if added:
            self.refresh()

    def render(self) -> RenderableType:
        height = max(1, self.content_size.height)
        width = max(1, self.content_size.width)
        shown = []
        for part in list(self.lines)[-height:]:
            part = part.copy()
            part.truncate(width, overflow="ellipsis")
            shown.append(part)
        return Text("\n", no_wrap=True).join(shown)
