"""Sparklines: a series as block characters, lowest ``▁`` to highest ``█`` (the Loss pane's
short form, the GPU pane's history). Imports no Textual."""

from __future__ import annotations

from collections.abc import Sequence

SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float], width: int, lo: float | None = None,
              hi: float | None = None) -> str:
    """``values`` evenly thinned to at most ``width`` characters (the last one kept), scaled
    between ``lo`` and ``hi`` (default: their own range)."""
    if not values or width <= 0:
        return ""
    if len(values) > width:
        stride = len(values) / width
        values = [values[int(i * stride)] for i in range(width - 1)] + [values[-1]]
    low = min(values) if lo is None else lo
    high = max(values) if hi is None else hi
    span = (high - low) or 1.0
    top = len(SPARKS) - 1
    return "".join(SPARKS[min(top, max(0, round((v - low) / span * top)))] for v in values)
