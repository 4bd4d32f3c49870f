"""The help screen: every key, what it does, and what this session may change."""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

KEYS = [
    ("↑ ↓ PgUp PgDn", "select a candidate (the Loss pane follows)"),
    ("p", "pause the selected candidate: it checkpoints at its next step, frees its slot"),
    ("r", "resume a paused candidate from its checkpoint"),
    ("k", "kill the selected candidate (asks first); it never becomes a parent"),
    ("enter", "details: spec YAML, lineage, metrics"),
    ("f", "frontier: the Pareto table and an objective scatter"),
    ("/", "filter the Population rows (enter keeps, esc clears)"),
    ("s", "sort by the next column (id, loss, perplexities, tok/s, params, ...)"),
    ("?", "this help"),
    ("q", "quit"),
]


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 90; max-width: 100%; height: auto; max-height: 100%;
                                  border: thick $primary; background: $surface; padding: 0 1; }
    """
    BINDINGS = [Binding("escape,question_mark,q", "close", "close")]

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = mode

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        for key, what in KEYS:
            table.add_row(key, what)
        with VerticalScroll():
            yield Static("[b]evotui keys[/]")
            yield Static(table)
            yield Static(self.mode, markup=False)
            yield Static("Commands go through the run's command table: the engine acts within "
                         "about two seconds, wherever it runs. esc closes.",
                         classes="choice")

    def action_close(self) -> None:
        self.dismiss(None)
