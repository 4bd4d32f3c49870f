"""Messages between the panes and the app."""

from __future__ import annotations

from textual.message import Message


class CandidateSelected(Message):
    """The Population cursor moved to another candidate (None: the table is empty)."""

    def __init__(self, candidate: str | None) -> None:
        super().__init__()
        self.candidate = candidate


class DetailsRequested(Message):
    """Enter on a Population row: show that candidate's details."""

    def __init__(self, candidate: str) -> None:
        super().__init__()
        self.candidate = candidate
