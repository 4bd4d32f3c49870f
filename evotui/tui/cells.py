"""What the Population pane shows for one candidate: its columns and their cells.

Pure functions from a candidate (as the store returns it) and its newest metric rows to Rich
text, so the table can compare a row with the one it shows and update only the cells that
changed. Imports no Textual.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rich.text import Text

STATUS_STYLE = {
    "queued": "bright_black", "running": "bold green", "paused": "yellow", "done": "cyan",
    "stopped": "cyan", "failed": "bold red", "killing": "red", "killed": "red",
}
NA = "-"


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    width: int
    right: bool = False  # numbers: right-aligned


def columns(objectives: Mapping[str, str]) -> list[Column]:
    """The table's columns: fixed ones, then one per held-out perplexity objective."""
    ppl = [name for name in objectives if name.startswith("ppl")] or ["ppl"]
    return [
        Column("id", "id", 5), Column("gen", "gen", 3, True), Column("status", "status", 7),
        Column("rung", "rung", 4, True), Column("step", "step", 9, True),
        Column("loss", "loss", 6, True),
        *[Column(name, name.replace("ppl_", "ppl "), max(7, len(name)), True) for name in ppl],
        Column("tok_s", "tok/s", 6, True), Column("params", "params", 6, True),
        Column("front", "★", 1), Column("operator", "operator", 24),
        Column("parents", "parents", 11),
    ]


def number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


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


def cells(c: Mapping[str, Any], latest: Mapping[str, Any] | None, on_frontier: bool,
          cols: list[Column]) -> dict[str, Text]:
    """One rendered cell per column key."""
    metrics = c.get("metrics") or {}
    status = c["status"]
    step, total = c.get("step") or 0, c.get("total_steps")
    tok_s = number((latest or {}).get("tokens_per_s"))
    values: dict[str, str | Text] = {
        "id": c["id"], "gen": str(c["generation"]),
        "operator": c.get("operator") or "",
        "parents": ",".join(c.get("parents") or []) or "-",
        "status": Text(status, style=STATUS_STYLE.get(status, "")),
        "rung": str(c.get("rung") or 0),
        "step": f"{step}/{total}" if total else str(step),
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
    hay = " ".join([c["id"], c.get("operator") or "", c["status"],
                    " ".join(c.get("parents") or []), c.get("device") or "",
                    f"g{c['generation']}"]).lower()
    return all(word in hay for word in query.lower().split())
