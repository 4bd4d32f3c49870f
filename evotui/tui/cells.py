"""What the Population pane shows for one candidate: its columns and their cells.

Pure functions from a candidate (as the store returns it) and its newest metric rows to Rich
text, so the table can compare a row with the one it shows and update only the cells that
changed. Imports no Textual.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich.text import Text

from evotui.jsonio import finite
from evotui.tui.feed import ACTIVE

STATUS_STYLE = {
    "queued": "bright_black", "running": "bold green", "paused": "yellow", "done": "cyan",
    "stopped": "cyan", "failed": "bold red", "killing": "red", "killed": "red",
}
PENDING_STYLE = "bold reverse"
NA = "-"


@dataclass(frozen=True)
class Column:
    """``priority``: 0 is always shown; a narrow table drops the highest numbers first.
    ``frozen``: stays on screen when the table scrolls sideways. ``stretch``: takes the width
    left over, up to ``most`` cells."""

    key: str
    label: str
    width: int
    right: bool = False  # numbers: right-aligned
    priority: int = 0
    frozen: bool = False
    stretch: bool = False
    most: int = 0


def columns(objectives: Mapping[str, str]) -> list[Column]:
    """The table's columns: the id and its frontier star (frozen), the status, the rung
    progress, the losses, then the rest in the order a narrow table gives them up."""
    ppl = [name for name in objectives if name.startswith("ppl")] or ["ppl"]
    return [
        Column("id", "id", 5, frozen=True), Column("front", "★", 1, frozen=True),
        Column("status", "status", 7), Column("step", "step", 10, True),
        Column("loss", "loss", 6, True),
        *[Column(name, name.replace("ppl_", "ppl "), max(7, len(name)), True,
                 priority=4 if i == 0 else 7) for i, name in enumerate(ppl)],
        Column("tok_s", "tok/s", 6, True, priority=3),
        Column("params", "params", 6, True, priority=1),
        Column("gen", "gen", 3, True, priority=2),
        Column("device", "device", 6, priority=6),
        Column("operator", "operator", 12, priority=5, stretch=True, most=40),
        Column("parents", "parents", 11, priority=8),
    ]


number = finite  # a finite float or None: the one helper, evotui.jsonio.finite


def short(value: float | None, digits: int = 4) -> str:
    """At most ``digits`` significant digits: 4.123, 123.4, 12.3k, 1.22M; '-' for nothing."""
    if value is None:
        return NA
    if abs(value) >= 10**digits:
        for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
            if abs(value) >= limit:
                return f"{value / limit:.3g}{suffix}"
    return f"{value:.{digits}g}"


def params(value: float | None) -> str:
    if value is None:
        return NA
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if value >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.0f}"


def loss_of(c: Mapping[str, Any], latest: Mapping[str, Any] | None) -> float | None:
    """The newest training loss: the last train row, else the finished candidate's own."""
    if latest is not None and number(latest.get("loss")) is not None:
        return number(latest["loss"])
    return number((c.get("metrics") or {}).get("train_loss"))


def progress(c: Mapping[str, Any], rungs: Sequence[int]) -> str:
    """``12/30 r1``: the step and where the candidate's current rung ends (the first rung's end
    before it starts); ``step/total`` when the run's rungs are unknown."""
    step, rung = c.get("step") or 0, c.get("rung") or 0
    if rungs:
        end = rungs[min(max(rung, 1), len(rungs)) - 1]
        return f"{step}/{end} r{rung}"
    total = c.get("total_steps")
    return f"{step}/{total}" if total else str(step)


def status_cell(status: str, pending: str | None = None) -> Text:
    """The status; while a command waits for the engine, the action asked instead: ``pause…``
    (the ellipsis reads without colour; the details screen still says the status)."""
    if pending:
        return Text(f"{pending}…", style=PENDING_STYLE)
    return Text(status, style=STATUS_STYLE.get(status, ""))


def cells(c: Mapping[str, Any], latest: Mapping[str, Any] | None, on_frontier: bool,
          cols: list[Column], rungs: Sequence[int] = (), pending: str | None = None
          ) -> dict[str, Text]:
    """One rendered cell per column key; ``pending``: a command asked and not yet answered."""
    metrics = c.get("metrics") or {}
    status = c["status"]
    tok_s = number((latest or {}).get("tokens_per_s"))
    values: dict[str, str | Text] = {
        "id": c["id"], "gen": str(c["generation"]),
        "operator": c.get("operator") or "",
        "parents": ",".join(c.get("parents") or []) or "-",
        "status": status_cell(status, pending),
        "step": progress(c, rungs),
        "device": (c.get("device") or NA) if status in ACTIVE else NA,
        "loss": short(loss_of(c, latest)),
        "tok_s": short(tok_s, 3),
        "params": params(number(metrics.get("params_total"))),
        "front": Text("★", style="bold yellow") if on_frontier else Text(""),
    }
    for col in cols:
        if col.key not in values:
            values[col.key] = short(number(metrics.get(col.key)))
    return {col.key: value if isinstance(value := values[col.key], Text) else Text(value)
            for col in cols}


def sort_value(c: Mapping[str, Any], latest: Mapping[str, Any] | None, key: str,
               on_frontier: bool) -> tuple:
    """A sort key for one column: missing values last, whatever the direction."""
    metrics = c.get("metrics") or {}
    value: Any
    if key == "id":
        return (0, c["id"])
    if key == "status":
        value = c["status"]
    elif key == "gen":
        value = c["generation"]
    elif key == "loss":
        value = loss_of(c, latest)
    elif key == "tok_s":
        value = number((latest or {}).get("tokens_per_s"))
    elif key == "params":
        value = number(metrics.get("params_total"))
    elif key == "front":
        value = 0 if on_frontier else 1
    else:
        value = number(metrics.get(key))
    return (1, c["id"]) if value is None else (0, value, c["id"])


def matches(c: Mapping[str, Any], query: str) -> bool:
    """The filter: every word of ``query`` appears in the id, operator, status, parents, device
    or generation (``g3`` matches generation 3), case-insensitive."""
    if not query:
        return True
    hay = " ".join([c["id"], c.get("operator") or "", c["status"],
                    " ".join(c.get("parents") or []), c.get("device") or "",
                    f"g{c['generation']}"]).lower()
    return all(word in hay for word in query.lower().split())
