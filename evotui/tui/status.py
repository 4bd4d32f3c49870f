"""The status line: the engine's state first (what a person looks for), the generation, elapsed
time, ETAs, the age of the newest write, the candidates per status, and who runs the engine.
Changing it repaints this line only (a Static would lay the whole screen out again)."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from evotui.tui.runstate import RunState, duration

STATE_STYLE = {"running": "bold green", "stopping": "bold yellow", "stopped": "bold cyan",
               "finished": "bold cyan", "not responding": "bold white on red",
               "not started": "bright_black"}
SHOWN = ("running", "queued", "paused", "done", "stopped", "failed", "killed")


def status_text(state: RunState | None, mode: str, override: str | None = None) -> Text:
    """``running · gen 2/3 · 4:05 elapsed · ETA gen 1:10 run 9:30 · updated 1s ago · 1 running
    2 done · [attached]``; ``override``: what the in-app engine says instead of the store's
    state (``stopping``, an error)."""
    out = Text(no_wrap=True, overflow="ellipsis")
    if state is None:
        out.append("reading the run…", style="bright_black")
        out.append(f"  [{mode}]")
        return out
    label = override or state.state
    out.append(f" {label} ", style=STATE_STYLE.get(label, "bold red"))
    of = f"/{state.generations}" if state.generations else ""
    parts = [f"gen {state.generation}{of}"]
    if state.elapsed_s is not None:
        parts.append(f"{duration(state.elapsed_s)} elapsed")
    eta = []
    if state.eta_generation_s is not None:
        eta.append(f"gen {duration(state.eta_generation_s)}")
    if state.eta_run_s is not None:
        eta.append(f"run {duration(state.eta_run_s)}")
    if eta:
        parts.append("ETA " + " ".join(eta))
    if state.age_s is not None:
        parts.append(f"updated {duration(state.age_s)} ago")
    counts = "  ".join(f"{state.counts[s]} {s}" for s in SHOWN if state.counts.get(s))
    parts.append(counts or "no candidates yet")
    out.append(" " + " · ".join(parts))
    out.append(f" · {state.run} [{mode}]", style="bright_black")
    return out


class StatusBar(Widget):
    """One line; :meth:`show` changes it (and repaints it) only when its text changed."""

    text: reactive[Text] = reactive(Text(""), layout=False)

    def show(self, text: Text) -> None:
        if text.plain != self.text.plain or text.spans != self.text.spans:
            self.text = text

    @property
    def plain(self) -> str:
        return self.text.plain

    def render(self) -> Text:
        return self.text
