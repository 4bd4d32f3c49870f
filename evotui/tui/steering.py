"""The keys that steer the run from the app: pause, resume and kill the selected candidate
through the store's commands table (the rules from :mod:`evotui.lifecycle`, refused at once with
the reason), what the engine answered, what a read-only session refused, and ``y``: the
selected candidate's id, then its checkpoint path, to the clipboard over OSC 52 (works over
SSH in terminals that allow it). A mixin of :class:`evotui.tui.app.EvoApp`."""

from __future__ import annotations

from typing import Any

from textual.events import Key

from evotui.lifecycle import command_refusal
from evotui.tui.confirm import ConfirmScreen

READONLY_KEYS = {"p": "pause", "r": "resume", "k": "kill"}


class Steering:
    """Needs ``population``, ``feed``, ``store``, ``readonly``, ``requested`` (the command ids
    sent from here) and the App's ``notify``, ``push_screen``, ``copy_to_clipboard``."""

    _copied: tuple[str, str] | None = None

    def on_key(self: Any, event: Key) -> None:
        """A key that changes the run, pressed in a read-only session: say it was refused."""
        action = READONLY_KEYS.get(event.key)
        if action and self.readonly and len(self.screen_stack) == 1:
            event.stop()
            self.notify(f"read-only session: {action} refused (attach without --readonly to "
                        "change the run)", severity="warning")

    def _command(self: Any, action: str) -> None:
        cid = self.population.selected
        if cid is None:
            self.notify("no candidate selected", severity="warning")
            return
        status = self.feed.candidates[cid]["status"]
        refusal = command_refusal(action, status)
        if refusal:
            self.notify(f"{cid}: {refusal}", severity="warning")
            return
        if self.feed.pending.get(cid) == action:
            self.notify(f"{action} {cid}: already asked, waiting for the engine")
            return
        number = self.store.request(cid, action)
        self.requested.add(number)
        self.notify(f"{action} {cid}: requested (command {number}); it shows as {action}… "
                    "until the engine acts")

    def action_pause(self: Any) -> None:
        self._command("pause")

    def action_resume(self: Any) -> None:
        self._command("resume")

    def action_kill(self: Any) -> None:
        cid = self.population.selected
        if cid is None or command_refusal("kill", self.feed.candidates[cid]["status"]):
            self._command("kill")  # says why not
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._command("kill")

        self.push_screen(ConfirmScreen(f"Kill {cid}?", "It stops, is marked killed and never "
                                       "becomes a parent."), answered)

    def _answered(self: Any, commands: list[dict[str, Any]]) -> None:
        """Say what the engine did with the commands sent from here."""
        for cmd in commands:
            if cmd["id"] in self.requested:
                self.requested.discard(cmd["id"])
                what = f"{cmd['action']} {cmd['candidate']}: {cmd.get('outcome') or cmd['status']}"
                if cmd["status"] == "rejected":
                    self.notify(f"refused: {what}", severity="warning", timeout=8)
                else:
                    self.notify(what)

    def action_copy(self: Any) -> None:
        """``y``: the selected candidate's id; again on the same one: its checkpoint path."""
        cid = self.population.selected
        if cid is None:
            self.notify("no candidate selected", severity="warning")
            return
        checkpoint = self.feed.candidates[cid].get("checkpoint")
        if self._copied == (cid, "id") and checkpoint:
            self.copy_to_clipboard(str(checkpoint))
            self._copied = (cid, "checkpoint")
            self.notify(f"copied the checkpoint path of {cid}: {checkpoint}")
            return
        self.copy_to_clipboard(cid)
        self._copied = (cid, "id")
        more = " (y again: its checkpoint path)" if checkpoint else ""
        self.notify(f"copied {cid}{more}")
