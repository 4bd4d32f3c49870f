"""A line plot in braille for the terminal: framed, y labels on the rows they name, x ticks,
vertical markers. What the Loss pane draws on every poll while its candidate trains.

Pure (Rich text out, no Textual): :func:`draw` lays the curves on a dot grid two dots wide and
four high per cell, joins each curve's points with straight runs of dots, and returns one
:class:`~rich.text.Text` per row. It does in one pass what a general plotting library does in
several (textual-plotext built and re-parsed an ANSI string: 10-25 ms a frame on a loaded
2-core machine), so a growing curve costs 1-2 ms per redraw.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from rich.text import Text

BRAILLE = 0x2800
# the bit of each dot of a cell: DOTS[row][col], rows top to bottom, 2 columns
DOTS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))
TICKS_Y, TICKS_X = 5, 5
MARKER = "•"


@dataclass(frozen=True)
class Series:
    """``points`` (x, y) in order; ``style`` a Rich style; ``dots``: a marker at each point
    instead of a line through them."""

    points: Sequence[tuple[float, float]]
    style: str
    dots: bool = False


def _digits(span: float) -> int:
    """Decimals that tell apart ticks about a fifth of ``span`` apart."""
    if span <= 0 or not math.isfinite(span):
        return 2
    return min(6, max(0, 2 - math.floor(math.log10(span))))


def _range(values: Sequence[float]) -> tuple[float, float]:
    lo, hi = min(values), max(values)
    if hi == lo:  # one value: a band around it, so it sits mid-plot
        pad = abs(lo) * 0.05 or 0.5
        return lo - pad, hi + pad
    return lo, hi


def draw(series: Sequence[Series], width: int, height: int, vlines: Sequence[float] = (),
         vline_style: str = "red", xlabel: str = "") -> list[Text]:
    """The plot in ``width`` x ``height`` cells: a frame, the curves, ``vlines`` (x values, as
    ``│`` where no curve passes), y labels left of the rows they name and x values under the
    columns they name (each the value at a dot of its row or column: the first and last are
    the ends of the data's range), then ``xlabel``.
    Empty ``series``: an empty frame, no values on its axes. Points that are not finite (a
    diverged loss) are not drawn."""
    series = [Series([(x, y) for x, y in s.points if math.isfinite(x) and math.isfinite(y)],
                     s.style, s.dots) for s in series]
    points = [p for s in series for p in s.points]
    xs = [x for x, _ in points] or [0.0, 1.0]
    ys = [y for _, y in points] or [0.0, 1.0]
    x0, x1 = _range(xs)
    y0, y1 = _range(ys)
    rows = max(1, height - 4)  # less the frame's two lines, the x values and the x label
    yd = _digits(y1 - y0)
    label_rows = sorted({round(k * (rows - 1) / (TICKS_Y - 1)) for k in range(TICKS_Y)})
    dots_y = 4 * rows

    def y_at(dot: float) -> float:  # the value at a dot row (0 the top)
        return y1 - dot / (dots_y - 1) * (y1 - y0)

    # each label names a dot of its row: the top one y1, the bottom one y0
    labels = {r: f"{y_at(round(r * (dots_y - 1) / max(1, rows - 1))):.{yd}f}"
              for r in label_rows} if points else {}  # no data: no values to name
    lw = max((len(v) for v in labels.values()), default=4)
    cols = max(2, width - lw - 2)
    dots_x = 2 * cols

    sx, sy = (dots_x - 1) / (x1 - x0), (dots_y - 1) / (y1 - y0)

    def dx(x: float) -> int:
        d = round((x - x0) * sx)
        return 0 if d < 0 else (dots_x - 1 if d >= dots_x else d)

    def dy(y: float) -> int:
        d = round((y1 - y) * sy)
        return 0 if d < 0 else (dots_y - 1 if d >= dots_y else d)

    bits = [[0] * cols for _ in range(rows)]
    ink: list[list[str | None]] = [[None] * cols for _ in range(rows)]
    marks: dict[tuple[int, int], str] = {}
    for s in series:
        if s.dots:
            for x, y in s.points:
                marks[(dy(y) // 4, dx(x) // 2)] = s.style
            continue
        last: tuple[int, int] | None = None
        for x, y in s.points:
            here = (dx(x), dy(y))
            if last is None or (abs(here[0] - last[0]) <= 1 and abs(here[1] - last[1]) <= 1):
                run = [here]  # next to the last dot (most of a thinned curve)
            else:
                run = _join(last, here)
            for px, py in run:
                r, c = py // 4, px // 2
                bits[r][c] |= DOTS[py % 4][px % 2]
                ink[r][c] = s.style
            last = here
    vcols = sorted({dx(v) // 2 for v in vlines if x0 <= v <= x1})

    out: list[Text] = []
    top = ["─"] * cols
    bottom = ["─"] * cols
    for c in vcols:
        top[c] = "┬"
        bottom[c] = "┴"
    tick_cols = sorted({round(k * (cols - 1) / (TICKS_X - 1)) for k in range(TICKS_X)})
    for c in tick_cols:
        bottom[c] = "┼" if bottom[c] == "┴" else "┬"
    out.append(Text(" " * lw + "┌" + "".join(top) + "┐"))
    for r in range(rows):
        line = Text(labels[r].rjust(lw) + "┤" if r in labels else " " * lw + "│")
        run, run_style = "", None
        for c in range(cols):
            if (r, c) in marks:
                ch, style = MARKER, marks[(r, c)]
            elif bits[r][c]:
                ch, style = chr(BRAILLE + bits[r][c]), ink[r][c]
            elif c in vcols:
                ch, style = "│", vline_style
            else:
                ch, style = " ", None
            if style != run_style:
                line.append(run, run_style or "")
                run, run_style = "", style
            run += ch
        line.append(run, run_style or "")
        line.append("│")
        out.append(line)
    out.append(Text(" " * lw + "└" + "".join(bottom) + "┘"))
    xd = _digits(x1 - x0)
    ticks = [" "] * (lw + cols + 2)
    for c in tick_cols if points else ():
        dot = round(c * (dots_x - 1) / max(1, cols - 1))  # a dot of column c
        value = f"{x0 + dot / (dots_x - 1) * (x1 - x0):.{xd}f}"
        start = min(len(ticks) - len(value), max(0, lw + 1 + c - len(value) // 2))
        if all(ch == " " for ch in ticks[max(0, start - 1):start + len(value) + 1]):
            ticks[start:start + len(value)] = value
    out.append(Text("".join(ticks).rstrip()))
    if xlabel:
        out.append(Text(xlabel.center(lw + cols + 2).rstrip()))
    for line in out:
        line.truncate(width)
    return out[:height]


def _join(a: tuple[int, int], b: tuple[int, int]) -> list[tuple[int, int]]:
    """The dots from ``a`` (excluded) to ``b``, a straight run."""
    steps = max(abs(b[0] - a[0]), abs(b[1] - a[1]))
    if steps == 0:
        return [b]
    return [(a[0] + round((b[0] - a[0]) * i / steps), a[1] + round((b[1] - a[1]) * i / steps))
            for i in range(1, steps + 1)]
