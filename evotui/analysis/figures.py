"""Figure plumbing shared by the report and the scaling plots: matplotlib's object API on the
Agg canvas (no pyplot, so no global backend state), PNGs written atomically."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from evotui import atomic

DPI = 110
GREY = "#b0b0b0"
FRONT = "#d62728"


def figure(width: float = 7.0, height: float = 4.5) -> Any:
    """A new figure on the Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig: Any, path: Path) -> Path:
    """Render ``fig`` to PNG and replace ``path`` with it in one step."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    atomic.write_bytes(path, buf.getvalue())
    return path


def note(ax: Any, text: str) -> None:
    """A plain message in the middle of an axes (for a plot with nothing to draw)."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, wrap=True,
            fontsize=11, color="#444444")
    ax.set_xticks([])
    ax.set_yticks([])


def log_if_wide(ax: Any, axis: str, values: Any, factor: float = 20.0) -> None:
    """Log scale on ``axis`` when the values are positive and span more than ``factor``."""
    pos = [float(v) for v in values if v > 0]
    if pos and len(pos) == len(values) and max(pos) / min(pos) > factor:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
