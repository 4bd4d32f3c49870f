"""The help screen: every key, what it does, and what this session may change."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Static

KEYS = [
    ("↑ ↓ PgUp PgDn", "select a candidate (▶ marks it; the Loss pane follows)"),
    ("space", "mark / unmark the candidate (*): the Loss pane overlays the marked curves"),
    ("p", "pause the selected candidate: it checkpoints at its next step, frees its slot"),
    ("r", "resume a paused candidate from its checkpoint"),
    ("k", "kill the selected candidate (asks first); it never becomes a parent"),
    ("", "a command waiting for the engine shows in the status column: pause…"),
    ("enter", "details: spec YAML, lineage, metrics"),
    ("y", "copy the selected candidate's id, then its checkpoint path (OSC 52)"),
    ("f", "frontier: the Pareto table and an objective scatter"),
    ("/", "filter the Population rows (enter keeps, esc clears); in the Log: search"),
    ("s  S", "sort by the next column / the other way (the header shows ↑ or ↓)"),
    ("z", "zoom: the focused pane (or Loss) gets the whole screen; z again restores"),
    ("tab", "focus the next pane (Population, Loss, GPU, Log)"),
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

    def __init__(self, mode: str, disabled: dict[str, str] | None = None) -> None:
        """``disabled``: keys this session refuses, with the reason."""
        super().__init__()
        self.mode = mode
        self.disabled = disabled or {}

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 2))
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        for key, what in KEYS:
            why = self.disabled.get(key)
            if why:
                table.add_row(Text(key, style="strike bright_black"),
                              Text(f"disabled ({why}): {what}", style="bright_black"))
            else:
                table.add_row(key, what)
        with VerticalScroll():
            yield Static("[b]evotui keys[/]")
            yield Static(table)
            yield Static(self.mode, markup=False)
            yield Static("Commands go through the run's command table: the engine acts within "
                         "about two seconds, wherever it runs, or says why it refused.",
                         classes="choice")
        yield Footer()

    def action_close(self) -> None:
        self.dismiss(None)
