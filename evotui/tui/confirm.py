"""Small modal questions: confirm a kill; what quitting does to an in-app run."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Static

DIALOG_CSS = """
{name} {{ align: center middle; }}
{name} > Vertical {{ width: 64; max-width: 100%; height: auto; border: thick $warning;
                     background: $surface; padding: 0 1; }}
{name} .question {{ text-style: bold; }}
{name} .choice {{ color: $text-muted; }}
"""


class ConfirmScreen(ModalScreen[bool]):
    """A yes/no question: ``y`` answers True, ``n`` or escape False."""

    DEFAULT_CSS = DIALOG_CSS.format(name="ConfirmScreen")
    BINDINGS = [Binding("y", "answer(True)", "yes"), Binding("n", "answer(False)", "no"),
                Binding("escape", "answer(False)", "no", key_display="esc")]

    def __init__(self, question: str, detail: str = "") -> None:
        super().__init__()
        self.question, self.detail = question, detail

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(self.question, classes="question")
            if self.detail:
                yield Static(self.detail)
            yield Static("[b]y[/] yes    [b]n[/] / esc no", classes="choice")
        yield Footer()

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class QuitScreen(ModalScreen[str | None]):
    """Quitting with the engine in this app: stop the run (resumable), leave it running
    headless, or stay."""

    DEFAULT_CSS = DIALOG_CSS.format(name="QuitScreen")
    BINDINGS = [Binding("s", "answer('stop')", "stop"), Binding("l", "answer('leave')", "leave"),
                Binding("escape", "answer(None)", "cancel"),
                Binding("c", "answer(None)", "cancel", show=False)]

    def __init__(self, run_dir: str) -> None:
        super().__init__()
        self.run_dir = run_dir

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static("Quit: the run is going on in this app.", classes="question")
            yield Static(f"[b]s[/]  stop it cleanly; continue later with\n"
                         f"    evotui run --resume {self.run_dir}")
            yield Static(f"[b]l[/]  leave it running headless (stops here, goes on as a\n"
                         f"    background `evotui run --resume`; evotui attach {self.run_dir})")
            yield Static("[b]esc[/] stay", classes="choice")
        yield Footer()

    def action_answer(self, choice: str | None) -> None:
        self.dismiss(choice)
